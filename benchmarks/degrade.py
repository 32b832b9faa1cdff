"""Bicubic x4 of 1920x1080 frames: gbuf's torch imresize vs a straightforward numpy one.

The baseline is ``tests/matlab_reference.py``'s ``matlab_imresize``: the MATLAB
``imresize`` formulas written directly in float64 numpy (weights per output
pixel, a weighted gather along each axis, exactly MATLAB's ``resizeAlongDim``),
the same code the tests compare gbuf against. Both take the same float16
channels-last frames (the store's layout) in one process; the output of every
frame is compared.

    .venv/bin/python benchmarks/degrade.py [--frames 8] [--threads 1] [--size 1080x1920]

Frames alternate between the two (so load changes hit both alike); frames/s is
1 / the median per-frame time. Prints frames/s of each, the ratio (target: gbuf >= 10x on CPU) and the largest
difference (target: <= 1e-6 on values in [0, 1]).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (numpy's baseline is serial)")
    parser.add_argument("--size", default="1080x1920", help="HxW of the HR frames")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(REPO))
    from gbuf.datasets.degrade.bicubic import imresize_hwc
    from tests.matlab_reference import matlab_imresize

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    frames = [rng.random((h, w, 3), dtype=np.float32).astype(np.float16) for _ in range(args.frames)]
    device = torch.device(args.device)

    # Warm-up (weights cache, allocator) for both, outside the timed loops.
    imresize_hwc(torch.from_numpy(frames[0]).to(device)[None], 0.25)
    matlab_imresize(frames[0][:64, :64], 0.25)

    # Interleaved, frame by frame, so a change in the machine's load hits both alike;
    # frames/s from the median per-frame time (this machine is shared).
    outs, refs, t_gbuf, t_ref = [], [], [], []
    for f in frames:
        t0 = time.perf_counter()
        outs.append(imresize_hwc(torch.from_numpy(f).to(device)[None], 0.25)[0].cpu().numpy())
        t_gbuf.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        refs.append(matlab_imresize(f, 0.25))
        t_ref.append(time.perf_counter() - t0)

    diff = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
    fps_gbuf, fps_ref = 1.0 / float(np.median(t_gbuf)), 1.0 / float(np.median(t_ref))
    print(f"bicubic x4 of {args.frames} frames {w}x{h} -> {outs[0].shape[1]}x{outs[0].shape[0]} "
          f"(float16 in, float32 out; torch threads={args.threads}, device={device})")
    print(f"  numpy reference (float64): {fps_ref:8.2f} frames/s")
    print(f"  gbuf imresize (torch):     {fps_gbuf:8.2f} frames/s")
    print(f"  ratio gbuf / numpy:        {fps_gbuf / fps_ref:8.1f}x   (target >= 10x)")
    print(f"  max |gbuf - numpy|:        {diff:.2e}   (target <= 1e-6)")


if __name__ == "__main__":
    main()
