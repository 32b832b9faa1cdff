"""``gbuf upscale``: run a model over one sequence and write frames, videos and a crop grid.

Output folder ``OUT``:

- ``frames/NNNN.png``: 8-bit display-referred frames (the metrics' domain);
- ``exr/NNNN.exr`` (``exr=True``): half-float linear RGB (the display encoding undone);
- ``<sequence>.mp4`` (``video=True``): H.264 (libx264, yuv420p, CRF 16) through PyAV;
- ``compare.mp4`` and ``crops.png`` (``compare=True``): LR bicubic | model | HR side by
  side with labels, and a grid of crops of the first, middle and last frame.

Frame numbers are the sequence's frame indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from gbuf import runtime
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

#: Widest side-by-side video frame; wider comparisons are scaled down to fit.
MAX_COMPARE_WIDTH = 3840


@dataclasses.dataclass
class UpscaleResult:
    out_dir: Path
    frames: int
    pngs: list[Path]
    exrs: list[Path]
    video: Path | None
    compare_video: Path | None
    crop_grid: Path | None
    #: Torch CPU threads the run used.
    threads: int = 1


class VideoWriter:
    """H.264 MP4 through PyAV; frames are ``(H, W, 3)`` uint8 RGB (odd sizes padded to even)."""

    def __init__(self, path: Path, fps: float, crf: int = 16):
        import av

        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.container = av.open(str(self.path), mode="w")
        self.stream = None

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height = frame.shape[1], frame.shape[0]
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(self.crf)}
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def _labelled(panels: list[tuple[str, np.ndarray]], max_width: int) -> np.ndarray:
    """Panels side by side with a label in the top-left corner of each; scaled down to ``max_width``."""
    from PIL import Image, ImageDraw

    row = np.concatenate([p for _, p in panels], axis=1)
    image = Image.fromarray(row)
    if image.width > max_width:
        image = image.resize((max_width, max(2, round(image.height * max_width / image.width))), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    panel_w = image.width / len(panels)
    for i, (label, _) in enumerate(panels):
        x = int(i * panel_w) + 4
        box = draw.textbbox((x, 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x, 4), label, fill=(255, 255, 255))
    return np.asarray(image)


def write_exr(path: Path, rgb_linear: np.ndarray) -> None:
    """Half-float RGB OpenEXR (ZIP compression)."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = {"RGB": np.ascontiguousarray(rgb_linear.astype(np.float16))}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def parse_crop(text: str | None):
    """``X,Y,SIZE`` (HR pixels, top-left corner) -> tuple, or None."""
    if text is None:
        return None
    try:
        x, y, size = (int(v) for v in text.split(","))
    except ValueError:
        raise GbufError(f"--crop {text!r}: expected X,Y,SIZE in HR pixels") from None
    if size < 1 or x < 0 or y < 0:
        raise GbufError(f"--crop {text!r}: X, Y must be >= 0 and SIZE >= 1")
    return x, y, size


def crop_grid(frames: list[tuple[int, list[tuple[str, np.ndarray]]]], crop, path: Path, cell: int = 256) -> Path:
    """Rows: frames; columns: the labelled panels, each cropped at ``crop`` and enlarged (nearest)."""
    from PIL import Image, ImageDraw

    x, y, size = crop
    rows = []
    for frame_index, panels in frames:
        cells = []
        for label, image in panels:
            h, w = image.shape[:2]
            if x + size > w or y + size > h:
                raise GbufError(f"--crop {x},{y},{size}: outside the {w}x{h} frame")
            piece = Image.fromarray(image[y:y + size, x:x + size]).resize((cell, cell), Image.NEAREST)
            draw = ImageDraw.Draw(piece)
            text = f"{label} #{frame_index}"
            box = draw.textbbox((3, 3), text)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
            draw.text((3, 3), text, fill=(255, 255, 255))
            cells.append(np.asarray(piece))
        rows.append(np.concatenate(cells, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def upscale(model: str, data: str | Path, sequence: str, out: str | Path, *, checkpoint: str | Path | None = None,
            lr_group: str = fmt.LR, segment_frames: int = 100, device: str = "auto", amp: str = "off",
            weights: str = "ema", png: bool = True, exr: bool = False, video: bool = False, compare: bool = False,
            crop: tuple[int, int, int] | str | None = None, fps: float | None = None, threads: int | None = None,
            progress: Callable[[str], None] | None = None) -> UpscaleResult:
    """Upscale ``sequence`` of ``data`` with ``model``; see the module docstring.

    ``crop``: ``(x, y, size)`` or ``"X,Y,SIZE"`` (HR pixels) of the crop grid; ``threads``: torch
    CPU threads (None: ``gbuf.runtime``'s default).
    """
    if isinstance(crop, str):
        crop = parse_crop(crop)
    with runtime.threads(threads) as used:
        result = _upscale(model, data, sequence, out, checkpoint=checkpoint, lr_group=lr_group,
                          segment_frames=segment_frames, device=device, amp=amp, weights=weights, png=png, exr=exr,
                          video=video, compare=compare, crop=crop, fps=fps, progress=progress)
    result.threads = used
    return result


def _upscale(model, data, sequence, out, *, checkpoint, lr_group, segment_frames, device, amp, weights, png, exr,
             video, compare, crop, fps, progress) -> UpscaleResult:
    import gbuf.datasets as gd
    from gbuf.train.inference import (load_model, model_buffers, model_frames, segment_batch, to_display,
                                      to_hwc_uint8, to_linear)
    from gbuf.train.inference import bicubic as bicubic_up

    say = progress or (lambda text: None)
    dev = runtime.resolve_device(device)
    amp_dtype = runtime.autocast_dtype(amp, dev)
    ds = gd.open(data)
    seq = ds[sequence]
    if lr_group not in seq.resolutions:
        raise GbufError(f"{data}: sequence {sequence!r} has no resolution group {lr_group!r} "
                        f"(has: {', '.join(seq.resolutions)})")
    lr = seq[lr_group]
    if lr.num_frames == 0:
        raise GbufError(f"{lr.where}: the sequence has no complete frame")
    scale = lr.scale
    lm = load_model(model, checkpoint, scale=scale, device=dev, weights=weights)
    lr_buffers, hr_needed = model_buffers(lm.module)
    has_hr = fmt.HR in seq.resolutions
    hr_buffers = [b for b in hr_needed if b != "image"]
    if has_hr and "image" in seq[fmt.HR].buffers:
        hr_buffers.insert(0, "image")
    missing = [b for b in lr_buffers if b not in lr.buffers]
    if missing:
        raise GbufError(f"{lr.where}: model {model} needs buffer(s) {', '.join(missing)} that group "
                        f"{lr_group!r} lacks (has: {', '.join(lr.buffers)})")
    if hr_buffers and not has_hr:
        raise GbufError(f"{data}: model {model} needs HR buffers {', '.join(hr_buffers)} but {sequence!r} "
                        f"has no {fmt.HR!r} group")
    if has_hr:
        missing = [b for b in hr_buffers if b not in seq[fmt.HR].buffers]
        if missing:
            raise GbufError(f"{seq[fmt.HR].where}: model {model} needs buffer(s) {', '.join(missing)}")
    with_target = "image" in hr_buffers
    if compare and not with_target:
        say("no HR image in the store: the comparison shows LR bicubic | model only")
    normalize = None if lm.normalize == "none" else lm.normalize
    dataset = gd.SequenceDataset(data, lr_group=lr_group, lr_buffers=lr_buffers, hr_buffers=hr_buffers,
                                 normalize=normalize, segment_frames=segment_frames, sequences=[sequence])
    lr_enc = lr.attrs.get("image_encoding", "linear")
    hr_enc = seq[fmt.HR].attrs.get("image_encoding", "linear") if has_hr else lr_enc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = float(fps or seq.attrs.get("fps", 24) or 24)
    pngs, exrs = [], []
    writer = VideoWriter(out / f"{sequence}.mp4", fps) if video else None
    compare_writer = VideoWriter(out / "compare.mp4", fps) if compare else None
    total = sum(last - first for _, first, last in dataset.items)
    grid_at = {0, total // 2, total - 1}
    grid_frames = []
    if png:
        (out / "frames").mkdir(exist_ok=True)
    if exr:
        (out / "exr").mkdir(exist_ok=True)
    from PIL import Image

    done = 0
    try:
        for index in range(len(dataset)):
            _, first, last = dataset.items[index]
            say(f"{model}: {sequence} frames {first}..{last - 1}")
            item = dataset[index]
            batch = segment_batch(item, dev, lm.normalize)
            lr_display = to_display(batch["image"][0].float().cpu(), lm.normalize, lr_enc)
            hr_display = to_display(batch[fmt.hr_key("image")][0].float().cpu(), lm.normalize, hr_enc) \
                if with_target else None
            for t, output in enumerate(model_frames(lm.module, batch, dev, amp_dtype)):
                frame_index = first + t
                shown = to_hwc_uint8(to_display(output, lm.normalize, hr_enc))
                if png:
                    path = out / "frames" / f"{frame_index:04d}.png"
                    Image.fromarray(shown).save(path)
                    pngs.append(path)
                if exr:
                    path = out / "exr" / f"{frame_index:04d}.exr"
                    linear = to_linear(output, lm.normalize, hr_enc).permute(1, 2, 0).cpu().numpy()
                    write_exr(path, linear)
                    exrs.append(path)
                if writer is not None:
                    writer.write(shown)
                if compare:
                    up = bicubic_up(lr_display[t], scale)
                    panels = [("LR bicubic", to_hwc_uint8(up)), (model, shown)]
                    if hr_display is not None:
                        panels.append(("HR", to_hwc_uint8(hr_display[t])))
                    compare_writer.write(_labelled(panels, MAX_COMPARE_WIDTH))
                    if done in grid_at:
                        grid_frames.append((frame_index, panels))
                done += 1
    finally:
        if writer is not None:
            writer.close()
        if compare_writer is not None:
            compare_writer.close()
    grid_path = None
    if compare and grid_frames:
        h, w = grid_frames[0][1][0][1].shape[:2]
        if crop is None:
            size = max(8, min(h, w) // 4)
            crop = ((w - size) // 2, (h - size) // 2, size)
        grid_path = crop_grid(grid_frames, crop, out / "crops.png")
    return UpscaleResult(out, done, pngs, exrs, writer.path if writer else None,
                         compare_writer.path if compare_writer else None, grid_path)
