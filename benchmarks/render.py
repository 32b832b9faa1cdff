"""Render overhead: ``gbuf render`` vs the same frames rendered by plain bpy calls (the floor).

Both render the same scene, frames and settings (HR and LR per frame, the same
passes, Cycles options and multilayer EXR output) in this one process. The floor
is what a plain bpy script does: set the frame, ``bpy.ops.render.render(write_still=True)``
at HR, again at LR. gbuf additionally opens the scene safely, reads the EXR back,
converts it and appends it to the Zarr store (staged, compressed, checksummed).

    .venv/bin/python benchmarks/render.py [--frames 4] [--resolution 640x360] [--samples 16]
                                          [--no-denoise] [--scene FILE.blend] [--repeats 2]

Prints seconds per frame of each, and the ratio (target: gbuf <= 1.10 x the floor).
Without --scene it builds the default recipe. Fewer samples make the overhead's
share larger: a small, low-sample render is the hard case for the target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def floor_render(blend: Path, frames: tuple[int, int], settings, out_dir: Path) -> float:
    """Seconds for the plain-bpy render of ``frames`` (HR + LR each) with gbuf's settings."""
    import bpy

    from gbuf.render import passes
    from gbuf.render.animation import extend_before

    started = time.perf_counter()   # a plain script opens and sets up the file too
    bpy.ops.wm.open_mainfile(filepath=str(blend), load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    passes.configure_scene(scene, settings)
    passes.enable_passes(bpy.context.view_layer, passes.needed_layers(settings.buffers))
    extend_before(frames[0])
    for frame in range(frames[0], frames[1] + 1):
        scene.frame_set(frame)
        for group in ("hr", "lr"):
            passes.configure_resolution(scene, settings, group)
            scene.render.filepath = str(out_dir / f"{group}_{frame:04d}.exr")
            bpy.ops.render.render(write_still=True)
    return time.perf_counter() - started


def gbuf_render(blend: Path, frames: tuple[int, int], options: dict, store: Path) -> float:
    from gbuf.render import render

    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    render(blend, store, frames=frames, quiet=True, **options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, help="a .blend (default: build the default recipe)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--resolution", default="640x360")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--no-denoise", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from gbuf.render.pipeline import _native_output_to
    from gbuf.render.settings import make_settings

    width, height = (int(v) for v in args.resolution.lower().split("x"))
    options = {"resolution": (width, height), "scale": args.scale, "samples": args.samples,
               "denoise": not args.no_denoise}
    settings = make_settings(**options)
    frames = (1, args.frames)
    with tempfile.TemporaryDirectory(prefix="gbuf-bench-render-") as tmp:
        tmp = Path(tmp)
        with _native_output_to(tmp / "blender.log"):
            if args.scene is None:
                from gbuf.render.recipes import build_blend

                blend = build_blend("default", tmp / "default.blend", seed=0, frames=args.frames)
            else:
                blend = args.scene.resolve()
            # Warm-up: the first render in a process loads kernels and compiles shaders.
            gbuf_render(blend, (1, 1), options, tmp / "warm.zarr")
            floors, gbufs = [], []
            for _ in range(args.repeats):   # interleaved, so machine load hits both alike
                exr_dir = tmp / "floor"
                exr_dir.mkdir(exist_ok=True)
                floors.append(floor_render(blend, frames, settings, exr_dir))
                shutil.rmtree(exr_dir)
                gbufs.append(gbuf_render(blend, frames, options, tmp / "bench.zarr"))
    floor, ours = statistics.median(floors), statistics.median(gbufs)
    n = args.frames
    print(f"scene: {'default recipe' if args.scene is None else args.scene}; {n} frames, HR {width}x{height}, "
          f"LR x{args.scale}, samples {args.samples}, denoise {not args.no_denoise}; median of {args.repeats}")
    print(f"plain bpy (floor): {floor:8.2f} s  ({floor / n:.3f} s/frame)   runs: "
          + ", ".join(f"{s:.2f}" for s in floors))
    print(f"gbuf render:       {ours:8.2f} s  ({ours / n:.3f} s/frame)   runs: "
          + ", ".join(f"{s:.2f}" for s in gbufs))
    print(f"ratio gbuf / floor: {ours / floor:.3f}  (overhead {100 * (ours / floor - 1):+.1f} %; target <= +10 %)")


if __name__ == "__main__":
    main()
