"""BD degradation: Gaussian blur (sigma 1.6 at x4) then keep every scale-th pixel.

Two published variants, both exact here:

``matlab`` (default; BasicVSR/BasicVSR++ and most VSR papers' "BD" Vid4/UDM10 sets,
made with a MATLAB script):
    ``h = fspecial('gaussian', k, sigma)`` with ``k = 2*ceil(3*sigma) + 2`` (12 for
    sigma 1.6), ``imfilter(I, h, 'replicate')`` (correlation; an even kernel's
    centre is element ``floor((k+1)/2)``), then ``I(s/2 : s : end - s/2, ...)``
    (1-based). For k = 12, s = 4 every LR sample is centred on its 4x4 HR
    footprint (HR pixel-index coordinate 4i + 1.5). Needs an even scale.
``duf`` (DUF's TensorFlow code, reused by EDVR/BasicSR ``duf_downsample``):
    a 13x13 kernel = ``scipy.ndimage.gaussian_filter`` of a centred delta with
    ``sigma = 0.4 * scale`` (the 1-D Gaussian truncated at ``int(4 sigma + 0.5)``,
    normalised, outer product), reflect padding (edge not repeated), samples
    at 0-based rows/cols ``0, s, 2s, ...`` (centred at 4i: 1.5 HR pixels up-left
    of the footprint centre).
"""

from __future__ import annotations

import math

import numpy as np

from gbuf.datasets.degrade.filters import border_index, filter_sample
from gbuf.errors import GbufError

VARIANTS = ("matlab", "duf")
DEFAULT_VARIANT = "matlab"
DEFAULT_SIGMA = 1.6
DUF_KERNEL_SIZE = 13


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)`` (float64, sums to 1)."""
    half = (size - 1) / 2.0
    t = np.arange(size, dtype=np.float64) - half
    h = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


def scipy_gaussian_delta(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` of a centred ``size x size`` delta (DUF's ``gkern``).

    scipy samples a 1-D Gaussian on ``-r..r`` with ``r = int(truncate*sigma + 0.5)``,
    normalises it, and filters each axis with half-sample symmetric borders; a
    kernel wider than the window folds back in at the edges.
    """
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * t * t / (sigma * sigma))
    g /= g.sum()
    g1 = np.zeros(size)
    centre = size // 2
    # Response at i of the delta at `centre`: sum over taps whose mirrored source is the centre.
    for i in range(size):
        src = border_index(i + np.arange(-radius, radius + 1), size, "symmetric")
        g1[i] = g[src == centre].sum()
    return np.outer(g1, g1)


def bd_kernel(scale: int, sigma: float | None = None, variant: str = DEFAULT_VARIANT,
              kernel_size: int | None = None) -> np.ndarray:
    """The 2-D kernel of a BD variant (float64)."""
    if variant == "matlab":
        sigma = DEFAULT_SIGMA if sigma is None else sigma
        k = kernel_size or int(2 * math.ceil(3 * sigma) + 2)
        return fspecial_gaussian(k, sigma)
    if variant == "duf":
        sigma = 0.4 * scale if sigma is None else sigma
        return scipy_gaussian_delta(kernel_size or DUF_KERNEL_SIZE, sigma)
    raise GbufError(f"unknown BD variant {variant!r}; known: {', '.join(VARIANTS)}")


def bd_grid(length: int, scale: int, variant: str, kernel_size: int):
    """``(first, count, mode, centre)`` of the sampling along one axis.

    Output pixel i reads input taps ``first + scale*i + m`` (m = 0..k-1) with border
    ``mode``; ``centre[i]`` is where it is centred in input pixel-index coordinates.
    """
    if variant == "matlab":
        c0 = (kernel_size + 1) // 2 - 1              # imfilter's centre, 0-based
        start = scale // 2 - 1                       # 1-based s/2
        count = (length - scale) // scale + 1        # s/2 : s : end - s/2
        first = start - c0
        centre = start + scale * np.arange(count) + (kernel_size - 1) / 2.0 - c0
        return first, count, "replicate", centre
    c0 = kernel_size // 2
    count = -(-length // scale)
    return -c0, count, "reflect", scale * np.arange(count, dtype=np.float64)


def check_bd(height: int, width: int, scale, variant: str, kernel_size: int) -> None:
    """Raise GbufError (without a path; callers prefix one) for unusable arguments."""
    if variant not in VARIANTS:
        raise GbufError(f"unknown BD variant {variant!r}; known: {', '.join(VARIANTS)}")
    if not float(scale).is_integer() or scale < 1:
        raise GbufError(f"--gaussian needs an integer scale >= 1, got {scale}")
    if variant == "matlab" and int(scale) % 2:
        raise GbufError(f"the matlab BD variant samples from index scale/2 and needs an even scale, "
                        f"got {scale}; use the duf variant")
    if min(height, width) < kernel_size:
        raise GbufError(f"image {height}x{width} is smaller than the {kernel_size}x{kernel_size} blur kernel")


def bd_downsample(x, scale: int, sigma: float | None = None, variant: str = DEFAULT_VARIANT,
                  kernel_size: int | None = None, channels_last: bool = False):
    """BD-degrade ``x``: ``(..., H, W)`` planar, or ``(..., H, W, C)`` with ``channels_last``.

    float16 input is computed in float32; float64 stays float64.
    """
    import torch

    kernel = bd_kernel(scale, sigma, variant, kernel_size)
    k = kernel.shape[0]
    if channels_last:
        h, w, r = (int(v) for v in x.shape[-3:])
        lead = x.shape[:-3]
    else:
        h, w, r = int(x.shape[-2]), int(x.shape[-1]), 1
        lead = x.shape[:-2]
    check_bd(h, w, scale, variant, k)
    scale = int(scale)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.reshape(-1, h, w * r)
    first_h, count_h, mode, _ = bd_grid(h, scale, variant, k)
    first_w, count_w, _, _ = bd_grid(w, scale, variant, k)
    b = y.shape[0]

    def cols(t, kernel_1d):
        # (B, rows, W*R) -> (B, rows, count_w*R), filtering along W: rows are (W, R) blocks.
        rows = t.shape[1]
        tt = filter_sample(t.reshape(b * rows, w, r), kernel_1d, first_w, scale, count_w, mode, dtype)
        return tt.reshape(b, rows, count_w * r)

    row_k, col_k = kernel.sum(axis=1), kernel.sum(axis=0)
    if np.allclose(np.outer(row_k, col_k), kernel, rtol=0, atol=1e-15):
        out = cols(filter_sample(y, row_k, first_h, scale, count_h, mode, dtype), col_k)
    else:
        # Not separable (fspecial zeroed tiny corner weights): one row of the kernel at a time.
        out = None
        for m in range(k):
            if not np.any(kernel[m]):
                continue
            one = np.zeros(k)
            one[m] = 1.0
            part = cols(filter_sample(y, one, first_h, scale, count_h, mode, dtype), kernel[m])
            out = part if out is None else out + part
    if channels_last:
        return out.reshape(*lead, count_h, count_w, r)
    return out.reshape(*lead, count_h, count_w)
