"""A recipe shortened to a compute budget, the one documented way.

The authors' CIFAR-10 recipes run 300-350 epochs; a budget (minutes of one GPU) allows fewer.
:func:`shortened` keeps the recipe's shape and scales it in time:

* ``epochs`` becomes E' < E;
* every MultiStepLR milestone m becomes ``round(m * E' / E)`` (the learning rate falls at the
  same fractions of the run); milestones that would coincide or reach E' are dropped;
* optimizer, momentum, weight decay, gamma and augmentation are unchanged;
* with a larger batch B' (a GPU's throughput), lr becomes ``lr * B' / B`` (the linear scaling
  rule of Goyal et al. 2017); the batch is never made smaller.

A run of a shortened recipe records ``training.shortened: true`` and every changed field
(``training.changed_from_recipe``, and a note), so it is never mistaken for the authors' schedule.
:func:`epochs_within` gives E' for a number of seconds at a measured training rate.
"""
from __future__ import annotations

from typing import Optional

from .recipes import Recipe

__all__ = ["shortened", "epochs_within", "epoch_seconds"]


def shortened(recipe: Recipe, epochs: int, batch_size: Optional[int] = None) -> Recipe:
    """``recipe`` cut to ``epochs`` (and run at ``batch_size``), as the module docstring says."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= recipe.epochs:
        raise ValueError(f"a shortened schedule has 1 to {recipe.epochs} epochs, got {epochs!r}")
    batch = recipe.batch_size if batch_size is None else batch_size
    if batch < recipe.batch_size:
        raise ValueError(f"batch {batch} is below the recipe's {recipe.batch_size}; a budget only "
                         f"ever raises the batch")
    milestones = []
    for m in recipe.milestones:
        scaled = max(1, round(m * epochs / recipe.epochs))
        if scaled < epochs and (not milestones or scaled > milestones[-1]):
            milestones.append(scaled)
    return recipe.overridden(epochs=epochs, milestones=tuple(milestones), batch_size=batch,
                             lr=recipe.lr * batch / recipe.batch_size)


def epoch_seconds(images_per_s: float, train_images: int, val_images: int = 0,
                  eval_speedup: float = 3.0) -> float:
    """Seconds of one epoch: the training images at the training rate, the validation images
    at ``eval_speedup`` times it (a forward pass only: about a third of a training step)."""
    if not images_per_s > 0:
        raise ValueError(f"images_per_s must be positive, got {images_per_s!r}")
    return train_images / images_per_s + val_images / (images_per_s * eval_speedup)


def epochs_within(seconds: float, images_per_s: float, train_images: int, val_images: int = 0,
                  cap: Optional[int] = None) -> int:
    """Whole epochs that fit in ``seconds`` (at most ``cap``); 0 when not even one does."""
    n = int(seconds // epoch_seconds(images_per_s, train_images, val_images))
    return min(n, cap) if cap is not None else n
