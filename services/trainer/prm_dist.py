"""PRM training over several processes, through torch.distributed: DDP or FSDP (full shard).

`torchrun` and `accelerate launch` both start one process per device and describe the job in
the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); `start`
reads it and joins the process group (NCCL on CUDA, gloo on CPU). Without those variables
the run is a single process and nothing here touches torch.distributed.

* `ddp`: every process holds the whole model; gradients are all-reduced after the last
  micro-batch of a step.
* `fsdp`: FSDP2's `fully_shard` on every decoder layer and on the root, so parameters,
  gradients and AdamW state are split across processes and each layer's weights are gathered
  only while it runs: for models whose weights and optimizer state do not fit one device.

Both average gradients over processes; the trainer multiplies its loss by the world size, so
what is applied is the sum of every process's share of the step's loss (its lines divided by
the step's global line count). Checkpoints are world-size free: the model and optimizer state
are gathered into full tensors keyed by parameter name, so a run saved on 8 processes resumes
on 2, or on 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from codeprm.prm_model import resolve_device

Parallel = Literal["ddp", "fsdp"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Processes:
    """This process's place in the job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool
    """`start` joined the process group, so `stop` leaves it (a caller's own group is kept)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes metrics, checkpoints and the final model."""
        return self.rank == 0


def start(device: str) -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world == 1:
        return Processes(0, 1, resolved, owns_group=False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local)  # one device per process, chosen by the launcher
        torch.cuda.set_device(resolved)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), resolved, owns_group=owns)


def stop(procs: Processes) -> None:
    if procs.owns_group:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, procs: Processes, parallel: Parallel) -> torch.nn.Module:
    """The module to train through. Under FSDP that is `model` itself, sharded in place (its
    forward gathers each layer's weights), so evaluating through `model` works too; under DDP
    it is a wrapper, and `model` stays the plain module (same parameters)."""
    if procs.world == 1:
        return model.to(procs.device)
    if parallel == "ddp":
        model.to(procs.device)
        ids = [procs.device.index] if procs.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    # bf16 compute with fp32 master weights and fp32 gradient reduction on GPUs, as the
    # single-device path's autocast does; CPUs compute in fp32.
    cuda = procs.device.type == "cuda"
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if cuda else None, reduce_dtype=torch.float32
    )
    mesh = dist.device_mesh.init_device_mesh(procs.device.type, (procs.world,))
    layers = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layers:  # the decoder layers (transformers names them)
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def sync_gradients(trained: torch.nn.Module, is_last: bool) -> Any:
    """Context for one micro-batch's backward: gradients are reduced across processes only on
    the step's last micro-batch (the others accumulate locally)."""
    if isinstance(trained, DistributedDataParallel) and not is_last:
        return trained.no_sync()
    if isinstance(trained, FSDPModule):
        trained.set_requires_gradient_sync(is_last)
    return nullcontext()


def sum_across(values: Sequence[float], procs: Processes) -> list[float]:
    if procs.world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=procs.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def map_shared(items: Sequence[T], fn: Callable[[T], R], procs: Processes) -> list[R]:
    """`fn` of every item, in order, on every process, with the items dealt round-robin
    among processes. Every process calls `fn` the same number of times, because a sharded
    model's forward pass is a collective: one short of an item recomputes item 0 and drops it."""
    if procs.world == 1:
        return [fn(item) for item in items]
    rounds = -(-len(items) // procs.world)
    mine: dict[int, R] = {}
    for k in range(rounds):
        index = k * procs.world + procs.rank
        if index < len(items):
            mine[index] = fn(items[index])
        elif items:
            fn(items[0])
    gathered: list[dict[int, R]] = [{} for _ in range(procs.world)]
    dist.all_gather_object(gathered, mine)
    merged = {k: v for part in gathered for k, v in part.items()}
    return [merged[k] for k in range(len(items))]


# ---------------------------------------------------------------- checkpoints


def _options(procs: Processes, *, broadcast_from_rank0: bool = False) -> StateDictOptions:
    # Full tensors keyed by parameter name: the same file whatever the world size. With
    # several processes they are gathered to rank 0's CPU memory only.
    return StateDictOptions(
        full_state_dict=True,
        cpu_offload=procs.world > 1,
        broadcast_from_rank0=broadcast_from_rank0,
    )


def model_state(model: torch.nn.Module, procs: Processes) -> dict[str, Any]:
    """The full model state on rank 0 ({} elsewhere); every process must call it."""
    return get_model_state_dict(model, options=_options(procs))


def optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, procs: Processes
) -> dict[str, Any]:
    """The full AdamW state keyed by parameter name, on rank 0; every process must call it."""
    return get_optimizer_state_dict(model, optimizer, options=_options(procs))


def load_optimizer_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    procs: Processes,
) -> None:
    """Load a full state that rank 0 read (others pass {}): it is broadcast and each process
    keeps its shard, so the saving run's world size does not matter."""
    options = _options(procs, broadcast_from_rank0=procs.world > 1)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)
