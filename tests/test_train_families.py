"""Training of the CIFAR-10 and PCam families on small synthetic files of the real formats
(the real sets are not available offline): splits, augmentation, schedules, a full tiny run."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from agcnn_zoo.train import train
from agcnn_zoo.train.checkpoint import CHECKPOINT, load_checkpoint
from agcnn_zoo.train.splits import augment_batch, load_training_data


def make_cifar_train(root: Path, per_batch: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return folder


def make_pcam_splits(root: Path, n: int = 6) -> Path:
    h5py = pytest.importorskip("h5py")
    folder = root / "pcam"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f["x"] = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f["y"] = rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8)
    return folder


def test_cifar_split_is_45000_5000_shaped_and_disjoint(tmp_path):
    make_cifar_train(tmp_path)
    d = load_training_data("cifar10", "cifar10", tmp_path)
    assert (len(d.train), len(d.val)) == (36, 4)  # the last tenth validates (5,000 of 50,000)
    assert not set(d.train.ids) & set(d.val.ids)
    assert all(i.startswith("cifar10-test:") for i in d.load_test().ids)
    x, y = d.train.batch(torch.arange(4))
    raw = d.train.raw[:4].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-6)


def test_augmentations_are_flips_and_padded_crops():
    x = torch.rand(64, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    flipped = augment_batch(x, ["hflip"], g)
    same = [bool(torch.equal(f, o)) for f, o in zip(flipped, x)]
    mirrored = [bool(torch.equal(f, o.flip(-1))) for f, o in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    cropped = augment_batch(x, ["crop32_pad4"], torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for c, p in zip(cropped, padded):  # every crop is a 32x32 window of the zero-padded image
        assert any(torch.equal(c, p[:, i:i + 32, j:j + 32]) for i in range(9) for j in range(9))
    again = augment_batch(x, ["hflip", "crop32_pad4"], torch.Generator().manual_seed(5))
    assert torch.equal(again, augment_batch(x, ["hflip", "crop32_pad4"], torch.Generator().manual_seed(5)))


def test_allcnnc_trains_on_cifar_files_with_the_recipe(tmp_path):
    make_cifar_train(tmp_path / "data")
    r = train("allcnnc_cifar", data_dir=tmp_path / "data", out=tmp_path / "run", epochs=2,
              batch_size=8, threads=1, progress=False)
    t = r.record["training"]
    assert t["recipe"]["optimizer"] == "sgd" and t["recipe"]["augment"] == ["hflip", "crop32_pad4"]
    assert t["recipe"]["milestones"] == [200, 250, 300] and t["recipe_epochs"] == 350
    assert t["test"]["images"] == 8 and t["data"]["val"] == 4
    assert r.record["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in lines] == [0.05, 0.05]


def test_densenet_trains_on_pcam_h5_files_with_plateau_schedule(tmp_path):
    make_pcam_splits(tmp_path / "data")
    r = train("densenet_pcam", data_dir=tmp_path / "data", out=tmp_path / "run", epochs=1,
              batch_size=4, threads=1, progress=False, plateau_patience=0)
    t = r.record["training"]
    assert t["recipe"]["schedule"] == "plateau" and t["data"]["train"] == 6 and t["test"]["images"] == 6
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert state["scheduler"]["patience"] == 0 and state["scheduler"]["mode"] == "max"


def test_pcam_fractional_labels_are_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = make_pcam_splits(tmp_path)
    with h5py.File(folder / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f["y"] = np.array([0.7, 1.3, 0, 1, 0, 1]).reshape(6, 1, 1, 1)
    with pytest.raises(ValueError, match="labels must be integers"):
        load_training_data("pcam", "pcam", tmp_path)


def test_rotmnist_uses_the_datasets_own_rows_and_training_statistics(monkeypatch):
    """The split logic on a stand-in reader (a real 12,000-row .amat file takes minutes to parse):
    rows 0-9,999 train, 10,000-11,999 validate, the test split is read only when asked."""
    from agcnn_zoo import data as zdata
    reads = []

    class FakeRotMNIST:
        def __init__(self, data_dir, split, download, progress):
            reads.append(split)
            n = 12000 if split == "train" else 50
            self._raw = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 28, 28) / n
            self.labels = torch.arange(n) % 10
            self.mean, self.std, self.source = 0.25, 0.5, Path("fake.zip")

        def __len__(self):
            return len(self.labels)

    monkeypatch.setattr(zdata, "RotMNIST", FakeRotMNIST)
    d = load_training_data("rotmnist", "rotmnist", "unused")
    assert reads == ["train"] and (len(d.train), len(d.val)) == (10000, 2000)
    x, _ = d.val.batch(torch.tensor([0]))
    assert float(x[0, 0, 0, 0]) == pytest.approx((10000 / 12000 - 0.25) / 0.5)
    test = d.load_test()
    assert reads == ["train", "test"] and len(test) == 50
    t, _ = test.batch(torch.tensor([1]))
    assert float(t[0, 0, 0, 0]) == pytest.approx((1 / 50 - 0.25) / 0.5)  # the training statistics
