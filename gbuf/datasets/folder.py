"""The official RDG folder layout <-> gbuf stores.

Layout (as the official loader reads it)::

    ROOT/GT/<clip>/Image/000.png          8-bit sRGB PNG
    ROOT/GT/<clip>/{Normal,BRDF,Depth,Motion,Emit}/000.exr
    ROOT/X4LR/<clip>/...                  the same at LR (X<scale>LR)

EXR files carry R, G, B channels. Depth is in R (background 1e10, as Blender
writes it); Motion holds Blender's Vector X in R and Y (up) in G, so gbuf motion
is ``(R, -G)``. On export, half-float buffers are written as HALF and float32
buffers as FLOAT, so import -> export reproduces the files bit for bit.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

#: folder name <-> gbuf buffer
FOLDER_BUFFERS = {"Image": "image", "Normal": "normal", "BRDF": "brdf", "Depth": "depth",
                  "Motion": "motion", "Emit": "emission"}
BLENDER_BACKGROUND_DEPTH = 1e10
_LR_DIR = re.compile(r"^X(\d+)LR$")


# -- EXR and PNG files ----------------------------------------------------------------
def read_exr(path: Path) -> dict[str, np.ndarray]:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            return {name: np.array(ch.pixels) for name, ch in f.channels().items()}
    except Exception as err:
        raise GbufError(f"{path}: not a readable OpenEXR file ({err})") from None


def write_exr(path: Path, channels: dict[str, np.ndarray]) -> None:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(str(path))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except Exception as err:
        raise GbufError(f"{path}: not a readable PNG ({err})") from None
    return arr[..., :3]


def write_png(path: Path, rgb8: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb8, mode="RGB").save(path)


def _rgb(channels: dict[str, np.ndarray], path: Path, n: int) -> np.ndarray:
    names = [c for c in ("R", "G", "B") if c in channels] or sorted(channels)
    if len(names) < n:
        raise GbufError(f"{path}: has channels {sorted(channels)}, needs {n}")
    return np.stack([channels[c] for c in names[:n]], axis=-1)


def load_folder_frame(folder: str, path: Path) -> np.ndarray:
    """One file of the RDG layout as a gbuf buffer frame (H, W, C)."""
    if folder == "Image":
        return (read_png(path).astype(np.float32) / 255.0).astype(np.float16)
    channels = read_exr(path)
    if folder == "Depth":
        depth = _rgb(channels, path, 1).astype(np.float32)
        return np.where(depth >= BLENDER_BACKGROUND_DEPTH * 0.5, np.float32(np.inf), depth)
    if folder == "Motion":
        xy = _rgb(channels, path, 2).astype(np.float32)
        return np.stack([xy[..., 0], -xy[..., 1]], axis=-1)  # Blender y up -> gbuf y down
    return _rgb(channels, path, 3).astype(np.float16)


def save_folder_frame(folder: str, path: Path, data: np.ndarray, image_encoding: str) -> None:
    if folder == "Image":
        from gbuf.datasets.colour import srgb_encode, to_uint8

        x = data.astype(np.float32)
        write_png(path, to_uint8(x if image_encoding == "srgb" else srgb_encode(x)))
        return
    if folder == "Depth":
        d = np.where(np.isfinite(data[..., 0]), data[..., 0], BLENDER_BACKGROUND_DEPTH).astype(np.float32)
        write_exr(path, {"R": d, "G": d, "B": d})
        return
    if folder == "Motion":
        x, y = data[..., 0].astype(np.float32), (-data[..., 1]).astype(np.float32)
        write_exr(path, {"R": x, "G": y, "B": np.zeros_like(x)})
        return
    write_exr(path, {c: data[..., i] for i, c in enumerate("RGB")})


# -- import ---------------------------------------------------------------------------
def _frames_in(directory: Path, ext: str) -> list[Path]:
    files = [p for p in directory.glob(f"*{ext}") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def _scan_clip(root: Path, clip: str) -> tuple[int, dict[str, list[Path]]]:
    found: dict[str, list[Path]] = {}
    for folder in FOLDER_BUFFERS:
        d = root / clip / folder
        if d.is_dir():
            found[folder] = _frames_in(d, ".png" if folder == "Image" else ".exr")
    if "Image" not in found or not found["Image"]:
        raise GbufError(f"{root / clip}: no Image/NNN.png frames")
    n = len(found["Image"])
    for folder, files in found.items():
        if len(files) != n:
            raise GbufError(f"{root / clip / folder}: {len(files)} frames, but Image has {n}")
        numbers = [int(p.stem) for p in files]
        if numbers != list(range(numbers[0], numbers[0] + n)):
            raise GbufError(f"{root / clip / folder}: frame numbers have a gap")
    return n, found


def _frame_size(folder: str, path: Path) -> tuple[int, int]:
    if folder == "Image":
        from PIL import Image

        try:
            with Image.open(path) as im:
                return im.height, im.width
        except Exception as err:
            raise GbufError(f"{path}: not a readable PNG ({err})") from None
    data = load_folder_frame(folder, path)
    return data.shape[0], data.shape[1]


def import_folder(root, output, *, overwrite: bool = False, progress=None) -> Path:
    """Read an RDG folder tree into a new gbuf store at ``output`` (written whole or not at all)."""
    from gbuf.datasets.writer import SequenceWriter

    root, output = Path(root), Path(output)
    gt = root / "GT"
    if not gt.is_dir():
        raise GbufError(f"{root}: not an RDG folder (no GT/ directory)")
    lr_dirs = [d for d in root.iterdir() if d.is_dir() and _LR_DIR.match(d.name)]
    if len(lr_dirs) > 1:
        raise GbufError(f"{root}: more than one LR folder ({', '.join(d.name for d in lr_dirs)})")
    lr_root = lr_dirs[0] if lr_dirs else None
    scale = int(_LR_DIR.match(lr_root.name).group(1)) if lr_root else None
    if output.exists() and not overwrite:
        raise GbufError(f"{output}: already exists (use --overwrite)")
    clips = sorted(d.name for d in gt.iterdir() if d.is_dir())
    if not clips:
        raise GbufError(f"{gt}: no clip folders")

    # Check everything before writing anything.
    plan = []
    for clip in clips:
        n, hr_files = _scan_clip(gt, clip)
        hr_h, hr_w = _frame_size("Image", hr_files["Image"][0])
        groups = {fmt.HR: (hr_h, hr_w, hr_files)}
        if lr_root is not None:
            if not (lr_root / clip).is_dir():
                raise GbufError(f"{lr_root / clip}: missing (GT has clip {clip!r})")
            n_lr, lr_files = _scan_clip(lr_root, clip)
            if n_lr != n:
                raise GbufError(f"{lr_root / clip}: {n_lr} frames, but GT has {n}")
            lr_h, lr_w = _frame_size("Image", lr_files["Image"][0])
            if (lr_h * scale, lr_w * scale) != (hr_h, hr_w):
                raise GbufError(f"{lr_root / clip}: LR {lr_w}x{lr_h} x{scale} is not GT {hr_w}x{hr_h}")
            groups[fmt.LR] = (lr_h, lr_w, lr_files)
        plan.append((clip, n, groups))

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        store = tmp / "store.zarr"
        for clip, n, groups in plan:
            specs = {g: (h, w, [FOLDER_BUFFERS[f] for f in files]) for g, (h, w, files) in groups.items()}
            res_attrs = {g: {"image_encoding": "srgb", "kind": "imported",
                             "source": str(root / ("GT" if g == fmt.HR else lr_root.name) / clip)}
                         for g in groups}
            with SequenceWriter(store, clip, n, specs, sequence_attrs={"source": "rdg-folder"},
                                resolution_attrs=res_attrs,
                                dataset_attrs={"imported_from": str(root)}) as writer:
                for t in range(n):
                    frame = {}
                    for g, (h, w, files) in groups.items():
                        frame[g] = {}
                        for folder, paths in files.items():
                            data = load_folder_frame(folder, paths[t])
                            if data.shape[:2] != (h, w):
                                raise GbufError(f"{paths[t]}: size {data.shape[1]}x{data.shape[0]}, "
                                                f"expected {w}x{h}")
                            frame[g][FOLDER_BUFFERS[folder]] = data
                    writer.append(frame)
                    if progress:
                        progress(clip, t, n)
        if output.exists():
            shutil.rmtree(output)
        os.replace(store, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


# -- export ---------------------------------------------------------------------------
def export_folder(dataset, output, *, overwrite: bool = False) -> Path:
    """Write a store as the RDG folder layout (``hr`` -> GT, ``lr`` -> X<scale>LR)."""
    from gbuf.datasets.store import open as open_store

    ds = open_store(dataset)
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise GbufError(f"{output}: exists and is not empty (use --overwrite)")
    by_buffer = {v: k for k, v in FOLDER_BUFFERS.items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent if output.parent.exists() else None))
    try:
        for seq in ds:
            for rname in seq.resolutions:
                if rname == fmt.HR:
                    top = "GT"
                elif rname == fmt.LR:
                    top = f"X{seq[rname].scale}LR"
                else:
                    continue
                res = seq[rname]
                enc = res.attrs.get("image_encoding", "linear")
                for buf in res.buffers:
                    if buf not in by_buffer:
                        continue
                    folder = tmp / top / seq.name / by_buffer[buf]
                    folder.mkdir(parents=True, exist_ok=True)
                    ext = ".png" if buf == "image" else ".exr"
                    for t in range(res.num_frames):
                        save_folder_frame(by_buffer[buf], folder / f"{t:03d}{ext}", res.read(buf, t=t)[0], enc)
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output
