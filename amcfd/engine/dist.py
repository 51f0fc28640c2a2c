"""Distributed helpers for torchrun (RANK / LOCAL_RANK / WORLD_SIZE from the environment)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from amcfd.registry import ConfigError


def init_distributed(launcher: str, backend: str = "auto") -> tuple[int, int, torch.device | None]:
    """Start the process group for ``--launcher pytorch``; returns (rank, world_size, device).

    NCCL on CUDA, gloo on CPU (``backend: auto``). The device is None for ``launcher: none``
    (the caller picks it from the ``device`` option).
    """
    if launcher == "none":
        return 0, 1, None
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("--launcher pytorch needs RANK/WORLD_SIZE: start with "
                           "torchrun --nproc_per_node=N train.py -opt ... --launcher pytorch")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); identity when not distributed."""
    t = t.clone()
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def reduce_mean_dict(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over ranks (for logging)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    stacked = all_reduce_sum(stacked) / world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
