#!/usr/bin/env python
"""Every rot-MNIST weight through the pipelines a timm or torchvision user writes, on rotated
MNIST test digits saved as ordinary grey PNG files in MNIST's orientation (issue #24):

    python eval/natural_pipelines.py --data-dir ../shared/data [--limit N] [--models PATTERN]

The digits are mnist-rot-aux (the 10,000 MNIST test digits rotated by seeded angles, the set
the manifest's ``measured`` accuracies on ``mnist-rot-aux`` were taken on), rounded to 8-bit
'L' PNG files in a temporary folder. Per weight it prints the recorded accuracy and the top-1
of:

* timm:   ``timm.create_model(id, pretrained=True)`` and
          ``timm.data.create_transform(**timm.data.resolve_model_data_config(model))``;
* hub:    ``torch.hub.load(<this folder>, NAME, source="local", pretrained=True[, tag=TAG])``
          and torchvision's ``ToTensor()`` + ``Normalize(cfg["mean"], cfg["std"])`` (when its
          tensors equal timm's, the model is not run twice: same input, same answer);
* RGB:    the same files opened as RGB through timm's pipeline: the model refuses them with a
          message that says what it takes (printed), or, when it answers, its accuracy.

A weight passes when both pipelines are within ``--tolerance`` (0.3) points of the recorded
accuracy; the exit status is 1 when one does not. The recorded figure was measured by the
evaluation reader, which normalises with the test set's own statistics; the pipelines use the
weight's numbers, so a small gap is expected and is what this script measures.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import agcnn_zoo as zoo  # noqa: E402
from agcnn_zoo.data import MNISTRotAux  # noqa: E402
from agcnn_zoo.hub.catalogue import catalogue  # noqa: E402
from agcnn_zoo.hub.weight_id import WeightId  # noqa: E402


def write_pngs(data_dir: str, folder: Path, limit: Optional[int]) -> List[Path]:
    """The rotated digits as 8-bit 'L' PNG files (MNIST's orientation), labels in the names."""
    from PIL import Image
    aux = MNISTRotAux(data_dir, progress=False)
    n = len(aux.labels) if limit is None else min(limit, len(aux.labels))
    pixels = (aux.pixels[:n].to(torch.float64) * 255).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.reshape(n, 28, 28)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}_{int(aux.labels[i])}.png"
        Image.fromarray(pixels[i].numpy(), mode="L").save(path)
        paths.append(path)
    return paths


def label_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def inputs(paths: List[Path], load: Callable) -> torch.Tensor:
    return torch.stack([load(p) for p in paths])


def top1(model: torch.nn.Module, paths: List[Path], load: Callable, batch: int = 500) -> float:
    return top1_of(model, inputs(paths, load), torch.tensor([label_of(p) for p in paths]), batch)


def top1_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            correct += int((model(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum())
    return 100.0 * correct / len(x)


def timm_pipeline(weight_id: str, mode: str = "L"):
    import timm
    from PIL import Image
    model = timm.create_model(weight_id, pretrained=True).eval()
    t = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return model, lambda p: t(Image.open(p).convert(mode))


def hub_pipeline(weight_id: str):
    from PIL import Image
    from torchvision import transforms as T
    wid = WeightId.parse(weight_id)
    model = torch.hub.load(str(ROOT), wid.model, source="local", pretrained=True,
                           tag=wid.tag).eval()
    cfg = model.pretrained_cfg
    t = T.Compose([T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    return model, lambda p: t(Image.open(p))


def recorded(weight_id: str) -> Optional[float]:
    for m in (catalogue().record(weight_id) or {}).get("accuracy", {}).get("measured") or []:
        if m.get("dataset") == MNISTRotAux.name:
            return float(m["top1"])
    return None


def rgb_result(weight_id: str, paths: List[Path]) -> str:
    model, load = timm_pipeline(weight_id, mode="RGB")
    try:
        return f"{top1(model, paths[:200], load):.2f} (200 digits)"
    except ValueError as e:
        return f"refused: {e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--limit", type=int, default=None, help="the first N digits only")
    ap.add_argument("--models", default="*", help="fnmatch pattern over weight ids")
    ap.add_argument("--tolerance", type=float, default=0.3)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    ids = [w for w in catalogue().ids() if catalogue().record(w).get("dataset") == "rotmnist"
           and fnmatch.fnmatchcase(w, args.models)]
    # the full-alpha weights (a_, ach_, asp_) cost the most: last, so the rest print early
    ids.sort(key=lambda w: (WeightId.model_of(w).startswith(("a_", "ach_", "asp_")), w))
    if not ids:
        ap.error(f"--models {args.models!r} matches no rot-MNIST weight (zoo.list_pretrained() "
                 f"lists them)")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="agcnn_zoo_pngs_") as tmp:
        paths = write_pngs(args.data_dir, Path(tmp), args.limit)
        print(f"{len(paths)} rotated MNIST test digits as 'L' PNG files, MNIST's orientation")
        print(f"{'weight':36s} {'recorded':>8s} {'timm':>7s} {'hub+tv':>7s}  verdict")
        labels = torch.tensor([label_of(p) for p in paths])
        for wid in ids:
            rec = recorded(wid)
            model, load = timm_pipeline(wid)
            x_timm = inputs(paths, load)
            a = top1_of(model, x_timm, labels)
            model, load = hub_pipeline(wid)
            x_hub = inputs(paths, load)
            # the same tensors in, the same deterministic model: the same answers; the model
            # runs again only when the two pipelines differ
            same = torch.equal(x_hub, x_timm)
            b = a if same else top1_of(model, x_hub, labels)
            ok = rec is not None and max(abs(a - rec), abs(b - rec)) <= args.tolerance
            failed += not ok
            verdict = "ok" if ok else ("no record on mnist-rot-aux" if rec is None else "OFF")
            note = "  (hub input == timm input)" if same else \
                f"  (inputs differ by {float((x_hub - x_timm).abs().max()):.1e})"
            print(f"{wid:36s} {rec if rec is not None else float('nan'):8.2f} {a:7.2f} {b:7.2f}  "
                  f"{verdict}{note}", flush=True)
        print(f"RGB files through timm's pipeline ({ids[0]}): {rgb_result(ids[0], paths)}")
    if args.limit is not None:
        print(f"(--limit {args.limit}: the recorded figures are over 10,000 digits; the verdict "
              f"is only meaningful without --limit)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
