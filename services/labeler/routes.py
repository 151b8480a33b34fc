"""Labeler HTTP routes: submit a run, list and follow runs, export a run's samples."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from codeprm.api.labeler import LabelRunInfo, LabelRunRequest
from codeprm.datasets import DatasetError
from codeprm.services.labeler.completions import BackendUnreachable
from codeprm.services.labeler.runs import RunNotFound, RunStore, RunUnfinished
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.serving.errors import BadInput, Conflict, NotFound

router = APIRouter(prefix="/v1/label")


# Dependencies are async: FastAPI runs plain `def` ones in a thread pool, a thread hand-off
# per request for a few attribute lookups.
async def get_store(request: Request) -> RunStore:
    settings: LabelerSettings = request.app.state.settings
    return RunStore(request.app.state.redis, settings.key_prefix, settings.stall_warning_s)


StoreDep = Annotated[RunStore, Depends(get_store)]


@router.post("/runs", response_model=LabelRunInfo, status_code=201)
async def submit(body: LabelRunRequest, store: StoreDep, request: Request) -> LabelRunInfo:
    """Create a run and enqueue one job per problem."""
    try:
        settings: LabelerSettings = request.app.state.settings
        return await store.submit(body, settings.queue_name, settings.openai_api_key)
    except (DatasetError, BackendUnreachable) as exc:
        raise BadInput(str(exc)) from None


@router.get("/runs", response_model=list[LabelRunInfo])
async def list_runs(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[LabelRunInfo]:
    """The newest runs first, each with its progress (as `GET /runs/{run_id}`)."""
    return await store.list_runs(limit)


@router.get("/runs/{run_id}", response_model=LabelRunInfo)
async def status(run_id: str, store: StoreDep) -> LabelRunInfo:
    """Progress: done, failed (with reasons), remaining, samples so far, live workers."""
    try:
        return await store.info(run_id)
    except RunNotFound:
        raise NotFound(f"no labeling run {run_id!r}") from None


@router.get("/runs/{run_id}/export")
async def export(
    run_id: str, store: StoreDep, request: Request, partial: bool = False
) -> StreamingResponse:
    """The samples as JSONL (TRL stepwise fields + line_labels + provenance). A run with
    units still queued or running is refused (409) unless `partial=true`. The headers say
    how many units the rows come from and how many failed (`status` lists why)."""
    try:
        info = await store.info(run_id)
    except RunNotFound:
        raise NotFound(f"no labeling run {run_id!r}") from None
    if not info.finished and not partial:
        raise Conflict(str(RunUnfinished(info)))
    lines: AsyncIterator[str] = store.export(run_id, request.app.state.settings.export_ttl_s)
    counts = {
        "X-Codeprm-Units-Total": info.total,
        "X-Codeprm-Units-Done": info.done,
        "X-Codeprm-Units-Failed": info.failed,
        "X-Codeprm-Units-Remaining": info.remaining,
    }
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={name: str(value) for name, value in counts.items()},
    )
