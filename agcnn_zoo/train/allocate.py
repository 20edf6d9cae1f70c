"""Which runs a time budget buys, and with which schedule: the plan of ``eval/campaign.py``.

Input: per name, its training rate measured on the device (images/s at the batch it will run
with) and, for a run already started in an earlier call, the recipe it runs (frozen: a
checkpoint can only be resumed with the recipe it was started with) and the epochs it has done.
Priority: started runs first (their progress is kept), then the cheapest complete recipe first.
Each run gets its complete recipe while the budget holds it; the first one that does not fit is
shortened (:func:`agcnn_zoo.train.budget.shortened`) to the time left, if that still buys
``min_epochs``; the names after it wait for a later call. A started run that does not fit runs
for the time left and continues in the next call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .budget import epoch_seconds, epochs_within, shortened
from .recipes import Recipe, recipe_for

__all__ = ["Planned", "allocate", "run_seconds"]


@dataclass
class Planned:
    name: str
    recipe: Recipe          # as it will run
    seconds: float          # what it is expected to take from now (the time it is given)
    complete: bool          # the authors' number of epochs
    resumed: bool           # started in an earlier call


def run_seconds(recipe: Recipe, rate: float, epochs_done: int = 0, *, train_images: int = 45000,
                val_images: int = 5000, test_images: int = 10000, startup_s: float = 20.0) -> float:
    """Seconds of the rest of a run: its epochs, the test set once, and the process start."""
    left = max(recipe.epochs - epochs_done, 0)
    return (left * epoch_seconds(rate, train_images, val_images)
            + epoch_seconds(rate * 3, test_images) + startup_s)


def allocate(rates: Dict[str, float], seconds: float, *, batch: Optional[int] = None,
             frozen: Optional[Dict[str, Tuple[Recipe, int]]] = None, min_epochs: int = 5,
             **sizes) -> Tuple[List[Planned], List[str]]:
    """(the runs of this call in order, the names left for a later call). ``rates``: name ->
    measured training images/s (names without a rate are left out); ``batch``: the batch of new
    runs (lr scaled with it); ``frozen``: name -> (recipe, epochs done) of started runs."""
    frozen = frozen or {}
    plans: List[Planned] = []
    later: List[str] = []
    left = seconds

    def full(name: str) -> Recipe:
        base = recipe_for(name)
        return shortened(base, base.epochs, batch) if batch and batch != base.batch_size else base

    started = [n for n in rates if n in frozen]
    fresh = sorted((n for n in rates if n not in frozen),
                   key=lambda n: (run_seconds(full(n), rates[n], **sizes), n))
    for name in started + fresh:
        rate = rates[name]
        if left <= 0:
            later.append(name)
            continue
        if name in frozen:
            recipe, done = frozen[name]
            need = run_seconds(recipe, rate, done, **sizes)
            plans.append(Planned(name, recipe, min(need, left),
                                 recipe.epochs == recipe_for(name).epochs, True))
            left -= need
            continue
        recipe = full(name)
        need = run_seconds(recipe, rate, **sizes)
        if need <= left:
            plans.append(Planned(name, recipe, need, True, False))
            left -= need
            continue
        overhead = run_seconds(recipe, rate, recipe.epochs, **sizes)  # test and start-up only
        epochs = epochs_within(left - overhead, rate, sizes.get("train_images", 45000),
                               sizes.get("val_images", 5000), cap=recipe.epochs)
        if epochs >= min_epochs:
            cut = shortened(recipe_for(name), epochs, recipe.batch_size)
            plans.append(Planned(name, cut, left, False, False))
        else:
            later.append(name)
        left = 0
    return plans, later
