"""Independent float64 numpy references for the degradation tests and benchmark.

Written from the published definitions, not from gbuf's code:

- MATLAB ``imresize(I, scale, 'bicubic')`` (Image Processing Toolbox,
  ``imresize.m``: ``contributions`` + ``resizeAlongDim``): Keys cubic a=-0.5;
  for scale < 1 the kernel is ``scale * cubic(scale * x)`` with width 4/scale;
  output pixel x (1-based) maps to ``u = x/scale + 0.5*(1 - 1/scale)``; taps
  ``floor(u - width/2) + (0 .. ceil(width)+1)``; weights normalised per output;
  indices outside 1..n mirror with ``aux = [1:n, n:-1:1]``,
  ``aux(mod(i - 1, 2n) + 1)``; the dimension with the smaller scale first.
- BD (BasicVSR's MATLAB script): ``fspecial('gaussian', k, sigma)``,
  ``imfilter(I, h, 'replicate')`` (correlation, kernel centre at
  ``floor((k+1)/2)``), then ``I(s/2 : s : end - s/2, ...)`` (1-based).
- BD (DUF): 13x13 kernel = ``scipy.ndimage.gaussian_filter`` of a centred
  delta (truncate 4 sigma, 'reflect' = half-sample symmetric), reflect padding
  (edge not repeated), samples at 0-based rows/cols ``0, s, 2s, ...``.

The bicubic reference is the benchmark's baseline too (benchmarks/degrade.py).
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x):
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((1 < absx) & (absx <= 2)))


def matlab_contributions(in_length, out_length, scale):
    if scale < 1:
        kernel_width = 4 / scale
        h = lambda x: scale * cubic(scale * x)  # noqa: E731
    else:
        kernel_width = 4
        h = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    ind = left[:, None] + np.arange(p)[None, :]
    weights = h(u[:, None] - ind)
    weights = weights / np.sum(weights, axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    ind = aux[np.mod(ind.astype(np.int64) - 1, aux.size)]
    return weights, ind - 1          # 0-based


def matlab_resize_along_dim(img, dim, weights, indices):
    # out(k) = sum_j weights(k, j) * in(indices(k, j)) along `dim`.
    moved = np.moveaxis(img, dim, 0)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=np.float64)
    for j in range(weights.shape[1]):
        w = weights[:, j].reshape((-1,) + (1,) * (moved.ndim - 1))
        out += w * moved[indices[:, j]]
    return np.moveaxis(out, 0, dim)


def matlab_imresize(img, scale):
    """``imresize(img, scale, 'bicubic')`` for an (H, W) or (H, W, C) float64 array."""
    img = np.asarray(img, dtype=np.float64)
    out_shape = [math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale)]
    order = np.argsort([scale, scale], kind="stable")
    for dim in order:
        weights, indices = matlab_contributions(img.shape[dim], out_shape[dim], scale)
        img = matlab_resize_along_dim(img, dim, weights, indices)
    return img


def fspecial_gaussian(size, sigma):
    half = (size - 1) / 2
    y, x = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    return h / h.sum()


def matlab_bd(img, scale=4, sigma=1.6):
    """BasicVSR's BD: 12x12 fspecial Gaussian, replicate imfilter, rows s/2:s:end-s/2."""
    img = np.asarray(img, dtype=np.float64)
    k = int(math.ceil(sigma * 3) * 2 + 2)
    h = fspecial_gaussian(k, sigma)
    c = (k + 1) // 2                   # 1-based centre
    H, W = img.shape[:2]
    rows = np.arange(scale // 2, H - scale // 2 + 1, scale)      # 1-based
    cols = np.arange(scale // 2, W - scale // 2 + 1, scale)
    out = np.zeros((rows.size, cols.size) + img.shape[2:])
    for a in range(k):
        for b in range(k):
            # imfilter correlation: out(i, j) += h(a, b) * in(i + a - c, j + b - c)  (1-based a, b)
            ri = np.clip(rows + (a + 1) - c, 1, H) - 1
            ci = np.clip(cols + (b + 1) - c, 1, W) - 1
            out += h[a, b] * img[ri][:, ci]
    return out


def scipy_style_gaussian_delta(size, sigma, truncate=4.0):
    """``scipy.ndimage.gaussian_filter`` of a centred delta, as DUF builds its kernel."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * t * t / (sigma * sigma))
    g /= g.sum()
    delta = np.zeros(size)
    delta[size // 2] = 1.0
    padded = np.pad(delta, radius, mode="symmetric")      # scipy 'reflect'
    g1 = np.array([np.dot(padded[i:i + 2 * radius + 1], g) for i in range(size)])
    return np.outer(g1, g1)


def duf_bd(img, scale=4, sigma=None):
    img = np.asarray(img, dtype=np.float64)
    sigma = 0.4 * scale if sigma is None else sigma
    h = scipy_style_gaussian_delta(13, sigma)
    H, W = img.shape[:2]
    rows = np.arange(0, H, scale)
    cols = np.arange(0, W, scale)

    def reflect(i, n):
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i)

    out = np.zeros((rows.size, cols.size) + img.shape[2:])
    for a in range(13):
        for b in range(13):
            out += h[a, b] * img[reflect(rows + a - 6, H)][:, reflect(cols + b - 6, W)]
    return out
