"""Labeler: line-level process labels from unit tests, as Redis-queued (arq) jobs."""
