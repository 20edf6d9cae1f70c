"""Attention maps: what every attentive layer of a model applied to one input.

``attention_maps(model, x)`` runs the model once (no gradients, the model's current mode) and
returns, per attentive layer (by module name), the channel attention alpha and the spatial
attention beta the layer applied. Nothing in the forward pass changes: alpha_F and
co-attention maps are recorded by forward hooks on the attention modules (their outputs are
the maps); full alpha maps, which the fast path never materialises, are recomputed by a hook on
the layer from the layer's input with the readable reference formulation
(``agcnn_zoo.nn.reference.full_alpha_terms``), which the fast path is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .groups import Group
from .nn import reference as ref
from .nn.attentive_conv import FAttGroupConv, FAttLiftingConv, FullAlphaConv

__all__ = ["AttentionMap", "attention_maps"]


@dataclass
class AttentionMap:
    """The attention one layer applied. ``kind``: ``"alpha_F"`` (on the input feature map),
    ``"co_attention"`` or ``"full_alpha"`` (on the responses of every input channel and group
    element). ``channel`` / ``spatial``: tensors (or None when the layer has no such attention),
    their axes named by ``channel_axes`` / ``spatial_axes``:

    * ``batch``; ``channel`` (the layer's input channels; size 1 for a spatial map shared by
      all channels); ``out`` / ``in`` (output / input channels of a full alpha layer);
    * ``g`` (the group element of the map: of the input map for alpha_F, of the output for full
      alpha), ``g_in`` (the input group element of a full alpha group convolution);
    * ``x``, ``y`` (space; 1 x 1 for channel attention of alpha_F layers, as applied).
    """
    kind: str
    group: Group
    channel: Optional[torch.Tensor]
    spatial: Optional[torch.Tensor]
    channel_axes: Tuple[str, ...] = ()
    spatial_axes: Tuple[str, ...] = ()

    def transformed(self, i: int) -> "AttentionMap":
        """The maps moved by group element ``g_i``: every spatial map transformed like the
        plane, every group axis (``g``, ``g_in``) permuted like a map on the group. For an
        equivariant layer, ``attention_maps(model, g_i . x)`` equals this."""
        return AttentionMap(self.kind, self.group,
                            _act(self.channel, self.channel_axes, self.group, i),
                            _act(self.spatial, self.spatial_axes, self.group, i),
                            self.channel_axes, self.spatial_axes)


def _act(t: Optional[torch.Tensor], axes, group: Group, i: int) -> Optional[torch.Tensor]:
    if t is None:
        return None
    perm = group.axis_permutations[i].to(t.device)
    for dim, name in enumerate(axes):
        if name in ("g", "g_in"):
            t = t.index_select(dim, perm)
    if tuple(axes[-2:]) == ("x", "y"):
        t = group.act_on_plane(t, i)
    return t


def _alpha_f_axes(layer) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    if isinstance(layer, FAttGroupConv):
        axes = ("batch", "channel", "g", "x", "y")
        return axes, axes
    return ("batch", "channel", "x", "y"), ("batch", "channel", "x", "y")


def attention_maps(model: nn.Module, x: torch.Tensor) -> Dict[str, AttentionMap]:
    """``{layer name: AttentionMap}`` for every attentive layer of ``model`` on input ``x``, in
    forward order; layers with no attention module are left out.

    Shapes (B batch, C input channels, O output channels, n = |H|, X x Y the map the attention
    acts on): alpha_F lifting layers ``channel [B, C, 1, 1]``, ``spatial [B, 1, X, Y]``; alpha_F
    group layers ``channel [B, C, n, 1, 1]``, ``spatial [B, 1, n, X, Y]``; full alpha lifting
    layers ``channel [B, O, n, C]``, ``spatial [B, O, n, X, Y]``; full alpha group layers
    ``channel [B, O, n, C, n]``, ``spatial [B, O, n, n, X, Y]``. Maps are detached copies, in the
    input's dtype and device.
    """
    maps: Dict[str, AttentionMap] = {}
    handles = []

    def record_alpha_f(name, layer, which):
        def hook(module, inputs, output):
            entry = maps.get(name)
            if entry is None:
                ch_axes, sp_axes = _alpha_f_axes(layer)
                kind = "alpha_F"
                if layer.channel_attention is None and type(layer.spatial_attention).__name__ in (
                        "CoAttention", "GroupCoAttention"):
                    kind = "co_attention"
                entry = maps[name] = AttentionMap(kind, layer.group, None, None, ch_axes, sp_axes)
            setattr(entry, which, output.detach().clone())
        return hook

    def record_full_alpha(name, layer):
        def hook(module, inputs, output):
            x_in = inputs[0]
            x5 = x_in.unsqueeze(2) if layer.lifting else x_in
            with torch.no_grad():
                _, alpha, beta = ref.full_alpha_terms(layer, x5)
            if layer.lifting:
                alpha = None if alpha is None else alpha.squeeze(-1)
                beta = None if beta is None else beta.squeeze(3)
                ch_axes, sp_axes = ("batch", "out", "g", "in"), ("batch", "out", "g", "x", "y")
            else:
                ch_axes = ("batch", "out", "g", "in", "g_in")
                sp_axes = ("batch", "out", "g", "g_in", "x", "y")
            maps[name] = AttentionMap("full_alpha", layer.group, alpha, beta, ch_axes, sp_axes)
        return hook

    for name, layer in model.named_modules():
        if isinstance(layer, FullAlphaConv):
            if layer.channel_attention is not None or layer.spatial_attention is not None:
                handles.append(layer.register_forward_hook(record_full_alpha(name, layer)))
        elif isinstance(layer, (FAttLiftingConv, FAttGroupConv)):
            for which, mod in (("channel", layer.channel_attention),
                               ("spatial", layer.spatial_attention)):
                if mod is not None:
                    handles.append(mod.register_forward_hook(record_alpha_f(name, layer, which)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return maps
