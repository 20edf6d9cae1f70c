"""The converter: weights_only loading, prefix stripping, strict key/shape checks, deterministic
safetensors."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from agcnn_zoo.hub.convert import (CheckpointError, convert_checkpoint, convert_state_dict,
                               load_original_checkpoint, load_safetensors, safetensors_bytes)
from agcnn_zoo.models.rotmnist import AChP4CNN, CoAP4CNN, P4CNN
from agcnn_zoo.registry import get_entry
from conftest import REPO, checkpoint_path, golden_path, random_golden_path


def test_convert_is_deterministic_and_loadable(tmp_path):
    src = checkpoint_path("af_p4cnn_rotmnist")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    sha_a = convert_checkpoint(src, a, "af_p4cnn_rotmnist")
    sha_b = convert_checkpoint(src, b, "af_p4cnn_rotmnist")
    assert a.read_bytes() == b.read_bytes()
    assert sha_a == sha_b == hashlib.sha256(a.read_bytes()).hexdigest()
    # another process (other hash seed, fresh interpreter) writes the same bytes
    c = tmp_path / "c.safetensors"
    out = subprocess.run([sys.executable, "-m", "agcnn_zoo", "convert", "--model", "af_p4cnn_rotmnist",
                          str(src), str(c)], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"} | _pyenv())
    assert out.returncode == 0, out.stderr
    assert c.read_bytes() == a.read_bytes()
    tensors, meta = load_safetensors(a)
    assert meta["agcnn_zoo.architecture"] == "FAP4CNN"
    assert meta["agcnn_zoo.model"] == "af_p4cnn_rotmnist"
    assert "folded" in meta["agcnn_zoo.frame"]  # rot-MNIST: the transposition folded in
    ref = torch.load(src, map_location="cpu", weights_only=True)
    assert set(tensors) == set(ref)
    from agcnn_zoo.models.rotmnist import FAP4CNN
    from agcnn_zoo.nn.orientation import transposed_state_dict
    expected = transposed_state_dict(FAP4CNN(), ref)  # exact data movement: bit-equal
    for k in ref:
        assert torch.equal(tensors[k], expected[k]), k


def _pyenv():
    import os
    return {k: v for k, v in os.environ.items() if k in ("HOME", "PYTHONPATH", "VIRTUAL_ENV", "PATH")}


def test_converted_weights_reproduce_golden(tmp_path):
    dst = tmp_path / "p4cnn.safetensors"
    convert_checkpoint(checkpoint_path("p4cnn_rotmnist"), dst, "p4cnn_rotmnist")
    model = P4CNN()
    model.load_state_dict(load_file(dst))
    golden = load_file(golden_path("p4cnn_rotmnist"))
    with torch.no_grad():  # natural digits in: the original's input was the transposed one
        out = model.eval()(golden["input"].transpose(-2, -1))
    assert (out - golden["logits"]).abs().max() <= 1e-4


def test_module_prefix_is_stripped():
    sd = load_original_checkpoint(checkpoint_path("p4cnn_rotmnist"))
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    out = convert_state_dict(wrapped, P4CNN())
    assert list(out) == list(P4CNN().state_dict())


@pytest.mark.parametrize("cls, original", [(CoAP4CNN, "RomHog_fA_P4CNN"),
                                          (AChP4CNN, "A_Ch_P4CNN")])
def test_accepts_golden_random_state_dicts(cls, original):
    golden = load_file(random_golden_path("rot_mnist", original))
    sd = {k: v for k, v in golden.items() if k.startswith("state_dict.")}
    model = cls()
    model.load_state_dict(convert_state_dict(sd, model))
    with torch.no_grad():
        out = model.eval()(golden["input"])
    assert (out - golden["logits"]).abs().max() <= 1e-4


def test_missing_and_extra_keys_are_refused_by_name():
    sd = load_original_checkpoint(checkpoint_path("p4cnn_rotmnist"))
    missing = dict(sd)
    del missing["c3.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: c3\.weight"):
        convert_state_dict(missing, P4CNN())
    extra = dict(sd, **{"c8.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: c8\.weight"):
        convert_state_dict(extra, P4CNN())
    # the alpha_F checkpoint into the plain class: every attention tensor named as unexpected
    att = load_original_checkpoint(checkpoint_path("af_p4cnn_rotmnist"))
    with pytest.raises(CheckpointError, match=r"c1\.channel_attention\.weight_fc1"):
        convert_state_dict(att, P4CNN())


def test_shape_mismatch_is_refused():
    sd = load_original_checkpoint(checkpoint_path("p4cnn_rotmnist"))
    sd["c2.weight"] = sd["c2.weight"][:, :, :, :2, :2]
    with pytest.raises(CheckpointError, match=r"c2\.weight: checkpoint shape \(10, 10, 4, 2, 2\)"):
        convert_state_dict(sd, P4CNN())


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("payload", [b"<html><body>Not Found</body></html>", b"",
                                     pickle.dumps({"w": _Evil()})],
                         ids=["html", "empty", "pickle-with-code"])
def test_unreadable_or_unsafe_files_are_refused(tmp_path, payload):
    bad = tmp_path / "model.pth"
    bad.write_bytes(payload)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_original_checkpoint(bad)


def test_safetensors_bytes_handles_scalars_and_metadata_order():
    t = {"b": torch.arange(3, dtype=torch.float32), "a": torch.tensor(7, dtype=torch.int64)}
    one = safetensors_bytes(t, {"z": "1", "a": "2"})
    two = safetensors_bytes(dict(reversed(list(t.items()))), {"a": "2", "z": "1"})
    assert one == two
    header_len = int.from_bytes(one[:8], "little")
    assert (8 + header_len) % 8 == 0


def test_registry_convert_uses_the_registered_architecture(tmp_path):
    assert get_entry("af_p4cnn_rotmnist").model_class == "FAP4CNN"
    assert get_entry("af_p4cnn_rotmnist").architecture == "FAP4CNN"  # the deprecated alias
    with pytest.raises(CheckpointError, match="missing keys"):
        convert_checkpoint(checkpoint_path("p4cnn_rotmnist"), tmp_path / "x.safetensors",
                           "af_p4cnn_rotmnist")
    assert not (tmp_path / "x.safetensors").exists()


def test_cifar_alpha_f_p4m_allcnnc_checkpoint_layout(tmp_path):
    """The authors' CIFAR checkpoint is not available offline; rebuild a file of its exact
    layout (nn.DataParallel keys, legacy pickle) from the seeded golden of its class and check
    the whole conversion path on it."""
    golden = load_file(random_golden_path("cifar10", "fA_P4MAllCNNC"))
    legacy = {"module." + k[len("state_dict."):]: v for k, v in golden.items()
              if k.startswith("state_dict.")}
    src = tmp_path / "model.pth"
    torch.save(legacy, src, _use_new_zipfile_serialization=False)
    dst = tmp_path / "af_p4m_allcnnc_cifar.safetensors"
    convert_checkpoint(src, dst, "af_p4m_allcnnc_cifar")
    model = get_entry("af_p4m_allcnnc_cifar").fn()
    model.load_state_dict(load_file(dst))
    with torch.no_grad():
        out = model.eval()(golden["input"])
    assert (out - golden["logits"]).abs().max() <= 1e-4


# ----------------------------------------------------------------------------- hardening

def _legacy(tmp_path, edit):
    sd = load_original_checkpoint(checkpoint_path("p4cnn_rotmnist"))
    edit(sd)
    src = tmp_path / "model.pth"
    torch.save(sd, src)
    return src


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_weights_are_refused(tmp_path, dtype):
    def edit(sd):
        sd["c2.weight"] = sd["c2.weight"].to(dtype)
    src = _legacy(tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"c2\.weight: checkpoint dtype"):
        convert_checkpoint(src, tmp_path / "out.safetensors", "p4cnn_rotmnist")
    assert not (tmp_path / "out.safetensors").exists()


def test_an_all_int64_checkpoint_is_refused(tmp_path):
    def edit(sd):
        for k in sd:
            sd[k] = sd[k].round().to(torch.int64)
    with pytest.raises(CheckpointError, match="int64"):
        convert_checkpoint(_legacy(tmp_path, edit), tmp_path / "out.safetensors", "p4cnn_rotmnist")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_weights_are_refused(tmp_path, value):
    def edit(sd):
        sd["c2.weight"].view(-1)[3] = value
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        convert_checkpoint(_legacy(tmp_path, edit), tmp_path / "out.safetensors", "p4cnn_rotmnist")


def test_dst_may_not_be_the_source_by_any_path(tmp_path):
    src = tmp_path / "model.pth"
    src.write_bytes(checkpoint_path("p4cnn_rotmnist").read_bytes())
    original = src.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.pth").symlink_to(src)
    os.link(src, tmp_path / "hard.pth")
    for dst in (src, tmp_path / "sub" / ".." / "model.pth", tmp_path / "link.pth",
                tmp_path / "hard.pth"):
        with pytest.raises(CheckpointError, match="the source checkpoint itself"):
            convert_checkpoint(src, dst, "p4cnn_rotmnist")
    assert src.read_bytes() == original


def test_converted_files_are_0644(tmp_path):
    old = os.umask(0o077)
    try:
        convert_checkpoint(checkpoint_path("p4cnn_rotmnist"), tmp_path / "o.safetensors",
                           "p4cnn_rotmnist")
    finally:
        os.umask(old)
    assert (tmp_path / "o.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.uint8])
def test_inputs_in_another_dtype_than_the_model_get_a_clear_error(dtype):
    model = P4CNN().eval()
    x = torch.zeros(2, 1, 28, 28).to(dtype)
    with pytest.raises(ValueError, match=r"expects a floating-point tensor of shape \[B, 1, 28, 28\]"):
        model(x)
    with torch.no_grad():  # converting the model to that dtype is the documented way
        if dtype.is_floating_point and dtype != torch.float16:
            assert model.to(dtype)(x).dtype == dtype
