"""codeprm: line-level process rewards for RL on code LLMs.

The client SDK: `from codeprm import ExecutorClient` (or `codeprm.client`); the framework
plug-ins under `codeprm.integrations`; the services under `codeprm.services`.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The SDK's names, imported on first use: the executor's sandboxed workers import
# `codeprm.services.executor`, hence this package, and must not load httpx and pydantic with it.
if TYPE_CHECKING:
    from codeprm.client import (
        AsyncExecutorClient,
        AsyncLabelerClient,
        AsyncPrmClient,
        ExecutorClient,
        LabelerClient,
        PrmClient,
        ServiceRejected,
        ServiceUnavailable,
    )

__all__ = [
    "AsyncExecutorClient",
    "AsyncLabelerClient",
    "AsyncPrmClient",
    "ExecutorClient",
    "LabelerClient",
    "PrmClient",
    "ServiceRejected",
    "ServiceUnavailable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from codeprm import client

        return getattr(client, name)
    raise AttributeError(f"module 'codeprm' has no attribute {name!r}")
