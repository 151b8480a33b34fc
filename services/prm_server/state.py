"""What the scoring endpoints need once the model is loaded: the model and its batcher."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from prometheus_client import CollectorRegistry

from codeprm.geometry import EncodedLines
from codeprm.prm_model import LoadedPrm, forward
from codeprm.services.prm_server.batcher import BatchMetrics, DynamicBatcher
from codeprm.services.prm_server.settings import PrmSettings

Scores = list[float | None]


@dataclass
class Scorer:
    prm: LoadedPrm
    batcher: DynamicBatcher[EncodedLines, Scores]
    settings: PrmSettings


def default_token_budget(device: torch.device) -> int:
    # A GPU runs a 64x512-token batch in about the time of one item; a CPU's cost grows with
    # the batch, and past a few thousand tokens attention spills out of its caches.
    return 32768 if device.type == "cuda" else 4096


def start_scorer(prm: LoadedPrm, settings: PrmSettings, registry: CollectorRegistry) -> Scorer:
    """Must run inside the event loop: the batcher's loop is a task of it."""
    batcher = DynamicBatcher[EncodedLines, Scores](
        partial(forward, prm),
        BatchMetrics(registry),
        token_budget=settings.token_budget or default_token_budget(prm.device),
        max_batch_items=settings.max_batch_items,
        max_wait_s=settings.max_wait_ms / 1000,
        max_pending=settings.max_pending,
    )
    batcher.start()
    return Scorer(prm, batcher, settings)
