"""Shared fixtures: where the reference artefacts live (../shared beside the repository)."""
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


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"reference artefact missing: {path} (set AGCNN_ZOO_SHARED to the shared/ folder)")
    return path


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
    with StaticHost(MIRROR) as server:
        yield server
