"""One epoch of training and one evaluation pass: batches from a ``Source``, the recipe's
optimizer and schedule, bf16 autocast and channels_last where asked, sums reduced over ranks.

An epoch can start at a step inside it (``start_step`` with ``partial``: the augmentation
generator's state and the running sums of a mid-epoch checkpoint), so that a resumed run
continues from that very step; ``on_step`` sees every step (the checkpoint clock)."""
from __future__ import annotations

import contextlib
import math
import sys
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from .distributed import all_reduce, rank_world
from .recipes import Recipe
from .splits import Source, TrainingData

__all__ = ["make_optimizer", "make_scheduler", "evaluate", "train_epoch"]


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    # augmentation randomness depends on (seed, epoch, rank) and the step: a mid-epoch
    # checkpoint keeps the generator's state
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def make_scheduler(recipe: Recipe, opt):
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), recipe.gamma)
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=recipe.plateau_factor,
                                                          patience=recipe.plateau_patience)
    return None


def autocast(settings):
    if settings.amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, settings, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: torch.nn.Module, source: Source, settings, device: torch.device,
             batch_size: int = 256) -> Tuple[float, float, int]:
    """(top-1 %, mean loss, images) of ``model`` on ``source``, sharded over ranks."""
    rank, world = rank_world()
    was_training = model.training
    model.eval()
    idx = torch.arange(rank, len(source), world)
    correct = loss = 0.0
    for start in range(0, len(idx), batch_size):
        x, y = source.batch(idx[start:start + batch_size])
        x, y = to_device(x, settings, device), y.to(device)
        with autocast(settings):
            out = model(x)
        loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
    model.train(was_training)
    correct, loss, n = all_reduce([correct, loss, float(len(idx))], device)
    return 100.0 * correct / max(n, 1), loss / max(n, 1), int(n)


def _epoch_order(data: TrainingData, settings, epoch: int) -> torch.Tensor:
    """This rank's sample order for ``epoch`` (DistributedSampler's, seeded by the run)."""
    from torch.utils.data import DistributedSampler
    rank, world = rank_world()
    sampler = DistributedSampler(range(len(data.train)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=settings.seed, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64)


def train_epoch(model, train_model, opt, data: TrainingData, recipe: Recipe, settings,
                device: torch.device, epoch: int, progress: bool, start_step: int = 0,
                partial: Optional[dict] = None, on_step: Optional[Callable] = None
                ) -> Tuple[float, float]:
    """One epoch from step ``start_step``; (train top-1 %, mean loss) over the ranks.
    ``on_step(step, steps, snapshot)`` runs after every step; ``snapshot()`` gives what a
    checkpoint at that step must hold."""
    rank, world = rank_world()
    order = _epoch_order(data, settings, epoch)
    per_rank = recipe.batch_size // world
    gen = epoch_generator(settings.seed, epoch, rank)
    steps = math.ceil(len(order) / per_rank)
    bar = None
    if progress and rank == 0 and sys.stderr.isatty():
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   unit="batch", leave=False)
    model.train()
    # running sums stay on the device: reading them every step would stall a GPU each step
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    if partial is not None:
        gen.set_state(partial["gen"])
        correct += partial["correct"]
        loss_sum += partial["loss_sum"]

    def snapshot() -> dict:
        return {"gen": gen.get_state(), "correct": float(correct), "loss_sum": float(loss_sum)}

    for step in range(start_step, steps):
        x, y = data.train.batch(order[step * per_rank:(step + 1) * per_rank], recipe.augment, gen)
        x, y = to_device(x, settings, device), y.to(device)
        with autocast(settings):
            out = train_model(x)
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (out.argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if on_step is not None:
            on_step(step + 1, steps, snapshot)
    if bar is not None:
        bar.close()
    correct, loss_sum, n = all_reduce([float(correct), float(loss_sum), float(len(order))], device)
    return 100.0 * correct / n, loss_sum / n
