"""Input values that would give a silently wrong answer: refused, or named once.

Two places, each checking what it can know:

* ``check_image_values(x)``: a float image entering a transform must hold finite pixels in
  [0, 1]. A 0-255 float image (``torch.from_numpy(np.array(img)).float()`` without ``/ 255``) or
  an image normalised already would pass every later step and score far below the published
  accuracy; it is refused with the fix in the message. The transform builder calls this on
  every float image.
* ``check_input_values(x, mean, std)``: a model input (normalised) with NaN or inf values is
  refused (its logits would be NaN, whose argmax is class 0); values far outside what the
  weight's normalisation produces from pixels in [0, 1] (0-255 pixels fed to the model
  directly) are warned about once per model. The margin (``RANGE_MARGIN`` widths of that range)
  is wide enough that unit-variance noise never trips it; an image normalised twice is the
  transform's to catch, not the model's.

Both read tensor values, so they are data-dependent: models skip them while being traced or
compiled (``agcnn_zoo.nn.tracing``), and the graph keeps only the shape checks.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Sequence, Tuple

import torch

__all__ = ["check_image_values", "check_input_values", "normalised_bounds", "PIXEL_SLACK",
           "RANGE_MARGIN", "InputValueWarning"]

#: how far a float pixel may stray outside [0, 1] (interpolation overshoot) before it is refused
PIXEL_SLACK = 0.1
#: model inputs further than this many widths of the normalised range outside it are warned
#: about (the widths span 3.4 to 4.9 for the zoo's weights; 0-255 pixels reach 880 and more)
RANGE_MARGIN = 2.0


class InputValueWarning(UserWarning):
    """Model input values far outside the range the weight's normalisation produces."""


def _non_finite(x: torch.Tensor, what: str) -> str:
    nan = int(torch.isnan(x).sum())
    inf = int(torch.isinf(x).sum())
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1) if x.dim() >= 2 else None
    where = ""
    if bad is not None and x.dim() == 4:
        rows = bad.nonzero().flatten().tolist()
        where = f" in sample{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:8]))}" + (
            ", ..." if len(rows) > 8 else "")
    return f"{what} holds {nan} NaN and {inf} inf values{where}"


def check_image_values(x: torch.Tensor) -> None:
    """Refuse a float image (any shape) that is not finite pixels in [0, 1] (to within
    ``PIXEL_SLACK``), with a ValueError that says what the image looks like and the fix."""
    mn, mx = (float(v) for v in torch.aminmax(x.detach()))
    if not (mn == mn and mx == mx) or abs(mn) == float("inf") or abs(mx) == float("inf"):
        raise ValueError(_non_finite(x, "the image") + ": fix the image loading (a float image "
                         "must hold finite pixels in [0, 1])")
    if mx > 1 + PIXEL_SLACK:
        if mx > 2:
            raise ValueError(f"the float image's values reach {mx:.4g}, but a float image must "
                             f"hold pixels in [0, 1]; these look like 0-255 pixels: divide by "
                             f"255 (x / 255.0), or pass the uint8 tensor or the PIL image itself "
                             f"(torch.from_numpy(np.array(img)) without .float())")
        raise ValueError(f"the float image's values reach {mx:.4g}, outside [0, 1]: a float "
                         f"image must hold pixels in [0, 1] (x.clamp(0, 1) if this is "
                         f"interpolation overshoot)")
    if mn < -PIXEL_SLACK:
        raise ValueError(f"the float image's values go down to {mn:.4g}, but a float image must "
                         f"hold pixels in [0, 1]; it looks normalised already (mean / std "
                         f"applied): pass the image before normalisation, the transform "
                         f"normalises it")


@functools.lru_cache(maxsize=64)
def _bounds(mean: tuple, std: tuple) -> Tuple[float, float]:
    lo = min(-m / s for m, s in zip(mean, std))
    hi = max((1 - m) / s for m, s in zip(mean, std))
    return lo, hi


def normalised_bounds(mean: Sequence[float], std: Sequence[float]) -> Tuple[float, float]:
    """The range ``(pixel - mean) / std`` covers for pixels in [0, 1], over all channels."""
    return _bounds(tuple(mean), tuple(std))     # cached: it runs on every forward


def check_input_values(x: torch.Tensor, mean: Optional[Sequence[float]] = None,
                       std: Optional[Sequence[float]] = None, owner=None,
                       name: str = "the model") -> None:
    """Refuse a model input holding NaN or inf (ValueError, naming the samples); warn once per
    ``owner`` (an object that records the warning) when values lie more than
    ``RANGE_MARGIN`` widths outside the normalised range of pixels in [0, 1] (0-255 pixels).
    One reduction over ``x`` (``aminmax``) and one host sync."""
    mn, mx = torch.aminmax(x.detach())
    mn, mx = float(mn), float(mx)
    if not (mn == mn and mx == mx) or abs(mn) == float("inf") or abs(mx) == float("inf"):
        raise ValueError(_non_finite(x, "the input") + f": the logits would be NaN and their "
                         f"argmax class 0, silently; check the image loading and normalisation "
                         f"(set {name}.check_input_values = False to turn the value checks off)")
    warned = owner is not None and vars(owner).get("_input_range_warned", False)
    if mean is None or std is None or warned:
        return
    lo, hi = normalised_bounds(mean, std)
    margin = RANGE_MARGIN * (hi - lo)
    if mn < lo - margin or mx > hi + margin:
        if owner is not None:
            owner._input_range_warned = True
        warnings.warn(
            f"input values span [{mn:.4g}, {mx:.4g}], but images normalised for this weight "
            f"(mean {_fmt(mean)}, std {_fmt(std)}) lie within [{lo:.3g}, {hi:.3g}] for pixels in "
            f"[0, 1]: 0-255 pixels? (divide them by 255 before normalising; "
            f"agcnn_zoo.transforms(name) builds the input from a PIL image or uint8 tensor). "
            f"Warned once per model; "
            f"{name}.check_input_values = False turns the value checks off",
            InputValueWarning, stacklevel=4)


def _fmt(v: Sequence[float]) -> str:
    v = [round(float(a), 4) for a in v]
    return str(v[0]) if len(set(v)) == 1 else str(tuple(v))
