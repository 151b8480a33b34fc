"""Connecting to the Redis that holds the labeler's queue (jobs serialised as JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis, RedisSettings, create_pool

from codeprm.services.labeler.runs import RunStore, job_deserializer, job_serializer
from codeprm.services.labeler.settings import LabelerSettings


def redis_settings(settings: LabelerSettings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


async def connect(settings: LabelerSettings) -> ArqRedis:
    pool: ArqRedis = await create_pool(
        redis_settings(settings),
        default_queue_name=settings.queue_name,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    return pool


@asynccontextmanager
async def open_store(settings: LabelerSettings) -> AsyncIterator[RunStore]:
    """The runs of this deployment, over a connection closed on exit."""
    redis = await connect(settings)
    try:
        yield RunStore(redis, settings.key_prefix)
    finally:
        await redis.aclose()
