"""Drivers: degrade every sequence of a store, or a folder of PNG/EXR frames.

``degrade_store`` adds one LR group (default ``lr_<method>_x<scale>``) next to
``hr`` in every sequence; ``degrade_folder`` writes degraded frames with the
same names into another folder. Both check everything they can before writing
anything (sizes, scale, config, NaN/Inf, existing groups), so a refused run
leaves the store or folder as it was.

Image data: bicubic and BD are linear filters and run on the stored values
(linear radiance for a ``linear`` store: the optics-and-sensor model; encoded
values for an ``srgb`` one, as MATLAB does on PNGs). Negative lobes of the
bicubic kernel can overshoot below 0 next to bright edges; stored LR images are
clamped at 0 (radiance is never negative). Realworld models a camera/codec
chain on display-referred 8-bit images, so a linear image is divided by
``white``, clipped to [0, 1], sRGB-encoded, degraded, and decoded back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gbuf import runtime
from gbuf.datasets import format as fmt
from gbuf.datasets.colour import srgb_decode, srgb_encode, to_uint8
from gbuf.datasets.degrade import config as C
from gbuf.errors import GbufError

METHODS = ("bicubic", "gaussian", "realworld")
#: Frames read and filtered at once by the stateless methods.
CHUNK_FRAMES = 4
_FLOAT16_MAX = 65504.0


def check_scale(method: str, scale, *, integer: bool) -> float | int:
    """Validate the scale; integer methods (and stores) need an integer >= 1."""
    if method not in METHODS:
        raise GbufError(f"unknown degradation {method!r}; known: {', '.join(METHODS)}")
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise GbufError(f"scale must be a number, got {scale!r}") from None
    if not math.isfinite(value) or value < 1:
        raise GbufError(f"scale must be >= 1, got {scale}")
    if (integer or method != "bicubic") and not value.is_integer():
        why = "a gbuf store" if integer and method == "bicubic" else f"--{method}"
        raise GbufError(f"{why} needs an integer scale, got {scale}")
    return int(value) if value.is_integer() else value


def method_params(method: str, cfg: C.DegradeConfig, scale) -> dict:
    """The parameters that define the output (recorded in attrs)."""
    if method == "bicubic":
        return {"kernel": "Keys cubic a=-0.5", "antialias": bool(cfg.bicubic.antialias),
                "grid": "MATLAB imresize", "border": "symmetric (MATLAB mirror)",
                "output_size": "ceil(in / scale)"}
    if method == "gaussian":
        from gbuf.datasets.degrade.blur import bd_kernel

        g = cfg.gaussian
        kernel = bd_kernel(int(scale), g.sigma, g.variant, g.kernel_size)
        sigma = g.sigma if g.sigma is not None else (1.6 if g.variant == "matlab" else 0.4 * scale)
        return {"variant": g.variant, "sigma": float(sigma), "kernel_size": int(kernel.shape[0]),
                "border": "replicate" if g.variant == "matlab" else "reflect",
                "first_sample": "1-based scale/2" if g.variant == "matlab" else "0-based 0"}
    return {"settings": dataclasses.asdict(cfg.realworld)}


# -- image helpers ------------------------------------------------------------------------
def find_nonfinite(arr: np.ndarray, allow_inf: bool = False):
    """``(kind, index)`` of the first NaN (or Inf) in ``arr``, or None."""
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if not bad.any():
        return None
    idx = np.unravel_index(int(np.argmax(bad)), arr.shape)
    return ("NaN" if np.isnan(arr[idx]) else "Inf"), tuple(int(i) for i in idx)


def _degrade_images(method: str, frames: np.ndarray, scale, cfg: C.DegradeConfig, device):
    """Bicubic or BD of ``(T, H, W, 3)`` frames -> float32 numpy ``(T, h, w, 3)``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    if method == "bicubic":
        from gbuf.datasets.degrade.bicubic import imresize_hwc

        y = imresize_hwc(x, 1.0 / scale, antialias=cfg.bicubic.antialias)
    else:
        from gbuf.datasets.degrade.blur import bd_downsample

        g = cfg.gaussian
        y = bd_downsample(x, int(scale), g.sigma, g.variant, g.kernel_size, channels_last=True)
    return y.to(torch.float32).cpu().numpy()


def _check_image_size(method: str, h: int, w: int, scale, cfg: C.DegradeConfig, where: str) -> None:
    try:
        if method == "gaussian":
            from gbuf.datasets.degrade.blur import bd_kernel, check_bd

            g = cfg.gaussian
            k = bd_kernel(int(scale), g.sigma, g.variant, g.kernel_size).shape[0]
            check_bd(h, w, scale, g.variant, k)
        elif method == "realworld":
            from gbuf.datasets.degrade.realworld import check_size

            check_size(h, w, scale)
        elif min(h, w) < scale:
            raise GbufError(f"image {h}x{w} is smaller than the scale {scale}")
    except GbufError as err:
        raise GbufError(f"{where}: {err}") from None


def _realworld_in(frames: np.ndarray, encoding: str, rw: C.RealworldConfig) -> np.ndarray:
    """Stored image values -> display-referred [0, 1] for the realworld pipeline."""
    import torch

    x = np.clip(frames.astype(np.float32) / (rw.white if encoding == "linear" else 1.0), 0.0, 1.0)
    if encoding == "linear" and rw.transfer == "srgb":
        # Through torch, as the stores written so far were (the same bytes on resume).
        x = np.clip(srgb_encode(torch.from_numpy(x)).numpy(), 0.0, 1.0)
    return x


def _realworld_out(frame: np.ndarray, encoding: str, rw: C.RealworldConfig) -> np.ndarray:
    import torch

    if encoding != "linear":
        return frame
    x = frame
    if rw.transfer == "srgb":
        x = srgb_decode(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return x * rw.white


def image_range(encoding: str) -> tuple[float, float]:
    """Where stored LR image values are clamped: radiance is never negative (bicubic lobes
    overshoot below 0 next to bright edges) and must fit float16; encoded sRGB stays in
    [0, 1], as MATLAB's uint8 output saturates."""
    return (0.0, 1.0) if encoding == "srgb" else (0.0, _FLOAT16_MAX)


def _to_stored_image(x: np.ndarray, encoding: str = "linear") -> np.ndarray:
    return np.clip(x, *image_range(encoding))


# -- stores ---------------------------------------------------------------------------------
def _group_attrs(method, scale, seed, cfg, hr_attrs, gb_mode, plan=None) -> dict:
    from gbuf import __version__

    attrs = {
        "kind": "degraded",
        "source": fmt.HR,
        "method": method,
        "method_params": method_params(method, cfg, scale),
        "seed": int(seed),
        "image_encoding": hr_attrs.get("image_encoding", "linear"),
        "gbuffer_sampling": {
            "mode": gb_mode,
            "centres": ("s*i (DUF grid)" if method == "gaussian" and cfg.gaussian.variant == "duf"
                        else "s*i + (s-1)/2 (footprint centre)"),
            "motion": "resampled likewise, divided by scale",
        },
        "created_by": f"gbuf {__version__} degrade",
    }
    if method in ("bicubic", "gaussian"):
        attrs["image_clamp"] = list(image_range(attrs["image_encoding"]))
    if plan is not None:
        attrs["clip_draws"] = plan
    return attrs


def _same_recipe(existing: dict, wanted: dict) -> bool:
    keys = ("method", "method_params", "seed", "gbuffer_sampling", "clip_draws", "image_encoding")
    # Compare through JSON: attrs come back from zarr with lists where we had tuples.
    return all(json.dumps(existing.get(k), sort_keys=True) == json.dumps(wanted.get(k), sort_keys=True)
               for k in keys)


def _scan_nonfinite(res, buffers: list[str], num_frames: int) -> None:
    for t0 in range(0, num_frames, CHUNK_FRAMES):
        t1 = min(num_frames, t0 + CHUNK_FRAMES)
        data = res.read_many(buffers, t=slice(t0, t1))
        for buf, arr in data.items():
            bad = find_nonfinite(arr, allow_inf=(buf == "depth"))
            if bad:
                kind, (t, y, x, c) = bad
                raise GbufError(f"{res.where}/{buf}: {kind} at frame {t0 + t}, pixel (y={y}, x={x}), "
                                f"channel {c}")


def degrade_store(path, method: str, *, scale=4, seed: int = 0, name: str | None = None,
                  config: C.DegradeConfig | str | Path | None = None, overrides: dict | None = None,
                  overwrite: bool = False, device: str | None = "cpu",
                  sequences: list[str] | None = None, progress=None,
                  threads: int | None = None) -> list[tuple[str, str]]:
    """Add a degraded LR group to every sequence of the store at ``path``.

    ``config``: a :class:`~gbuf.datasets.degrade.config.DegradeConfig`, a TOML/YAML
    file, or None for the published defaults; ``overrides``: options by dotted name
    (``{"gaussian.variant": "duf"}``, the CLI's ``--set`` and flags) or by section. Returns
    ``[(sequence, group), ...]``. ``progress(sequence, frames_done, num_frames)``
    is called after every frame when given; ``threads`` sets torch's CPU threads
    for the run (None: ``gbuf.runtime``'s default, one).
    """
    with runtime.threads(threads):
        return _degrade_store(path, method, scale=scale, seed=seed, name=name, config=config,
                              overrides=overrides, overwrite=overwrite, device=device, sequences=sequences,
                              progress=progress)


def _degrade_store(path, method, *, scale, seed, name, config, overrides, overwrite, device, sequences,
                   progress):
    import gbuf.datasets as gd
    from gbuf.datasets.degrade import gbuffers as G
    from gbuf.datasets.degrade import realworld as R

    scale = check_scale(method, scale, integer=True)
    cfg = C.resolve(config, overrides)
    dev = runtime.resolve_device(device)
    ds = gd.open(path, mode="r")
    group = name or fmt.degraded_group_name(method, scale)
    if group == fmt.HR:
        raise GbufError(f"{path}: the degraded group cannot be named {fmt.HR!r} (it is the source)")
    names = sequences if sequences is not None else ds.sequences
    if not names:
        raise GbufError(f"{path}: the store has no sequences")
    gb_mode = cfg.gbuffers.mode
    if method == "realworld" and cfg.realworld.video.enabled:
        from gbuf.datasets.degrade.video import check_codec

        for codec in cfg.realworld.video.codecs:
            try:
                check_codec(codec)
            except GbufError as err:
                where = config if isinstance(config, (str, Path)) else "options"
                raise GbufError(f"{where}: {err}") from None

    # 1. Check every sequence before writing anything.
    jobs = []
    for seq_name in names:
        seq = ds[seq_name]
        if fmt.HR not in seq.resolutions:
            raise GbufError(f"{path}: sequence {seq_name!r} has no {fmt.HR!r} group to degrade")
        hr = seq[fmt.HR]
        where = hr.where
        if "image" not in hr.buffers:
            raise GbufError(f"{where}: has no image buffer")
        n = hr.num_frames
        if n < 1 or n < hr.planned_frames:
            raise GbufError(f"{where}: only {n} of {hr.planned_frames} frames are complete; finish it first")
        if hr.height % scale or hr.width % scale:
            raise GbufError(f"{where}: size {hr.width}x{hr.height} is not divisible by the scale {scale} "
                            f"(a gbuf group is exactly HR/scale)")
        _check_image_size(method, hr.height, hr.width, scale, cfg, where)
        plan = None
        if method == "realworld":
            plan = R.sample_plan(cfg.realworld, n, R.clip_rng(seed, seq_name))
        attrs = _group_attrs(method, scale, seed, cfg, hr.attrs, gb_mode, plan)
        if group in seq.resolutions and not overwrite:
            existing = seq[group]
            if existing.attrs.get("complete") or not _same_recipe(existing.attrs, attrs):
                raise GbufError(f"{path}: {seq_name}/{group} already exists (use --overwrite to replace it, "
                                f"or --name for another group)")
        _scan_nonfinite(hr, hr.buffers, n)
        jobs.append((seq_name, hr, n, attrs, plan))

    # 2. Degrade.
    written = []
    for seq_name, hr, n, attrs, plan in jobs:
        h, w = hr.height // scale, hr.width // scale
        buffers = hr.buffers
        variant = cfg.gaussian.variant if method == "gaussian" else None
        rows = G.centres(hr.height, scale, method, variant)
        cols = G.centres(hr.width, scale, method, variant)
        others = [b for b in buffers if b != "image"]
        encoding = attrs["image_encoding"]
        # --overwrite builds the new group beside the old one and swaps it in once complete:
        # a killed or failed run leaves the old group whole (and the next run resumes the new one).
        with gd.SequenceWriter(path, seq_name, n, {group: (h, w, buffers)},
                               resolution_attrs={group: attrs}, replace=overwrite) as writer:
            start = writer.next_frame

            def gbuffer_frames(t0, t1):
                data = hr.read_many(others, t=slice(t0, t1)) if others else {}
                return {b: G.resample(b, a, scale, rows, cols, gb_mode) for b, a in data.items()}

            if method == "realworld":
                rw = cfg.realworld

                def hr_frames():
                    for t0 in range(0, n, CHUNK_FRAMES):
                        block = hr.read("image", t=slice(t0, min(n, t0 + CHUNK_FRAMES)))
                        yield from _realworld_in(block, encoding, rw)

                lr_frames = R.degrade_clip(hr_frames(), plan, scale, seed=seed, key=seq_name, device=dev)
                for t, lr in enumerate(lr_frames):
                    if t < start:
                        continue        # resuming: frames before `start` are already stored (same bytes)
                    frame = {"image": _to_stored_image(_realworld_out(lr, encoding, rw), encoding)}
                    frame.update({b: a[0] for b, a in gbuffer_frames(t, t + 1).items()})
                    writer.append({group: frame})
                    if progress:
                        progress(seq_name, t + 1, n)
            else:
                for t0 in range(start, n, CHUNK_FRAMES):
                    t1 = min(n, t0 + CHUNK_FRAMES)
                    images = _degrade_images(method, hr.read("image", t=slice(t0, t1)), scale, cfg, dev)
                    gbs = gbuffer_frames(t0, t1)
                    for i in range(t1 - t0):
                        frame = {"image": _to_stored_image(images[i], encoding)}
                        frame.update({b: a[i] for b, a in gbs.items()})
                        writer.append({group: frame})
                        if progress:
                            progress(seq_name, t0 + i + 1, n)
        written.append((seq_name, group))
    return written


# -- folders --------------------------------------------------------------------------------
FRAME_SUFFIXES = (".png", ".exr")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def find_clips(root: Path) -> list[tuple[str, list[Path]]]:
    """Frames directly in ``root`` are one clip; otherwise each subfolder holding frames is one."""
    if not root.is_dir():
        raise GbufError(f"{root}: no such folder")
    files = _frame_files(root)
    if files:
        clips = [("", files)]
    else:
        clips = [(d.name, _frame_files(d)) for d in sorted(root.iterdir()) if d.is_dir()]
        clips = [(n, f) for n, f in clips if f]
    if not clips:
        raise GbufError(f"{root}: no PNG or EXR frames (directly inside, or one folder per clip)")
    for name, files in clips:
        kinds = {p.suffix.lower() for p in files}
        if len(kinds) > 1:
            raise GbufError(f"{root / name}: mixes PNG and EXR frames; one clip is one kind")
    return clips


def _read_frame(path: Path) -> tuple[np.ndarray, dict]:
    """``(H, W, 3)`` float32 and how to write it back."""
    from gbuf.datasets.folder import read_exr, read_png

    if path.suffix.lower() == ".png":
        return read_png(path).astype(np.float32) / 255.0, {"kind": "png"}
    channels = read_exr(path)
    names = [c for c in ("R", "G", "B") if c in channels]
    if len(names) != 3:
        raise GbufError(f"{path}: needs R, G and B channels, has {sorted(channels)}")
    rgb = np.stack([channels[c] for c in names], axis=-1)
    return rgb.astype(np.float32), {"kind": "exr", "dtype": str(rgb.dtype)}


def _write_frame(path: Path, data: np.ndarray, how: dict) -> None:
    from gbuf.datasets.folder import write_exr, write_png

    if how["kind"] == "png":
        write_png(path, to_uint8(data))
    else:
        data = _to_stored_image(data).astype(how["dtype"])
        write_exr(path, {c: np.ascontiguousarray(data[..., i]) for i, c in enumerate("RGB")})


def degrade_folder(input_dir, output_dir, method: str, *, scale=4, seed: int = 0,
                   config: C.DegradeConfig | str | Path | None = None, overrides: dict | None = None,
                   overwrite: bool = False, device: str | None = "cpu",
                   progress=None, threads: int | None = None) -> Path:
    """Degrade a folder of PNG (display-referred sRGB) or EXR (linear) frames into ``output_dir``.

    Output frames keep their names and format; ``degrade.json`` records the
    method, its parameters and every per-clip draw. The output is written to a
    temporary folder and renamed into place at the end.
    """
    with runtime.threads(threads):
        return _degrade_folder(input_dir, output_dir, method, scale=scale, seed=seed, config=config,
                               overrides=overrides, overwrite=overwrite, device=device, progress=progress)


def _degrade_folder(input_dir, output_dir, method, *, scale, seed, config, overrides, overwrite, device,
                    progress):
    from gbuf.datasets.degrade import realworld as R

    src, dst = Path(input_dir), Path(output_dir)
    scale = check_scale(method, scale, integer=False)
    cfg = C.resolve(config, overrides)
    dev = runtime.resolve_device(device)
    clips = find_clips(src)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise GbufError(f"{dst}: the output folder must not be the input folder or inside it")
    if dst.exists() and not dst.is_dir():
        raise GbufError(f"{dst}: exists and is a file; the output is a folder (choose another path)")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise GbufError(f"{dst}: exists and is not empty (use --overwrite to replace it)")

    # Check every frame first: sizes, NaN/Inf.
    for name, files in clips:
        size = None
        for p in files:
            frame, _ = _read_frame(p)
            if size is None:
                size = frame.shape[:2]
                _check_image_size(method, size[0], size[1], scale, cfg, str(p))
            elif frame.shape[:2] != size:
                raise GbufError(f"{p}: size {frame.shape[1]}x{frame.shape[0]} differs from the clip's "
                                f"{size[1]}x{size[0]}")
            bad = find_nonfinite(frame)
            if bad:
                kind, (y, x, c) = bad
                raise GbufError(f"{p}: {kind} at pixel (y={y}, x={x}), channel {c}")

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    except OSError as err:
        raise GbufError(f"{dst}: cannot write there ({err.strerror or err})") from None
    try:
        record = {"method": method, "scale": scale, "seed": int(seed),
                  "method_params": method_params(method, cfg, scale), "clips": {}}
        for name, files in clips:
            out_dir = tmp / name if name else tmp
            out_dir.mkdir(parents=True, exist_ok=True)
            key = name or src.name
            entry = {"frames": len(files)}
            if method == "realworld":
                rw = cfg.realworld
                plan = R.sample_plan(rw, len(files), R.clip_rng(seed, key))
                entry["clip_draws"] = plan
                hows = []

                def frames():
                    for p in files:
                        frame, how = _read_frame(p)
                        hows.append(how)
                        enc = "srgb" if how["kind"] == "png" else "linear"
                        yield _realworld_in(frame[None], enc, rw)[0]

                lr_frames = R.degrade_clip(frames(), plan, int(scale), seed=seed, key=key, device=dev)
                for i, lr in enumerate(lr_frames):
                    how = hows[i]        # read (and recorded) before its LR frame comes out
                    enc = "srgb" if how["kind"] == "png" else "linear"
                    _write_frame(out_dir / files[i].name, _realworld_out(lr, enc, rw), how)
                    if progress:
                        progress(name or src.name, i + 1, len(files))
            else:
                for i, p in enumerate(files):
                    frame, how = _read_frame(p)
                    lr = _degrade_images(method, frame[None], scale, cfg, dev)[0]
                    _write_frame(out_dir / p.name, lr, how)
                    if progress:
                        progress(name or src.name, i + 1, len(files))
            record["clips"][name or src.name] = entry
        (tmp / "degrade.json").write_text(json.dumps(record, indent=1))
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old{os.getpid()}")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        # A full disk or a folder that became read-only: nothing was put in place of the output.
        raise GbufError(f"{dst}: cannot write the degraded frames ({err.strerror or err}); "
                        f"{dst.name} is unchanged") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


__all__ = ["degrade_store", "degrade_folder", "METHODS", "find_clips", "check_scale", "method_params"]
