"""Dataset readers on small synthetic files of the real formats, downloads against a local HTTP
server, and the two offline auxiliary sets on the real shared data."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import pickle
import shutil
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcnn_zoo import data
from agcnn_zoo.data import rotmnist
from conftest import DATA, shared

TRAIN, TEST = data.ROTMNIST_FILES["train"], data.ROTMNIST_FILES["test"]


# ----------------------------------------------------------------------------- helpers

def letter_f() -> np.ndarray:
    """An 'F': no rotation or flip of it equals its transpose, so orientation shows."""
    img = np.zeros((28, 28))
    img[4:24, 8] = 1.0      # the stem, a column
    img[4, 8:20] = 1.0      # top bar, a row
    img[13, 8:16] = 0.5     # middle bar
    return img


def amat_text(images: np.ndarray, labels) -> str:
    """Rows as in mnist_rotation_new: 784 pixel values, then the label written as a float."""
    rows = [" ".join(f"{v:.8e}" for v in img.reshape(-1)) + f" {float(lab):.8e}"
            for img, lab in zip(images, labels)]
    return "\n".join(rows) + "\n"


def make_rotmnist(folder: Path, train: np.ndarray, train_labels, test: np.ndarray, test_labels,
                  as_zip: bool = True) -> Path:
    """``train``/``test`` are the 28x28 arrays a row-major reshape of each row must give back."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {TRAIN: amat_text(train, train_labels), TEST: amat_text(test, test_labels)}
    if as_zip:
        path = folder / data.ROTMNIST_REMOTE.filename
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, text in texts.items():
                zf.writestr(name, text)
        return path
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def rotmnist_arrays():
    rng = np.random.default_rng(0)
    train = rng.random((6, 28, 28)) ** 3
    test = np.stack([letter_f(), rng.random((28, 28)), letter_f().T, rng.random((28, 28))])
    return train, [1, 2, 3, 4, 5, 6], test, [7, 0, 9, 3]


def serve(folder: Path):
    """A quiet HTTP server on 127.0.0.1 serving ``folder`` from a thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def http_dir(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    server, base = serve(folder)
    yield folder, base
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing.zip"  # nobody listens there now


# ----------------------------------------------------------------------------- rot-MNIST

@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_rotmnist_zip_orientation_labels_and_normalisation(tmp_path, rotmnist_arrays):
    train, train_labels, test, test_labels = rotmnist_arrays
    make_rotmnist(tmp_path / "mnist_rotation_new", *rotmnist_arrays)
    ds = data.RotMNIST(tmp_path, progress=False)
    assert len(ds) == 4 and ds.labels.tolist() == test_labels
    assert ds.labels.dtype == torch.int64
    # the scalar statistics of the training rows (population std of the centred pixels)
    assert ds.mean == pytest.approx(train.mean(), rel=1e-6)
    assert ds.std == pytest.approx((train - train.mean()).std(), rel=1e-6)
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 7
    restored = x[0].double() * ds.std + ds.mean
    # the file stores the F (a row-major reshape of its row); like mnist_rotation_new, that is
    # the digit transposed, and the reader returns it as MNIST holds it: the F's transpose
    assert torch.allclose(restored, torch.from_numpy(letter_f().T), atol=1e-6)
    assert not torch.allclose(restored, torch.from_numpy(letter_f()), atol=0.1)
    batches = list(ds.batches(3))
    assert [len(b[1]) for b in batches] == [3, 1]
    expected = (torch.from_numpy(test.transpose(0, 2, 1)) - ds.mean) / ds.std
    assert torch.allclose(torch.cat([b[0] for b in batches])[:, 0].double(), expected, atol=1e-5)
    assert [b[1].tolist() for b in ds.batches(2, limit=3)] == [[7, 0], [9]]


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_rotmnist_reads_the_authors_npz_conversion_like_the_amat_rows(tmp_path, rotmnist_arrays):
    train, train_labels, test, test_labels = rotmnist_arrays
    amat = data.RotMNIST(make_rotmnist(tmp_path / "a", *rotmnist_arrays, as_zip=False),
                         progress=False)
    folder = tmp_path / "npz" / "mnist_rotation_new"
    folder.mkdir(parents=True)
    # the authors' conversion: each row reshaped row-major to 1x28x28, float32
    np.savez(folder / "train_all.npz", data=train.reshape(-1, 1, 28, 28).astype(np.float32),
             labels=np.array(train_labels, dtype=np.int64))
    np.savez(folder / "test.npz", data=test.reshape(-1, 1, 28, 28).astype(np.float32),
             labels=np.array(test_labels, dtype=np.float32))
    npz = data.RotMNIST(tmp_path / "npz", progress=False)
    assert npz.labels.tolist() == amat.labels.tolist() == test_labels
    assert torch.allclose(npz._raw, amat._raw, atol=1e-6)
    assert npz.mean == pytest.approx(amat.mean, rel=1e-5)
    # an npz holding a pickled object is refused unread
    np.savez(folder / "test.npz", data=np.array([{"x": 1}], dtype=object), labels=np.zeros(1))
    with pytest.raises(data.DataFormatError, match="test.npz"):
        data.RotMNIST(tmp_path / "npz", progress=False)


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_rotmnist_reads_extracted_amat_files_and_caches_stats(tmp_path, rotmnist_arrays):
    train, train_labels, test, test_labels = rotmnist_arrays
    folder = make_rotmnist(tmp_path, *rotmnist_arrays, as_zip=False)  # files in the data dir itself
    ds = data.RotMNIST(tmp_path, progress=False)
    cache = folder / data.ROTMNIST_STATS
    stats = json.loads(cache.read_text())
    assert stats["mean"] == ds.mean and stats["std"] == ds.std and stats["images"] == 6
    # the cache is used as long as the training file is unchanged ...
    cache.write_text(json.dumps({**stats, "mean": 0.5, "std": 2.0}))
    assert data.RotMNIST(tmp_path, progress=False).mean == 0.5
    # ... and recomputed when it changes
    make_rotmnist(tmp_path, train * 0.5, train_labels, test, test_labels, as_zip=False)
    again = data.RotMNIST(tmp_path, progress=False)
    assert again.mean == pytest.approx(0.5 * train.mean(), rel=1e-6)
    train_ds = data.RotMNIST(tmp_path, split="train", progress=False)
    assert train_ds.labels.tolist() == train_labels


@pytest.mark.parametrize("row, match", [
    ("0.5 " * 784, "784 pixels"),                      # label missing
    ("0.5 " * 784 + "3.5", "integers 0-9"),            # label not an integer
    ("0.5 " * 783 + "1.7 3", r"outside \[0, 1\]"),     # pixel out of range
])
def test_rotmnist_rejects_malformed_rows(tmp_path, rotmnist_arrays, row, match):
    make_rotmnist(tmp_path, *rotmnist_arrays, as_zip=False)
    (tmp_path / TEST).write_text(row + "\n")
    (tmp_path / TRAIN).write_text(row + "\n")
    with pytest.raises(ValueError, match=match):
        data.RotMNIST(tmp_path, progress=False)


def test_missing_rotmnist_names_files_folder_and_url(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.RotMNIST(tmp_path, progress=False)
    msg = str(err.value)
    for needed in ("mnist_rotation_new.zip", TRAIN, TEST, str(tmp_path / "mnist_rotation_new"),
                   data.ROTMNIST_REMOTE.url):
        assert needed in msg
    assert isinstance(err.value, FileNotFoundError)


# ----------------------------------------------------------------------------- downloads

def test_download_verifies_and_writes_atomically(http_dir, tmp_path):
    served, base = http_dir
    payload = bytes(range(256)) * 5000
    (served / "f.bin").write_bytes(payload)
    good = hashlib.md5(payload).hexdigest()
    dest_dir = tmp_path / "dl"
    path = data.download_url(f"{base}/f.bin", dest_dir / "f.bin", md5=good, progress=False)
    assert path.read_bytes() == payload
    assert [p.name for p in dest_dir.iterdir()] == ["f.bin"]  # no temp file left


def test_download_with_bad_checksum_leaves_nothing(http_dir, tmp_path):
    served, base = http_dir
    (served / "f.bin").write_bytes(b"not what was expected")
    dest_dir = tmp_path / "dl"
    with pytest.raises(data.ChecksumError, match="expected 0{32}"):
        data.download_url(f"{base}/f.bin", dest_dir / "f.bin", md5="0" * 32, progress=False)
    assert list(dest_dir.iterdir()) == []
    # an unverified checksum only warns, and keeps the file
    with pytest.warns(UserWarning, match="never verified"):
        data.download_url(f"{base}/f.bin", dest_dir / "f.bin", md5="0" * 32, strict=False,
                          progress=False)
    assert (dest_dir / "f.bin").read_bytes() == b"not what was expected"


def test_download_404_and_refused_connection_are_errors(http_dir, tmp_path):
    _, base = http_dir
    dest_dir = tmp_path / "dl"
    with pytest.raises(data.DownloadError, match="HTTP 404"):
        data.download_url(f"{base}/missing.zip", dest_dir / "missing.zip", progress=False)
    with pytest.raises(data.DownloadError):
        data.download_url(closed_port_url(), dest_dir / "x.zip", progress=False)
    assert list(dest_dir.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_rotmnist_download_through_local_server(http_dir, tmp_path, rotmnist_arrays, monkeypatch):
    served, base = http_dir
    zpath = make_rotmnist(served, *rotmnist_arrays)
    md5 = hashlib.md5(zpath.read_bytes()).hexdigest()
    monkeypatch.setattr(rotmnist, "ROTMNIST_REMOTE",
                        data.Remote(f"{base}/{zpath.name}", zpath.name, md5, verified=True))
    ds = data.RotMNIST(tmp_path / "d", download=True, progress=False)
    assert len(ds) == 4 and (tmp_path / "d" / "mnist_rotation_new" / zpath.name).is_file()

    # a verified checksum that does not match: nothing kept, the error propagates
    monkeypatch.setattr(rotmnist, "ROTMNIST_REMOTE",
                        data.Remote(f"{base}/{zpath.name}", zpath.name, "f" * 32, verified=True))
    with pytest.raises(data.ChecksumError):
        data.RotMNIST(tmp_path / "e", download=True, progress=False)
    assert not [p for p in (tmp_path / "e").rglob("*.zip*") if ".locks" not in p.parts]

    # no network: the error says what to put where and the URL
    url = closed_port_url()
    monkeypatch.setattr(rotmnist, "ROTMNIST_REMOTE", data.Remote(url, zpath.name, md5))
    with pytest.raises(data.DataNotFoundError, match="download of .* failed") as err:
        data.RotMNIST(tmp_path / "f", download=True, progress=False)
    assert url in str(err.value) and TEST in str(err.value)

    # downloads disabled by the environment: not even tried
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    monkeypatch.setattr(data._common, "download_url", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(data.DataNotFoundError, match="downloads disabled"):
        data.RotMNIST(tmp_path / "g", download=True, progress=False)


# ----------------------------------------------------------------------------- PCam

def make_pcam(folder: Path, n: int = 5, x_key: str = "x"):
    import h5py
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f.create_dataset(x_key, data=x)
    with h5py.File(folder / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f.create_dataset("y", data=y)
    return x, y


def test_pcam_h5_layout_channels_and_normalisation(tmp_path):
    x, y = make_pcam(tmp_path / "pcam")
    ds = data.PCamTest(tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 0, 1, 0] and ds.num_classes == 2
    img, label = ds[3]
    assert img.shape == (3, 96, 96) and label == 1
    mean, std = np.array(data.PCAM_MEAN), np.array(data.PCAM_STD)
    # HWC uint8 -> CHW, ToTensor scaling first, then the authors' mean/std
    for (r, c, k) in [(0, 0, 0), (10, 50, 1), (95, 3, 2)]:
        want = (x[3, r, c, k] / 255.0 - mean[k]) / std[k]
        assert img[k, r, c].item() == pytest.approx(want, abs=1e-5)
    whole = torch.cat([b for b, _ in ds.batches(2)])
    assert whole.shape == (5, 3, 96, 96)
    assert torch.equal(whole[3], img)


def test_pcam_wrong_key_missing_files_and_missing_h5py(tmp_path, monkeypatch):
    make_pcam(tmp_path / "bad", x_key="images")
    with pytest.raises(ValueError, match="no dataset 'x'"):
        data.PCamTest(tmp_path / "bad")
    with pytest.raises(data.DataNotFoundError) as err:
        data.PCamTest(tmp_path / "empty")
    for needed in ("camelyonpatch_level_2_split_test_x.h5", "camelyonpatch_level_2_split_test_y.h5",
                   "zenodo.org"):
        assert needed in str(err.value)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install h5py"):
        data.PCamTest(tmp_path / "bad")


# ----------------------------------------------------------------------------- CIFAR-10

def make_cifar(folder: Path, n: int = 4, extra: dict | None = None):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # HWC, RGB
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)               # R plane, G plane, B plane
    labels = [9, 0, 4, 4][:n]
    folder = folder / data.CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"testing batch 1 of 1", b"data": rows, b"labels": labels,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)], **(extra or {})}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return images, labels


def test_cifar10_batch_planes_labels_and_normalisation(tmp_path):
    images, labels = make_cifar(tmp_path)
    # not the canonical file: refused by default, read with verify=False
    with pytest.raises(data.ChecksumError, match="40351d587109b95175f43aff81a1287e"):
        data.CIFAR10Test(tmp_path)
    ds = data.CIFAR10Test(tmp_path, verify=False)
    assert len(ds) == 4 and ds.labels.tolist() == labels
    x, label = ds[2]
    assert x.shape == (3, 32, 32) and label == 4
    mean, std = np.array(data.IMAGENET_MEAN), np.array(data.IMAGENET_STD)
    for (r, c, k) in [(0, 0, 0), (5, 30, 1), (31, 7, 2)]:
        want = (images[2, r, c, k] / 255.0 - mean[k]) / std[k]
        assert x[k, r, c].item() == pytest.approx(want, abs=1e-5)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    make_cifar(tmp_path, extra={b"x": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.CIFAR10Test(tmp_path, verify=False)
    assert (tmp_path / "victim").is_dir()


def test_cifar10_missing_names_folder_and_url(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.CIFAR10Test(tmp_path)
    assert "cifar-10-batches-py/test_batch" in str(err.value)
    assert data.CIFAR10_REMOTE.url in str(err.value)


def test_cifar10_jpeg_order_labels_and_pixels():
    ds = data.CIFAR10JPEG(shared(DATA))
    assert len(ds) == 10000 and ds.name == "cifar10-jpeg" and not ds.canonical
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.labels[:1000].eq(0).all() and ds.labels[-1000:].eq(9).all()
    # canonical test image 3 is the first airplane, image 0 the first cat (label 3): the lossy
    # JPEG is close to the lossless PNG, in the same channel order and the same normalisation
    from PIL import Image
    mean = torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(3, 1, 1)
    for png, index in (("cifar10_03_0.png", 0), ("cifar10_00_3.png", 3000)):
        ref = torch.from_numpy(np.array(Image.open(shared(DATA) / "cifar10" / "first20_png" / png)
                                          .convert("RGB"))).permute(2, 0, 1).float() / 255
        x, label = ds[index]
        assert label == int(png[-5])
        assert (x * std + mean - ref).abs().mean() < 12 / 255
        assert (x[[2, 1, 0]] * std + mean - ref).abs().mean() > (x * std + mean - ref).abs().mean()


# ----------------------------------------------------------------------------- MNIST aux

def test_rotate_digits_has_torchvision_rotate_semantics():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 28, 28, generator=gen)
    angles = torch.tensor([0.0, 33.0, 90.0, 251.5], dtype=torch.float64)
    ours = data.rotate_digits(x, angles)
    ref = torch.stack([TF.rotate(i, float(a), interpolation=InterpolationMode.BILINEAR)
                       for i, a in zip(x, angles)])
    assert (ours - ref).abs().max() < 1e-5
    with pytest.raises(ValueError):
        data.rotate_digits(x[0], angles)


def test_mnist_rot_aux_is_seeded_rotated_in_mnist_orientation(mnist_dir):
    ds = data.MNISTRotAux(mnist_dir)
    assert len(ds) == 10000 and ds.name == "mnist-rot-aux" and ds.serves == "rotmnist"
    assert not ds.canonical
    digits = torch.from_numpy(data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").copy())
    labels = data.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert ds.labels[:20].tolist() == labels[:20].tolist()
    # the documented recipe: seed 0, U[0, 360) degrees, rotate, own scalar mean/std
    angles = torch.rand(10000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 360
    assert torch.equal(ds.angles, angles)
    idx = [0, 1, 7, 9999]
    rotated = data.rotate_digits(digits[idx].float().div(255).unsqueeze(1), angles[idx])
    got = torch.stack([ds[i][0] for i in idx]).double() * ds.std + ds.mean
    assert torch.allclose(got, rotated.double(), atol=1e-5)
    assert not torch.allclose(got, rotated.transpose(-2, -1).double(), atol=1e-2)
    whole = torch.cat([b for b, _ in ds.batches(4096)])
    assert abs(whole.double().mean().item()) < 1e-5 and whole.double().std().item() == pytest.approx(1, abs=1e-4)


def test_mnist_aux_layouts_and_checksums(mnist_dir, tmp_path):
    tv = tmp_path / "MNIST" / "raw"
    tv.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(mnist_dir / name) as f:
            (tv / name[:-3]).write_bytes(f.read())  # torchvision keeps them uncompressed
    ds = data.MNISTRotAux(tmp_path)
    assert ds.paths["images"] == tv / "t10k-images-idx3-ubyte"
    assert torch.equal(ds[5][0], data.MNISTRotAux(mnist_dir)[5][0])
    # a tampered label file is not the canonical set
    raw_labels = bytearray((tv / "t10k-labels-idx1-ubyte").read_bytes())
    raw_labels[-1] = (raw_labels[-1] + 1) % 10
    (tv / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw_labels))
    with pytest.raises(data.ChecksumError, match="t10k-labels"):
        data.MNISTRotAux(tmp_path)
    with pytest.raises(data.DataNotFoundError) as err:
        data.MNISTRotAux(tmp_path / "nothing")
    assert "t10k-images-idx3-ubyte.gz" in str(err.value) and "ossci-datasets" in str(err.value)


def test_load_eval_set_names():
    assert set(data.EVAL_SETS) == {"rotmnist", "cifar10", "pcam", "mnist-rot-aux", "cifar10-jpeg",
                                   "mnist-rot-sample"}
    assert all(data.EVAL_SETS[c].canonical for c in data.CANONICAL_SET.values())
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.load_eval_set("mnist")
    assert isinstance(data.load_eval_set("cifar10-jpeg", shared(DATA), progress=False), data.CIFAR10JPEG)


# ----------------------------------------------------------------------------- hardening

def stray_files(folder):
    """Files in ``folder`` but the lock files."""
    return [p for p in folder.rglob("*") if p.is_file() and ".locks" not in p.parts]


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_html_instead_of_the_rotmnist_zip_is_refused_and_nothing_kept(tmp_path, rotmnist_arrays,
                                                                      monkeypatch):
    from _servers import StaticHost
    served = tmp_path / "served" / "www.iro.umontreal.ca"
    zpath = make_rotmnist(served, *rotmnist_arrays)
    with StaticHost(tmp_path / "served") as server:
        url = server.url_for("https://www.iro.umontreal.ca/" + zpath.name)
        monkeypatch.setattr(rotmnist, "ROTMNIST_REMOTE", data.Remote(url, zpath.name))
        for fault in ("html", "html_as_binary"):
            server.set_fault(url, fault)
            with pytest.raises(data.DataNotFoundError, match="HTML") as err:
                data.RotMNIST(tmp_path / "d", download=True, progress=False)
            assert zpath.name in str(err.value)
            assert not stray_files(tmp_path / "d")
        # not HTML, not a zip either: the structural check refuses it, names it, removes it
        server.set_fault(url, None)
        zpath.write_bytes(b"PK\x03\x04 but not really a zip" * 10)
        with pytest.raises(data.DataFormatError, match=zpath.name) as err:
            data.RotMNIST(tmp_path / "d", download=True, progress=False)
        assert "not a zip" in str(err.value) and "removed" in err.value.hint
        assert not stray_files(tmp_path / "d")
        # a download killed midway left its temp file: the next download removes it
        folder = tmp_path / "d" / "mnist_rotation_new"
        stale = folder / f".{zpath.name}.download-0123456789abcdef.part"
        stale.write_bytes(b"half a zip")
        make_rotmnist(served, *rotmnist_arrays)
        assert len(data.RotMNIST(tmp_path / "d", download=True, progress=False)) == 4
        assert sorted(p.name for p in stray_files(tmp_path / "d")) == [zpath.name,
                                                                      data.ROTMNIST_STATS]
        (folder / zpath.name).unlink()
        (folder / data.ROTMNIST_STATS).unlink()
        # a zip lacking the test member
        import zipfile as _zf
        with _zf.ZipFile(zpath, "w") as zf:
            zf.writestr(TRAIN, "0 " * 785)
        with pytest.raises(data.DataFormatError, match="lacks"):
            data.RotMNIST(tmp_path / "d", download=True, progress=False)
        assert not stray_files(tmp_path / "d")


def test_an_existing_zip_that_is_an_html_page_is_named(tmp_path):
    folder = tmp_path / "mnist_rotation_new"
    folder.mkdir()
    (folder / data.ROTMNIST_REMOTE.filename).write_bytes(b"<!DOCTYPE html><html>login</html>")
    with pytest.raises(data.DataFormatError, match="HTML page") as err:
        data.RotMNIST(tmp_path, progress=False)
    assert data.ROTMNIST_REMOTE.filename in str(err.value) and "delete" in err.value.hint


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.filterwarnings("ignore:.*rows, the published file has")  # a 6-row file on purpose
def test_rotmnist_refuses_nan_and_inf_pixels(tmp_path, rotmnist_arrays, bad):
    make_rotmnist(tmp_path, *rotmnist_arrays, as_zip=False)
    row = "0.5 " * 400 + f"{bad} " + "0.5 " * 383 + "3"
    (tmp_path / TEST).write_text(row + "\n")
    with pytest.raises(ValueError, match="NaN or infinite pixel"):
        data.RotMNIST(tmp_path, progress=False)


def test_pcam_refuses_fractional_labels(tmp_path):
    import h5py
    make_pcam(tmp_path / "pcam", n=2)
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f.create_dataset("y", data=np.array([0.7, 1.3]).reshape(2, 1, 1, 1))
    with pytest.raises(ValueError, match="labels must be integers"):
        data.PCamTest(tmp_path)
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f.create_dataset("y", data=np.array([0.0, 1.0]).reshape(2, 1, 1, 1))
    assert data.PCamTest(tmp_path).labels.tolist() == [0, 1]


def test_cifar10_refuses_fractional_labels(tmp_path):
    make_cifar(tmp_path)
    path = tmp_path / data.CIFAR10_FOLDER / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch[b"labels"] = [0.5, 1, 2, 3]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="labels must be integers"):
        data.CIFAR10Test(tmp_path, verify=False)


def test_downloads_are_size_capped_and_go_through_the_one_offline_switch(http_dir, tmp_path,
                                                                       monkeypatch):
    served, base = http_dir
    (served / "big.bin").write_bytes(b"\0" * 5000)
    with pytest.raises(data.DownloadError, match="refused before reading"):
        data.download_url(f"{base}/big.bin", tmp_path / "dl" / "big.bin", max_size=100,
                          progress=False)
    assert list((tmp_path / "dl").iterdir()) == []
    assert data.DownloadError is __import__("agcnn_zoo.hub", fromlist=["x"]).DownloadError
    monkeypatch.setenv("AGCNN_ZOO_OFFLINE", "1")
    with pytest.raises(data.DownloadError, match="offline"):
        data.download_url(f"{base}/big.bin", tmp_path / "dl" / "big.bin", progress=False)


def test_pcam_download_is_gunzipped_checked_and_refused_when_not_hdf5(tmp_path, monkeypatch):
    from _servers import StaticHost
    from agcnn_zoo.data import pcam
    src = tmp_path / "src"
    make_pcam(src, n=3)
    served = tmp_path / "served" / "zenodo.org"
    served.mkdir(parents=True)
    for key in ("x", "y"):
        name = f"camelyonpatch_level_2_split_test_{key}.h5"
        (served / (name + ".gz")).write_bytes(gzip.compress((src / name).read_bytes()))
    with StaticHost(tmp_path / "served") as server:
        remotes = {k: data.Remote(server.url_for(f"https://zenodo.org/{r.filename}"), r.filename,
                                  md5_of="gunzipped")
                   for k, r in data.PCAM_REMOTES.items()}
        monkeypatch.setattr(pcam, "PCAM_REMOTES", remotes)
        ds = data.PCamTest(tmp_path / "d", download=True, progress=False)
        assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 0]
        assert sorted(p.name for p in stray_files(tmp_path / "d")) == [
            "camelyonpatch_level_2_split_test_x.h5", "camelyonpatch_level_2_split_test_y.h5"]
        # a gzip whose content is not HDF5: refused, named, nothing kept
        (served / "camelyonpatch_level_2_split_test_y.h5.gz").write_bytes(
            gzip.compress(b"<html>not the labels</html>" * 4))
        with pytest.raises(data.DataFormatError, match="camelyonpatch_level_2_split_test_y.h5"):
            data.PCamTest(tmp_path / "e", download=True, progress=False)
        assert [p.name for p in stray_files(tmp_path / "e")] == ["camelyonpatch_level_2_split_test_x.h5"]
