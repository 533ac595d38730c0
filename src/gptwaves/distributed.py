"""Data-parallel helpers (torchrun): rank discovery, process group, and sharding of work.

``torchrun --nproc_per_node N -m gptwaves train ...`` runs DDP training (gloo on CPU, nccl on
GPU): every rank draws the same global batch from the same seeded generator and trains on its
slice, so the averaged gradient equals a single process's with the same global batch; only rank 0
writes files. Recording and spelling sampling shard their batches across ranks (batch ``b`` goes
to rank ``b % world``) and rank 0 merges them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def info() -> DistInfo:
    """Rank information from the torchrun environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> DistInfo:
    """Initialise the default process group once (gloo for CPU, nccl for CUDA)."""
    d = info()
    if d.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend=backend)
    return d


def setup(device: str = "auto") -> tuple[torch.device, DistInfo]:
    """The device of this process and its rank information: one setup for train, record and spelling.

    Without torchrun: ``runtime.pick_device(device)``. Under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK`` (each rank its own GPU) and the process group is initialised with nccl;
    on CPU with gloo.
    """
    from .runtime import pick_device

    dev = pick_device(device)
    d = info()
    if d.enabled:
        if dev.type == "cuda":
            dev = torch.device("cuda", d.local_rank)
        init(dev.type)
    return dev, d


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_scalar(x: float, device: torch.device) -> float:
    """Average a float over ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def any_flag(flag: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shard(n_items: int, d: DistInfo | None = None) -> list[int]:
    """Indices of the work items (batches) this rank handles: b % world == rank."""
    d = d or info()
    return [b for b in range(n_items) if b % d.world == d.rank]
