"""G-buffers of a degraded LR group: resampled from HR at the LR sampling grid.

Filtering a G-buffer like an image makes values no renderer would produce
(depth halfway between a foreground edge and the background, normals of no
length), so by default every non-image buffer is **point-sampled**: LR pixel i
takes the HR pixel nearest to where the image method centres LR pixel i.
``area`` averages the ``scale x scale`` HR block around that centre instead
(depth over its finite values, +inf only if all are background; normals
re-normalised; the rest plain means).

Motion is resampled the same way and divided by the scale: it is in pixels of
its own group (gbuf convention), and LR pixel i sits at HR ``s*i + o`` for a
constant o, so a displacement of m HR pixels is m/s LR pixels.

Centres (HR pixel-index coordinates, pixel j centred at j), per method:

- bicubic, BD ``matlab``, realworld: ``s*i + (s-1)/2``, the centre of the LR
  pixel's footprint; for even s it falls between two HR pixels and the point
  sample takes the lower-right one (``floor(c + 0.5)``);
- BD ``duf``: ``s*i`` (DUF samples the blurred image there).
"""

from __future__ import annotations

import numpy as np

from gbuf.errors import GbufError

MODES = ("point", "area")


def centres(length: int, scale: int, method: str, variant: str | None = None) -> np.ndarray:
    """Where LR pixel i is centred, in HR pixel-index coordinates, for an HR axis of ``length``."""
    count = length // scale
    i = np.arange(count, dtype=np.float64)
    if method == "gaussian" and variant == "duf":
        return scale * i
    return scale * i + (scale - 1) / 2.0


def point_index(c: np.ndarray, length: int) -> np.ndarray:
    return np.clip(np.floor(c + 0.5).astype(np.int64), 0, length - 1)


def area_index(c: np.ndarray, length: int, scale: int) -> np.ndarray:
    """``(n, scale)`` HR indices of the block centred on each centre (clamped at the border)."""
    start = np.floor(c - (scale - 1) / 2.0 + 0.5).astype(np.int64)
    return np.clip(start[:, None] + np.arange(scale)[None, :], 0, length - 1)


def resample(buffer: str, frames: np.ndarray, scale: int, rows: np.ndarray, cols: np.ndarray,
             mode: str = "point") -> np.ndarray:
    """Resample ``(T, H, W, C)`` HR frames of ``buffer`` to ``(T, len(rows), len(cols), C)``.

    ``rows``/``cols`` are the LR centres along each axis (see :func:`centres`).
    """
    if mode not in MODES:
        raise GbufError(f"unknown G-buffer sampling {mode!r}; known: {', '.join(MODES)}")
    _, h, w, _ = frames.shape
    if mode == "point":
        out = frames[:, point_index(rows, h)][:, :, point_index(cols, w)]
    else:
        ri, ci = area_index(rows, h, scale), area_index(cols, w, scale)
        # (T, h, s, w, s, C) gather, then reduce over the two block axes.
        block = frames[:, ri][:, :, :, ci].astype(np.float64)
        if buffer == "depth":
            finite = np.isfinite(block)
            count = finite.sum(axis=(2, 4))
            total = np.where(finite, block, 0.0).sum(axis=(2, 4))
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(count > 0, total / np.maximum(count, 1), np.inf)
        else:
            out = block.mean(axis=(2, 4))
            if buffer == "normal":
                norm = np.linalg.norm(out, axis=-1, keepdims=True)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out = np.where(norm > 1e-6, out / np.maximum(norm, 1e-12), 0.0)
    if buffer == "motion":
        out = out / float(scale)
    return np.ascontiguousarray(out.astype(frames.dtype, copy=False))
