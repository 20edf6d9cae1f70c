"""What a measurement is compared with, and the verdict it gets (rules: the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

DEFAULT_TOLERANCE = 0.1
#: a smoke check passes above this accuracy: every shipped rot-MNIST weight scores over 95% on
#: rotated digits, a weight loaded into the wrong layers or fed untransposed digits far less
SMOKE_FLOOR = 90.0


@dataclass
class Result:
    model: str
    dataset: str
    images: int = 0
    paper: Optional[float] = None
    paper_confirmed: bool = False
    log: Optional[float] = None
    measured: Optional[float] = None
    correct: Optional[int] = None
    expected: Optional[float] = None
    expected_from: Optional[str] = None  # "log", "recorded" or "smoke floor"
    delta: Optional[float] = None
    tolerance: float = DEFAULT_TOLERANCE
    verdict: str = "INFO"
    complete: bool = False
    seconds: Optional[float] = None
    images_per_s: Optional[float] = None
    device: str = ""
    message: str = ""
    data: dict = field(default_factory=dict)


def expectation(record: dict, eval_set: str, complete: bool, images: int, device: str):
    """``(value, "log" | "recorded")`` to compare with, or ``(None, None)``."""
    acc = record.get("accuracy", {})
    log = (acc.get("checkpoint") or {}).get("top1")
    if complete and log is not None:
        return float(log), "log"
    same = [m for m in acc.get("measured", [])
            if m.get("dataset") == eval_set and m.get("images") == images]
    if not same:
        return None, None
    same.sort(key=lambda m: (m.get("device") == device, str(m.get("date", ""))))
    return float(same[-1]["top1"]), "recorded"


def is_complete(record: dict, ds, images: int, limited: bool) -> bool:
    """A canonical test set read whole, with as many images as the authors' log counted."""
    counted = ((record.get("accuracy") or {}).get("checkpoint") or {}).get("images")
    return ds.canonical and not limited and counted in (None, images)


def check_preprocessing(record: dict, ds) -> None:
    """The manifest's per-channel mean/std must be what the reader applies."""
    pre = record.get("preprocessing") or {}
    for key in ("mean", "std"):
        want = pre.get(key)
        have = getattr(ds, key, None)
        if want is not None and isinstance(have, (tuple, list)):
            if len(want) != len(have) or any(abs(float(a) - float(b)) > 1e-9
                                             for a, b in zip(want, have)):
                raise ValueError(f"the manifest's preprocessing {key} {want} differs from the "
                                 f"{ds.name} reader's {list(have)}")


def normalisation_report(record: dict, data: dict) -> Optional[str]:
    """rot-MNIST: the manifest holds an ESTIMATE of the training mean/std; the reader of the real
    set measures the exact ones: report both (one line), or None when there is nothing to say."""
    est = (record.get("preprocessing") or {}).get("normalize_estimate")
    norm = (data or {}).get("normalize") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if not est or not data.get("canonical") or not isinstance(mean, float):
        return None
    pre = record["preprocessing"]
    return (f"{data.get('name')}: exact mean/std of {norm.get('of', 'the training images')}: "
            f"{mean:.6f} / {std:.6f} (the manifest's estimate: {pre['mean'][0]:.6f} / "
            f"{pre['std'][0]:.6f}, measured on mnist-rot-gen)")


def decide(res: Result, record: dict, ds, limited: bool) -> None:
    """Fill in the expectation, delta and verdict of a measured result."""
    if getattr(ds, "smoke", False):
        # a few hundred digits confirm nothing published: only that the weight works
        res.expected, res.expected_from = SMOKE_FLOOR, "smoke floor"
        res.verdict = "OK" if res.measured >= SMOKE_FLOOR else "FAIL"
        return
    res.complete = is_complete(record, ds, res.images, limited)
    expected, source = expectation(record, ds.name, res.complete, res.images, res.device)
    if expected is None:
        res.verdict = "INFO"
        if res.log is not None:
            res.delta, res.expected_from = res.measured - res.log, "log"
        return
    res.expected, res.expected_from = expected, source
    res.delta = res.measured - expected
    # a hair of slack for the float rounding of percentages such as 98.356
    res.verdict = "PASS" if abs(res.delta) <= res.tolerance + 1e-9 else "FAIL"
