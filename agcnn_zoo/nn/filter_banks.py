"""Eval-mode caching of transformed filter banks (the escnn idea, made state-dict neutral).

Group convolutions expand each stored filter into ``|H|`` transformed copies. In training the
expansion must be redone every call (the weights change and gradients flow through it); in
eval mode it is a pure function of the weights, so it is built once and kept in a
NON-persistent buffer: state dicts are identical in train and eval mode, ``.to()`` moves the
cache with the module, and the cache is rebuilt whenever a source tensor changes (its version
counter or storage differs), e.g. after ``load_state_dict``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .base import COMPILE, FX, fast_path_allowed


def _key(tensors: Sequence[torch.Tensor]):
    return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


class CachedBanks(nn.Module):
    """Mixin for modules that derive tensors ("banks") from their parameters."""

    def cached_bank(self, name: str, build: Callable[[], torch.Tensor],
                    sources: Sequence[torch.Tensor]) -> torch.Tensor:
        # under torch.compile / export / fx the bank is part of the traced graph (the compiler
        # folds or fuses it) and module state must not change while tracing; with parameter
        # gradients wanted the bank must stay in the autograd graph
        if not fast_path_allowed(training=self.training, no_grad_for=sources,
                                 unless=(FX, COMPILE)):
            return build()
        attr = f"_bank_{name}"
        key = _key(sources)
        cached = getattr(self, attr, None)
        if cached is None or self.__dict__.get(attr + "_key") != key:
            # built outside inference mode so the cached tensor is usable in any later context
            with torch.inference_mode(False), torch.no_grad():
                cached = build()
            if attr in self._buffers:
                self._buffers[attr] = cached
            else:
                self.register_buffer(attr, cached, persistent=False)
            self.__dict__[attr + "_key"] = key
        return cached

    def clear_banks(self) -> None:
        for attr in [a for a in self._buffers if a.startswith("_bank_")]:
            del self._buffers[attr]
            self.__dict__.pop(attr + "_key", None)

    def train(self, mode: bool = True):
        if mode:
            self.clear_banks()
        return super().train(mode)
