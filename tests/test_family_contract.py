"""What every family promises: the original's hyper-parameters (SPEC 5), one meaning of
input_size, registrations written once and the original class names derived from them."""
from __future__ import annotations

import pytest
from torch import nn

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
