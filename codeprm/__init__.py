"""codeprm: line-level process rewards for RL on code LLMs."""

__version__ = "0.1.0"
