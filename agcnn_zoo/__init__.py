"""agcnn-zoo: attentive group-equivariant CNNs (Romero et al., ICML 2020) with verified weights.

>>> import agcnn_zoo as zoo
>>> zoo.list_models("*p4cnn*", pretrained=True)
>>> model = zoo.create_model("a_p4cnn_rotmnist", pretrained=True)
"""
from __future__ import annotations

from .api import (NoPretrainedWeightsError, create_model, list_models, list_pretrained,
                  model_info)
from .preprocess import transforms
from .registry import UnknownModelError
from .equivariance import check_equivariance
from .interpret import attention_maps
from . import fx  # noqa: F401  (zoo.fx.symbolic_trace)
from ._version import __version__

__all__ = ["create_model", "list_models", "list_pretrained", "model_info", "UnknownModelError",
           "NoPretrainedWeightsError", "transforms", "attention_maps", "check_equivariance",
           "__version__"]



from . import timm_compat as _timm_compat  # noqa: E402

_timm_compat.install()
