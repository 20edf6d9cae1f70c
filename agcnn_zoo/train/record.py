"""What a training run leaves behind for the zoo: a manifest record in the schema of the
authors' weights, kept clearly apart from them (``origin.kind == "trained"``, a ``training``
block with the recipe as run), learning curves, and installation into the manifest."""
from __future__ import annotations

import datetime
import io
import platform
from pathlib import Path
from typing import List, Optional

import torch

from .._version import __version__
from ..hub.hosts import checkout as checkout_host
from ..hub.hosts import package as package_host
from ..hub.manifest import load_manifest
from ..io.files import atomic_write_bytes
from .recipes import recipe_for

#: the largest weight that ships inside the package (a host of kind "package")
EMBED_LIMIT = package_host.MAX_BYTES
#: the largest weight kept in the repository's hf/agcnn-zoo/ folder (a host of kind "checkout")
CHECKOUT_LIMIT = checkout_host.MAX_BYTES

_DATA_LICENSE = {
    "mnist-rot-gen": "MNIST training digits (LeCun, Cortes, Burges; CC BY-SA 3.0), rotated by agcnn-zoo",
    "rotmnist": "mnist_rotation_new: derived from MNIST (Larochelle et al. 2007); see its home page",
    "cifar10": "CIFAR-10 (Krizhevsky 2009); see its home page",
    "cifar10-jpeg": "CIFAR-10 (Krizhevsky 2009), see its home page; the JPEG copy comes from a "
                    "public GitHub repository with no stated licence",
    "pcam": "PatchCamelyon (Veeling et al. 2018), CC0",
}
_TEST_SET = {
    "mnist-rot-aux": "mnist-rot-aux: the 10,000 MNIST test digits rotated by seeded random angles "
                     "(agcnn_zoo.data.MNISTRotAux), not mnist_rotation_new",
    "cifar10-jpeg": "cifar10-jpeg: the 10,000 CIFAR-10 test images as JPEG (lossy), not the "
                    "canonical test set",
}
_JPEG_NOTE = ("Trained on JPEG-compressed images: the offline JPEG copy of the CIFAR-10 training "
              "set (pixels 4.5-8 levels from the canonical ones on average), and tested on the "
              "JPEG copy of the test set; accuracy on the canonical (lossless) test set may "
              "differ.")


def host_for(size: int, file: str) -> list:
    """Where a trained weight of ``size`` bytes lives: in the package (at most 512 KB), in the
    repository's hf/agcnn-zoo/ folder (at most 12 MiB), else nowhere yet (publish it)."""
    if size <= EMBED_LIMIT:
        return [{"type": "package", "path": file}]
    if size <= CHECKOUT_LIMIT:
        return [{"type": "checkout", "path": file}]
    return []


def schedule_changes(recipe, base) -> List[str]:
    """The recipe fields a run changed from the authors' recipe ``base`` ("lr 0.05 -> 0.2")."""
    changed = []
    for k, v in recipe.as_dict().items():
        was = base.as_dict().get(k)
        if v != was and k not in ("source", "notes"):
            changed.append(f"{k} {was} -> {v}")
    return changed


def _paper_accuracy(name: str) -> dict:
    """The paper's figure as the manifest already records it for this model, else null."""
    try:
        rec = load_manifest().get("weights", {}).get(name)
    except FileNotFoundError:
        rec = None
    if rec and isinstance(rec.get("accuracy", {}).get("paper"), dict):
        return dict(rec["accuracy"]["paper"])
    return {"top1": None, "source": "no figure of the paper is known for this model "
                                    "(see the reference PAPER.md)", "confirmed": False}


def _preprocessing(entry, settings, data) -> dict:
    """The weight's preprocessing: its dataset's, with the numbers this run normalised with."""
    prep = dict(entry.preprocessing)
    norm = data.info.get("normalize", {})
    if "mean" in norm:
        prep["mean"] = norm["mean"] if isinstance(norm["mean"], list) else [norm["mean"]]
        prep["std"] = norm["std"] if isinstance(norm["std"], list) else [norm["std"]]
        if settings.dataset != entry.dataset and "of" in norm:
            prep["normalize"] = f"scalar mean/std of {norm.get('of', 'the training images')} ({settings.dataset})"
    prep["training_set"] = settings.dataset
    if data.test_name in _TEST_SET:
        prep["test_set"] = _TEST_SET[data.test_name]
    return prep


def _notes(settings, recipe, base, data) -> List[str]:
    split = data.info.get("split", "")
    default_epochs = base.epochs
    if settings.validation:
        notes = [f"Trained by agcnn-zoo, not by the paper's authors; model selection on a "
                 f"validation split of the training data ({split}); the test set was evaluated "
                 f"once, with the selected weight."]
    else:
        notes = [f"Trained by agcnn-zoo, not by the paper's authors, on a fixed schedule: {split}; "
                 f"no model selection (the weight after the last epoch is the result); the test "
                 f"set was evaluated once, with that weight."]
    changes = [c for c in schedule_changes(recipe, base) if not c.startswith("epochs ")]
    if recipe.epochs < base.epochs:
        notes.append(f"Shortened schedule: {recipe.epochs} of the recipe's {default_epochs} epochs "
                     f"(a compute budget); "
                     + (f"also changed from the recipe: {'; '.join(changes)}." if changes else
                        "the recipe is otherwise unchanged."))
    elif changes:
        notes.append(f"Changed from the authors' recipe: {'; '.join(changes)}.")
    if settings.dataset == "cifar10-jpeg":
        notes.append(_JPEG_NOTE)
    if settings.limited:
        notes.append("A limited run (--limit-*): a smoke test, not a zoo weight.")
    return notes


def _training(*, recipe, base, settings, data, best: dict, metrics: List[dict], test: dict,
              device, world: int, wall_s: float, command: Optional[str]) -> dict:
    """The record's ``training`` block: the run as it ran."""
    dev = _device_name(device)
    return {
        "recipe": recipe.as_dict(),
        "recipe_epochs": base.epochs,
        "shortened": recipe.epochs < base.epochs,
        "changed_from_recipe": schedule_changes(recipe, base),
        "dataset": settings.dataset,
        "data": {k: v for k, v in data.info.items() if k != "source"},
        "seed": settings.seed,
        "limits": {"train": settings.limit_train, "val": settings.limit_val,
                   "test": settings.limit_test},
        "epochs_run": len(metrics),
        "selection": "validation" if settings.validation else "last epoch",
        "selected_epoch": best["epoch"],
        "val_top1": round(best["top1"], 3) if best["top1"] is not None else None,
        "test": {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in test.items()},
                 "normalize": "the training statistics above", "device": f"{dev} ({platform.machine()})"},
        "command": command,
        "project_version": __version__,
        "torch": torch.__version__,
        "device": dev,
        "world_size": world,
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall_s, 1),
        "date": datetime.date.today().isoformat(),
    }


def _device_name(device: torch.device) -> str:
    return device.type if device.type == "cpu" else torch.cuda.get_device_name(device)


def build_record(*, entry, recipe, settings, data, weight: Path, sha256: str, num_params: int,
                 best: dict, metrics: List[dict], test: dict, device: torch.device, world: int,
                 wall_s: float, command: Optional[str]) -> dict:
    base = recipe_for(settings.name)
    size = weight.stat().st_size
    return {
        "architecture": entry.model_class,
        "original_class": entry.original_class,
        "dataset": entry.dataset,
        "file": weight.name,
        "sha256": sha256,
        "size": size,
        "hosts": host_for(size, weight.name),
        "num_params": num_params,
        "preprocessing": _preprocessing(entry, settings, data),
        "license": {"weights": "MIT", "text": "MIT (agcnn-zoo); trained by agcnn-zoo",
                    "code": "MIT (agcnn-zoo)", "data": _DATA_LICENSE.get(settings.dataset, "")},
        "origin": {"kind": "trained", "by": "agcnn-zoo", "command": command,
                   "project_version": __version__,
                   "frame": "natural: trained on images as people hold them (rot-MNIST: MNIST's "
                            "orientation)"},
        "accuracy": {
            "paper": _paper_accuracy(settings.name),
            "checkpoint": {"top1": None, "source": "no authors' checkpoint: trained by agcnn-zoo"},
            # filled by eval/reproduce.py --update-manifest; the run's own test is in "training"
            "measured": [],
        },
        "tolerance": 0.1,
        "default": False,
        "training": _training(recipe=recipe, base=base, settings=settings, data=data, best=best,
                              metrics=metrics, test=test, device=device, world=world,
                              wall_s=wall_s, command=command),
        "notes": _notes(settings, recipe, base, data),
    }


def plot_curves(metrics: List[dict], path: Path, title: str = "") -> Optional[Path]:
    """Loss and accuracy per epoch (train and validation), the selected epoch marked; None when
    matplotlib is not installed (``pip install matplotlib``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ep = [m["epoch"] for m in metrics]
    validated = "val_top1" in metrics[0]
    series = ("train", "val") if validated else ("train",)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for s in series:
        a.plot(ep, [m[f"{s}_loss"] for m in metrics], label=s)
        b.plot(ep, [m[f"{s}_top1"] for m in metrics], label=s)
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.set_title("loss"), a.legend()
    if validated:
        best = max(metrics, key=lambda m: (m["val_top1"], -m["epoch"]))
        b.axvline(best["epoch"], color="grey", ls="--", lw=1,
                  label=f"selected: epoch {best['epoch']} ({best['val_top1']:.2f}%)")
    # zoom on the range that matters once the first tenth of the run has passed
    settled = [m[f"{s}_top1"] for m in metrics[len(metrics) // 10:] for s in series]
    b.set_ylim(max(0.0, min(settled) - 1.0), 100.0)
    b.set_xlabel("epoch"), b.set_ylabel("top-1 accuracy (%)"), b.set_title("accuracy (zoomed)")
    b.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
