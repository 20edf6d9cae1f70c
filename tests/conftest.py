"""Shared fixtures: where the reference artefacts live (../shared beside the repository).

Tests that read an artefact get it through :func:`shared` (or the fixtures below), which skips
them with one reason when ../shared is absent (any user's fresh clone); every other test runs.
With ``CI=true`` a missing ../shared is an error instead: CI must test against the artefacts.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# huggingface_hub phones home once per process unless told not to; tests reach 127.0.0.1 only
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGCNN_ZOO_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden"
MIRROR = REFERENCE / "mirror"
DATA = SHARED / "data"
UPSTREAM = ("https://raw.githubusercontent.com/dwromero/att_gconvs/"
            "872259cad49763fdcfa3e96e80b6b5c331adf084/experiments")
#: registry name -> (experiment, checkpoint folder) of the authors' published checkpoints
CHECKPOINTS = {
    "z2cnn_rotmnist": ("rot_mnist", "model_z2cnn_optim_adam_lr_0.001_wd_0.0001_seed_0"),
    "p4cnn_rotmnist": ("rot_mnist", "model_p4cnn_optim_adam_lr_0.001_wd_0.0001_seed_0"),
    "a_p4cnn_rotmnist": ("rot_mnist", "model_att_p4cnn_optim_adam_lr_0.001_wd_0.0001_seed_0"),
    "af_p4cnn_rotmnist": ("rot_mnist", "model_f_att_p4cnn_optim_adam_lr_0.001_wd_0.0001_seed_0"),
    "p4m_densenet_pcam": ("pcam", "model_f_att_p4m_densenet_optim_adam_lr_0.001_wd_0.0001_seed_1_"
                                  "dilatedkernelseverywhere_pat20onmaxacc"),
}


SKIP_REASON = (f"needs ../shared (the reference artefacts: the authors' checkpoints, golden "
               f"outputs, MNIST), not found at {SHARED}; put the shared/ folder beside the "
               f"repository or set AGCNN_ZOO_SHARED")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config):
    # CI runs beside a copy of shared/: its absence there is a broken set-up, not a skip
    if _ci() and not SHARED.is_dir():
        raise pytest.UsageError(f"CI=true but ../shared is missing ({SHARED}): the reference "
                                f"artefacts must be beside the repository (or set "
                                f"AGCNN_ZOO_SHARED); refusing to skip the tests that need them")


def shared(path: Path = SHARED) -> Path:
    """``path`` (inside ../shared) for a test that needs it: skipped when ../shared is absent,
    a failure when ../shared is there but the artefact is not (or when CI=true)."""
    if not SHARED.is_dir() and not _ci():
        pytest.skip(SKIP_REASON)
    if not path.exists():
        pytest.fail(f"reference artefact missing: {path} (../shared is at {SHARED}; set "
                    f"AGCNN_ZOO_SHARED to a complete shared/ folder)")
    return path


_require = shared


def checkpoint_path(name: str) -> Path:
    exp, folder = CHECKPOINTS[name]
    rel = UPSTREAM.split("://", 1)[1]
    return _require(MIRROR / rel / exp / "saved" / folder / "model.pth")


def golden_path(name: str) -> Path:
    exp, folder = CHECKPOINTS[name]
    return _require(GOLDEN / f"{exp}__{folder}.safetensors")


def random_golden_path(experiment: str, original_class: str) -> Path:
    return _require(GOLDEN / "random" / f"{experiment}__{original_class}.safetensors")


@pytest.fixture(autouse=True)
def _two_threads():
    # the machine (and CI) has 2 cores; deterministic thread count for float summation order
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    return _require(MIRROR)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _require(DATA / "mnist")


# the weight hub's tests (test_hub.py, test_hub_safety.py): an isolated cache, and the reference
# mirror served over HTTP on 127.0.0.1
@pytest.fixture
def cache(tmp_path, monkeypatch):
    from _servers import isolate_env
    return isolate_env(tmp_path, monkeypatch)


@pytest.fixture
def url_host():
    from _servers import StaticHost
    with StaticHost(shared(MIRROR)) as server:
        yield server


def pytest_terminal_summary(terminalreporter):
    """Say in one line why tests were skipped (pytest shows reasons only with -rs)."""
    from collections import Counter
    reasons = Counter()
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(rep, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, n in reasons.most_common():
        terminalreporter.write_line(f"{n} skipped: {reason}")


def as_published_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """The golden input of the original model ``name`` as the zoo's published weight takes it:
    the original read rot-MNIST digits as its data files store them (transposed w.r.t. MNIST);
    the published weights have that transposition folded in and take the digit as MNIST holds
    it. Other datasets are unchanged."""
    from agcnn_zoo.models.registration import STORED_TRANSPOSED
    from agcnn_zoo.registry import get_entry
    return x.transpose(-2, -1) if get_entry(name.split(".")[0]).dataset in STORED_TRANSPOSED else x
