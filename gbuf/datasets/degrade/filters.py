"""Strided 1-D filtering with explicit border rules, shared by the exact kernels.

``filter_sample(x, kernel, first, step, count, mode)`` computes, along dim 1 of
a ``(B, L, R)`` tensor, ``out[:, i] = sum_m kernel[m] * x[:, border(first + step*i + m)]``.
Output rows whose taps all land inside ``[0, L)`` read strided views of ``x``
(no copy of the full-resolution input); only the few border rows gather.
"""

from __future__ import annotations

import numpy as np


def border_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map (possibly out-of-range) 0-based indices into ``[0, n)``.

    - ``replicate``: clamp (MATLAB ``'replicate'``);
    - ``symmetric``: mirror with the edge repeated, period 2n (MATLAB ``'symmetric'``,
      imresize's rule; scipy's ``'reflect'``);
    - ``reflect``: mirror about the edge pixel, period 2n-2 (torch/numpy ``'reflect'``).
    """
    idx = np.asarray(idx, dtype=np.int64)
    if mode == "replicate":
        return np.clip(idx, 0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        j = np.mod(idx, period)
        return np.where(j < n, j, period - 1 - j)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(idx)
        period = 2 * n - 2
        j = np.mod(idx, period)
        return np.where(j < n, j, period - j)
    raise ValueError(f"unknown border mode {mode!r}")


# Output rows per band. Each band is one small matrix product: a (BAND_ROWS x m) banded
# weight matrix times the m input rows it reads (m = step*(BAND_ROWS-1) + span). That
# does a few times the multiply-adds of summing shifted views, but runs as a GEMM on
# rows still in cache; 16 was fastest for x4 of 1080p frames (benchmarks/degrade.py).
BAND_ROWS = 16


def _band_matrix(weights, offsets, step: int, rows: int, dtype, device):
    import torch

    span = int(offsets[-1] - offsets[0]) + 1
    m = step * (rows - 1) + span
    band = np.zeros((rows, m), dtype=np.float64)
    for j in range(rows):
        band[j, step * j + (np.asarray(offsets) - offsets[0])] = weights
    return torch.from_numpy(band).to(device=device, dtype=dtype)


def regular_taps(x, out, i0: int, i1: int, starts, offsets, weights, step: int) -> None:
    """``out[:, i] = sum_k weights[k] * x[:, starts[i] + offsets[k]]`` for i0 <= i < i1.

    ``x`` is ``(B, L, R)``, ``starts[i] = starts[i0] + step * (i - i0)`` and every index
    is inside ``x``. Each band is converted to ``out``'s dtype as it is read: converting
    a whole float16 frame first costs a frame-sized allocation, whose page faults
    cost more than the filtering. Wide rows (R >= B, e.g. the H pass of a frame)
    left-multiply each band of rows by the band matrix; many short rows (the W pass,
    R = channels) right-multiply the flattened ``(B, L*R)`` view by the band matrix
    expanded over the R interleaved channels, so neither pass needs a transposed copy.
    """
    import torch

    span = int(offsets[-1] - offsets[0]) + 1
    full = _band_matrix(weights, offsets, step, BAND_ROWS, out.dtype, out.device)
    batch, length, r = x.shape
    if r >= batch:
        for b0 in range(i0, i1, BAND_ROWS):
            n = min(BAND_ROWS, i1 - b0)
            m = step * (n - 1) + span
            r0 = int(starts[b0] + offsets[0])
            out[:, b0:b0 + n] = torch.matmul(full[:n, :m], x[:, r0:r0 + m].to(out.dtype))
        return
    flat_x = x.reshape(batch, length * r)
    flat_out = out.view(batch, out.shape[1] * r)
    eye = torch.eye(r, dtype=out.dtype, device=out.device)
    # (m*R, n*R): column (j, c) takes sum over taps of x[(row, c)].
    right = torch.kron(full.t().contiguous(), eye)
    for b0 in range(i0, i1, BAND_ROWS):
        n = min(BAND_ROWS, i1 - b0)
        m = step * (n - 1) + span
        r0 = int(starts[b0] + offsets[0])
        flat_out[:, b0 * r:(b0 + n) * r] = torch.matmul(flat_x[:, r0 * r:(r0 + m) * r].to(out.dtype),
                                                        right[:m * r, :n * r])


def gather_rows(x, out, rows: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> None:
    """``out[:, rows[j]] = sum_k weights[j, k] * x[:, indices[j, k]]`` (indices already in range)."""
    import torch

    if rows.size == 0:
        return
    taps = indices.shape[1]
    idx = torch.from_numpy(np.ascontiguousarray(indices)).to(x.device)
    w = torch.from_numpy(np.ascontiguousarray(weights)).to(device=x.device, dtype=out.dtype)
    gathered = x.index_select(1, idx.reshape(-1)).to(out.dtype)
    gathered = gathered.reshape(x.shape[0], rows.size, taps, x.shape[2])
    out[:, torch.from_numpy(rows).to(x.device)] = torch.einsum("bntr,nt->bnr", gathered, w)


def filter_sample(x, kernel: np.ndarray, first: int, step: int, count: int, mode: str, dtype):
    """Filter and sample along dim 1 of ``(B, L, R)``; see the module docstring."""
    import torch

    length = x.shape[1]
    kernel = np.asarray(kernel, dtype=np.float64)
    nz = np.flatnonzero(kernel != 0.0)
    if nz.size == 0:
        nz = np.array([0])
    offsets, weights = nz, kernel[nz]
    out = torch.zeros((x.shape[0], count, x.shape[2]), dtype=dtype, device=x.device)
    starts = first + step * np.arange(count, dtype=np.int64)
    inside = (starts + offsets[0] >= 0) & (starts + offsets[-1] < length)
    rows = np.flatnonzero(inside)
    if rows.size:
        regular_taps(x, out, int(rows[0]), int(rows[-1]) + 1, starts, offsets, weights, step)
    border = np.flatnonzero(~inside)
    if border.size:
        idx = border_index(starts[border, None] + offsets[None, :], length, mode)
        gather_rows(x, out, border, idx, np.broadcast_to(weights, idx.shape))
    return out
