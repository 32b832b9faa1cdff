"""Contact sheets and videos of a real store with known content (``gbuf.datasets.preview``)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

import gbuf.datasets as gd
from gbuf.datasets import preview
from gbuf.errors import GbufError

H, W, T = 36, 64, 3
BUFFERS = ["image", "depth", "normal", "motion", "brdf", "alpha"]
# Frame t moves uniformly: right at 3 px, then down at 2 px, then up-left.
MOTIONS = [(3.0, 0.0), (0.0, 2.0), (-1.0, -1.0)]
BRDF = (0.2, 0.4, 0.6)


def srgb8(linear: float) -> int:
    """sRGB encoding written out independently of the module under test."""
    v = min(max(linear, 0.0), 1.0)
    v = 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
    return int(v * 255 + 0.5)


def _frame(t: int, h: int, w: int) -> dict[str, np.ndarray]:
    image = np.full((h, w, 3), 0.5, np.float32)
    image[:, w // 2:] = 2.0                                   # right half over-exposed: clipped
    depth = np.tile(np.linspace(1.0, 10.0, w, dtype=np.float32), (h, 1))[..., None]
    depth[: h // 6] = np.inf                                  # top rows: sky, no surface
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = 1.0
    motion = np.empty((h, w, 2), np.float32)
    motion[...] = MOTIONS[t]
    return {"image": image.astype(np.float16), "depth": depth, "normal": normal.astype(np.float16),
            "motion": motion, "brdf": np.broadcast_to(np.array(BRDF, np.float16), (h, w, 3)).copy(),
            "alpha": np.ones((h, w, 1), np.float16)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "data.zarr"
    with gd.SequenceWriter(path, "seq0", num_frames=T,
                           resolutions={"hr": (H, W, BUFFERS), "lr": (H // 4, W // 4, BUFFERS)},
                           sequence_attrs={"fps": 24.0, "frame_range": [1, T]}) as writer:
        for t in range(writer.next_frame, T):
            writer.append({"hr": _frame(t, H, W), "lr": _frame(t, H // 4, W // 4)})
    return path


def _centre(sheet: np.ndarray, box) -> np.ndarray:
    left, top, right, bottom = box
    return sheet[(top + bottom) // 2, (left + right) // 2].astype(int)


def _pixel(sheet: np.ndarray, box, fx: float, fy: float) -> np.ndarray:
    left, top, right, bottom = box
    return sheet[int(top + fy * (bottom - top - 1)), int(left + fx * (right - left - 1))].astype(int)


def _wheel_colour(dx: float, dy: float) -> tuple[int, int, int]:
    """Expected flow colour of a full-length vector: hue = screen angle (y down), full saturation."""
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    return tuple(int(c * 255 + 0.5) for c in colorsys.hsv_to_rgb(hue, 1.0, 1.0))


def test_sheet_layout_and_contents(store, tmp_path):
    out = preview.write_sheet(store, tmp_path / "sheet.png", frame=0)
    assert out == tmp_path / "sheet.png"
    sheet = np.asarray(Image.open(out).convert("RGB"))
    layout = preview.sheet_layout(H, W, BUFFERS)
    assert sheet.shape[:2] == (layout.height, layout.width)
    assert layout.width % 2 == 0 and layout.height % 2 == 0
    # Every buffer has a tile, in the format's order: three columns, two rows; 64 px wide buffers
    # are enlarged by whole pixels to at least 384.
    assert list(layout.tiles) == BUFFERS
    assert layout.picture_size == (384, 216)
    tops = sorted({tile.picture[1] for tile in layout.tiles.values()})
    lefts = sorted({tile.picture[0] for tile in layout.tiles.values()})
    assert len(tops) == 2 and len(lefts) == 3

    tiles = layout.tiles
    # Image: linear 0.5 -> sRGB; the over-exposed half clips to white.
    assert np.abs(_pixel(sheet, tiles["image"].picture, 0.25, 0.5) - srgb8(0.5)).max() <= 1
    assert (_pixel(sheet, tiles["image"].picture, 0.75, 0.5) == 255).all()
    # Depth: no-surface rows are black; near (left) is brighter than far (right).
    assert (_pixel(sheet, tiles["depth"].picture, 0.5, 0.02) == 0).all()
    near = _pixel(sheet, tiles["depth"].picture, 0.02, 0.6).sum()
    middle = _pixel(sheet, tiles["depth"].picture, 0.5, 0.6).sum()
    far = _pixel(sheet, tiles["depth"].picture, 0.98, 0.6).sum()
    assert near > middle > far > 0
    # Normal +Z -> (128, 128, 255).
    assert np.abs(_centre(sheet, tiles["normal"].picture) - (128, 128, 255)).max() <= 1
    # Motion right at full length -> the wheel's colour for "right": pure red.
    motion = _centre(sheet, tiles["motion"].picture)
    assert np.abs(motion - _wheel_colour(*MOTIONS[0])).max() <= 2
    # The legend wheel holds that colour too, so it can be read off the legend.
    left, top, right, bottom = tiles["motion"].legend
    legend = sheet[top:bottom, left:right].astype(int)
    assert (np.abs(legend - motion).max(axis=-1) <= 2).any()
    # BRDF: linear albedo -> sRGB.
    assert np.abs(_centre(sheet, tiles["brdf"].picture) - [srgb8(v) for v in BRDF]).max() <= 1
    # Alpha 1 -> white.
    assert (_centre(sheet, tiles["alpha"].picture) == 255).all()
    # Labels and legends are drawn (text pixels in the label strips and the depth scale bar).
    for tile in tiles.values():
        l, t, r, b = tile.label
        assert (sheet[t:b, l:r].astype(int).sum(axis=-1) > 400).any()


@pytest.mark.parametrize("frame", [1, 2, -1])
def test_sheet_of_other_frames_shows_their_motion(store, tmp_path, frame):
    out = preview.write_sheet(store, tmp_path / "sheet.png", sequence="seq0", frame=frame)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    tile = preview.sheet_layout(H, W, BUFFERS).tiles["motion"]
    expected = _wheel_colour(*MOTIONS[frame])
    assert np.abs(_centre(sheet, tile.picture) - expected).max() <= 2


def test_sheet_of_lr_group(store, tmp_path):
    out = preview.write_sheet(store, tmp_path / "lr.png", resolution="lr")
    sheet = np.asarray(Image.open(out).convert("RGB"))
    layout = preview.sheet_layout(H // 4, W // 4, BUFFERS)
    assert layout.zoom == 24 and layout.picture_size == (384, 216)
    assert sheet.shape[:2] == (layout.height, layout.width)
    assert np.abs(_centre(sheet, layout.tiles["motion"].picture) - _wheel_colour(*MOTIONS[0])).max() <= 2


def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path):
    cases = [
        (dict(frame=T), "out of range"),
        (dict(sequence="nope"), "no sequence 'nope'"),
        (dict(resolution="lr_bicubic_x4"), "no resolution group"),
    ]
    for kwargs, message in cases:
        with pytest.raises(GbufError, match=message) as err:
            preview.write_sheet(store, tmp_path / "s.png", **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(GbufError, match="expected a .png"):
        preview.write_sheet(store, tmp_path / "s.jpg")
    with pytest.raises(GbufError, match="not a gbuf store|no such dataset"):
        preview.write_sheet(tmp_path / "missing.zarr", tmp_path / "s.png")
    with pytest.raises(GbufError, match="expected a .mp4"):
        preview.write_video(store, tmp_path / "v.avi")
    assert not list(tmp_path.iterdir())


def test_video_has_every_frame(store, tmp_path):
    av = pytest.importorskip("av")
    out = preview.write_video(store, tmp_path / "seq.mp4", fps=12)
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    layout = preview.sheet_layout(H, W, BUFFERS)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 12
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == T
    assert frames[0].shape[:2] == (layout.height, layout.width)
    # Lossy, but the motion tile's hue survives: red, then yellow-green (down).
    tile = layout.tiles["motion"].picture
    for t in (0, 1):
        left, top, right, bottom = tile
        mean = frames[t][top + 20:bottom - 20, left + 20:right - 20].reshape(-1, 3).mean(axis=0) / 255
        hue = colorsys.rgb_to_hsv(*mean)[0]
        expected = (np.arctan2(MOTIONS[t][1], MOTIONS[t][0]) / (2 * np.pi)) % 1.0
        assert min(abs(hue - expected), 1 - abs(hue - expected)) < 0.03


def test_cli_preview(store, tmp_path, gbuf_cli):
    sheet, video = tmp_path / "sheet.png", tmp_path / "seq.mp4"
    proc = gbuf_cli("dataset", "preview", store, "--frame", "1", "--resolution", "lr", "-o", sheet,
                    "--video", video, check=True)
    assert sheet.is_file() and video.is_file() and str(sheet) in proc.stdout
    layout = preview.sheet_layout(H // 4, W // 4, BUFFERS)
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert np.abs(_centre(image, layout.tiles["motion"].picture) - _wheel_colour(*MOTIONS[1])).max() <= 2
    proc = gbuf_cli("dataset", "preview", store, "--frame", str(T), "-o", tmp_path / "bad.png")
    assert proc.returncode == 2 and "out of range" in proc.stderr and not (tmp_path / "bad.png").exists()


def test_wide_buffers_are_reduced_before_mapping():
    h, w = 24, 1290                                   # wider than a tile: shown at 640/1290 (blocks of 2)
    layout = preview.sheet_layout(h, w, BUFFERS)
    assert layout.picture_size == (640, 12)
    frame = _frame(1, h, w)
    sheet = np.asarray(preview.render_sheet(frame, "wide"))
    assert sheet.shape[:2] == (layout.height, layout.width)
    assert np.abs(_centre(sheet, layout.tiles["motion"].picture) - _wheel_colour(*MOTIONS[1])).max() <= 2
    assert (_pixel(sheet, layout.tiles["depth"].picture, 0.5, 0.0) == 0).all()  # sky stays "no surface"
    # Block means: exact on known blocks, +inf kept where a block touches the sky.
    values = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    assert preview.box_reduce(values, 2)[..., 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    values[0, 0] = np.inf
    assert np.isinf(preview.box_reduce(values, 2)[0, 0, 0])
