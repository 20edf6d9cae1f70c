"""``python -m agcnn_zoo attention NAME --image FILE --out maps.png``: draw an image beside the
attention maps a model applied to it (needs matplotlib: ``pip install matplotlib``).

One row per attentive layer. Spatial attention is drawn once per group element ``g`` of the
map it acts on (the original's ``[B, C, n, X, Y]`` layout; for full alpha layers averaged over
output channels and input group elements); channel attention as a channels x group-elements
image (full alpha: averaged over output channels and input group elements).

* Frame: everything is drawn in the frame of the image the user passed in (every weight takes
  images as people hold them, so the maps are in that frame already). When the model saw the
  image transposed (``transforms(name, transpose=True)``: images held as the authors' rot-MNIST
  files store them), the maps are transposed back and their group axes relabelled: a quarter
  turn in the transposed frame is a quarter turn the other way in the user's (``panels``).
* Colour: one scale per layer, shared by its spatial and channel maps, at least
  ``MIN_SPAN`` wide: attention that barely varies (0.498 to 0.5005) looks as flat as it is.
* The subtitle names the attention kinds drawn and how each was reduced.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional

import torch

from .api import create_model
from .interpret import attention_maps
from .preprocess import TransposeDigits, transforms

__all__ = ["plot_attention", "draw_attention", "panels", "add_command", "MIN_SPAN"]

#: the narrowest colour scale a layer gets (attention values lie in [0, 1])
MIN_SPAN = 0.2

_KIND_NOTES = {
    "alpha_F": "alpha_F: attention on each layer's input feature map",
    "co_attention": "co-attention: a sigmoid gate computed from each layer's input",
    "full_alpha": "full alpha: attention on the responses of every input channel and group "
                  "element, drawn averaged over output channels and input group elements",
}


def _element_label(group, i: int) -> str:
    mirror, r = group.elements[i]
    return f"g{i}: {90 * r}°" + (", mirror" if mirror else "")


def _spatial_per_element(m) -> Optional[torch.Tensor]:
    """``[n, X, Y]`` (or ``[1, X, Y]`` for a plane map) for the first sample."""
    s = m.spatial
    if s is None:
        return None
    s = s[0].to(torch.float64)
    if m.kind == "full_alpha":
        # [O, n, X, Y] (lifting) or [O, n, J, X, Y]: mean over outputs (and input elements)
        s = s.mean(0)
        if s.dim() == 4:
            s = s.mean(1)
        return s
    return s[0] if s.dim() == 4 else s            # [1, n, X, Y] -> [n, X, Y]; [1, X, Y] stays


def _channel_image(m) -> Optional[torch.Tensor]:
    """``[C, n]`` (or ``[C, 1]``) for the first sample."""
    c = m.channel
    if c is None:
        return None
    c = c[0].to(torch.float64)
    if m.kind == "full_alpha":
        c = c.mean(0)                             # [n, C] or [n, C, J]
        if c.dim() == 3:
            c = c.mean(2)
        return c.t()
    return c.reshape(c.shape[0], -1)              # [C, 1, 1] -> [C, 1]; [C, n, 1, 1] -> [C, n]


def _scale(*tensors) -> tuple:
    values = torch.cat([t.flatten() for t in tensors if t is not None])
    lo, hi = values.min().item(), values.max().item()
    if hi - lo < MIN_SPAN:
        mid = (hi + lo) / 2
        lo, hi = mid - MIN_SPAN / 2, mid + MIN_SPAN / 2
        if lo < 0:
            lo, hi = 0.0, MIN_SPAN
        elif hi > 1:
            lo, hi = 1 - MIN_SPAN, 1.0
    return lo, hi


def panels(maps: dict, transposed: bool = False) -> Dict[str, dict]:
    """What ``draw_attention`` draws per layer: ``spatial`` ``[n, X, Y]`` (or None), ``channel``
    ``[C, n]`` (or None), ``labels`` (one per group element), ``kind``, ``vmin`` / ``vmax`` (the
    layer's colour scale), in the user's frame: ``transposed=True`` when the model input was the
    user's image transposed (maps transposed back, group axes relabelled)."""
    out = {}
    for name, m in maps.items():
        spatial, channel = _spatial_per_element(m), _channel_image(m)
        n = spatial.shape[0] if spatial is not None else channel.shape[1]
        if transposed:
            if spatial is not None:
                spatial = spatial.transpose(-2, -1)
            if n == m.group.order:
                order = torch.tensor(m.group.transpose_conjugates)
                spatial = spatial.index_select(0, order) if spatial is not None else None
                if channel is not None and channel.shape[1] == n:
                    channel = channel.index_select(1, order)
        labels = ([_element_label(m.group, i) for i in range(n)] if n == m.group.order
                  else ["on the plane"] * n)
        vmin, vmax = _scale(spatial, channel)
        out[name] = {"kind": m.kind, "spatial": spatial, "channel": channel, "labels": labels,
                     "vmin": vmin, "vmax": vmax}
    return out


def _as_chw(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    import numpy as np
    t = torch.from_numpy(np.asarray(image).copy())
    return t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)


def _show(ax, img, cmap="gray", vmin=None, vmax=None, label=""):
    ax.axis("on")
    ax.set_xticks([])
    ax.set_yticks([])
    im = ax.imshow(img.detach().cpu().numpy(), cmap=cmap, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ax.set_title(label, fontsize=8)
    return im


def _draw_inputs(fig, axes, image, model_input: torch.Tensor, transposed: bool) -> None:
    """Column 0: the image as given, the model input (in the same frame) below it."""
    img = _as_chw(image).to(torch.float64)
    _show(axes[0, 0], img[0] if img.shape[0] == 1
          else (img.permute(1, 2, 0) / max(1.0, img.max().item())), label="image")
    x = model_input[0].to(torch.float64)
    x = x.transpose(-2, -1) if transposed else x
    if axes.shape[0] > 1:
        im = _show(axes[1, 0], x[0] if x.shape[0] == 1 else x.mean(0),
                   label="model input\n(normalised)")
        fig.colorbar(im, ax=axes[1, 0], fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)


def _draw_layer(fig, axes, r: int, name: str, p: dict) -> None:
    """Row ``r``: one spatial map per group element, then the channel image, then the scale."""
    n_cols = axes.shape[1]
    im = None
    spatial, channel = p["spatial"], p["channel"]
    if spatial is not None:
        for i in range(spatial.shape[0]):
            label = (f"{name} spatial β\n" if i == 0 else "\n") + p["labels"][i]
            im = _show(axes[r, 1 + i], spatial[i], cmap="viridis", vmin=p["vmin"],
                       vmax=p["vmax"], label=label)
    if channel is not None:
        ax = axes[r, n_cols - 1]
        im = _show(ax, channel, cmap="viridis", vmin=p["vmin"], vmax=p["vmax"],
                   label=f"{name} channel α\n(channels x g)")
        ax.set_aspect("auto")
    cbar = fig.colorbar(im, ax=axes[r, n_cols - 1 if channel is not None else spatial.shape[0]],
                        fraction=0.046, pad=0.04)
    cbar.ax.tick_params(labelsize=6)


def _heading(rows: dict, title: str, logits: Optional[torch.Tensor], transposed: bool) -> str:
    """The title, the prediction, the kinds drawn and the frame and scale notes."""
    head = title
    if logits is not None:
        prob = logits.softmax(-1)[0]
        k = int(prob.argmax())
        head += f"   prediction: class {k} (p = {prob[k]:.3f})"
    kinds = sorted({p["kind"] for p in rows.values()})
    notes = "; ".join(_KIND_NOTES.get(k, k) for k in kinds)
    frame = ("maps in the frame of the image given (the model saw it transposed)" if transposed
             else "maps in the frame of the image given")
    return head + f"\n{notes}\n{frame}; one colour scale per layer (spatial and channel), " \
                  f"at least {MIN_SPAN:g} wide"


def draw_attention(image, model_input: torch.Tensor, maps: dict, title: str = "",
                   logits: Optional[torch.Tensor] = None, transposed: bool = False):
    """The matplotlib figure ``plot_attention`` saves (see there)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = panels(maps, transposed)
    if not rows:
        raise ValueError("the model has no attentive layer: nothing to draw")
    n_el = max((p["spatial"].shape[0] for p in rows.values() if p["spatial"] is not None),
               default=1)
    n_cols = 1 + n_el + 1
    height = 1.9 * len(rows) + 1.0
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.9 * n_cols + 1.5, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _draw_inputs(fig, axes, image, model_input, transposed)
    for r, (name, p) in enumerate(rows.items()):
        _draw_layer(fig, axes, r, name, p)
    fig.suptitle(_heading(rows, title, logits, transposed), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / height))   # room for the three title lines
    return fig


def plot_attention(image, model_input: torch.Tensor, maps: dict, out, title: str = "",
                   logits: Optional[torch.Tensor] = None, dpi: int = 90,
                   transposed: bool = False) -> Path:
    """Draw ``image`` (what the user gave, a PIL image or ``[C, H, W]`` tensor), the model input
    ``[1, C, H, W]`` and ``maps`` (``attention_maps``'s result) into ``out`` (a PNG).
    ``transposed``: the model input is the image transposed (rot-MNIST's transform); maps are
    then drawn back in the image's frame."""
    import matplotlib.pyplot as plt
    fig = draw_attention(image, model_input, maps, title, logits, transposed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _cmd_attention(args) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("error: drawing needs matplotlib: pip install matplotlib (in a clone: "
              "pip install -e '.[plot]')", file=sys.stderr)
        return 2
    from PIL import Image

    image = Image.open(args.image)
    if args.rotate:
        image = image.convert("L" if image.mode in ("L", "1", "P") else "RGB").rotate(
            args.rotate, resample=Image.BILINEAR)
    model = create_model(args.name, pretrained=not args.random).eval()
    tf = transforms(args.name)
    x = tf(image).unsqueeze(0)
    transposed = any(isinstance(t, TransposeDigits) for t in getattr(tf, "transforms", []))
    maps = attention_maps(model, x)
    with torch.no_grad():
        logits = model(x)
    out = plot_attention(image, x, maps, args.out, logits=logits, transposed=transposed,
                         title=f"{args.name}{' (random weights)' if args.random else ''}: "
                               f"{Path(args.image).name}"
                               + (f" rotated {args.rotate:g}°" if args.rotate else ""))
    print(f"{out}: {len(maps)} attentive layers ({', '.join(maps)})")
    return 0


def add_command(s) -> None:
    """The ``attention`` subcommand of ``python -m agcnn_zoo`` (its parser ``s``)."""
    s.add_argument("name", help="model name or weight id, e.g. a_p4cnn_rotmnist")
    s.add_argument("--image", required=True, help="an image file (digits in MNIST orientation)")
    s.add_argument("--out", default="attention.png", help="output PNG")
    s.add_argument("--rotate", type=float, default=0.0, help="rotate the image by this many "
                   "degrees (counter-clockwise) first")
    s.add_argument("--random", action="store_true", help="random weights instead of the "
                                                         "published ones")
    s.set_defaults(fn=_cmd_attention)
