"""The training loop: seeded, deterministic on CPU, resumable from an atomic per-epoch
checkpoint, data-parallel under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on
GPUs). Model selection on the validation split; the test split is evaluated once, with the
selected weight, at the end of a run. With ``validation=False`` (the fixed-schedule protocol)
the validation split joins the training data and the weight after the last epoch is the result:
nothing is chosen by looking at any evaluation.

Files in ``out`` (rank 0 writes, each atomically):
``checkpoint.pt``  model, optimizer, scheduler, every rank's RNG states, epoch, best validation
                   accuracy and its weights, metrics, the run's settings (checked on --resume);
                   written after every epoch and, with ``Speed.checkpoint_every_s``, inside an
                   epoch too: then ``step`` (training steps done in the epoch) and ``partial``
                   (per rank: the augmentation generator's state and the epoch's running sums)
                   let a resumed run continue from that very step, bit for bit on a CPU
``metrics.jsonl``  one line per epoch
``<weight id>.safetensors``, ``record.json``  the selected weight and its manifest record
``curves.png``     learning curves, when matplotlib is installed
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..hub.convert import save_safetensors
from ..io import atomic_write_bytes
from ..registry import get_entry
from .clock import CheckpointClock, TrainingStopped
from .recipes import Recipe, recipe_for
from .speed import Speed, compiled, configure_backends, prepare_model
from .splits import Source, TrainingData, load_training_data, without_validation

__all__ = ["RunSettings", "TrainResult", "train", "ResumeError", "CHECKPOINT", "METRICS", "Speed",
           "TrainingStopped"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
_TAG_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class ResumeError(ValueError):
    """--resume against a checkpoint of a different run, or a fresh run over an existing one."""


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
        return f"{self.name}.{self.tag}" if self.tag else self.name

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


# ----------------------------------------------------------------------------- helpers

def _check_int(name: str, v, minimum: int = 0, optional: bool = True) -> None:
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise TypeError(f"{name} must be an int >= {minimum}, got {v!r} ({type(v).__name__})")


def _resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def _dist() -> Tuple[int, int]:
    """(rank, world size): torchrun sets WORLD_SIZE / RANK; one process otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_distributed(device: torch.device) -> Tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    import torch.distributed as dist
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return rank, dist.get_world_size(), device, owned


def _all_reduce(values: List[float], device: torch.device) -> List[float]:
    rank, world = _dist()
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    if _dist()[1] > 1:
        torch.distributed.barrier()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng() -> List[dict]:
    rank, world = _dist()
    mine = _rng_state()
    if world == 1:
        return [mine]
    states: List[Optional[dict]] = [None] * world
    torch.distributed.all_gather_object(states, mine)
    return states  # type: ignore[return-value]


def _gather(obj) -> list:
    """``obj`` of every rank, in rank order (a list of one without torchrun)."""
    if _dist()[1] == 1:
        return [obj]
    out: List[object] = [None] * _dist()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    # augmentation randomness depends on (seed, epoch, rank) only: nothing to checkpoint
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def _make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def _make_scheduler(recipe: Recipe, opt):
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), recipe.gamma)
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=recipe.plateau_factor,
                                                          patience=recipe.plateau_patience)
    return None


def _autocast(settings: RunSettings, device: torch.device):
    if settings.amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib
    return contextlib.nullcontext()


def _to_device(x: torch.Tensor, settings: RunSettings, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: torch.nn.Module, source: Source, settings: RunSettings, device: torch.device,
             batch_size: int = 256) -> Tuple[float, float, int]:
    """(top-1 %, mean loss, images) of ``model`` on ``source``, sharded over ranks."""
    rank, world = _dist()
    was_training = model.training
    model.eval()
    idx = torch.arange(rank, len(source), world)
    correct = loss = 0.0
    for start in range(0, len(idx), batch_size):
        x, y = source.batch(idx[start:start + batch_size])
        x, y = _to_device(x, settings, device), y.to(device)
        with _autocast(settings, device):
            out = model(x)
        loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
    model.train(was_training)
    correct, loss, n = _all_reduce([correct, loss, float(len(idx))], device)
    return 100.0 * correct / max(n, 1), loss / max(n, 1), int(n)


def _train_epoch(model, ddp_model, opt, data: TrainingData, recipe: Recipe, settings: RunSettings,
                 device: torch.device, epoch: int, progress: bool, start_step: int = 0,
                 partial: Optional[dict] = None, on_step=None) -> Tuple[float, float]:
    """One epoch from step ``start_step`` (``partial``: this rank's generator state and running
    sums at that step, from a mid-epoch checkpoint). ``on_step(step, steps, snapshot)`` runs
    after every step; ``snapshot()`` gives what a checkpoint at that step must hold."""
    from torch.utils.data import DistributedSampler
    rank, world = _dist()
    sampler = DistributedSampler(range(len(data.train)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=settings.seed, drop_last=False)
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.int64)
    per_rank = recipe.batch_size // world
    gen = _epoch_generator(settings.seed, epoch, rank)
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
        start = step * per_rank
        x, y = data.train.batch(order[start:start + per_rank], recipe.augment, gen)
        x, y = _to_device(x, settings, device), y.to(device)
        with _autocast(settings, device):
            out = ddp_model(x)
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
    correct, loss_sum, n = _all_reduce([float(correct), float(loss_sum), float(len(order))], device)
    return 100.0 * correct / n, loss_sum / n


def _sync_state(model: torch.nn.Module) -> None:
    """Make every rank's parameters and buffers rank 0's (DDP broadcasts buffers only at the
    start of a forward, so each rank's last batch-norm update would otherwise differ)."""
    if _dist()[1] == 1:
        return
    for t in model.state_dict().values():
        torch.distributed.broadcast(t, 0)


def _rank_state_hashes(model: torch.nn.Module) -> List[str]:
    """sha256 of each rank's final state dict (all ranks must agree)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = h.hexdigest()
    if _dist()[1] == 1:
        return [mine]
    out: List[Optional[str]] = [None] * _dist()[1]
    torch.distributed.all_gather_object(out, mine)
    return out  # type: ignore[return-value]


def _settings_dict(recipe: Recipe, settings: RunSettings, world: int) -> dict:
    r = recipe.as_dict()
    r.pop("epochs")  # the one field a resumed run may change
    return {"recipe": r, "settings": dataclasses.asdict(settings), "world_size": world}


def _write_metrics(out: Path, metrics: List[dict]) -> None:
    text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics)
    atomic_write_bytes(out / METRICS, text.encode())


# ----------------------------------------------------------------------------- the run

def run(recipe: Recipe, settings: RunSettings, out: Union[str, Path], *,
        data_dir: Optional[Union[str, Path]] = None, download: bool = False, resume: bool = False,
        device: str = "auto", progress: bool = True, command: Optional[str] = None,
        speed: Optional[Speed] = None) -> TrainResult:
    """Train ``settings.name`` with ``recipe``; see the module docstring for what is written.
    ``speed`` (:class:`agcnn_zoo.train.speed.Speed`): how fast, and when to checkpoint or stop;
    a :class:`TrainingStopped` is raised at ``speed.stop_at``, after its checkpoint."""
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
    entry = get_entry(settings.name)
    dev = _resolve_device(device)
    if settings.amp and dev.type != "cuda":
        raise ValueError("bf16 autocast is a CUDA option; leave --amp off on CPU")
    rank, world, dev, owned = _init_distributed(dev)
    try:
        return _run(recipe, settings, Path(out), entry, dev, rank, world, data_dir=data_dir,
                    download=download, resume=resume, progress=progress, command=command,
                    speed=speed or Speed())
    finally:
        if owned:
            torch.distributed.destroy_process_group()


def _run(recipe: Recipe, settings: RunSettings, out: Path, entry, dev: torch.device, rank: int,
         world: int, *, data_dir, download: bool, resume: bool, progress: bool,
         command: Optional[str], speed: Speed) -> TrainResult:
    from ..api import create_model
    from . import record as zrecord
    if recipe.batch_size % world:
        raise ValueError(f"batch size {recipe.batch_size} does not split over {world} processes")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
    configure_backends(speed, dev)

    ckpt_path = out / CHECKPOINT
    ident = _settings_dict(recipe, settings, world)
    state = None
    if ckpt_path.exists():
        if not resume:
            raise ResumeError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                              f"it, or choose another --out")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["ident"] != ident:
            diff = [k for k in ("recipe", "settings", "world_size") if state["ident"][k] != ident[k]]
            raise ResumeError(f"{ckpt_path} is a different run ({', '.join(diff)} differ: "
                              f"checkpoint {[state['ident'][k] for k in diff]}, now "
                              f"{[ident[k] for k in diff]}); resume with the same settings, or "
                              f"choose another --out")
        if recipe.epochs < state["epoch"]:
            raise ResumeError(f"{ckpt_path} has {state['epoch']} epochs already; --epochs must be at "
                              f"least that (equal: end the run there and write its outputs)")
        if state.get("step", 0) and recipe.epochs <= state["epoch"]:
            raise ResumeError(f"{ckpt_path} stopped inside epoch {state['epoch'] + 1}; --epochs "
                              f"must be at least {state['epoch'] + 1} to finish it")
    elif resume and rank == 0:
        print(f"no {CHECKPOINT} in {out}: starting a fresh run", flush=True)

    data = load_training_data(settings.dataset, entry.dataset, data_dir, download=download,
                              progress=progress and rank == 0)
    if rank == 0:  # only once the data is there: a failed start leaves no folder behind
        out.mkdir(parents=True, exist_ok=True)
    if not settings.validation:
        data = without_validation(data)
    data.train = data.train.limited(settings.limit_train)
    if data.val is not None:
        data.val = data.val.limited(settings.limit_val)
    if speed.data_on_device:
        data.train = data.train.to(dev)
        data.val = data.val.to(dev) if data.val is not None else None

    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    random.seed(settings.seed)
    model = create_model(settings.name).to(dev)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare_model(model, speed, dev)
    opt = _make_optimizer(recipe, model.parameters())
    sched = _make_scheduler(recipe, opt)
    start_epoch, best, metrics, wall_before = 0, {"top1": -1.0, "epoch": -1, "state": None}, [], 0.0
    start_step, partial = 0, None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        start_epoch, best, metrics = state["epoch"], state["best"], state["metrics"]
        wall_before = state["wall_s"]
        _set_rng_state(state["rng"][rank])
        start_step = state.get("step", 0)
        partial = state["partial"][rank] if start_step else None
    else:
        # each rank draws its own dropout masks; the model above was built from `seed` alone
        torch.manual_seed(settings.seed + rank)
    ddp_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    train_model = compiled(ddp_model, speed)

    t0 = time.time()
    clock = CheckpointClock(speed.checkpoint_every_s, speed.stop_at, world, device=dev)

    def save(epochs_done: int, step: int = 0, partials: Optional[list] = None) -> None:
        rng = _gather_rng()
        if rank == 0:
            _atomic_torch_save({"ident": ident, "model": model.state_dict(),
                                "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict() if sched is not None else None,
                                "rng": rng, "epoch": epochs_done, "step": step, "partial": partials,
                                "best": best, "metrics": metrics,
                                "wall_s": wall_before + time.time() - t0}, ckpt_path)
        clock.saved()

    for epoch in range(start_epoch, recipe.epochs):
        te = time.time()

        def on_step(step: int, steps: int, snapshot, epoch=epoch) -> None:
            action = clock.after_step()
            if action is None or step == steps:  # the epoch's end checkpoints anyway
                return
            save(epoch, step, _gather(snapshot()))
            if action == "stop":
                _barrier()
                raise TrainingStopped(out, epoch, step)

        train_top1, train_loss = _train_epoch(model, train_model, opt, data, recipe, settings, dev,
                                              epoch, progress, start_step, partial,
                                              on_step if clock.active else None)
        start_step, partial = 0, None
        _sync_state(model)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_top1": train_top1}
        if data.val is not None:
            val_top1, val_loss, _ = evaluate(model, data.val, settings, dev)
            row.update(val_loss=val_loss, val_top1=val_top1)
            if val_top1 > best["top1"]:  # ties keep the earlier epoch
                best = {"top1": val_top1, "epoch": epoch + 1,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        else:  # the fixed schedule: the latest epoch is the result (its state is the model's)
            best = {"top1": None, "epoch": epoch + 1, "state": None}
        if sched is not None:
            sched.step(row["val_top1"]) if recipe.schedule == "plateau" else sched.step()
        metrics.append({**row, "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - te, 3)})
        save(epoch + 1)
        if rank == 0:
            _write_metrics(out, metrics)
            val = (f", val loss {row['val_loss']:.4f} acc {row['val_top1']:.2f}% (best "
                   f"{best['top1']:.2f}% @ {best['epoch']})" if data.val is not None else "")
            print(f"{settings.weight_id} epoch {epoch + 1}/{recipe.epochs}: train loss "
                  f"{train_loss:.4f} acc {train_top1:.2f}%{val}, {time.time() - te:.1f} s", flush=True)
        _barrier()
        if epoch + 1 < recipe.epochs and clock.should_stop():
            raise TrainingStopped(out, epoch + 1, 0)
    wall = wall_before + time.time() - t0

    # the selected weight, and the test set touched once by it
    rank_hashes = _rank_state_hashes(model)
    if len(set(rank_hashes)) != 1:
        raise RuntimeError(f"the ranks ended with different weights: {rank_hashes}")
    if best["state"] is None:  # no validation: the last epoch's weight
        best["state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best["state"])
    test = data.load_test().limited(settings.limit_test)
    test_top1, test_loss, test_n = evaluate(model, test, settings, dev)
    weight = out / f"{settings.weight_id}.safetensors"
    rec = None
    if rank == 0:
        sha = save_safetensors({k: v.detach().cpu().contiguous() for k, v in best["state"].items()},
                               weight, {"format": "pt", "agcnn_zoo.model": settings.name,
                                        "agcnn_zoo.architecture": entry.architecture,
                                        "agcnn_zoo.trained": "agcnn-zoo"})
        rec = zrecord.build_record(
            entry=entry, recipe=recipe, settings=settings, data=data, weight=weight, sha256=sha,
            num_params=sum(p.numel() for p in model.parameters()), best=best, metrics=metrics,
            test={"dataset": data.test_name, "top1": test_top1, "loss": test_loss, "images": test_n},
            device=dev, world=world, wall_s=wall, command=command)
        rec["training"]["rank_state_sha256"] = rank_hashes
        atomic_write_bytes(out / "record.json", (json.dumps(rec, indent=2) + "\n").encode())
        zrecord.plot_curves(metrics, out / "curves.png", title=settings.weight_id)
        chosen = (f"selected epoch {best['epoch']} (val {best['top1']:.2f}%)" if data.val is not None
                  else f"last epoch {best['epoch']} (no validation)")
        print(f"{settings.weight_id}: {chosen}, "
              f"{data.test_name} test {test_top1:.2f}% on {test_n} images; wrote {weight}",
              flush=True)
    _barrier()
    return TrainResult(out, weight, rec or {}, best["epoch"], best["top1"], test_top1, len(metrics))


def train(name: str, *, dataset: Optional[str] = None, out: Optional[Union[str, Path]] = None,
          data_dir=None, seed: int = 0, limit_train: Optional[int] = None,
          limit_val: Optional[int] = None, limit_test: Optional[int] = None,
          tag: Optional[str] = None, threads: Optional[int] = None, amp: Optional[str] = None,
          channels_last: bool = False, validation: bool = True, resume: bool = False,
          device: str = "auto",
          download: bool = False, progress: bool = True, command: Optional[str] = None,
          speed: Optional[Speed] = None, **recipe_overrides) -> TrainResult:
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
               device=device, progress=progress,
               command=command or "python -m agcnn_zoo train " + shlex.join([name]), speed=speed)
