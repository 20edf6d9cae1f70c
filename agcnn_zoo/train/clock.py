"""When a run checkpoints inside an epoch, and when it stops: a wall clock checked after every
training step, the same decision on every rank.

A long epoch (a CIFAR-10 epoch of a p4m network on a CPU takes hours) must not be lost when a
process is killed; the engine asks :meth:`CheckpointClock.after_step` and writes a checkpoint
holding the step index inside the epoch (resumed exactly: see the engine). Under torchrun the
ranks agree through one all-reduce every ``sync_every`` steps (each rank's clock differs).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

__all__ = ["CheckpointClock", "TrainingStopped"]


class TrainingStopped(RuntimeError):
    """The run reached its ``stop_at`` time; its checkpoint was written and it can be resumed."""

    def __init__(self, out, epoch: int, step: int):
        self.out, self.epoch, self.step = out, epoch, step
        super().__init__(f"stopped at its time limit in epoch {epoch + 1}, after step {step}; "
                         f"its checkpoint is in {out}: resume it with --resume")


class CheckpointClock:
    """``after_step()`` returns None, "save" (``every_s`` passed since the last checkpoint) or
    "stop" (``stop_at`` reached); ``saved()`` restarts the interval. ``now`` is injectable so
    that the decisions can be driven step by step."""

    def __init__(self, every_s: Optional[float] = None, stop_at: Optional[float] = None,
                 world: int = 1, sync_every: int = 16, now: Callable[[], float] = time.time,
                 device: Optional[torch.device] = None):
        self.every_s, self.stop_at, self.world = every_s, stop_at, world
        self.sync_every, self.now, self.device = sync_every, now, device
        self.last = now()
        self.steps = 0

    @property
    def active(self) -> bool:
        return self.every_s is not None or self.stop_at is not None

    def saved(self) -> None:
        self.last = self.now()

    def _local(self) -> int:
        t = self.now()
        if self.stop_at is not None and t >= self.stop_at:
            return 2
        if self.every_s is not None and t - self.last >= self.every_s:
            return 1
        return 0

    def after_step(self) -> Optional[str]:
        if not self.active:
            return None
        self.steps += 1
        if self.world == 1:
            code = self._local()
        elif self.steps % self.sync_every:
            return None
        else:  # every rank takes the most urgent decision of any rank
            flag = torch.tensor([self._local()], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            code = int(flag.item())
        return (None, "save", "stop")[code]

    def should_stop(self) -> bool:
        """At an epoch end (every rank reaches it): whether ``stop_at`` has passed, agreed."""
        if self.stop_at is None:
            return False
        code = int(self.now() >= self.stop_at)
        if self.world > 1:
            flag = torch.tensor([code], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            code = int(flag.item())
        return bool(code)
