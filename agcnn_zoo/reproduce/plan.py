"""Which weight runs on which set, which weights ship in the package, and what the full run costs
(shown before anything is downloaded)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from .. import data as zdata


@dataclass(frozen=True)
class Cost:
    """What evaluating a set takes: the download (bytes of the published files) and the wall
    time of one weight on it on 2 CPU cores (the project's CI machine), a mean over the
    published weights (full alpha takes about 4 times the mean, P4CNN half of it); a GPU takes
    a small fraction of it."""
    download_bytes: int
    seconds_per_weight: float
    files: str


#: per evaluation set; 0 bytes: nothing to download (shipped, or read from a local folder only).
#: mnist-rot-aux: the 22 rot-MNIST weights took 137 s in all (2026-12-07, with two training
#: runs beside them); rotmnist: 5 times that per weight (50,000 test digits of the same size,
#: its file is not on the project's machine); cifar10 / pcam: their one weight each.
COSTS: Dict[str, Cost] = {
    "rotmnist": Cost(60 << 20, 31, "mnist_rotation_new.zip (about 60 MB)"),
    "cifar10": Cost(170_498_071, 240, "cifar-10-python.tar.gz (163 MB)"),
    "pcam": Cost(800 << 20, 1980, "camelyonpatch_level_2_split_test_{x,y}.h5.gz (about 0.8 GB)"),
    "mnist-rot-aux": Cost(1_653_419, 6, "MNIST t10k-{images,labels} IDX (1.6 MB)"),
    "cifar10-jpeg": Cost(0, 240, "no public download: a local folder of JPEGs"),
    "mnist-rot-sample": Cost(0, 0.5, "shipped in the package"),  # 22 weights: 6 s
}


def plan(weights: Dict[str, dict], pattern: str, dataset: Optional[str]) -> List[Tuple[str, str]]:
    """``(weight id, eval set)`` pairs: published weights matching ``pattern`` (fnmatch
    patterns, comma-separated; sorted), each on ``dataset`` if given (weights trained on other
    data are left out), else on its canonical set."""
    todo = []
    for name in sorted(weights):
        if not any(fnmatch.fnmatchcase(name, pat.strip()) for pat in pattern.split(",")):
            continue
        trained_on = weights[name].get("dataset")
        if dataset is None:
            if trained_on in zdata.CANONICAL_SET:
                todo.append((name, zdata.CANONICAL_SET[trained_on]))
        elif zdata.EVAL_SETS[dataset].serves == trained_on:
            todo.append((name, dataset))
    return todo


def shipped(record: dict) -> bool:
    """Whether the weight is embedded in the package (its first host is of kind ``package``)."""
    hosts = record.get("hosts") or []
    return bool(hosts) and hosts[0].get("type") == "package"


def smoke_plan(weights: Dict[str, dict], todo: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The shipped rot-MNIST weights of ``todo`` on the embedded sample."""
    names = sorted({n for n, _ in todo})
    return [(n, "mnist-rot-sample") for n in names
            if weights[n].get("dataset") == "rotmnist" and shipped(weights[n])]


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"  # never "about 0 s"
    return f"about {seconds / 60:.0f} min"


def expected_time(set_name: str, weights: int) -> str:
    """What ``weights`` weights take on ``set_name`` on 2 CPU cores, as text."""
    return f"{_duration(weights * COSTS[set_name].seconds_per_weight)} on 2 CPU cores"


def describe_costs(todo: Sequence[Tuple[str, str]], on_disk: Collection[str] = ()) -> List[str]:
    """One line per evaluation set of the plan: its weights, the download (none for a set in
    ``on_disk``) and the expected time."""
    per_set: Dict[str, int] = {}
    for _, set_name in todo:
        per_set[set_name] = per_set.get(set_name, 0) + 1
    lines = []
    total_bytes = total_s = 0.0
    for set_name, n in per_set.items():
        cost = COSTS.get(set_name)
        if cost is None:
            lines.append(f"  {set_name:16s} {n} weight(s)")
            continue
        total_s += n * cost.seconds_per_weight
        if set_name in on_disk:
            what = "on disk, nothing to download"
        elif cost.download_bytes:
            total_bytes += cost.download_bytes
            what = f"download {cost.files}"
        else:
            what = cost.files
        lines.append(f"  {set_name:16s} {n} weight(s); {what}; {expected_time(set_name, n)}")
    if len(per_set) > 1:
        dl = f"download about {_size(int(total_bytes))} (once, then cached)" if total_bytes \
            else "nothing to download"
        lines.append(f"  {'total':16s} {dl}; {_duration(total_s)} on 2 CPU cores (a GPU is "
                     f"much faster)")
    return lines
