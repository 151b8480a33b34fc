"""Shared fixtures: a real Redis namespace per test, free loopback ports, tiny models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from codeprm.stack import free_port

REDIS_URL = os.environ.get("CODEPRM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A unique key prefix in the real Redis; every key under it is deleted afterwards."""
    prefix = f"codeprm-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # arq keys embed the prefix (arq:job:<prefix>...), so match it anywhere.
        keys = list(client.scan_iter(f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def tiny_prm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from codeprm.tiny import build_tiny_prm

    return build_tiny_prm(tmp_path_factory.mktemp("models") / "tiny-prm")


# The real executor behind the harness's outer containment, shared by every test that
# executes programs (executor, labeler, trainer).
from tests.contained import contained_executor  # noqa: E402, F401
