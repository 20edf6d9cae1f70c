"""Rot-MNIST weights through the pipelines a timm or torchvision user writes (issue #24): grey
PNG files of rotated MNIST test digits in MNIST's orientation. The full measurement over every
weight and 10,000 digits is eval/natural_pipelines.py; here every weight's two pipelines must
hand the model exactly what the zoo's own transform hands it, and one weight is scored."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo.hub.catalogue import catalogue

from conftest import REPO

timm = pytest.importorskip("timm")

ROTMNIST = [w for w in catalogue().ids() if catalogue().record(w).get("dataset") == "rotmnist"]


def _script():
    spec = importlib.util.spec_from_file_location("natural_pipelines",
                                                  REPO / "eval" / "natural_pipelines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def pngs(script, mnist_dir, tmp_path_factory):
    return script.write_pngs(str(mnist_dir), tmp_path_factory.mktemp("pngs"), 400)


@pytest.mark.parametrize("weight_id", ROTMNIST)
def test_timm_and_torchvision_pipelines_hand_the_model_the_zoos_input(weight_id, script, pngs,
                                                                      cache):
    from PIL import Image
    ours = zoo.transforms(weight_id)
    _, timm_load = script.timm_pipeline(weight_id)
    model, hub_load = script.hub_pipeline(weight_id)
    assert model.pretrained_cfg["weight_id"] == catalogue().resolve(weight_id)[0]
    for p in pngs[:16]:
        expected = ours(Image.open(p))
        torch.testing.assert_close(timm_load(p), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(hub_load(p), expected, rtol=0, atol=1e-6)


def test_a_weight_scores_its_recorded_accuracy_through_timm(script, pngs, cache):
    wid = "p4cnn_rotmnist"
    model, load = script.timm_pipeline(wid)
    recorded = script.recorded(wid)
    natural = script.top1(model, pngs, load)
    # 400 digits: a standard error of about 0.7 points around the 10,000-digit figure
    assert natural >= recorded - 2.5, (natural, recorded)
    # the failure this guards against: digits held as the authors' files store them
    transposed = script.top1(model, pngs, lambda p: load(p).transpose(-2, -1))
    assert transposed < natural - 15, (transposed, natural)


def test_rgb_files_are_refused_with_what_the_model_takes(script, pngs, cache):
    model, load = script.timm_pipeline("p4cnn_rotmnist", mode="RGB")
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\].*convert\('L'\)"):
        model(torch.stack([load(p) for p in pngs[:4]]))
    assert "refused" in script.rgb_result("p4cnn_rotmnist", pngs[:8])
