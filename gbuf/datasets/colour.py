"""Colour helpers shared by the loaders, previews, degradations and metrics: one home each.

Every function takes a numpy array or a torch tensor and returns the same kind,
dtype and device. Only array arithmetic and ``where``/``clip`` are used, so this
module never imports torch itself: a tensor argument means torch is loaded already.

- :func:`srgb_encode` / :func:`srgb_decode`: the IEC 61966-2-1 sRGB transfer
  function (Blender's "Standard" view) and its inverse, on values clipped to [0, 1].
- :func:`quantize8`: display values in [0, 1] -> 8-bit levels 0..255, kept in
  the input's float dtype (what PSNR/SSIM compare); :func:`to_uint8`: the same as
  ``uint8``. Rounding is half to even (``numpy.rint`` / ``torch.round``).
"""

from __future__ import annotations

# The sRGB curve's constants (IEC 61966-2-1): linear segment below these, power 2.4 above.
_LINEAR_KNEE = 0.0031308
_ENCODED_KNEE = 0.04045


def _is_torch(x) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _where(x, condition, a, b):
    if _is_torch(x):
        import torch

        return torch.where(condition, a, b)
    import numpy as np

    return np.where(condition, a, b)


def _clip(x, lo, hi):
    # ndarray.clip and Tensor.clip take the same arguments (a numpy scalar has .clip too).
    return x.clip(lo, hi)


def _as_array(x):
    if _is_torch(x):
        return x
    import numpy as np

    return np.asarray(x)


def srgb_encode(linear):
    """Linear -> sRGB-encoded, both in [0, 1] (inputs are clipped to [0, 1] first)."""
    x = _clip(_as_array(linear), 0.0, 1.0)
    # The power runs on every element; the knee clamp keeps it away from 0 (no NaN gradient).
    curve = 1.055 * _clip(x, _LINEAR_KNEE, None) ** (1.0 / 2.4) - 0.055
    return _where(x, x <= _LINEAR_KNEE, x * 12.92, curve)


def srgb_decode(encoded):
    """sRGB-encoded -> linear, both in [0, 1] (inputs are clipped to [0, 1] first); inverts :func:`srgb_encode`."""
    x = _clip(_as_array(encoded), 0.0, 1.0)
    curve = ((x + 0.055) / 1.055) ** 2.4
    return _where(x, x <= _ENCODED_KNEE, x / 12.92, curve)


def quantize8(x):
    """[0, 1] -> the nearest 8-bit level 0..255 (clipped), in ``x``'s float dtype."""
    x = _as_array(x)
    scaled = _clip(x, 0.0, 1.0) * 255.0
    if _is_torch(x):
        return scaled.round()
    import numpy as np

    return np.rint(scaled)


def to_uint8(x):
    """[0, 1] -> ``uint8`` levels 0..255 (clipped, rounded half to even)."""
    levels = quantize8(x)
    if _is_torch(levels):
        import torch

        return levels.to(torch.uint8)
    import numpy as np

    return levels.astype(np.uint8)
