"""Data-parallel plumbing under ``torchrun``: ranks, collectives, and every rank's random state.
One process (no ``WORLD_SIZE``) makes each of these a no-op."""
from __future__ import annotations

import random
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..io import env
from .checkpoint import state_digest

__all__ = ["rank_world", "init_distributed", "all_reduce", "barrier", "gather", "gather_rng",
           "set_rng_state", "sync_state", "rank_state_hashes"]


def rank_world() -> Tuple[int, int]:
    """(rank, world size): torchrun sets WORLD_SIZE / RANK; one process otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> Tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call created the process group)."""
    world, local_rank = env.distributed()
    if world <= 1:
        return 0, 1, device, False
    import torch.distributed as dist
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        local = rank if local_rank is None else local_rank
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return rank, dist.get_world_size(), device, owned


def all_reduce(values: List[float], device: torch.device) -> List[float]:
    """The sums of ``values`` over the ranks."""
    if rank_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if rank_world()[1] > 1:
        torch.distributed.barrier()


def gather(obj) -> list:
    """``obj`` of every rank, in rank order (a list of one without torchrun)."""
    world = rank_world()[1]
    if world == 1:
        return [obj]
    out: List[Optional[object]] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_rng() -> List[dict]:
    """Every rank's random states (torch, numpy, python, CUDA), in rank order."""
    return gather(_rng_state())


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def sync_state(model: torch.nn.Module) -> None:
    """Make every rank's parameters and buffers rank 0's (DDP broadcasts buffers only at the
    start of a forward, so each rank's last batch-norm update would otherwise differ)."""
    if rank_world()[1] == 1:
        return
    for t in model.state_dict().values():
        torch.distributed.broadcast(t, 0)


def rank_state_hashes(model: torch.nn.Module) -> List[str]:
    """The state digest of each rank's final weights (all ranks must agree)."""
    return gather(state_digest(model.state_dict()))
