"""What every model of the zoo shares: input validation, a little metadata and timm's model
interface (``forward_features`` / ``forward_head`` / ``get_classifier`` / ``reset_classifier``,
``num_features``, ``feature_info``, ``forward_intermediates``, ``set_grad_checkpointing``).

Each family writes its backbone as a list of stages (``feature_stages``: one per convolution
block, or per residual / dense stage), run in order by ``forward_backbone``; the classifier
(``classifier_names``) is the last learned layer that depends on the number of classes, and
``reset_classifier(n)`` rebuilds it with the family's own constructor and initialisation.
No operation changed: ``forward(x) == forward_head(forward_features(x))``.

Group maps and timm: the backbone of a p4 / p4m model ends in a map on the group
``[B, C, |G|, X, Y]``. timm's contract (and every timm neck or feature consumer) wants
``[B, num_features, X, Y]``, so ``forward_features`` and the feature maps of
``features_only=True`` fold the group axis into the channels (a view: channel ``c |G| + g``,
the layout the group convolutions themselves use), ``num_features = C |G|``.
``forward_group_features`` keeps the group axis. The pre-logits (``forward_head(x,
pre_logits=True)``, the output of a model without classifier) average over space and the group
axis: invariant, of width ``head_hidden_size = C``.

The family vocabulary: a family's base class builds its network from the hooks ``stem(cin,
cout)`` (the first convolution), ``conv(cin, cout, k, ...)`` (every inner convolution),
``head_conv(cin, cout)`` (the classifier convolution), ``norm(c)`` and ``spatial_pool(h)`` (the
downsampling between convolutions); each variant
overrides them with a constructor of ``factory.py`` and its own numbers, built with the
class's ``group_name``. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..groups import get_group
from ..input_checks import check_input_values
from ..nn.tracing import fx_tracing, tracing
from . import factory as make


class Stage(NamedTuple):
    """One level of the backbone: ``run`` maps the previous level's output to this one's."""
    module: str        # the module that starts the level (its convolution, block or stage)
    channels: int      # channels C of the output (C |G| once the group axis is folded)
    reduction: int     # input size / output size reached by pooling (valid convolutions
                       # shrink maps too, so the map can be a little smaller)
    run: Callable[[torch.Tensor], torch.Tensor]


#: the pooling before the classifier: "avg" (over space and the group axis) or "" (none)
GLOBAL_POOLS = ("avg", "")


def _channel_hint(x: torch.Tensor, channels: int) -> str:
    """How to get the model's channels from images of other channels (the common mistake: RGB
    files of grey digits through a generic pipeline)."""
    if x.dim() != 4 or x.shape[1] == channels:
        return ""
    mode = {1: "L", 3: "RGB"}.get(channels)
    how = f"open the images with .convert({mode!r}) before the transform, or " if mode else ""
    return (f": {x.shape[1]}-channel images for a {channels}-channel model; {how}use "
            f"agcnn_zoo.transforms(name), which converts")


class ZooModel(nn.Module):
    """Base class: ``dataset``, ``in_chans``, ``image_size`` (H, W), ``input_size`` (C, H, W),
    ``num_classes``, ``group_name`` (or None).

    ``input_size`` means (C, H, W) everywhere in the zoo (timm's meaning: models, registry,
    ``pretrained_cfg``, datasets); ``image_size`` is its (H, W) part, a family constant.
    """

    #: the registry's dataset key (registry.DATASETS): preprocessing and input size
    dataset: str | None = None
    in_chans: int = 3
    image_size: Tuple[int, int] = (32, 32)
    num_classes: int = 10
    #: the symmetry group of the family's variant ("p4", "p4m"; None: plain CNN); every
    #: equivariant layer of the model is built with it
    group_name: str | None = None
    #: module names of the classifier (state-dict prefixes that depend on num_classes)
    classifier_names: Tuple[str, ...] = ()
    #: module name of the first convolution (timm's ``first_conv``)
    first_conv_name: str = "c1"
    #: (H, W) of ``forward_features``' output for an input of ``image_size`` (timm's ``pool_size``)
    feature_map_size: Tuple[int, int] = (1, 1)
    #: "avg" or "" (no pooling: a model without classifier returns ``forward_features``)
    global_pool: str = "avg"
    #: run every backbone stage under activation checkpointing while gradients are computed
    grad_checkpointing: bool = False
    #: refuse NaN / inf inputs and warn once about values far outside the normalised range
    #: (``agcnn_zoo.input_checks``; skipped while tracing or compiling)
    check_input_values: bool = True

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(C, H, W) of one input image (``in_chans`` may differ from the dataset's)."""
        return (self.in_chans, *self.image_size)

    @property
    def group_order(self) -> int:
        """|G| of the model's group (1 for a plain CNN)."""
        return 1 if self.group_name is None else get_group(self.group_name).order

    def _set_in_chans(self, in_chans) -> None:
        if in_chans is None:
            return
        if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        self.in_chans = in_chans

    def norm(self, c: int) -> nn.Module:
        """The batch-norm hook every family builds with: the original's, per plane or per group
        channel as ``group_name`` says."""
        return make.norm(c, self.group_name)

    @staticmethod
    def _check_num_classes(num_classes) -> int:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no classifier, forward returns "
                             f"the pooled features), got {num_classes!r}")
        return num_classes

    def check_input(self, x) -> None:
        """Refuse, with a ValueError that says what to do, an input that is not a floating-point
        tensor of shape [B, C, H, W] in the model's own parameter dtype, or that holds NaN or
        inf values; warn once about values far outside what the weight's normalisation gives
        (see ``agcnn_zoo.input_checks``).

        Documented choice: inputs are never cast silently. A float32 model (the default, and
        every published weight) takes float32 input; float64, float16 and bfloat16 inputs get
        the same clear ValueError as uint8 ("convert with x.float()", or convert the model
        with ``model.to(dtype)`` to run it in that dtype). Under ``torch.autocast`` the input
        stays float32 and is accepted. The value checks read the input, so they are skipped
        while tracing or compiling (``torch.fx``, ``torch.jit``, ``torch.compile``, ONNX)."""
        c, h, w = self.input_size
        expected = f"[B, {c}, {h}, {w}]"
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} expects a float tensor of shape {expected}, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"{name} expects input of shape {expected}, got {tuple(x.shape)}"
                             f"{_channel_hint(x, c)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} expects a floating-point tensor of shape {expected}, "
                             f"got dtype {x.dtype} (convert and normalise the images first)")
        param = next(self.parameters(), None)
        if param is not None and x.dtype != param.dtype:
            raise ValueError(f"{name} expects a floating-point tensor of shape {expected} in the "
                             f"model's dtype {param.dtype}, got dtype {x.dtype} (convert it with "
                             f"x.to({param.dtype}), or the model with model.to({x.dtype}))")
        if self.check_input_values and not tracing() and x.numel():
            cfg = self.__dict__.get("pretrained_cfg") or {}
            mean, std = cfg.get("mean"), cfg.get("std")
            if mean is not None and len(mean) != c:
                mean = std = None           # another in_chans than the weight's
            check_input_values(x, mean, std, owner=self, name="model")

    # --------------------------------------------------------------------------- the backbone
    def feature_stages(self) -> List[Stage]:
        """The backbone as a list of ``Stage``s, in order (defined by each family)."""
        raise NotImplementedError

    def _run_stage(self, stage: Stage, h: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not tracing():
            return checkpoint(stage.run, h, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _norm_stats_kept(self)))
        return stage.run(h)

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output in its own layout: ``[B, C, |G|, X, Y]`` (group models) or
        ``[B, C, X, Y]`` (plain CNNs)."""
        for stage in self.feature_stages():
            x = self._run_stage(stage, x)
        return x

    forward_group_features = forward_backbone

    def fold_group_axis(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, C, |G|, X, Y] -> [B, C |G|, X, Y]`` (a view); plane maps unchanged."""
        return h if self.group_name is None else h.flatten(1, 2)

    def _unfold(self, h: torch.Tensor) -> torch.Tensor:
        if self.group_name is not None and h.dim() == 4:
            return h.unflatten(1, (-1, self.group_order))
        return h

    # ------------------------------------------------------------------- timm's model interface
    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output: C |G| (C for a plain CNN)."""
        return self.feature_stages()[-1].channels * self.group_order

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits (features averaged over space and the group axis): C."""
        return self.feature_stages()[-1].channels

    @property
    def default_cfg(self) -> dict:
        """timm's older name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg

    @property
    def feature_info(self) -> List[dict]:
        """One dict per backbone stage (timm's keys): ``num_chs`` (channels of the feature map,
        group axis folded), ``reduction``, ``module``; and ``group_order``."""
        n = self.group_order
        return [{"num_chs": s.channels * n, "reduction": s.reduction, "module": s.module,
                 "group_order": n} for s in self.feature_stages()]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output ``[B, num_features, X, Y]`` (group axis folded into the
        channels; ``forward_group_features`` keeps it)."""
        return self.fold_group_axis(self.forward_backbone(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Union[int, Sequence[int], None] = None,
                              output_fmt: str = "NCHW", intermediates_only: bool = False,
                              stop_early: bool = False):
        """The feature map of every stage in ``indices`` (None: all; an int n: the last n;
        negative indices count from the end), ``[B, C |G|, X, Y]`` (``output_fmt="NCHW"``) or
        ``[B, C, |G|, X, Y]`` (``"NCGHW"``, group models). Returns the list, or
        ``(forward_features(x), list)`` unless ``intermediates_only``; ``stop_early`` (implied
        by ``intermediates_only``) skips the stages after the last one asked for."""
        if output_fmt not in ("NCHW", "NCGHW"):
            raise ValueError(f"output_fmt must be 'NCHW' (group axis folded into the channels) or "
                             f"'NCGHW' (group axis kept), got {output_fmt!r}")
        stages = self.feature_stages()
        take = resolve_indices(indices, len(stages))
        if not fx_tracing():
            self.check_input(x)
        last = max(take) if (stop_early or intermediates_only) else len(stages) - 1
        out = []
        for i, stage in enumerate(stages[:last + 1]):
            x = self._run_stage(stage, x)
            if i in take:
                out.append(x if output_fmt == "NCGHW" else self.fold_group_axis(x))
        if intermediates_only:
            return out
        return self.fold_group_axis(x), out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every backbone stage while gradients are computed: its
        activations are recomputed in backward instead of kept (less memory, one more forward
        per stage). Same outputs and gradients; batch-norm statistics are updated once per
        step (the recomputation leaves them as they were)."""
        self.grad_checkpointing = bool(enable)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """The backbone's map (its own layout) -> logits ``[B, num_classes]``: the family's
        classifier and its pooling (``num_classes > 0``). Named for what it returns: timm's
        ``.head`` is a module, here ``get_classifier()``."""
        raise NotImplementedError

    def pool_features(self, h: torch.Tensor) -> torch.Tensor:
        """The invariant embedding: the backbone's map (either layout) averaged over space
        (and the group axis), ``[B, C]``; what ``forward_head(..., pre_logits=True)`` returns."""
        return self._global_avg_pool(self._unfold(h))

    def _global_avg_pool(self, h: torch.Tensor) -> torch.Tensor:
        # timm's global_pool="avg": over space and the group axis (the family's own layout)
        return h.mean(dim=(2, 3) if self.group_name is None else (2, 3, 4))

    def _logits_or_features(self, h: torch.Tensor) -> torch.Tensor:
        """The backbone's map (its own layout) -> logits, or what a model without classifier
        returns."""
        if self.num_classes:
            return self.classify(h)
        return self._global_avg_pool(h) if self.global_pool else self.fold_group_axis(h)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``forward_features``' output (or ``forward_group_features``') -> logits
        ``[B, num_classes]``; ``pre_logits=True`` (or a model without classifier,
        ``num_classes == 0``) gives the pooled features ``[B, head_hidden_size]`` (with
        ``global_pool=""`` and no classifier: the map itself, group axis folded)."""
        if pre_logits:
            return self.pool_features(x)
        return self._logits_or_features(self._unfold(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fx_tracing():            # a symbolic trace has neither shapes nor values
            self.check_input(x)
        return self._logits_or_features(self.forward_backbone(x))

    def get_classifier(self) -> nn.Module:
        """The classifier module (an ``nn.ModuleDict`` when it is several modules, an
        ``nn.Identity`` when ``num_classes == 0``)."""
        mods = {n: getattr(self, n) for n in self.classifier_names}
        if any(m is None for m in mods.values()):
            return nn.Identity()
        if len(mods) == 1:
            return next(iter(mods.values()))
        return nn.ModuleDict(mods)

    def build_classifier(self, num_classes: int) -> dict:
        """New classifier modules for ``num_classes`` outputs: ``{module name: module}``."""
        raise NotImplementedError

    def set_global_pool(self, global_pool: Optional[str]) -> None:
        """``"avg"`` (the pre-logits: mean over space and the group axis) or ``""`` (none:
        a model without classifier returns ``forward_features``' map); None: unchanged."""
        if global_pool is None:
            return
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be 'avg' (mean over space and the group axis, "
                             f"invariant) or '' (no pooling), got {global_pool!r}")
        if global_pool == "" and self.num_classes:
            raise ValueError("global_pool='' (no pooling) needs a model without classifier: pass "
                             "num_classes=0 too (the zoo's classifiers are convolutions with "
                             "their own pooling)")
        self.global_pool = global_pool

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A classifier for ``num_classes`` outputs, on the device and dtype of the model
        (``0``: no classifier; forward returns ``[B, head_hidden_size]``, or the unpooled map
        with ``global_pool=""``). Every tensor whose shape depends on the class count is
        freshly initialised; the classifier's other tensors (attention on its input, alpha_F)
        are kept (see ``class_dependent_keys``)."""
        num_classes = self._check_num_classes(num_classes)
        ref = next(iter(self.parameters()), None)
        if num_classes == 0:
            new = {n: None for n in self.classifier_names}
        else:
            new = self.build_classifier(num_classes)
            keep = {}
            for name in self.classifier_names:
                old = getattr(self, name)
                if old is not None:
                    keep.update({f"{name}.{k}": v for k, v in old.state_dict().items()})
            dependent = set(self.class_dependent_keys(keep))
            for name, mod in new.items():
                own = {k[len(name) + 1:]: v for k, v in keep.items()
                       if k.startswith(f"{name}.") and k not in dependent}
                if own:
                    mod.load_state_dict(own, strict=False)
        for name, mod in new.items():
            if mod is not None and ref is not None:
                mod = mod.to(device=ref.device, dtype=ref.dtype)
                mod.train(self.training)
            setattr(self, name, mod)
        self.num_classes = num_classes
        if num_classes:
            self.global_pool = "avg" if self.global_pool == "" else self.global_pool
        self.set_global_pool(global_pool)

    def classifier_keys(self, keys) -> list:
        """Those of the state-dict ``keys`` that belong to the classifier modules."""
        prefixes = tuple(f"{n}." for n in self.classifier_names)
        return [k for k in keys if k.startswith(prefixes)]

    def class_dependent_keys(self, keys) -> list:
        """Those of the state-dict ``keys`` whose module (the module owning the tensor itself)
        has a tensor whose shape depends on the number of classes: what a new head must
        reset. Found by building the classifier for two class counts (random state untouched).
        E.g. ``c7.weight`` (one filter per class) and full-alpha attention on the classifier's
        responses (one MLP / filter per class); not alpha_F attention on the classifier's
        input (it sees only the backbone's channels)."""
        with torch.random.fork_rng(devices=[]):
            a, b = self.build_classifier(2), self.build_classifier(3)
        dependent = set()           # names of the modules owning a class-shaped tensor
        for name in self.classifier_names:
            sa, sb = a[name].state_dict(), b[name].state_dict()
            dependent.update(f"{name}.{k}".rpartition(".")[0] for k in sa
                             if sa[k].shape != sb[k].shape)
        return [k for k in self.classifier_keys(keys) if k.rpartition(".")[0] in dependent]


def resolve_indices(indices, n: int) -> List[int]:
    """Stage indices (None: all; int k: the last k; a sequence, negatives from the end) as a
    sorted list of non-negative ints, each checked against the ``n`` stages."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= n:
            raise ValueError(f"indices={indices}: the model has {n} feature levels; pass 1..{n} "
                             f"(the last k levels) or a list of level indices")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n:
            raise ValueError(f"feature level {i!r} out of range: the model has {n} levels "
                             f"(0..{n - 1}, or -{n}..-1 from the end)")
        out.append(i % n)
    if not out:
        raise ValueError("no feature level asked for (indices / out_indices is empty)")
    return sorted(set(out))


@contextlib.contextmanager
def _norm_stats_kept(model: nn.Module):
    """Checkpointing re-runs a stage in backward; leave batch-norm running statistics as the
    forward pass left them (they must be updated once per step)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.training and m.track_running_stats and m.running_mean is not None]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
