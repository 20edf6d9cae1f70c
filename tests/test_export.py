"""export(): plain-convolution deployment networks with the same logits; trace / compile smoke."""
from __future__ import annotations

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo.export import ExportError, export
from agcnn_zoo.nn.attentive_conv import AttGroupConv, AttLiftingConv
from agcnn_zoo.nn.filter_banks import CachedBanks

FULL_ALPHA = {"a_p4cnn_rotmnist", "ach_p4cnn_rotmnist", "asp_p4cnn_rotmnist", "a_p4m_resnet44_cifar"}
EXPORTABLE = [n for n in zoo.list_models() if n not in FULL_ALPHA]


def _input(name, batch=2):
    c, h, w = zoo.model_info(name)["input_size"]
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_computes_the_same_logits(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
        out = export(model)(x)
    scale = max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= 1e-5 * scale
    exported = export(model)
    assert not any(isinstance(m, CachedBanks) for m in exported.modules()), \
        "the exported network must hold no group machinery"


def test_export_refuses_full_alpha_attention():
    model = zoo.create_model("a_p4cnn_rotmnist")
    with pytest.raises(ExportError, match="AttLiftingConv|AttGroupConv"):
        export(model)
    assert any(isinstance(m, (AttLiftingConv, AttGroupConv)) for m in model.modules())


def test_export_is_a_snapshot_of_eval_behaviour():
    model = zoo.create_model("p4cnn_rotmnist").eval()
    exported = export(model)
    x = _input("p4cnn_rotmnist")
    with torch.no_grad():
        before = exported(x)
        for p in model.parameters():
            p.mul_(0.5)
        assert torch.equal(exported(x), before)


# TorchScript tracing is tested on purpose (a deployment path); torch itself deprecates the API,
# a notice the project cannot act on (marks outrank -W on the command line). Tracing also turns
# the layers' input-shape checks and chunk plans into constants (TracerWarning): intended for a
# fixed C x H x W network, the same choice to_onnx makes, and the tests below check the traces
# against eager on the traced size and, for the exported model, on another batch size.
JIT_DEPRECATION = [pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning"),
                   pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:FutureWarning"),
                   pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "af_p4cnn_rotmnist", "a_p4cnn_rotmnist",
                                  "p4m_densenet_pcam"])
@JIT_DEPRECATION[0]
@JIT_DEPRECATION[1]
@JIT_DEPRECATION[2]
def test_trace_matches_eager(name):
    model = zoo.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        assert (traced(x) - model(x)).abs().max().item() <= 1e-5 * max(1.0, model(x).abs().max().item())


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "af_p4cnn_rotmnist"])
def test_compile_matches_eager(name):
    # aot_eager exercises dynamo tracing + AOT autograd without a C++ toolchain build (CI time)
    model = zoo.create_model(name).eval()
    x = _input(name)
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        assert (compiled(x) - model(x)).abs().max().item() <= 1e-5 * max(1.0, model(x).abs().max().item())


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "af_p4m_allcnnc_cifar"])
@JIT_DEPRECATION[0]
@JIT_DEPRECATION[1]
@JIT_DEPRECATION[2]
def test_trace_of_an_exported_model(name):
    """Default grad mode: the trace computes the logits (its self-check, which re-traces under
    no_grad, is off: see agcnn_zoo.export's docstring); under no_grad the self-check passes."""
    model = zoo.create_model(name).eval()
    exported = export(model)
    x = _input(name)
    traced = torch.jit.trace(exported, x, check_trace=False)
    with torch.no_grad():
        ref = model(x)
        assert (traced(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
        checked = torch.jit.trace(exported, x)
        assert (checked(_input(name, 3)) - model(_input(name, 3))).abs().max().item() <= \
            1e-5 * max(1.0, ref.abs().max().item())


ONNX_CASES = [("z2cnn_rotmnist", True), ("p4cnn_rotmnist", True), ("af_p4cnn_rotmnist", True),
              ("p4m_densenet_pcam", True), ("af_p4m_allcnnc_cifar", False),
              ("coa_p4cnn_rotmnist", False)]


@pytest.mark.parametrize("name,pretrained", ONNX_CASES)
def test_onnx_runtime_reproduces_the_logits(name, pretrained, tmp_path, monkeypatch, mirror_dir):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from agcnn_zoo.export import to_onnx
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror_dir))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = zoo.create_model(name, pretrained=pretrained).eval()
    path = to_onnx(model, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):                                # the batch axis is dynamic
        x = _input(name, batch)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert logits.shape == tuple(ref.shape)
        err = (torch.from_numpy(logits) - ref).abs().max().item()
        assert err <= 1e-5 * max(1.0, ref.abs().max().item()), err


def test_onnx_refuses_full_alpha(tmp_path):
    pytest.importorskip("onnx")
    from agcnn_zoo.export import to_onnx
    with pytest.raises(ExportError):
        to_onnx(zoo.create_model("a_p4cnn_rotmnist"), tmp_path / "a.onnx")
