"""MATLAB-compatible ``imresize(..., 'bicubic')`` in torch.

The SR literature makes its "BI" LR data with MATLAB's ``imresize``; this module
reproduces it to floating-point precision, borders included:

- Keys' cubic convolution kernel with a = -0.5;
- when shrinking (scale < 1) the kernel is stretched by 1/scale and scaled by
  scale (antialiasing), so a x4 reduction has a 16-pixel-wide support;
- MATLAB's sampling grid: output pixel x (1-based) reads input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``;
- ``ceil(kernel_width) + 2`` taps per output pixel, weights normalised to sum 1;
- out-of-range taps mirror back into the image with MATLAB's symmetric rule
  (edge pixel repeated: ... 2 1 | 1 2 3 ... n | n n-1 ...);
- output size ``ceil(in * scale)``; dimensions resized in MATLAB's order
  (the one shrinking most first; height first on a tie).

The weights are computed once per (in, out, scale) in float64 numpy; the
filtering is torch. For an integer reduction factor every output pixel uses
the same weights, so the interior is a few small banded matrix products
(``filters.regular_taps``); only the few border pixels whose taps mirror go
through a gather.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gbuf.datasets.degrade.filters import gather_rows, regular_taps
from gbuf.errors import GbufError


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (MATLAB's ``cubic`` is a = -0.5)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = ((a + 2.0) * ax3 - (a + 3.0) * ax2 + 1.0) * (ax <= 1.0)
    far = (a * ax3 - 5.0 * a * ax2 + 8.0 * a * ax - 4.0 * a) * ((ax > 1.0) & (ax <= 2.0))
    return near + far


def output_length(in_length: int, scale: float) -> int:
    """MATLAB's output size for a scale factor: ``ceil(in * scale)``."""
    return int(math.ceil(in_length * scale))


@functools.lru_cache(maxsize=64)
def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True):
    """Weights and (0-based, mirrored) input indices of each output pixel.

    Returns ``(weights, indices, left, offsets)``: float64 ``(out, P)``, int64
    ``(out, P)``, the unmirrored 0-based index of each row's first tap before
    zero columns were dropped ``(out,)``, and the kept columns' tap offsets ``(P,)``.
    """
    if scale < 1.0 and antialias:
        kernel_width = 4.0 / scale

        def kernel(x):
            return scale * keys_cubic(scale * x)
    else:
        kernel_width = 4.0
        kernel = keys_cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    raw = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]     # 1-based
    weights = kernel(u[:, None] - raw)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # MATLAB mirrors with the period 2n sequence [1..n, n..1].
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(raw.astype(np.int64) - 1, 2 * in_length)]
    # MATLAB drops columns whose weights are all zero; they add nothing. (For an
    # integer reduction factor some are in the middle: the kernel's zeros.)
    keep = np.any(weights != 0.0, axis=0)
    offsets = np.flatnonzero(keep)
    weights, indices = weights[:, keep], indices[:, keep]
    left0 = left.astype(np.int64) - 1
    for arr in (weights, indices, left0, offsets):
        arr.setflags(write=False)
    return weights, indices, left0, offsets


def _resize_dim1(x, out_length: int, scale: float, antialias: bool, dtype):
    """Resize a (B, L, R) tensor along L; the result has ``dtype``."""
    import torch

    _, in_length, _ = x.shape
    weights, indices, left, offsets = contributions(in_length, out_length, float(scale), antialias)
    uniform = bool(np.all(weights == weights[0:1]))
    step = int(left[1] - left[0]) if out_length > 1 else 1
    regular = uniform and out_length > 1 and bool(np.all(np.diff(left) == step)) and step >= 1
    # Every row is written below (regular rows or border rows).
    out = torch.empty((x.shape[0], out_length, x.shape[2]), dtype=dtype, device=x.device)
    if regular:
        # Rows whose taps all fall inside the image read plain strided views.
        inside = (left + offsets[0] >= 0) & (left + offsets[-1] < in_length)
        rows = np.flatnonzero(inside)
        if rows.size:
            regular_taps(x, out, int(rows[0]), int(rows[-1]) + 1, left, offsets, weights[0], step)
        border = np.flatnonzero(~inside)
    else:
        border = np.arange(out_length)
    gather_rows(x, out, border, indices[border], weights[border])
    return out


def _compute_dtype(dtype):
    import torch

    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _resize_bhwr(x, out_h: int, out_w: int, scales: tuple[float, float], antialias: bool):
    """Resize a (B, H, W, R) tensor (R: trailing channels, 1 for planar input)."""
    b, h, w, r = x.shape
    dtype = _compute_dtype(x.dtype)
    # MATLAB resizes the dimension with the smallest scale first (stable on ties).
    order = sorted(range(2), key=lambda d: scales[d])
    cur_h, cur_w = h, w
    for dim in order:
        if dim == 0:
            x = _resize_dim1(x.reshape(b, cur_h, cur_w * r), out_h, scales[0], antialias, dtype)
            cur_h = out_h
        else:
            # Rows of a channels-last frame are (W, R) blocks: filter along W in place.
            x = _resize_dim1(x.reshape(b * cur_h, cur_w, r), out_w, scales[1], antialias, dtype)
            cur_w = out_w
        x = x.reshape(b, cur_h, cur_w, r)
    return x


def _sizes(h: int, w: int, scale, size):
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise GbufError(f"imresize: output size must be positive, got {size}")
        return out_h, out_w, (out_h / h, out_w / w)
    if scale is None or not scale > 0 or not math.isfinite(scale):
        raise GbufError(f"imresize: scale must be a positive number, got {scale!r}")
    return output_length(h, scale), output_length(w, scale), (float(scale), float(scale))


def imresize(x, scale: float | None = None, size: tuple[int, int] | None = None, antialias: bool = True):
    """MATLAB ``imresize(x, scale, 'bicubic')`` of a planar tensor ``(..., H, W)``.

    Give ``scale`` (output ``ceil(H*scale) x ceil(W*scale)``; the weights use
    exactly ``scale``, as MATLAB does) or ``size`` (each dimension's scale is
    then out/in). float16/bfloat16 input is computed in float32; the result has
    the compute dtype (float32 or float64).
    """
    if x.ndim < 2:
        raise GbufError(f"imresize needs an (..., H, W) tensor, got shape {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w, scales = _sizes(h, w, scale, size)
    lead = x.shape[:-2]
    y = _resize_bhwr(x.reshape(-1, h, w, 1), out_h, out_w, scales, antialias)
    return y.reshape(*lead, out_h, out_w)


def imresize_hwc(x, scale: float | None = None, size: tuple[int, int] | None = None, antialias: bool = True):
    """:func:`imresize` of a channels-last tensor ``(..., H, W, C)`` (the store's layout).

    Same numbers as :func:`imresize`; channels-last input avoids a transposing
    copy of the full-resolution frame, which costs more than the filtering.
    """
    if x.ndim < 3:
        raise GbufError(f"imresize_hwc needs an (..., H, W, C) tensor, got shape {tuple(x.shape)}")
    h, w, c = int(x.shape[-3]), int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w, scales = _sizes(h, w, scale, size)
    lead = x.shape[:-3]
    y = _resize_bhwr(x.reshape(-1, h, w, c), out_h, out_w, scales, antialias)
    return y.reshape(*lead, out_h, out_w, c)


def sample_centres(in_length: int, scale: int) -> np.ndarray:
    """Where (in input pixel-index coordinates, pixel j centred at j) each
    output pixel of a 1/scale reduction is centred: ``s*i + (s-1)/2``."""
    out = output_length(in_length, 1.0 / scale)
    return scale * np.arange(out, dtype=np.float64) + (scale - 1) / 2.0
