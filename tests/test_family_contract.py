"""What every family promises: the original's hyper-parameters (SPEC 5), one meaning of
input_size, registrations written once and the original class names derived from them."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from torch import nn

from agcnn_zoo.models import registration
from agcnn_zoo.models._base import ZooModel
from agcnn_zoo.registry import get_entry, list_registered

NAMES = list_registered()

#: family -> dropout rates by module name (SPEC 5.1: p = 0.3 after c1, c3..c6; 5.2: All-CNN-C
#: 0.2 on the input and 0.5 after both pooling stages; ResNet44 and the DenseNets have none)
DROPOUT = {"rotmnist": {"dropout": 0.3}, "allcnnc": {"dp_init": 0.2, "dp": 0.5},
           "resnet44": {}, "densenet": {}}


def _family(name: str) -> str:
    return next(f for f in DROPOUT if f in name)


@pytest.fixture(scope="module")
def models():
    return {n: get_entry(n).fn() for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_batch_norms_have_the_originals_eps_and_momentum(name, models):
    norms = [m for m in models[name].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms, name
    for m in norms:
        # SPEC 5: eps 2e-5 everywhere, default momentum 0.1, affine, running statistics
        assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (2e-5, 0.1, True, True), m


@pytest.mark.parametrize("name", NAMES)
def test_dropout_rates_are_the_originals(name, models):
    drops = {n: m.p for n, m in models[name].named_modules() if isinstance(m, nn.Dropout)}
    assert drops == DROPOUT[_family(name)], name


# ------------------------------------------------------------------- one family vocabulary
FAMILY_MODULES = ["rotmnist", "allcnnc", "resnet", "densenet"]
MODELS_DIR = Path(registration.__file__).parent


@pytest.mark.parametrize("name", NAMES)
def test_models_and_registry_agree_on_input_size(name, models):
    entry, model = get_entry(name), models[name]
    assert model.input_size == entry.input_size == tuple(entry.preprocessing["input_size"])
    assert len(model.input_size) == 3 and model.input_size[0] == model.in_chans


@pytest.mark.parametrize("name", NAMES)
def test_every_equivariant_layer_uses_the_models_group(name, models):
    model = models[name]
    groups = {m.group.name for m in model.modules() if getattr(m, "group", None) is not None}
    assert groups == ({model.group_name} if model.group_name else set()), name
    assert get_entry(name).group == model.group_name


@pytest.mark.parametrize("family", FAMILY_MODULES)
def test_original_classes_are_derived_from_the_registrations(family):
    module = importlib.import_module(f"agcnn_zoo.models.{family}")
    registered = {e.original_class: e.fn.model_class for e in registration.REGISTRY.values()
                  if e.original_class and e.fn.model_class.__module__ == module.__name__}
    assert module.ORIGINAL_CLASSES == registered and registered


@pytest.mark.parametrize("family", FAMILY_MODULES)
def test_names_are_written_once_and_families_do_not_import_the_registry(family):
    source = (MODELS_DIR / f"{family}.py").read_text()
    for name in NAMES:
        assert source.count(f'"{name}"') <= 1, f"{name} written twice in {family}.py"
    imported = [node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) and node.module]
    assert not any(m.endswith("registry") for m in imported), imported


def test_register_model_takes_the_functions_name(monkeypatch):
    monkeypatch.setattr(registration, "REGISTRY", {})

    @registration.register_model(dataset="rotmnist", model_class="Tiny", original_class=None)
    def tiny_rotmnist(**kwargs):
        """A tiny model."""
        return nn.Identity()

    assert registration.REGISTRY["tiny_rotmnist"].description == "A tiny model."
    with pytest.raises(ValueError, match="registered twice"):
        registration.register_model(tiny_rotmnist, dataset="rotmnist", model_class="Tiny",
                                    original_class=None)


def test_register_class_refuses_an_input_size_the_dataset_does_not_have(monkeypatch):
    monkeypatch.setattr(registration, "REGISTRY", {})

    class Wrong(ZooModel):
        dataset, in_chans, image_size = "rotmnist", 1, (32, 32)

    with pytest.raises(ValueError, match=r"disagree with rotmnist's input_size \(1, 28, 28\)"):
        registration.register_class("wrong_rotmnist", original_class=None)(Wrong)
    with pytest.raises(ValueError, match="set the class attribute dataset"):
        registration.register_class("wrong_x", original_class=None)(type("X", (ZooModel,), {}))
