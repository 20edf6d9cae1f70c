"""Register every zoo model into timm when timm is importable, so that
``timm.create_model('a_p4cnn_rotmnist', pretrained=True)`` loads the same verified weights.

Every model is registered with its pretrained configurations (one per weight id, ``NAME`` or
``NAME.TAG``; see ``agcnn_zoo.pretrained_cfg``) the way timm's own models are, so
``timm.list_pretrained('*rotmnist*')``, ``timm.is_model_pretrained(name)`` and
``timm.models.get_pretrained_cfg(name)`` reflect the manifest as it was when timm was imported.

Importing timm costs seconds, so ``agcnn_zoo`` does not import it: if timm is already imported
the models are registered at once, otherwise a one-shot import hook registers them the moment
timm is imported. The other way round does not work: timm has no plugin or entry-point
mechanism (its registry is filled only by ``register_model`` calls in imported modules), so
``import timm`` alone does not know the zoo's names until ``agcnn_zoo`` is imported.

The zoo's convolutions and dropout are registered as timm's "no trace" modules (fx leaves,
see ``agcnn_zoo.fx``), so timm's fx feature extraction keeps them whole.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Optional

from .api import create_model
from .fx import LEAF_MODULES
from .hub.catalogue import catalogue
from .hub.weight_id import WeightId
from .pretrained_cfg import TIMM_KEYS, build_pretrained_cfg
from .registry import get_entry, list_registered

_registered = False


def _entrypoint(name: str):
    def fn(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
           cache_dir=None, **kwargs):
        # our weights come from our manifest and cache (AGCNN_ZOO_CACHE), not timm's cache_dir;
        # timm passes the tag of 'NAME.TAG' as pretrained_cfg
        tag = _tag_of(pretrained_cfg) if pretrained else None   # a tag only selects weights
        model = create_model(str(WeightId.of(name, tag)), pretrained=pretrained, **kwargs)
        if pretrained_cfg_overlay:
            model.pretrained_cfg.update(pretrained_cfg_overlay)
        return model
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


def _tag_of(pretrained_cfg) -> Optional[str]:
    """The tag timm hands over: a string, or the ``tag`` of a ``PretrainedCfg`` / dict."""
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg or None
    if isinstance(pretrained_cfg, dict):
        return pretrained_cfg.get("tag") or None
    return getattr(pretrained_cfg, "tag", None) or None


def register_all() -> bool:
    """Register every model into timm (idempotent); False when timm is not installed."""
    global _registered
    if _registered:
        return True
    try:
        from timm.models import _registry as timm_registry
    except Exception:
        return False
    # timm keys its registry by the entrypoint's module; give ours one of its own
    module = sys.modules.setdefault("agcnn_zoo.timm_models", types.ModuleType("agcnn_zoo.timm_models"))
    try:
        module.default_cfgs = _default_cfgs()
    except Exception as e:  # a broken manifest must not break `import timm`
        warnings.warn(f"agcnn_zoo: pretrained configurations not registered into timm: {e}")
    _register_fx_leaves()
    for name in list_registered():
        if name in timm_registry._model_entrypoints:
            continue
        fn = _entrypoint(name)
        fn.__module__ = module.__name__
        fn.__doc__ = get_entry(name).description
        setattr(module, name, fn)
        timm_registry.register_model(fn)
    _registered = True
    return True


def _register_fx_leaves() -> None:
    try:
        from timm.layers import register_notrace_module
    except ImportError:  # older timm
        try:
            from timm.models.layers import register_notrace_module
        except ImportError:
            return
    for cls in LEAF_MODULES:
        register_notrace_module(cls)


def _default_cfgs():
    """timm ``DefaultCfg`` per model: a configuration per weight id (the default weight first),
    or the dataset's configuration without weights for a model that has none."""
    from timm.models import generate_default_cfgs
    from timm.models._pretrained import PretrainedCfg
    fields = set(PretrainedCfg.__dataclass_fields__) & set(TIMM_KEYS)
    cat = catalogue()
    cfgs = {}
    for name in list_registered():
        default_id = cat.default_of(name)
        weights = cat.weights_of(name) or {None: None}
        for wid, record in weights.items():
            cfg = build_pretrained_cfg(name, record, wid)
            cfg = {k: v for k, v in cfg.items() if k in fields and v is not None
                   and k not in ("architecture", "tag")}
            key = wid or name
            if wid and wid != name and wid == default_id:
                key += "*"   # timm's mark of the default tag
            cfgs[key] = cfg
    return generate_default_cfgs(cfgs)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            register_all()
        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if "timm" in sys.modules:
        register_all()
    elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenTimmLoads())
