"""``python -m agcnn_zoo attention NAME --image FILE --out maps.png``: draw an image beside the
attention maps a model applied to it (needs matplotlib: ``pip install matplotlib``).

One row per attentive layer. Spatial attention is drawn once per group element ``g`` of the
map it acts on (the original's ``[B, C, n, X, Y]`` layout; for full alpha layers averaged over
output channels and input group elements), all in the model's input frame (rot-MNIST digits are
transposed: the "model input" panel shows what the maps are aligned with), one colour scale per
row. Channel attention is drawn as a channels x group-elements image (full alpha: averaged over
output channels and input group elements).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch

__all__ = ["plot_attention", "add_parser"]


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


def plot_attention(image, model_input: torch.Tensor, maps: dict, out, title: str = "",
                   logits: Optional[torch.Tensor] = None, dpi: int = 90) -> Path:
    """Draw ``image`` (what the user gave, a PIL image or ``[C, H, W]`` tensor), the model input
    ``[1, C, H, W]`` and ``maps`` (``attention_maps``'s result) into ``out`` (a PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, m, _spatial_per_element(m), _channel_image(m)) for name, m in maps.items()]
    if not rows:
        raise ValueError("the model has no attentive layer: nothing to draw")
    n_el = max(s.shape[0] for _, _, s, _ in rows if s is not None) if any(
        s is not None for _, _, s, _ in rows) else 1
    n_cols = 1 + n_el + 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.9 * n_cols + 1.5, 1.9 * len(rows) + 0.8),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, img, cmap="gray", vmin=None, vmax=None, label=""):
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        if isinstance(img, torch.Tensor):
            img = img.detach().cpu().numpy()
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        return im

    # column 0: the image as given, the model input
    if not isinstance(image, torch.Tensor):
        import numpy as np
        image = torch.from_numpy(np.asarray(image).copy())
        image = image.permute(2, 0, 1) if image.dim() == 3 else image.unsqueeze(0)
    img = image.to(torch.float64)
    show(axes[0, 0], img[0] if img.shape[0] == 1 else (img.permute(1, 2, 0) / max(1.0, img.max().item())),
         label="image")
    x = model_input[0].to(torch.float64)
    if len(rows) > 1:
        im = show(axes[1, 0], x[0] if x.shape[0] == 1 else x.mean(0), label="model input\n(normalised)")
        fig.colorbar(im, ax=axes[1, 0], fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)

    for r, (name, m, spatial, channel) in enumerate(rows):
        group = m.group
        if spatial is not None:
            vmin, vmax = spatial.min().item(), spatial.max().item()
            im = None
            for i in range(spatial.shape[0]):
                label = (f"{name} spatial β\n" if i == 0 else "\n") + (
                    _element_label(group, i) if spatial.shape[0] > 1 else "on the plane")
                im = show(axes[r, 1 + i], spatial[i], cmap="viridis", vmin=vmin, vmax=vmax,
                          label=label)
            fig.colorbar(im, ax=axes[r, spatial.shape[0]], fraction=0.046, pad=0.04).ax.tick_params(
                labelsize=6)
        if channel is not None:
            ax = axes[r, n_cols - 1]
            im = show(ax, channel, cmap="magma",
                      label=f"{name} channel α\n(channels x g)")
            ax.set_aspect("auto")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    head = title
    if logits is not None:
        p = logits.softmax(-1)[0]
        k = int(p.argmax())
        head += f"   prediction: class {k} (p = {p[k]:.3f})"
    kinds = sorted({m.kind for _, m, _, _ in rows})
    head += f"\nattention kinds: {', '.join(kinds)}; maps in the model's input frame; " \
            "full alpha maps averaged over output channels and input group elements"
    fig.suptitle(head, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
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

    from .api import create_model
    from .interpret import attention_maps
    from .preprocess import transforms
    image = Image.open(args.image)
    if args.rotate:
        image = image.convert("L" if image.mode in ("L", "1", "P") else "RGB").rotate(
            args.rotate, resample=Image.BILINEAR)
    model = create_model(args.name, pretrained=not args.random).eval()
    x = transforms(args.name)(image).unsqueeze(0)
    maps = attention_maps(model, x)
    with torch.no_grad():
        logits = model(x)
    out = plot_attention(image, x, maps, args.out, logits=logits,
                         title=f"{args.name}{' (random weights)' if args.random else ''}: "
                               f"{Path(args.image).name}"
                               + (f" rotated {args.rotate:g}°" if args.rotate else ""))
    print(f"{out}: {len(maps)} attentive layers ({', '.join(maps)})")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("attention", help="draw the attention maps a model applies to an image "
                                         "(needs matplotlib)")
    s.add_argument("name", help="model name or weight id, e.g. a_p4cnn_rotmnist")
    s.add_argument("--image", required=True, help="an image file (digits in MNIST orientation)")
    s.add_argument("--out", default="attention.png", help="output PNG")
    s.add_argument("--rotate", type=float, default=0.0, help="rotate the image by this many "
                   "degrees (counter-clockwise) first")
    s.add_argument("--random", action="store_true", help="random weights instead of the "
                                                         "published ones")
    s.set_defaults(fn=_cmd_attention)
