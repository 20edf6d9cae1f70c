"""A training run: seeded, deterministic on CPU, resumable from an atomic checkpoint, data-parallel
under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPUs). Model selection on the
validation split; the test split is evaluated once, with the selected weight, at the end of a
run. With ``validation=False`` (the fixed-schedule protocol) the validation split joins the
training data and the weight after the last epoch is the result: nothing is chosen by looking at
any evaluation.

The run's parts: :mod:`.checkpoint` (the file, and whether a folder's run can be continued),
:mod:`.run_folder` (one run per folder, only its own files), :mod:`.distributed`, :mod:`.loop`
(an epoch, an evaluation), :mod:`.finish` (the weight, its record, the curves), :mod:`.clock`
and :mod:`.speed` (when to checkpoint or stop inside an epoch, GPU options).

Files in ``out`` (rank 0 writes, each atomically; the folder is locked for the whole run and
only files the run created are ever replaced):
``checkpoint.safetensors``  model, optimizer, scheduler, every rank's RNG states, epoch, best
                   validation accuracy and its weights (with their digest), metrics, the run's
                   settings (checked on --resume), the files the run wrote; tensors and JSON only,
                   nothing unpickled. Written after every epoch and, with
                   ``Speed.checkpoint_every_s``, inside an epoch too: then ``step`` (training
                   steps done in the epoch) and ``partial`` (per rank: the augmentation
                   generator's state and the epoch's running sums) let a resumed run continue
                   from that very step, bit for bit on a CPU
``metrics.jsonl``  one line per epoch
``<weight id>.safetensors``, ``record.json``  the selected weight and its manifest record
``curves.png``     learning curves, when matplotlib is installed
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from ..api import create_model
from ..hub.weight_id import WeightId
from ..io import atomic_write_bytes
from ..registry import get_entry
from .checkpoint import CHECKPOINT, CheckpointError, ResumeError, capture, open_state, save_checkpoint
from .clock import CheckpointClock, TrainingStopped
from .distributed import (barrier, gather, gather_rng, init_distributed, rank_state_hashes,
                          set_rng_state, sync_state)
from .finish import CURVES, RECORD, finish
from .loop import evaluate, make_optimizer, make_scheduler, train_epoch
from .recipes import Recipe, recipe_for
from .run_folder import claim, refuse_foreign
from .speed import Speed, compiled, configure_backends, prepare_model
from .splits import TrainingData, load_training_data, without_validation

__all__ = ["RunSettings", "TrainResult", "train", "run", "ResumeError", "CHECKPOINT", "METRICS",
           "Speed", "TrainingStopped", "evaluate"]

METRICS = "metrics.jsonl"
_TAG_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines a run besides the recipe (both are recorded and checked on resume)."""
    name: str
    dataset: str
    seed: int = 0
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    limit_test: Optional[int] = None
    tag: Optional[str] = None
    threads: Optional[int] = None
    amp: Optional[str] = None          # "bf16" (CUDA)
    channels_last: bool = False
    validation: bool = True            # False: train on every training image, keep the last epoch

    @property
    def weight_id(self) -> str:
        return str(WeightId.of(self.name, self.tag))

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.limit_train, self.limit_val, self.limit_test))


@dataclass
class TrainResult:
    out: Path
    weight: Path
    record: dict
    best_epoch: int
    val_top1: float
    test_top1: Optional[float]
    epochs_run: int


# ----------------------------------------------------------------------------- checks

def _check_int(name: str, v, minimum: int = 0, optional: bool = True) -> None:
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise TypeError(f"{name} must be an int >= {minimum}, got {v!r} ({type(v).__name__})")


def _check_settings(recipe: Recipe, settings: RunSettings) -> None:
    """Refuse, before anything runs, settings that cannot make a useful run."""
    for k in ("limit_train", "limit_val", "limit_test", "threads"):
        _check_int(k, getattr(settings, k), minimum=1)
    _check_int("seed", settings.seed, minimum=0, optional=False)
    if settings.tag is not None and (not settings.tag or set(settings.tag) - _TAG_CHARS):
        raise ValueError(f"tag must use a-z, 0-9, '_' and '-' only, got {settings.tag!r}")
    if not settings.validation and settings.limit_val is not None:
        raise ValueError("limit_val limits the validation split, and this run has none")
    if not settings.validation and recipe.schedule == "plateau":
        raise ValueError("a plateau schedule steps on validation accuracy: it needs the validation "
                         "split (leave validation on, or use another schedule)")
    if settings.amp not in (None, "bf16"):
        raise ValueError(f"amp must be 'bf16' or None, got {settings.amp!r}")


def _resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def _settings_dict(recipe: Recipe, settings: RunSettings, world: int) -> dict:
    r = recipe.as_dict()
    r.pop("epochs")  # the one field a resumed run may change
    return {"recipe": r, "settings": dataclasses.asdict(settings), "world_size": world}


def _output_names(settings: RunSettings) -> List[str]:
    """Every file a run writes into its folder."""
    return [CHECKPOINT, METRICS, RECORD, CURVES, f"{settings.weight_id}.safetensors"]


# ----------------------------------------------------------------------------- the run

@dataclass
class _Run:
    """What one run holds while it trains (every rank has one)."""
    recipe: Recipe
    settings: RunSettings
    out: Path
    entry: object
    device: torch.device
    rank: int
    world: int
    speed: Speed
    command: Optional[str]
    progress: bool
    ident: dict = field(default_factory=dict)
    data: Optional[TrainingData] = None
    model: Optional[torch.nn.Module] = None
    opt: object = None
    sched: object = None
    best: dict = field(default_factory=lambda: {"top1": -1.0, "epoch": -1, "state": None, "sha256": None})
    metrics: List[dict] = field(default_factory=list)
    outputs: set = field(default_factory=set)
    epoch: int = 0
    wall_before: float = 0.0
    t0: float = field(default_factory=time.time)

    def wall(self) -> float:
        return self.wall_before + time.time() - self.t0

    def save(self, epochs_done: int, step: int = 0, partials: Optional[list] = None) -> None:
        """The checkpoint of every rank's state (rank 0 writes it); collective. The checkpoint
        is the run's own from its first write (a mid-epoch one included), so a resume may
        replace it."""
        self.outputs.add(CHECKPOINT)
        rng = gather_rng()
        if self.rank == 0:
            save_checkpoint(self.out / CHECKPOINT, {
                "ident": self.ident, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "rng": rng, "epoch": epochs_done, "step": step, "partial": partials,
                "best": self.best, "metrics": self.metrics, "wall_s": self.wall(),
                "outputs": sorted(self.outputs)})


def _build(run: _Run, state: Optional[dict]) -> None:
    """Model, optimizer and scheduler seeded from the run's seed, continued from ``state``."""
    s = run.settings
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    random.seed(s.seed)
    run.model = create_model(s.name).to(run.device)
    if s.channels_last:
        run.model = run.model.to(memory_format=torch.channels_last)
    prepare_model(run.model, run.speed, run.device)
    run.opt = make_optimizer(run.recipe, run.model.parameters())
    run.sched = make_scheduler(run.recipe, run.opt)
    if state is None:
        # each rank draws its own dropout masks; the model above was built from `seed` alone
        torch.manual_seed(s.seed + run.rank)
        return
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        if run.sched is not None:
            run.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][run.rank])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{run.out / CHECKPOINT}: its run state does not fit {s.name} "
                              f"({reason})") from None
    run.epoch, run.best, run.metrics = state["epoch"], state["best"], state["metrics"]
    run.wall_before, run.outputs = state["wall_s"], set(state["outputs"])


def _load_data(run: _Run, data_dir, download: bool) -> None:
    s = run.settings
    data = load_training_data(s.dataset, run.entry.dataset, data_dir, download=download,
                              progress=run.progress and run.rank == 0)
    if not s.validation:
        data = without_validation(data)
    data.train = data.train.limited(s.limit_train)
    if data.val is not None:
        data.val = data.val.limited(s.limit_val)
    if run.speed.data_on_device:
        data.train = data.train.to(run.device)
        data.val = data.val.to(run.device) if data.val is not None else None
    run.data = data


def _write_metrics(out: Path, metrics: List[dict]) -> None:
    text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics)
    atomic_write_bytes(out / METRICS, text.encode())


def _epoch(run: _Run, train_model, clock: CheckpointClock, start_step: int,
           partial: Optional[dict]) -> None:
    """Train one epoch (from ``start_step``), validate, step the schedule, checkpoint."""
    epoch, te = run.epoch, time.time()

    def on_step(step: int, steps: int, snapshot) -> None:
        action = clock.after_step()
        if action is None or step == steps:  # the epoch's end checkpoints anyway
            return
        run.save(epoch, step, gather(snapshot()))
        clock.saved()
        if action == "stop":
            barrier()
            raise TrainingStopped(run.out, epoch, step)

    train_top1, train_loss = train_epoch(run.model, train_model, run.opt, run.data, run.recipe,
                                         run.settings, run.device, epoch, run.progress,
                                         start_step, partial, on_step if clock.active else None)
    sync_state(run.model)
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_top1": train_top1}
    if run.data.val is not None:
        val_top1, val_loss, _ = evaluate(run.model, run.data.val, run.settings, run.device)
        row.update(val_loss=val_loss, val_top1=val_top1)
        if val_top1 > run.best["top1"]:  # ties keep the earlier epoch
            run.best = capture(run.model, val_top1, epoch + 1)
    else:  # the fixed schedule: the latest epoch is the result (its state is the model's)
        run.best = {"top1": None, "epoch": epoch + 1, "state": None, "sha256": None}
    if run.sched is not None:
        run.sched.step(row["val_top1"]) if run.recipe.schedule == "plateau" else run.sched.step()
    run.metrics.append({**row, "lr": run.opt.param_groups[0]["lr"],
                        "seconds": round(time.time() - te, 3)})
    run.epoch = epoch + 1
    run.outputs.update((CHECKPOINT, METRICS))  # metrics.jsonl follows the checkpoint
    run.save(run.epoch)
    clock.saved()
    if run.rank == 0:
        _write_metrics(run.out, run.metrics)
        val = (f", val loss {row['val_loss']:.4f} acc {row['val_top1']:.2f}% (best "
               f"{run.best['top1']:.2f}% @ {run.best['epoch']})" if run.data.val is not None else "")
        print(f"{run.settings.weight_id} epoch {run.epoch}/{run.recipe.epochs}: train loss "
              f"{train_loss:.4f} acc {train_top1:.2f}%{val}, {time.time() - te:.1f} s", flush=True)
    barrier()


def _train(run: _Run, state: Optional[dict]) -> TrainResult:
    """The epochs left, then the outputs of the selected weight."""
    train_model = run.model
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    train_model = compiled(train_model, run.speed)
    clock = CheckpointClock(run.speed.checkpoint_every_s, run.speed.stop_at, run.world,
                            device=run.device)
    start_step = state.get("step", 0) if state else 0
    partial = state["partial"][run.rank] if start_step else None
    while run.epoch < run.recipe.epochs:
        _epoch(run, train_model, clock, start_step, partial)
        start_step, partial = 0, None
        if run.epoch < run.recipe.epochs and clock.should_stop():
            raise TrainingStopped(run.out, run.epoch, 0)
    rank_hashes = rank_state_hashes(run.model)
    if len(set(rank_hashes)) != 1:
        raise RuntimeError(f"the ranks ended with different weights: {rank_hashes}")
    best = run.best
    if best["state"] is None:  # no validation: the last epoch's weight
        best = capture(run.model, None, best["epoch"] if best["epoch"] > 0 else len(run.metrics))
    final = [n for n in _output_names(run.settings) if n not in (CHECKPOINT, METRICS)]
    if not run.outputs.issuperset(final):
        # the final files become the run's before they are written, so that a kill while
        # writing them leaves files the resumed run may replace
        run.outputs.update(final)
        run.best = best
        run.save(run.epoch)
    rec, test_top1 = finish(run, best, rank_hashes)
    return TrainResult(run.out, run.out / f"{run.settings.weight_id}.safetensors", rec,
                       best["epoch"], best["top1"], test_top1, len(run.metrics))


def run(recipe: Recipe, settings: RunSettings, out: Union[str, Path], *,
        data_dir: Optional[Union[str, Path]] = None, download: bool = False, resume: bool = False,
        device: str = "auto", progress: bool = True, command: Optional[str] = None,
        speed: Optional[Speed] = None) -> TrainResult:
    """Train ``settings.name`` with ``recipe``; see the module docstring for what is written.
    ``speed`` (:class:`agcnn_zoo.train.speed.Speed`): how fast, and when to checkpoint or stop;
    a :class:`TrainingStopped` is raised at ``speed.stop_at``, after its checkpoint."""
    _check_settings(recipe, settings)
    entry = get_entry(settings.name)
    dev = _resolve_device(device)
    if settings.amp and dev.type != "cuda":
        raise ValueError("bf16 autocast is a CUDA option; leave --amp off on CPU")
    rank, world, dev, owned = init_distributed(dev)
    try:
        if recipe.batch_size % world:
            raise ValueError(f"batch size {recipe.batch_size} does not split over {world} processes")
        job = _Run(recipe, settings, Path(out), entry, dev, rank, world, speed or Speed(),
                   command, progress)
        return _run(job, data_dir, download, resume)
    finally:
        if owned:
            torch.distributed.destroy_process_group()


def _run(run: _Run, data_dir, download: bool, resume: bool) -> TrainResult:
    if run.settings.threads:
        torch.set_num_threads(run.settings.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    configure_backends(run.speed, run.device)
    names = _output_names(run.settings)
    # rank 0 owns the folder for the whole run; the others only read the checkpoint
    held = claim(run.out, names) if run.rank == 0 else contextlib.nullcontext(run.out)
    with held:
        run.ident = _settings_dict(run.recipe, run.settings, run.world)
        state = open_state(run.out, run.ident, run.recipe.epochs, resume, announce=run.rank == 0)
        if run.rank == 0:
            refuse_foreign(run.out, names, owned=state["outputs"] if state else (),
                           resumed=state is not None)
        _load_data(run, data_dir, download)
        _build(run, state)
        run.t0 = time.time()
        return _train(run, state)


def train(name: str, *, dataset: Optional[str] = None, out: Optional[Union[str, Path]] = None,
          data_dir=None, seed: int = 0, limit_train: Optional[int] = None,
          limit_val: Optional[int] = None, limit_test: Optional[int] = None,
          tag: Optional[str] = None, threads: Optional[int] = None, amp: Optional[str] = None,
          channels_last: bool = False, validation: bool = True, resume: bool = False,
          device: str = "auto", download: bool = False, progress: bool = True,
          command: Optional[str] = None, speed: Optional[Speed] = None,
          **recipe_overrides) -> TrainResult:
    """Train a registered model from its recipe. Recipe fields (``epochs``, ``lr``,
    ``batch_size``, ``weight_decay``, ...) are keyword overrides; a wrong name or type raises
    TypeError naming the field."""
    recipe = recipe_for(name).overridden(**recipe_overrides)
    settings = RunSettings(name=name, dataset=dataset or recipe.dataset, seed=seed,
                           limit_train=limit_train, limit_val=limit_val, limit_test=limit_test,
                           tag=tag, threads=threads, amp=amp, channels_last=channels_last,
                           validation=validation)
    if out is None:
        out = Path("runs") / settings.weight_id
    return run(recipe, settings, out, data_dir=data_dir, download=download, resume=resume,
               device=device, progress=progress, speed=speed,
               command=command or "python -m agcnn_zoo train " + shlex.join([name]))
