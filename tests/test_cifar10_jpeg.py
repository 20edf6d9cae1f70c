"""The cifar10-jpeg training source on the real JPEGs of ../shared: decoded once into a verified
cache (atomic, rebuilt when damaged), the 45,000 / 5,000 split by class, the test JPEGs read only
by ``load_test`` and never in the validation split."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _cifar import jpeg_subset
from agcnn_zoo.data import DataNotFoundError
from agcnn_zoo.data import cifar10_jpeg as cj
from agcnn_zoo.data.cifar10 import CIFAR10JPEG
from agcnn_zoo.train.splits import load_training_data
from conftest import DATA, shared


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


@pytest.fixture(scope="module")
def full_split(tmp_path_factory):
    """The real 50,000 training JPEGs, decoded once for this module (about 15 s)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AGCNN_ZOO_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield load_training_data("cifar10-jpeg", "cifar10", shared(DATA), progress=False)
    finally:
        mp.undo()


def test_decoded_pixels_are_pillows_and_the_cache_is_read_back(tmp_path, cache, monkeypatch):
    data = jpeg_subset(tmp_path / "data", 3, ["train"])
    d = cj.decoded_cifar10_jpeg(data, "train", progress=False)
    assert d.images.shape == (30, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert d.names[:3] == ["airplane/0000.jpg", "airplane/0001.jpg", "airplane/0002.jpg"]
    for i in (0, 17, 29):
        path = data / "cifar10" / "train_jpeg" / d.names[i]
        with Image.open(path) as im:
            px = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(d.images[i], px)
    jpeg = hashlib.sha256(b"".join((data / "cifar10" / "train_jpeg" / n).read_bytes()
                                   for n in d.names)).hexdigest()
    assert d.jpeg_sha256 == jpeg
    assert [p.name for p in cache.iterdir() if p.is_file()] == [d.cache_file.name]

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although the cache holds the images")
    monkeypatch.setattr(cj, "_decode", no_decoding)
    again = cj.decoded_cifar10_jpeg(data, "train", progress=False)
    assert torch.equal(again.images, d.images) and again.jpeg_sha256 == d.jpeg_sha256


def test_a_damaged_cache_entry_is_rebuilt_and_a_changed_folder_gets_its_own(tmp_path, cache):
    data = jpeg_subset(tmp_path / "data", 2, ["train"])
    d = cj.decoded_cifar10_jpeg(data, "train", progress=False)
    raw = bytearray(d.cache_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte inside the pixels
    d.cache_file.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged decoded-image cache entry"):
        fixed = cj.decoded_cifar10_jpeg(data, "train", progress=False)
    assert torch.equal(fixed.images, d.images)
    # one more file in a class: another entry, never the stale one
    src = shared(DATA / "cifar10" / "train_jpeg" / "bird")
    (data / "cifar10" / "train_jpeg" / "bird" / "0002.jpg").symlink_to(src / "0002.jpg")
    bigger = cj.decoded_cifar10_jpeg(data, "train", progress=False)
    assert len(bigger.labels) == 21 and bigger.cache_file != d.cache_file


def test_a_failed_decode_leaves_nothing_behind(tmp_path, cache, monkeypatch):
    data = jpeg_subset(tmp_path / "data", 2, ["train"])
    bad = data / "cifar10" / "train_jpeg" / "truck" / "0001.jpg"
    bad.unlink()
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(Exception):
        cj.decoded_cifar10_jpeg(data, "train", progress=False)
    assert not [p for p in cache.iterdir() if p.is_file()]
    # a missing folder says what to put where
    with pytest.raises(DataNotFoundError, match="train_jpeg/airplane/NNNN.jpg"):
        cj.decoded_cifar10_jpeg(tmp_path / "nothing", "train", progress=False)


def test_the_split_is_45000_5000_by_class_and_disjoint(full_split):
    d = full_split
    assert (len(d.train), len(d.val)) == (45000, 5000)
    assert torch.bincount(d.train.labels).tolist() == [4500] * 10
    assert torch.bincount(d.val.labels).tolist() == [500] * 10
    train, val = set(d.train.ids), set(d.val.ids)
    assert len(train) == 45000 and len(val) == 5000 and not train & val
    # the last 500 files of every class validate; every split is ordered class after class
    assert {int(i.rsplit("/", 1)[1][:4]) for i in val} == set(range(4500, 5000))
    assert d.train.labels[:20].tolist() == list(range(10)) * 2
    assert d.info["train"] == 45000 and "JPEG" in d.info["images"]
    assert len(d.info["jpeg_sha256"]) == 64
    x, y = d.train.batch(torch.arange(8), ("hflip", "crop32_pad4"), torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == list(range(8))


def test_validation_never_touches_the_test_images(full_split, tmp_path, cache):
    # by content: no validation (or training) JPEG is byte-identical to a test JPEG
    root = shared(DATA / "cifar10")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    test = {digest(p) for p in (root / "test_jpeg").rglob("*.jpg")}
    val = {digest(root / "train_jpeg" / i.split(":", 1)[1]) for i in full_split.val.ids}
    assert len(test) == 10000 and len(val) == 5000 and not test & val
    # by construction: without test_jpeg the training and validation splits still load, and
    # only load_test(), called once at the end of a run, reads the test folder
    data = jpeg_subset(tmp_path / "data", 10, ["train"])
    d = load_training_data("cifar10-jpeg", "cifar10", data, progress=False)
    assert (len(d.train), len(d.val)) == (90, 10)
    with pytest.raises(DataNotFoundError, match="test_jpeg"):
        d.load_test()


def test_the_test_split_is_the_eval_sets_pixels(tmp_path, cache):
    data = jpeg_subset(tmp_path / "data", 4)
    d = load_training_data("cifar10-jpeg", "cifar10", data, progress=False)
    test = d.load_test()
    assert len(test) == 40 and all(i.startswith("cifar10-test-jpeg:") for i in test.ids)
    ev = CIFAR10JPEG(data)
    x, y = test.batch(torch.arange(len(test)))
    by_name = {i.split(":", 1)[1]: k for k, i in enumerate(test.ids)}
    for k, path in enumerate(ev.files):
        j = by_name[f"{path.parent.name}/{path.name}"]
        assert int(y[j]) == int(ev.labels[k])
        assert torch.allclose(x[j], ev[k][0], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cached read warns about nothing
        load_training_data("cifar10-jpeg", "cifar10", data, progress=False).load_test()
