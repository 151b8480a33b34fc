"""PRM server: per-line Process Reward Model scores over HTTP, with dynamic batching."""
