"""Multi-process training helpers (PyTorch DDP launched by ``torchrun``).

``torchrun --nproc_per_node N -m stetho.cli train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
creates the process group (NCCL on GPUs, gloo on CPUs). Without those variables everything runs in
one process and the helpers are no-ops. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "destroy_distributed",
    "init_distributed",
    "process_rank",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: Global rank (0 in a single-process run).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        initialized_here: Whether :func:`init_distributed` created the process group (and
            :func:`destroy_distributed` should tear it down).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files and shows progress)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def process_rank() -> int:
    """Global rank of this process: the process group's, else ``RANK`` from ``torchrun``, else 0.

    The one place that reads ``RANK`` (pipelines ask it after training, when the group is gone).
    """
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if the environment describes one.

    Args:
        backend: ``"gloo"``/``"nccl"``; default NCCL when CUDA is available, else gloo.

    Returns:
        This process's :class:`DistInfo` (rank 0 of 1 without ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    logger.info("joined %s process group: rank %d of %d", backend, rank, world)
    return DistInfo(rank, world, local_rank, initialized_here=True)


def destroy_distributed(info: DistInfo) -> None:
    """Tear down the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all processes (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``value`` over processes (a copy; ``value`` itself in a single process)."""
    if not info.enabled:
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Picklable ``obj`` of every process, in rank order."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """``obj`` of process ``src`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
