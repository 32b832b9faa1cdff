"""Crop throughput: gbuf store vs the official RDG folder layout (per-frame PNG/EXR files).

Both hold the same data: LR 480x270 with image, depth, normal, motion, brdf (12
channels) and HR 1920x1080 image. One crop = 15 consecutive frames, a random 64x64
LR patch of every LR buffer plus the matching 256x256 HR patch. The folder reader
does what the official loader does: read each whole frame file, then crop.

    .venv/bin/python benchmarks/loader.py [--crops 20] [--lr 270x480] [--frames 20] [--rounds 2]

The gbuf store is read with both codec pipelines, zarrs (gbuf's default) and zarr-python's
own, alternating round by round with the folder reader in one process so that load on the
machine hits all three alike. Prints crops/s of each and the gbuf/folder ratios
(target with zarrs: >= 25x).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, lr_h: int, lr_w: int, frames: int, scale: int = 4) -> tuple[Path, Path]:
    from gbuf.datasets.folder import export_folder
    from gbuf.datasets.synthetic import texture
    from gbuf.datasets.writer import SequenceWriter

    store = root / "bench.zarr"
    lr_bufs = ["image", "depth", "normal", "motion", "brdf"]
    hr_h, hr_w = lr_h * scale, lr_w * scale
    with SequenceWriter(store, "clip", frames, {"hr": (hr_h, hr_w, ["image"]), "lr": (lr_h, lr_w, lr_bufs)},
                        resolution_attrs={"hr": {"image_encoding": "srgb"}, "lr": {"image_encoding": "srgb"}}) as w:
        ys, xs = np.mgrid[0:hr_h, 0:hr_w].astype(np.float32)
        lys, lxs = np.mgrid[0:lr_h, 0:lr_w].astype(np.float32)
        for t in range(frames):
            hr = np.round(texture(xs - 2 * t, ys + t) * 255) / 255
            lr_img = np.round(texture(lxs * 4 - 2 * t, lys * 4 + t) * 255) / 255
            normal = np.stack([np.sin(lxs / 40), np.cos(lys / 30), np.ones_like(lxs)], -1)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            w.append({"hr": {"image": hr},
                      "lr": {"image": lr_img, "depth": (5 + lys / 50)[..., None],
                             "normal": normal, "motion": np.broadcast_to(np.float32([0.5, -0.25]), (lr_h, lr_w, 2)),
                             "brdf": texture(lxs, lys, seed=3) * 0.8}})
    folder = export_folder(store, root / "folder")
    return store, folder


def folder_crop(folder: Path, rng, frames: int, total: int, lr_h: int, lr_w: int, patch: int = 64, scale: int = 4):
    from gbuf.datasets.folder import load_folder_frame

    t0 = int(rng.integers(total - frames + 1))
    y0, x0 = int(rng.integers(lr_h - patch + 1)), int(rng.integers(lr_w - patch + 1))
    out = {}
    for name, ext in (("Image", ".png"), ("Depth", ".exr"), ("Normal", ".exr"), ("Motion", ".exr"), ("BRDF", ".exr")):
        whole = [load_folder_frame(name, folder / "X4LR" / "clip" / name / f"{t:03d}{ext}")
                 for t in range(t0, t0 + frames)]
        out[name] = np.stack([f[y0:y0 + patch, x0:x0 + patch] for f in whole])
    hr = [load_folder_frame("Image", folder / "GT" / "clip" / "Image" / f"{t:03d}.png") for t in range(t0, t0 + frames)]
    p = patch * scale
    out["hr"] = np.stack([f[y0 * scale:y0 * scale + p, x0 * scale:x0 * scale + p] for f in hr])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--lr", default="270x480", help="LR HxW")
    parser.add_argument("--frames", type=int, default=20, help="frames in the sequence")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the three readers")
    parser.add_argument("--keep", help="build the data here and keep it")
    args = parser.parse_args()
    lr_h, lr_w = map(int, args.lr.lower().split("x"))
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gbuf-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        store, folder = build(root, lr_h, lr_w, args.frames)
        print(f"built {args.frames} frames (LR {lr_w}x{lr_h}, HR x4) in {time.perf_counter() - t:.1f}s")

        from gbuf.datasets import zarr_backend
        from gbuf.datasets.loader import CropDataset

        zarr = zarr_backend.zarr()
        pipelines = {"zarrs": zarr_backend.ZARRS_PIPELINE, "zarr-python": zarr_backend.PYTHON_PIPELINE}
        rates: dict[str, list[float]] = {"zarrs": [], "zarr-python": [], "folder": []}
        rng = np.random.default_rng(0)
        n_folder = max(3, args.crops // 5)
        for _ in range(args.rounds):
            for name, path in pipelines.items():
                zarr.config.set({"codec_pipeline.path": path})  # arrays opened from now on use it
                ds = CropDataset(store, frames=15, patch=256, lr_buffers=["image", "depth", "normal", "motion", "brdf"],
                                 hr_buffers=["image"], length=args.crops, seed=0)
                ds[0]  # open the store, as a worker would once
                t = time.perf_counter()
                for i in range(args.crops):
                    ds[i]
                rates[name].append(args.crops / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(n_folder):
                folder_crop(folder, rng, 15, args.frames, lr_h, lr_w)
            rates["folder"].append(n_folder / (time.perf_counter() - t))

        best = {k: max(v) for k, v in rates.items()}
        print("(best of each over the rounds; 15 frames, 64x64 LR x5 buffers + 256x256 HR per crop)")
        print(f"gbuf, zarrs        : {best['zarrs']:8.2f} crops/s")
        print(f"gbuf, zarr-python  : {best['zarr-python']:8.2f} crops/s")
        print(f"RDG folder         : {best['folder']:8.2f} crops/s  (whole PNG/EXR frames read, then cropped)")
        print(f"ratio zarrs/folder        : {best['zarrs'] / best['folder']:6.1f}x  (target >= 25x)")
        print(f"ratio zarr-python/folder  : {best['zarr-python'] / best['folder']:6.1f}x")
        print(f"ratio zarrs/zarr-python   : {best['zarrs'] / best['zarr-python']:6.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
