"""Verdict cache in Redis: labeling and RL resubmit the same programs constantly.

The key hashes everything that decides a verdict (code, tests, effective limits, the
executor's version); timeouts and sandbox errors are not cached (they depend on load).
A Redis failure never fails a request: the cache is skipped and the error logged.
"""

from __future__ import annotations

import hashlib
import logging

from redis import asyncio as aioredis
from redis.exceptions import RedisError

import codeprm
from codeprm.api.executor import EvaluateRequest, EvaluateResponse

log = logging.getLogger(__name__)
_UNCACHED = {"timeout", "sandbox_error"}


class VerdictCache:
    def __init__(
        self, redis_url: str, ttl_s: int, prefix: str = "codeprm:executor:verdict"
    ) -> None:
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, request: EvaluateRequest, timeout_s: float, memory_mb: int) -> str:
        canonical = request.model_copy(update={"timeout_s": timeout_s, "memory_mb": memory_mb})
        digest = hashlib.sha256(
            f"{codeprm.__version__}\0{canonical.model_dump_json()}".encode()
        ).hexdigest()
        return f"{self.prefix}:{digest}"

    async def get(self, key: str) -> EvaluateResponse | None:
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            log.warning("verdict cache unavailable", extra={"error": str(exc)})
            return None
        if raw is None:
            return None
        return EvaluateResponse.model_validate_json(raw).model_copy(update={"cached": True})

    async def put(self, key: str, response: EvaluateResponse) -> None:
        if response.status in _UNCACHED:
            return
        try:
            await self.redis.set(key, response.model_dump_json(), ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("verdict cache unavailable", extra={"error": str(exc)})

    async def close(self) -> None:
        await self.redis.aclose()
