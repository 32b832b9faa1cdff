"""Contact sheets of G-buffers: look at a store instead of reading numbers.

``write_sheet`` draws every buffer of one frame side by side, each tile labelled
with what it shows and how: the image tone-mapped to sRGB (with the share of
clipped pixels), depth through a colour map with a scale bar in scene units,
normals as RGB with swatches of the axes, motion as a flow colour wheel with its
legend and magnitudes, the BRDF and any optional buffer. ``write_video`` makes
the same sheet for every frame of a sequence into an MP4 (PyAV), with colour
scales fixed over the whole sequence so that colours mean the same in every frame.

Drawing uses Pillow; the colour maps, HSV conversion and tick placement are
matplotlib's (``matplotlib.colormaps``, ``matplotlib.colors``, ``matplotlib.ticker``,
imported when first drawn; never pyplot, so no display and no backend).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets.colour import srgb_encode, to_uint8
from gbuf.errors import GbufError

#: Tiles show the buffers at least this wide (small renders are enlarged by whole pixels) ...
MIN_TILE_WIDTH = 384
#: ... and at most this wide (large ones are reduced by box filtering).
MAX_TILE_WIDTH = 640
COLUMNS = 3
PAD = 8              # between tiles and around the sheet
TITLE_HEIGHT = 26    # sheet title line
LABEL_HEIGHT = 20    # tile label above each picture
LEGEND_HEIGHT = 64   # legend strip below each picture
FONT_SIZE = 13

BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
DIM_TEXT = (160, 160, 170)
NO_SURFACE = (0, 0, 0)
INVALID = (255, 0, 255)  # NaN or infinite where a finite value belongs

# Depth colour map, near to far: matplotlib's perceptually ordered "inferno" run backwards, from
# its bright yellow end (near) to deep violet (far). It stops short of inferno's black end,
# because black marks "no surface".
DEPTH_COLORMAP = "inferno"
_DEPTH_FAR_END = 0.16


# --------------------------------------------------------------------------- colour mappings


def image_facts(linear: np.ndarray) -> dict:
    """Share of clipped pixels, count of NaN/inf pixels and the maximum, for the label."""
    x = linear.astype(np.float32)
    finite = np.isfinite(x).all(axis=-1)
    clipped = float(np.mean((x > 1.0).any(axis=-1) & finite)) if x.size else 0.0
    return {"clipped": clipped, "invalid": int((~finite).sum()),
            "max": float(np.max(x[finite])) if finite.any() else float("nan")}


def colour_image(linear: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB uint8, clipped at 1; NaN/inf magenta."""
    x = linear.astype(np.float32)
    finite = np.isfinite(x).all(axis=-1)
    rgb = to_uint8(srgb_encode(np.where(np.isfinite(x), x, 0.0)))
    rgb[~finite] = INVALID
    return rgb


def depth_range(depth: np.ndarray) -> tuple[float, float] | None:
    finite = depth[np.isfinite(depth) & (depth > 0)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def _use_log(lo: float, hi: float) -> bool:
    return lo > 0 and hi / lo > 8.0


def _depth_position(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at ``lo`` (near), 1 at ``hi`` (far): logarithmic when the range spans a decade or so."""
    if hi <= lo:
        return np.zeros_like(depth)
    if _use_log(lo, hi):
        return (np.log(np.maximum(depth, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (depth - lo) / (hi - lo)


def depth_ramp(position: np.ndarray) -> np.ndarray:
    """Colours of the depth map for positions in [0, 1], 0 near (float RGB)."""
    from matplotlib import colormaps

    p = np.clip(position, 0.0, 1.0)
    rgba = colormaps[DEPTH_COLORMAP](1.0 - p * (1.0 - _DEPTH_FAR_END))
    return rgba[..., :3].astype(np.float32)


def colour_depth(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    d = depth[..., 0].astype(np.float32)
    surface = np.isfinite(d) & (d > 0)
    rgb = to_uint8(depth_ramp(_depth_position(np.where(surface, d, lo), lo, hi)))
    rgb[~surface] = NO_SURFACE
    rgb[np.isnan(d)] = INVALID
    return rgb


def colour_normal(normal: np.ndarray) -> np.ndarray:
    """World-space normals (x, y, z) in [-1, 1] -> RGB (x+1)/2...; zero normals (no surface) black."""
    n = normal.astype(np.float32)
    finite = np.isfinite(n).all(axis=-1)
    n = np.where(np.isfinite(n), n, 0.0)
    rgb = to_uint8((n + 1.0) / 2.0)
    rgb[np.abs(n).sum(axis=-1) < 1e-3] = NO_SURFACE
    rgb[~finite] = INVALID
    return rgb


def flow_colour(mx: np.ndarray, my: np.ndarray, scale: float) -> np.ndarray:
    """Flow wheel: hue = direction on screen (0 = right, a quarter turn = down), saturation = |m| / scale.

    Zero motion is white; a vector of length ``scale`` or more is fully saturated.
    The legend wheel uses the same function, so a colour reads off the wheel directly.
    """
    from matplotlib.colors import hsv_to_rgb

    hue = (np.arctan2(my, mx) / (2 * np.pi)) % 1.0
    sat = np.clip(np.hypot(mx, my) / max(scale, 1e-12), 0.0, 1.0)
    return hsv_to_rgb(np.stack([hue, sat, np.ones_like(sat)], axis=-1)).astype(np.float32)


def motion_magnitude(motion: np.ndarray) -> np.ndarray:
    m = motion.astype(np.float32)
    return np.hypot(m[..., 0], m[..., 1])


def motion_scale(magnitude: np.ndarray) -> float:
    """The magnitude shown fully saturated: the 99th percentile, so one fast object does not
    wash out everything else (the legend still reports the true maximum)."""
    finite = magnitude[np.isfinite(magnitude)]
    if finite.size == 0:
        return 1e-6
    return max(float(np.percentile(finite, 99)), 1e-3 * float(finite.max()), 1e-6)


def colour_motion(motion: np.ndarray, scale: float) -> np.ndarray:
    m = motion.astype(np.float32)
    finite = np.isfinite(m).all(axis=-1)
    m = np.where(np.isfinite(m), m, 0.0)
    rgb = to_uint8(flow_colour(m[..., 0], m[..., 1], scale))
    rgb[~finite] = INVALID
    return rgb


def colour_scalar(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = values[..., 0].astype(np.float32)
    g = np.clip((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v), 0, 1)
    rgb = to_uint8(np.repeat(g[..., None], 3, axis=-1))
    rgb[~np.isfinite(v)] = INVALID
    return rgb


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Tile:
    buffer: str
    label: tuple[int, int, int, int]    # (left, top, right, bottom) in sheet pixels
    picture: tuple[int, int, int, int]
    legend: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class SheetLayout:
    width: int
    height: int
    zoom: float                  # sheet pixels per buffer pixel
    picture_size: tuple[int, int]
    tiles: dict[str, Tile]


def display_zoom(width: int) -> float:
    """Whole-pixel enlargement for small buffers, box reduction for large ones, 1 in between."""
    if width < MIN_TILE_WIDTH:
        return float(math.ceil(MIN_TILE_WIDTH / width))
    if width > MAX_TILE_WIDTH:
        return MAX_TILE_WIDTH / width
    return 1.0


def sheet_layout(height: int, width: int, buffers) -> SheetLayout:
    """Where each buffer's tile lies on the sheet, in the order of ``format.BUFFERS``.

    Sizes are even, so the sheet can be encoded as yuv420 video.
    """
    ordered = [b for b in fmt.BUFFERS if b in buffers] + sorted(b for b in buffers if b not in fmt.BUFFERS)
    zoom = display_zoom(width)
    pic_w, pic_h = max(1, round(width * zoom)), max(1, round(height * zoom))
    tile_w = max(pic_w, 300)
    tile_h = LABEL_HEIGHT + pic_h + LEGEND_HEIGHT
    columns = min(COLUMNS, max(1, len(ordered)))
    rows = max(1, math.ceil(len(ordered) / columns))
    sheet_w = PAD + columns * (tile_w + PAD)
    sheet_h = TITLE_HEIGHT + PAD + rows * (tile_h + PAD)
    sheet_w += sheet_w % 2
    sheet_h += sheet_h % 2
    tiles = {}
    for k, name in enumerate(ordered):
        left = PAD + (k % columns) * (tile_w + PAD)
        top = TITLE_HEIGHT + PAD + (k // columns) * (tile_h + PAD)
        tiles[name] = Tile(
            buffer=name,
            label=(left, top, left + tile_w, top + LABEL_HEIGHT),
            picture=(left, top + LABEL_HEIGHT, left + pic_w, top + LABEL_HEIGHT + pic_h),
            legend=(left, top + LABEL_HEIGHT + pic_h, left + tile_w, top + tile_h))
    return SheetLayout(sheet_w, sheet_h, zoom, (pic_w, pic_h), tiles)


# --------------------------------------------------------------------------- drawing


def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def box_reduce(values: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of an (H, W, C) array (edges that do not fill a block
    are dropped). Large buffers are reduced before colour mapping: the sheet shows them at a third
    of 1080p anyway, and mapping a ninth of the pixels makes an HR video nine times faster.
    Averaging keeps +inf (no surface) and NaN where a block touches them."""
    if factor <= 1:
        return values
    h, w = values.shape[0] // factor * factor, values.shape[1] // factor * factor
    blocks = values[:h, :w].astype(np.float32).reshape(h // factor, factor, w // factor, factor, -1)
    return blocks.mean(axis=(1, 3))


def _resize(rgb: np.ndarray, size: tuple[int, int], zoom: float):
    from PIL import Image

    image = Image.fromarray(rgb, "RGB")
    if image.size == size:
        return image
    # Enlarge with nearest neighbour (pixels stay visible, nothing invented); reduce with a box filter.
    return image.resize(size, Image.Resampling.NEAREST if zoom >= 1 else Image.Resampling.BOX)


def _nice_ticks(lo: float, hi: float, log: bool, count: int = 5) -> list[float]:
    """Round tick values inside [lo, hi] (matplotlib's locators): 1-2-5 steps; on a log scale
    1, 2 and 5 times the powers of ten, only the powers when that makes too many."""
    from matplotlib import ticker

    if hi <= lo:
        return [lo]

    def inside(locator) -> list[float]:
        span = (hi - lo) * 1e-9
        return [float(v) for v in locator.tick_values(lo, hi) if lo - span <= v <= hi + span]

    if log:
        ticks = inside(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        if len(ticks) > count + 2:
            ticks = inside(ticker.LogLocator(base=10.0, subs=(1.0,), numticks=count + 2)) or ticks
        return ticks or [lo, hi]
    return inside(ticker.MaxNLocator(nbins=count, steps=[1, 2, 5, 10]))


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _draw_bar(sheet, draw, box, colours: np.ndarray, ticks: list[tuple[float, str]], font, caption: str) -> None:
    """A horizontal colour bar (colours: (N, 3) uint8 left to right) with tick marks and labels."""
    from PIL import Image

    left, top, right, bottom = box
    bar = np.repeat(colours[None], bottom - top, axis=0)
    sheet.paste(Image.fromarray(bar, "RGB"), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline=DIM_TEXT)
    for position, text in ticks:
        x = left + int(round(position * (right - left - 1)))
        draw.line((x, bottom, x, bottom + 4), fill=TEXT)
        w = draw.textlength(text, font=font)
        draw.text((min(max(left, x - w / 2), right - w), bottom + 5), text, font=font, fill=TEXT)
    draw.text((left, top - 16), caption, font=font, fill=DIM_TEXT)


def _legend_depth(sheet, draw, box, lo: float, hi: float, font) -> None:
    left, top, right, bottom = box
    bar_box = (left + 6, top + 20, right - 110, top + 34)
    width = bar_box[2] - bar_box[0]
    positions = np.linspace(0, 1, width, dtype=np.float32)
    log = _use_log(lo, hi)
    ticks = []
    for v in _nice_ticks(lo, hi, log):
        p = float(_depth_position(np.array(v, dtype=np.float64), lo, hi))
        ticks.append((p, _fmt(v)))
    _draw_bar(sheet, draw, bar_box, to_uint8(depth_ramp(positions)), ticks, font,
              f"scene units, {'log' if log else 'linear'} scale, {_fmt(lo)} to {_fmt(hi)}")
    draw.rectangle((right - 100, top + 20, right - 86, top + 34), fill=NO_SURFACE, outline=DIM_TEXT)
    draw.text((right - 82, top + 20), "no surface", font=font, fill=TEXT)


def _legend_normal(draw, box, font) -> None:
    left, top, right, bottom = box
    draw.text((left + 6, top + 4), "world axes (Z up): colour = (n + 1) / 2", font=font, fill=DIM_TEXT)
    axes = [("+X", (1, 0, 0)), ("-X", (-1, 0, 0)), ("+Y", (0, 1, 0)), ("-Y", (0, -1, 0)),
            ("+Z", (0, 0, 1)), ("-Z", (0, 0, -1))]
    x = left + 6
    for name, n in axes:
        colour = tuple(int(c) for c in to_uint8((np.array(n, dtype=np.float32) + 1) / 2))
        draw.rectangle((x, top + 24, x + 16, top + 40), fill=colour, outline=DIM_TEXT)
        draw.text((x + 20, top + 25), name, font=font, fill=TEXT)
        x += 46
    draw.rectangle((x, top + 24, x + 16, top + 40), fill=NO_SURFACE, outline=DIM_TEXT)
    draw.text((x + 20, top + 25), "none", font=font, fill=TEXT)


def flow_wheel(radius: int, scale: float = 1.0) -> np.ndarray:
    """An RGBA legend disc: the colour of each screen direction (y down) and length up to ``scale``."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float32)
    rgb = to_uint8(flow_colour(xx / radius * scale, yy / radius * scale, scale))
    alpha = np.where(np.hypot(xx, yy) <= radius + 0.5, 255, 0).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def _legend_motion(sheet, draw, box, scale: float, largest: float, mean: float, font, unit: str) -> None:
    from PIL import Image

    left, top, right, bottom = box
    radius = (bottom - top - 8) // 2
    wheel = Image.fromarray(flow_wheel(radius, scale), "RGBA")
    centre = (right - radius - 8, top + 4 + radius)
    sheet.paste(wheel, (centre[0] - radius, centre[1] - radius), wheel)
    # Short +x and +y (down) axis marks; they stop at half radius so the saturated rim stays readable.
    for dx, dy in ((1, 0), (0, 1)):
        draw.line((centre[0], centre[1], centre[0] + dx * radius // 2, centre[1] + dy * radius // 2),
                  fill=(40, 40, 40))
    draw.text((left + 6, top + 4), "hue = direction (y down), white = still", font=font, fill=DIM_TEXT)
    draw.text((left + 6, top + 22), f"full colour at |m| >= {_fmt(scale)} {unit}", font=font, fill=TEXT)
    draw.text((left + 6, top + 40), f"max |m| {_fmt(largest)} {unit}, mean {_fmt(mean)}", font=font, fill=TEXT)


def _legend_scalar(sheet, draw, box, lo: float, hi: float, font, caption: str) -> None:
    left, top, right, bottom = box
    bar_box = (left + 6, top + 20, right - 12, top + 34)
    ramp = np.repeat(np.linspace(0, 255, bar_box[2] - bar_box[0]).astype(np.uint8)[:, None], 3, axis=1)
    ticks = [(p, _fmt(lo + p * (hi - lo))) for p in (0.0, 0.5, 1.0)]
    _draw_bar(sheet, draw, bar_box, ramp, ticks, font, caption)


# --------------------------------------------------------------------------- sheets


@dataclasses.dataclass
class Scales:
    """Colour scales: per frame for a still sheet, fixed over a sequence for a video."""
    depth: tuple[float, float] | None = None
    motion: float | None = None
    scalar: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def render_sheet(frame: dict[str, np.ndarray], title: str, *, scales: Scales | None = None,
                 unit: str = "px", notes: dict[str, str] | None = None):
    """Draw one contact sheet from ``{buffer: (H, W, C) array}``; returns a PIL RGB image."""
    from PIL import Image, ImageDraw

    if not frame:
        raise GbufError("preview: no buffers to draw")
    scales = scales or Scales()
    notes = notes or {}
    height, width = next(iter(frame.values())).shape[:2]
    layout = sheet_layout(height, width, list(frame))
    reduce = int(1 / layout.zoom + 1e-6) if layout.zoom < 1 else 1
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    title_font = _font(FONT_SIZE + 1)
    draw.text((PAD, 6), _fit(draw, title, title_font, layout.width - 2 * PAD), font=title_font, fill=TEXT)

    for name, tile in layout.tiles.items():
        data = frame[name]
        shown = box_reduce(data, reduce)
        spec = fmt.BUFFERS.get(name)
        channels = data.shape[-1]
        legend = tile.legend
        if name == "depth":
            rng = scales.depth or depth_range(data)
            lo, hi = rng if rng else (0.0, 1.0)
            rgb = colour_depth(shown, lo, hi)
            surface = np.isfinite(data) & (data > 0)
            label = f"depth  planar camera Z, {100 * surface.mean():.0f}% surface"
            if rng:
                _legend_depth(sheet, draw, legend, lo, hi, font)
            else:
                draw.text((legend[0] + 6, legend[1] + 20), "no surface in this frame", font=font, fill=TEXT)
        elif name == "normal":
            rgb = colour_normal(shown)
            label = "normal  world space"
            _legend_normal(draw, legend, font)
        elif name == "motion" or (spec is None and channels == 2):
            magnitude = motion_magnitude(data)
            finite = np.isfinite(magnitude)
            largest = float(magnitude[finite].max()) if finite.any() else 0.0
            mean = float(magnitude[finite].mean()) if finite.any() else 0.0
            scale = scales.motion if scales.motion else motion_scale(magnitude)
            rgb = colour_motion(shown, scale)
            label = f"{name}  to frame t-1, {unit}" if name == "motion" else name
            _legend_motion(sheet, draw, legend, scale, largest, mean, font, unit)
        elif channels == 3:
            facts = image_facts(data)
            rgb = colour_image(shown)
            what = "linear -> sRGB" if name == "image" else "linear albedo -> sRGB"
            label = f"{name}  {what}, {100 * facts['clipped']:.1f}% clipped, max {_fmt(facts['max'])}"
            if facts["invalid"]:
                label += f", {facts['invalid']} NaN/inf (magenta)"
        else:
            v = data[..., :1].astype(np.float32)
            finite = v[np.isfinite(v)]
            lo, hi = scales.scalar.get(name) or ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
            if name == "alpha":
                lo, hi = 0.0, 1.0
            rgb = colour_scalar(shown[..., :1], lo, hi)
            label = "alpha  coverage by geometry" if name == "alpha" else name
            _legend_scalar(sheet, draw, legend, lo, hi, font, "coverage" if name == "alpha" else "value")
        if name in notes:
            label += f"  {notes[name]}"
        sheet.paste(_resize(rgb, layout.picture_size, layout.zoom), tile.picture[:2])
        draw.text((tile.label[0] + 2, tile.label[1] + 3),
                  _fit(draw, label, font, tile.label[2] - tile.label[0] - 4), font=font, fill=TEXT)
    return sheet


def _open(dataset):
    from gbuf.datasets import store

    return dataset if isinstance(dataset, store.Dataset) else store.open(dataset, mode="r")


def _select(dataset, sequence: str | None, resolution: str):
    ds = _open(dataset)
    if not ds.sequences:
        raise GbufError(f"{ds.path}: store has no sequences")
    name = sequence if sequence is not None else ds.sequences[0]
    if name not in ds:
        raise GbufError(f"{ds.path}: no sequence {name!r} (has: {', '.join(ds.sequences)})")
    seq = ds[name]
    if resolution not in seq.resolutions:
        raise GbufError(f"{ds.path}/{name}: no resolution group {resolution!r} "
                        f"(has: {', '.join(seq.resolutions)})")
    res = seq[resolution]
    if res.num_frames < 1:
        raise GbufError(f"{res.where}: no complete frame yet")
    return ds, seq, res


def _title(ds, seq, res, t: int) -> str:
    parts = [f"{Path(str(ds.path)).name} / {seq.name} / {res.name} {res.width}x{res.height}"
             + (f" (1/{res.scale} of HR)" if res.scale != 1 else ""),
             f"frame {t} (of 0-{res.num_frames - 1})"]
    frame_range = seq.attrs.get("frame_range")
    if frame_range:
        parts[-1] += f" (Blender frame {int(frame_range[0]) + t})"
    scene = seq.attrs.get("scene") or {}
    source = scene.get("recipe") or (Path(scene["file"]).name if scene.get("file") else None)
    if source:
        parts.append(f"scene {source}")
    kind = res.attrs.get("kind")
    if kind:
        parts.append(kind + (f" ({res.attrs['method']})" if res.attrs.get("method") else ""))
    return "  |  ".join(parts)


def _unit(res) -> str:
    return "HR px" if res.scale == 1 else "px"


def _atomic_target(out: Path, suffixes: tuple[str, ...]) -> Path:
    if out.suffix.lower() not in suffixes:
        raise GbufError(f"{out}: expected a {' or '.join(suffixes)} file")
    if not out.parent.is_dir():
        raise GbufError(f"{out}: folder {out.parent} does not exist")
    return out.with_name(f".{out.stem}.partial{out.suffix}")


def write_sheet(dataset, out_png, *, sequence: str | None = None, frame: int = 0,
                resolution: str = fmt.HR) -> Path:
    """Write the contact sheet of every buffer of one frame as a PNG; returns its path.

    ``dataset``: a store path or an open ``Dataset``; ``sequence``: default the first;
    ``frame``: index in the sequence (negative counts from the end); ``resolution``:
    ``hr``, ``lr`` or a degraded group's name.
    """
    out = Path(out_png)
    _atomic_target(out, (".png",))  # a bad path is refused before anything is read
    ds, seq, res = _select(dataset, sequence, resolution)
    t = frame + res.num_frames if frame < 0 else frame
    if not 0 <= t < res.num_frames:
        raise GbufError(f"{res.where}: frame {frame} out of range (0..{res.num_frames - 1})")
    data = res.read_many(res.buffers, t=slice(t, t + 1))
    sheet = render_sheet({k: v[0] for k, v in data.items()}, _title(ds, seq, res, t), unit=_unit(res))
    return write_png(sheet, out)


def write_png(picture, out_png) -> Path:
    """Save a PIL image or an (H, W, 3) uint8 array as ``out_png``, whole or not at all; returns the path."""
    from PIL import Image

    out = Path(out_png)
    partial = _atomic_target(out, (".png",))
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8))
    try:
        picture.save(partial, format="PNG")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


# -- camera paths on a top view (gbuf.render.path_preview renders the view; drawing is here) ---------
#: Colours of the camera path drawing (sRGB 0-255): the path goes from PATH_START to PATH_END over
#: time; the start point, the end point and the view-direction ticks.
PATH_START = (40, 140, 255)
PATH_MIDDLE = (200, 50, 220)          # a saturated middle: a straight blend of the two passes through grey
PATH_END = (255, 130, 0)
START_MARK = (30, 200, 70)
END_MARK = (230, 30, 40)
VIEW_TICK = (255, 225, 40)
OUTLINE = (15, 15, 15)


def _stamp(picture: np.ndarray, x: float, y: float, radius: float, colour) -> None:
    """A filled disc of ``radius`` pixels centred at continuous pixel coordinates (x, y)."""
    h, w = picture.shape[:2]
    x0, x1 = max(int(math.floor(x - radius)), 0), min(int(math.ceil(x + radius)) + 1, w)
    y0, y1 = max(int(math.floor(y - radius)), 0), min(int(math.ceil(y + radius)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5          # pixel centres
    inside = (xs - x) ** 2 + (ys - y) ** 2 <= radius * radius
    picture[y0:y1, x0:x1][inside] = colour


def _line(picture: np.ndarray, a, b, radius: float, colour_a, colour_b=None) -> None:
    steps = max(int(math.ceil(math.dist(a, b) / max(radius * 0.5, 0.5))), 1)
    for k in range(steps + 1):
        f = k / steps
        colour = colour_a if colour_b is None else tuple(int(round(ca + (cb - ca) * f))
                                                         for ca, cb in zip(colour_a, colour_b))
        _stamp(picture, a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, radius, colour)


def draw_camera_path(picture: np.ndarray, points: np.ndarray, directions: np.ndarray | None = None, *,
                     every: int = 8, width: float = 3.0) -> np.ndarray:
    """Draw a camera path on ``picture`` ((H, W, 3) uint8, changed in place and returned).

    ``points``: (T, 2) continuous pixel coordinates (x right, y down; pixel (y, x) covers
    [x, x+1) x [y, y+1)) of the camera centres, frame by frame; ``directions``: (T, 2) where
    each view direction points in the picture (any length; drawn as a tick of fixed length
    every ``every`` frames). The path runs from blue through violet to orange over time, the
    start is a green disc, the end a red one.
    """
    points = np.asarray(points, dtype=np.float64)
    radius = width / 2.0
    tick = max(12.0 * width, 14.0)            # longer than a few frames of path: it shows beside it
    span = max(len(points) - 1, 1)

    def shade_at(f: float):
        a, b, f = (PATH_START, PATH_MIDDLE, 2 * f) if f < 0.5 else (PATH_MIDDLE, PATH_END, 2 * f - 1)
        return tuple(int(round(ca + (cb - ca) * f)) for ca, cb in zip(a, b))

    shade = [shade_at(t / span) for t in range(len(points))]
    if directions is not None:                # under the path: a camera looking ahead hides no part of it
        for t in range(0, len(points), max(int(every), 1)):
            d = np.asarray(directions[t], dtype=np.float64)
            n = float(np.hypot(*d))
            if n > 1e-9:
                tip = points[t] + d / n * tick
                _line(picture, points[t], tip, radius * 0.6 + 1.0, OUTLINE)
                _line(picture, points[t], tip, radius * 0.6, VIEW_TICK)
    for t in range(len(points) - 1):          # a dark outline first: the path reads on any background
        _line(picture, points[t], points[t + 1], radius + 1.0, OUTLINE)
    for t in range(len(points) - 1):
        _line(picture, points[t], points[t + 1], radius, shade[t], shade[t + 1])
    if len(points):
        for (x, y), colour, size in ((points[-1], END_MARK, 2.2), (points[0], START_MARK, 2.8)):
            _stamp(picture, x, y, radius * size + 1.5, OUTLINE)
            _stamp(picture, x, y, radius * size, colour)
    return picture


def caption(picture: np.ndarray, lines: list[str]) -> np.ndarray:
    """``picture`` with a dark strip below it holding ``lines`` (cut to fit): a new, taller array.

    Below, not on top: a caption never hides what is drawn, and the picture's pixel
    coordinates stay those of the view.
    """
    from PIL import Image, ImageDraw

    width = picture.shape[1]
    font = _font(max(9, min(FONT_SIZE, width // 40)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = max(probe.textbbox((0, 0), "Ag", font=font)[3], 1) + 3
    strip = Image.new("RGB", (width, line_height * len(lines) + 6), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for k, line in enumerate(lines):
        draw.text((5, 3 + k * line_height), _fit(draw, line, font, width - 10), font=font, fill=TEXT)
    return np.concatenate([np.asarray(picture, dtype=np.uint8), np.asarray(strip)], axis=0)


def sequence_scales(res) -> Scales:
    """Colour scales fixed over a whole sequence.

    Depth and scalar ranges come from the per-frame min/max the writer stores; the
    motion scale is the largest per-frame 99th percentile (one pass over the motion).
    """
    stats = res.frame_stats()
    scales = Scales()
    ranges = {b: [v for v in stats.get(b, []) if v is not None] for b in res.buffers}
    if ranges.get("depth"):
        lo = min(v[0] for v in ranges["depth"])
        hi = max(v[1] for v in ranges["depth"])
        if math.isfinite(lo) and math.isfinite(hi) and hi > 0:
            scales.depth = (max(lo, 1e-6), hi)
    if "motion" in res.buffers:
        scales.motion = max(motion_scale(motion_magnitude(res.read("motion", t=slice(t, t + 1))))
                            for t in range(res.num_frames))
    for name, values in ranges.items():
        if name not in ("depth", "motion") and values:
            scales.scalar[name] = (min(v[0] for v in values), max(v[1] for v in values))
    return scales


def write_video(dataset, out_mp4, *, sequence: str | None = None, resolution: str = fmt.HR,
                fps: float | None = None, crf: int = 18) -> Path:
    """Write the contact sheet of every frame of a sequence as an H.264 MP4 (PyAV); returns its path.

    Colour scales (depth range, motion magnitude) are fixed over the sequence, so a
    colour means the same in every frame. ``fps``: default the sequence's (or 24).
    """
    import av

    out = Path(out_mp4)
    partial = _atomic_target(out, (".mp4",))
    ds, seq, res = _select(dataset, sequence, resolution)
    rate = fps if fps is not None else float(seq.attrs.get("fps") or 24.0)
    if not rate > 0:
        raise GbufError(f"{out}: fps must be positive, got {rate}")
    scales = sequence_scales(res)
    from fractions import Fraction

    try:
        with av.open(str(partial), mode="w", format="mp4") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "medium"}
            for t in range(res.num_frames):
                data = res.read_many(res.buffers, t=slice(t, t + 1))
                sheet = render_sheet({k: v[0] for k, v in data.items()}, _title(ds, seq, res, t),
                                     scales=scales, unit=_unit(res))
                if t == 0:
                    stream.width, stream.height = sheet.size
                video_frame = av.VideoFrame.from_ndarray(np.asarray(sheet), format="rgb24")
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
