"""Inputs that would give a silently wrong answer are refused or named: NaN / inf model inputs
(refused), float images in 0-255 or normalised already (refused by the transform), float64 /
float16 images (converted by the transform), 0-255 values fed to the model directly (warned
once); the checks are skipped while tracing, so fx, jit tracing and ONNX keep working."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo.export import export
from agcnn_zoo.input_checks import InputValueWarning, check_image_values


@pytest.fixture
def offline(monkeypatch, tmp_path, mirror_dir):
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror_dir))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _digits(mnist_dir, n=200):
    """Real MNIST test digits, rotated like the evaluation set, as uint8 [n, 1, 28, 28]."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    from _mnist import load_mnist_test
    images, labels = load_mnist_test(mnist_dir, n)
    angles = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 360
    rotated = torch.stack([TF.rotate(img.unsqueeze(0), float(a), InterpolationMode.BILINEAR)
                           for img, a in zip(images, angles)])
    return rotated, labels


def _no_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    assert not [w for w in caught if issubclass(w.category, InputValueWarning)]
    return out


def test_nan_and_inf_inputs_are_refused_naming_the_samples():
    model = zoo.create_model("p4cnn_rotmnist").eval()
    x = torch.randn(4, 1, 28, 28)
    x[1, 0, 3, 3] = float("nan")
    x[3] = float("inf")
    with pytest.raises(ValueError, match=r"1 NaN and 784 inf values in samples 1, 3: the logits "
                                         r"would be NaN and their argmax class 0"):
        model(x)
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 28, 28), float("nan")))
    model.check_input_values = False      # the documented switch: NaN goes through again
    with torch.no_grad():
        assert model(torch.full((2, 1, 28, 28), float("nan"))).isnan().all()


def test_the_transform_refuses_non_finite_and_out_of_range_float_images():
    t = zoo.transforms("p4cnn_rotmnist")
    with pytest.raises(ValueError, match="these look like 0-255 pixels: divide by 255"):
        t(torch.full((1, 28, 28), 200.0))
    with pytest.raises(ValueError, match="it looks normalised already"):
        t(torch.full((1, 28, 28), -0.45))
    with pytest.raises(ValueError, match="interpolation overshoot"):
        t(torch.full((1, 28, 28), 1.3))
    with pytest.raises(ValueError, match="NaN"):
        t(torch.full((1, 28, 28), float("nan")))
    t(torch.full((1, 28, 28), 1.05))      # overshoot within PIXEL_SLACK
    check_image_values(torch.rand(3, 8, 8))


def test_float_images_of_any_float_dtype_come_out_float32():
    t = zoo.transforms("allcnnc_cifar")
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = t(img.float())
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = t(img.to(dtype))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, t(img.to(dtype).float()), rtol=0, atol=0)
    assert torch.equal(t(img), expected)    # float64 -> float32 before anything else
    model = zoo.create_model("allcnnc_cifar").eval()
    with torch.no_grad():
        assert model(t(img).unsqueeze(0)).dtype == torch.float32


def test_real_digits_as_a_new_user_passes_them(offline, mnist_dir):
    """``torch.from_numpy(np.array(img)).float()`` without ``/ 255`` scored 65.9% instead of 97.6%:
    now refused; the same digits as uint8, as float / 255 and as PIL images give one input."""
    from PIL import Image
    digits, labels = _digits(mnist_dir)
    t = zoo.transforms("p4cnn_rotmnist")
    as_user = torch.from_numpy(np.array(digits.numpy())).float()
    with pytest.raises(ValueError, match="0-255 pixels"):
        t(as_user)
    x = t(digits)
    assert torch.equal(t(as_user / 255), x)
    assert torch.equal(t(Image.fromarray(digits[7, 0].numpy())), x[7])
    model = zoo.create_model("p4cnn_rotmnist", pretrained=True)
    with torch.no_grad():
        acc = (model(x).argmax(1) == labels).float().mean().item()
    assert acc > 0.95


def test_model_warns_once_about_unnormalised_pixels(offline, mnist_dir):
    digits, _ = _digits(mnist_dir, 20)
    model = zoo.create_model("p4cnn_rotmnist", pretrained=True)
    raw = digits.float()                  # 0-255, no transform at all
    with pytest.warns(InputValueWarning, match=r"input values span \[0, 255\].*0-255 pixels"):
        with torch.no_grad():
            model(raw)
    with torch.no_grad():
        _no_warnings(lambda: model(raw))                  # once per model
        fresh = zoo.create_model("p4cnn_rotmnist", pretrained=True)
        _no_warnings(lambda: fresh(zoo.transforms("p4cnn_rotmnist")(digits)))
        _no_warnings(lambda: fresh(torch.randn(64, 1, 28, 28)))   # noise is no 0-255 image


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:FutureWarning")
def test_the_value_checks_stay_out_of_traced_graphs():
    model = zoo.create_model("af_p4cnn_rotmnist").eval()
    x = torch.randn(2, 1, 28, 28)
    graph = torch.fx.symbolic_trace(model)
    assert "aminmax" not in graph.code and "isfinite" not in graph.code
    with torch.no_grad():
        traced = torch.jit.trace(export(model), x, check_trace=False)
        assert "aminmax" not in str(traced.inlined_graph)
        nan = torch.full_like(x, float("nan"))
        assert traced(nan).isnan().all()      # the graph has no check: it is the model's to do
        with pytest.raises(ValueError, match="NaN"):
            model(nan)


def test_torch_compile_makes_one_graph_without_the_value_checks():
    # fullgraph=True fails on a graph break: a value check reading the input would be one
    model = zoo.create_model("p4cnn_rotmnist").eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
        assert compiled(torch.full_like(x, float("nan"))).isnan().all()
