"""The full-alpha kernel's two backends and its chunk budget, for all three attention kinds
(alpha = channel + spatial, alpha_Ch, alpha_Sp): every backend and every budget equals the
readable reference path (forward and gradients, 1e-5 of the magnitude) on random inputs with odd
spatial sizes and on the golden states; the default budget comes from the CPU's cache."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from agcnn_zoo import nn as gnn
from agcnn_zoo.hub.convert import convert_state_dict, load_original_checkpoint
from agcnn_zoo.nn import chunk_budget, full_alpha
from agcnn_zoo.registry import get_entry
from conftest import checkpoint_path, golden_path, random_golden_path

TOL = 1e-5
KINDS = {"alpha": (True, True), "alpha_ch": (True, False), "alpha_sp": (False, True)}


def _layer(kind: str, lifting: bool, g="p4", **conv):
    channel, spatial = KINDS[kind]
    rca = gnn.ResponseChannelAttention(4, 3, g, 1, lifting=lifting) if channel else None
    rsa = gnn.ResponseSpatialAttention(4, 5, g, lifting=lifting) if spatial else None
    cls = gnn.AttLiftingConv if lifting else gnn.AttGroupConv
    return cls(3, 4, 3, g, rca, rsa, **conv)


def _input(lifting: bool, size: int, g="p4", batch=2, seed=1):
    n = 8 if g == "p4m" else 4
    shape = (batch, 3, size, size) if lifting else (batch, 3, n, size, size)
    # ReLU'd like the input of every inner layer: zeros give the max reductions exact ties
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return x if lifting else x.relu()


def _run(layer, x):
    """Output, input gradient and parameter gradients of ``sum(out * w)`` (a fixed random
    weighting, so that no gradient is uniform)."""
    x = x.clone().requires_grad_()
    layer.zero_grad()
    out = layer(x)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * w).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in layer.parameters()]


def _assert_close(got, want, what):
    for i, (a, b) in enumerate(zip(got, want)):
        scale = max(1.0, b.abs().max().item())
        err = (a - b).abs().max().item()
        assert err <= TOL * scale, f"{what}, tensor {i}: max abs diff {err:.3g} (magnitude {scale:.3g})"


def _reference(layer, x):
    with gnn.reference_path():
        return _run(layer, x)


# ------------------------------------------------------------------------- eager, any budget
@pytest.mark.parametrize("lifting", [True, False], ids=["lifting", "group"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_budget_from_one_entry_to_everything_equals_the_reference(kind, lifting):
    torch.manual_seed(0)
    layer = _layer(kind, lifting, padding=1).train()
    for size in (7, 9):                                   # odd maps, odd outputs
        x = _input(lifting, size)
        want = _reference(layer, x)
        one_slice = 3 * (1 if lifting else 4) * 4 * size * size
        for budget in (1, one_slice, 3 * one_slice, 2 * 4 * one_slice, 1 << 40):
            gnn.set_max_chunk_elements(layer, budget)
            _assert_close(_run(layer, x), want, f"{kind} size {size} budget {budget}")
            with torch.no_grad():
                _assert_close([layer(x)], want[:1], f"{kind} no-grad budget {budget}")


#: forward chunks of the tie test (batch 3, 4 output channels, 7x7 maps) and the batch sizes
#: of alpha_Ch's backward chunks with RECORDED_BACKWARD_MERGE = 2: merged runs of samples,
#: a run cut short by the cap, and chunks split over output channels (never merged)
TIE_CHUNKS = {"whole_batch": (1 << 40, [3]), "per_sample": ("sample", [2, 1]),
              "per_output_channel": ("slice", [1] * 12)}


@pytest.mark.parametrize("chunks", list(TIE_CHUNKS))
@pytest.mark.parametrize("lifting", [True, False], ids=["lifting", "group"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_tied_maxima_share_their_gradient_like_amax(kind, lifting, chunks, monkeypatch):
    """A dead (all-zero) input channel and a constant one: whole response rows are equal, so
    the spatial max (and the channel max) is tied at many positions. alpha_Ch routes the
    spatial max through ``MaxRecord`` (masks of the tied rows, gathers and scatters for the
    rest), its backward cutting the chunks anew (merged runs: the tied rows of later samples
    move within the chunk); the kinds with spatial attention through dense masks, recording
    nothing."""
    records, backward_batches = [], []
    real, real_backward = full_alpha.forward._locate_max, full_alpha.backward._alpha_chunk_backward
    monkeypatch.setattr(full_alpha.forward, "_locate_max",
                        lambda y: records.append(real(y)) or records[-1])
    monkeypatch.setattr(full_alpha.backward, "_alpha_chunk_backward", lambda x, *a: (
        backward_batches.append(x.shape[0]), real_backward(x, *a))[1])
    monkeypatch.setattr(full_alpha.backward, "RECORDED_BACKWARD_MERGE", 2)
    torch.manual_seed(0)
    layer = _layer(kind, lifting, padding=1).train()
    x = _input(lifting, 7, batch=3)
    x[:, 0] = 0.0
    x[:, 1] = 0.5
    budget, batches = TIE_CHUNKS[chunks]
    one_slice = 3 * (1 if lifting else 4) * 4 * 7 * 7
    budget = {"sample": 4 * one_slice, "slice": one_slice}.get(budget, budget)
    gnn.set_max_chunk_elements(layer, budget)
    got = _run(layer, x)
    if kind == "alpha_ch":
        tied = sum(r.rows.numel() for r in records)
        rows = sum(r.mx.numel() for r in records)
        assert 0.1 * rows < tied < rows, f"{tied} of {rows} rows tied"
        assert all(r.masks.sum(1).ge(2).all() for r in records)
        assert backward_batches == batches
    else:
        assert records == []
    _assert_close(got, _reference(layer, x), f"{kind} with ties, {chunks}")


def test_merged_chunks_cover_the_same_entries_in_runs_of_samples():
    plan = full_alpha.chunk_plan(7, 3, 4, 10, 30)          # 1 sample, all 3 output channels
    assert full_alpha.merge_chunks(plan, 3) == [
        (slice(0, 3), slice(0, 12)), (slice(3, 6), slice(0, 12)), (slice(6, 7), slice(0, 12))]
    assert full_alpha.merge_chunks(plan, 1) == plan
    split = full_alpha.chunk_plan(2, 3, 4, 10, 20)         # 2 output channels, then 1
    assert len(split) == 4 and full_alpha.merge_chunks(split, 8) == split


def test_an_even_spatial_attention_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        gnn.ResponseSpatialAttention(4, 4, "p4")


@pytest.mark.parametrize("kind", list(KINDS))
def test_stride_two_and_a_dilated_layer_equal_the_reference(kind):
    torch.manual_seed(0)
    for layer, size in ((_layer(kind, False, stride=2, padding=1), 9),
                        (_layer(kind, True, padding=2, dilation=2), 11)):
        x = _input(layer.lifting, size)
        _assert_close(_run(layer.train(), x), _reference(layer, x), f"{kind} {layer}")


# --------------------------------------------------------------------------- the compiled one
def _no_grad_output(layer, x):
    with torch.no_grad():
        return [layer(x)]


def _cxx_compiler():
    return os.environ.get("CXX") or next(
        (c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


@pytest.fixture
def compiled_calls(monkeypatch):
    """Counts the calls of the compiled chunk function (``fullgraph=True``: it compiles
    the whole chunk or raises, it never falls back to eager in silence). Inductor needs a C++
    compiler on CPU; without one these tests skip (the error is tested on its own below)."""
    if _cxx_compiler() is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (c++, g++ or clang++); none found")
    calls = []
    compiled = full_alpha.chunk_forward("compiled")

    def counting(*args):
        calls.append(1)
        return compiled(*args)
    monkeypatch.setattr(full_alpha.backends, "_compiled", [counting])
    return calls


@pytest.mark.parametrize("kind", list(KINDS))
def test_compiled_backend_equals_the_reference_on_odd_sizes(kind, compiled_calls):
    torch.manual_seed(0)
    for lifting, size in ((True, 7), (False, 9)):
        layer = gnn.set_full_alpha_backend(_layer(kind, lifting, padding=1 if lifting else 0), "compiled")
        x = _input(lifting, size)
        want = _reference(layer, x)
        compiled_calls.clear()
        got = _no_grad_output(layer.eval(), x)
        assert compiled_calls                               # the compiled chunk function ran
        _assert_close(got, want[:1], f"compiled {kind} lifting={lifting}")
        # training with the compiled backend runs the eager kernel: the same gradients
        _assert_close(_run(layer.train(), x), want, f"compiled backend, training {kind}")


def test_compiled_backend_with_many_chunks_equals_eager(compiled_calls):
    torch.manual_seed(0)
    layer = _layer("alpha", False, padding=1).eval()
    x = _input(False, 7, batch=3)
    gnn.set_max_chunk_elements(layer, 3 * 4 * 4 * 7 * 7 * 3)  # 3 output channels, then 1
    eager = _no_grad_output(layer, x)
    gnn.set_full_alpha_backend(layer, "compiled")
    _assert_close(_no_grad_output(layer, x), eager, "compiled, uneven chunks")
    assert len(compiled_calls) == 3 * 2                   # 3 samples x (3 + 1 channels)


def test_set_full_alpha_backend_reaches_every_layer_and_names_the_choices():
    model = get_entry("ach_p4cnn_rotmnist").fn()
    layers = [m for m in model.modules() if isinstance(m, gnn.FullAlphaConv)]
    assert len(layers) == 7 and {m.full_alpha_backend for m in layers} == {"eager"}
    assert gnn.set_full_alpha_backend(model, "compiled") is model
    assert {m.full_alpha_backend for m in layers} == {"compiled"}
    with pytest.raises(ValueError, match=r"'fast'.*'eager', 'compiled'"):
        gnn.set_full_alpha_backend(model, "fast")


def test_a_failing_compiler_is_reported_with_the_way_back_to_eager(monkeypatch):
    inductor_error = type("InductorError", (RuntimeError,), {"__module__": "torch._inductor.exc"})

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise inductor_error("C++ compile error: cc1plus not found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(full_alpha.backends, "_compiled", [])
    layer = gnn.set_full_alpha_backend(_layer("alpha", True), "compiled")
    with pytest.raises(RuntimeError, match=r"C\+\+ compiler.*set_full_alpha_backend\(model, 'eager'\)"):
        with torch.no_grad():
            layer(_input(True, 7))


# ---------------------------------------------------------------------- golden states, models
def _golden_model(name):
    """The authors' checkpoint for a_p4cnn; the original's seeded state (golden/random) for the
    two kinds the authors did not publish."""
    model = get_entry(name).fn()
    if name == "a_p4cnn_rotmnist":
        model.load_state_dict(convert_state_dict(load_original_checkpoint(checkpoint_path(name)), model))
        return model, load_file(golden_path(name))["input"][:2]
    golden = load_file(random_golden_path("rot_mnist", get_entry(name).original_class))
    model.load_state_dict({k[len("state_dict."):]: v for k, v in golden.items()
                           if k.startswith("state_dict.")})
    return model, golden["input"][:2]


GOLDEN_NAMES = ["a_p4cnn_rotmnist", "ach_p4cnn_rotmnist", "asp_p4cnn_rotmnist"]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_states_train_gradients_equal_the_reference(name):
    model, x = _golden_model(name)
    model.train().dropout.p = 0.0          # dropout masks would differ between the two runs
    _assert_close(_run(model, x), _reference(model, x), f"{name} training")


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_states_compiled_logits_equal_the_reference(name, compiled_calls):
    model, x = _golden_model(name)
    model.eval()
    want = _no_grad_output(model, x)
    with gnn.reference_path():
        ref = _no_grad_output(model, x)
    gnn.set_full_alpha_backend(model, "compiled")
    _assert_close(_no_grad_output(model, x), ref, f"{name} compiled")
    assert len(compiled_calls) >= 7                      # every layer, at least one chunk
    _assert_close(want, ref, f"{name} eager")


# ------------------------------------------------------------------------------ cache budget
def _fake_sysfs(root, caches):
    for i, (kind, size) in enumerate(caches):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
    return root


def test_the_default_budget_follows_the_largest_data_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("AGCNN_ZOO_CHUNK_ELEMENTS", raising=False)
    sysfs = _fake_sysfs(tmp_path / "cache", [("Data", "48K"), ("Instruction", "64M"),
                                             ("Unified", "1024K"), ("Unified", "32768K")])
    assert chunk_budget.largest_cache_bytes(sysfs) == 32 << 20       # the L1i is ignored
    assert chunk_budget.default_chunk_elements(32 << 20) == 1 << 20  # 6 floats per entry fit
    assert chunk_budget.default_chunk_elements(1 << 30) == 1 << 25
    assert chunk_budget.default_chunk_elements(1024) == 1 << 16      # a floor, not op overhead
    assert chunk_budget.largest_cache_bytes(tmp_path / "none") == chunk_budget.FALLBACK_CACHE_BYTES
    layer = gnn.AttGroupConv(2, 2, 3, channel_attention=None, spatial_attention=None)
    assert layer.max_chunk_elements == chunk_budget.default_chunk_elements()


def test_the_budget_can_be_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("AGCNN_ZOO_CHUNK_ELEMENTS", "4096")
    assert chunk_budget.default_chunk_elements() == 4096
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("AGCNN_ZOO_CHUNK_ELEMENTS", bad)
        with pytest.raises(ValueError, match="AGCNN_ZOO_CHUNK_ELEMENTS.*positive integer"):
            chunk_budget.default_chunk_elements()
    # a bad value fails where it is used, never at import
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", "import agcnn_zoo"], capture_output=True,
                       text=True, env={**__import__("os").environ, "AGCNN_ZOO_CHUNK_ELEMENTS": "abc"})
    assert p.returncode == 0, p.stderr
