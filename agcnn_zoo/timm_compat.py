"""Register every zoo model into timm when timm is importable, so that
``timm.create_model('a_p4cnn_rotmnist', pretrained=True)`` loads the same verified weights.

Importing timm costs seconds, so ``agcnn_zoo`` does not import it: if timm is already imported
the models are registered at once, otherwise a one-shot import hook registers them the moment
timm is imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types

_registered = False


def _entrypoint(name: str):
    def fn(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
           cache_dir=None, **kwargs):
        # timm's own cfg / cache arguments do not apply: our weights come from our manifest
        # and cache (AGCNN_ZOO_CACHE)
        from .api import create_model
        return create_model(name, pretrained=pretrained, **kwargs)
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


def register_all() -> bool:
    """Register every model into timm (idempotent); False when timm is not installed."""
    global _registered
    if _registered:
        return True
    try:
        from timm.models import _registry as timm_registry
    except Exception:
        return False
    from .registry import get_entry, list_registered
    # timm keys its registry by the entrypoint's module; give ours one of its own
    module = sys.modules.setdefault("agcnn_zoo.timm_models", types.ModuleType("agcnn_zoo.timm_models"))
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
