"""How hard each scene recipe is for a x4 upscaler, and what it costs to build and render.

For every recipe (or those named): build it (seed, frames), render HR and native LR
(x4, rendered, not downsampled) with ``gbuf.render.render``, then per frame

* bicubic PSNR: the LR image upsampled x4 with gbuf's MATLAB-style bicubic
  (``gbuf.datasets.degrade.bicubic.imresize_hwc``) against the HR image, both
  clipped to [0, 1] and sRGB-encoded, RGB, peak 1, every pixel;
* energy above LR Nyquist: the share of the HR luma's spectral energy (mean
  removed, Hann window, DC excluded) at |fx| or |fy| above 1/8 cycle per HR pixel,
  the Nyquist frequency of the x4 LR grid: detail the LR frame cannot hold;
* motion: the mean and 99th percentile of the HR motion length (HR pixels per frame),

averaged over frames; and seconds to build the .blend and to render a frame (HR + LR,
with gbuf's EXR read-back and store writes). Lower PSNR and more energy above Nyquist
mean harder content. With ``--sheets DIR`` it also writes ``DIR/<recipe>.png``, the
contact sheet of the last frame, with ``gbuf dataset preview`` (the real CLI).

    .venv/bin/python benchmarks/scenes.py [--recipes a,b] [--resolution 320x180] [--samples 16]
                                          [--frames 4] [--seed 0] [--no-denoise] [--sheets docs/img]
                                          [--keep DIR]

Prints one Markdown table row per recipe as it finishes (the table of docs/scenes.md).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LUMA = np.array([0.2126, 0.7152, 0.0722])


def display(linear: np.ndarray) -> np.ndarray:
    from gbuf.datasets.colour import srgb_encode

    return np.asarray(srgb_encode(np.clip(linear.astype(np.float64), 0.0, 1.0)), np.float64)


def bicubic_psnr(hr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """PSNR (dB) of the x``scale`` bicubic upsampling of display-referred ``lr`` against ``hr`` (H, W, 3)."""
    import torch

    from gbuf.datasets.degrade.bicubic import imresize_hwc

    up = imresize_hwc(torch.from_numpy(lr), scale=float(scale)).numpy()
    up = np.clip(up[:hr.shape[0], :hr.shape[1]], 0.0, 1.0)
    mse = float(np.mean((up - hr) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def energy_above_nyquist(hr: np.ndarray, scale: int) -> float:
    """Share of the luma's spectral energy at frequencies the x``scale`` LR grid cannot represent."""
    y = hr @ LUMA
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    nyquist = 0.5 / scale
    power[0, 0] = 0.0
    above = (np.abs(fx) > nyquist) | (np.abs(fy) > nyquist)
    total = power.sum()
    return float(power[above].sum() / total) if total > 0 else 0.0


def measure(name: str, args, work: Path) -> dict:
    import gbuf.datasets as gd
    from gbuf.render import recipes, render

    blend = work / f"{name}.blend"
    # The build runs in a fresh process, as `gbuf scene build` does; its time excludes bpy's import.
    code = (f"import time; from gbuf.render import recipes; t = time.perf_counter(); "
            f"recipes.build_blend({name!r}, {str(blend)!r}, seed={args.seed}, frames={args.frames}); "
            f"print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    build_s = float(out.stdout.strip().splitlines()[-1])
    store = work / f"{name}.zarr"
    result = render(blend, store, resolution=args.size, scale=args.scale, samples=args.samples,
                    denoise=not args.no_denoise, quiet=True, sequence=name)
    seq = gd.open(store)[name]
    hr_all, lr_all = seq["hr"].read("image"), seq["lr"].read("image")
    motion = np.linalg.norm(seq["hr"].read("motion").astype(np.float64), axis=-1)
    psnr, energy = [], []
    for t in range(len(hr_all)):
        hr, lr = display(hr_all[t]), display(lr_all[t])
        psnr.append(bicubic_psnr(hr, lr, args.scale))
        energy.append(energy_above_nyquist(hr, args.scale))
    if args.sheets is not None:
        args.sheets.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "gbuf", "dataset", "preview", str(store), "--frame",
                        str(len(hr_all) - 1), "-o", str(args.sheets / f"{name}.png")], check=True,
                       capture_output=True, text=True)
    return {"name": name, "psnr": float(np.mean(psnr)), "energy": float(np.mean(energy)),
            "motion_mean": float(motion.mean()), "motion_p99": float(np.percentile(motion, 99)),
            "build_s": build_s, "render_s": result.seconds / result.rendered, "description": recipes.describe(name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", help="comma-separated names (default: all)")
    parser.add_argument("--resolution", default="320x180")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-denoise", action="store_true")
    parser.add_argument("--sheets", type=Path, help="write DIR/<recipe>.png contact sheets (gbuf dataset preview)")
    parser.add_argument("--keep", type=Path, help="keep the .blend files and stores here")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.resolution.lower().split("x"))

    from gbuf.render import recipes

    names = args.recipes.split(",") if args.recipes else recipes.names()
    print(f"# {args.resolution} HR, x{args.scale} native LR, {args.samples} spp, "
          f"{'no denoising' if args.no_denoise else 'OpenImageDenoise'}, {args.frames} frames, seed {args.seed}",
          flush=True)
    print("| recipe | bicubic PSNR (dB) | energy above LR Nyquist | motion mean / p99 (HR px) | build (s) "
          "| render (s/frame) |", flush=True)
    print("| --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="gbuf-bench-scenes-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            row = measure(name, args, work)
            print(f"| `{name}` | {row['psnr']:.2f} | {row['energy']:.1%} | {row['motion_mean']:.2f} / "
                  f"{row['motion_p99']:.1f} | {row['build_s']:.1f} | {row['render_s']:.1f} |", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
