"""Executor: runs untrusted, model-written programs against unit tests in a sandbox."""
