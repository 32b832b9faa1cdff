"""Content checks (gbuf.render.content_checks): each measure on synthetic frames, and one tiny real
render of a bad scene (no light, a black world, the camera inside a cube, standing still) whose
warnings are logged, stored in the sequence attrs and shown by `gbuf dataset info`; the same
render checks that Cycles' sample progress reaches the progress callback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.render import content_checks as cc

H, W = 18, 32


def good_frame(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 10.0, (H, W, 1)).astype(np.float32)
    depth[:3] = np.inf                                   # sky: the documented background
    # Greys with some colour: no pixel is near magenta by chance.
    image = rng.uniform(0.05, 0.8, (H, W, 1)) * rng.uniform(0.7, 1.2, (H, W, 3))
    return {"image": image.astype(np.float16), "depth": depth,
            "normal": np.tile(np.array([0, 0, 1], np.float16), (H, W, 1)),
            "motion": rng.normal(0.0, 2.0, (H, W, 2)).astype(np.float32)}


def test_a_good_frame_passes_every_check():
    m = cc.measure_frame(good_frame(), inside_fraction=0.0)
    assert not any(m.flags().values()), m
    assert m.nonfinite == 0 and m.motion_max_px > cc.NO_MOTION_PX


def test_near_black():
    frame = good_frame()
    frame["image"] = (frame["image"].astype(np.float32) * 0.04).astype(np.float16)  # peaks below 0.05
    m = cc.measure_frame(frame)
    assert m.flags()["near_black"] and m.image_max < 0.05
    assert [k for k, v in m.flags().items() if v] == ["near_black"]
    # One bright pixel in 576 does not make a dark frame bright (the 99th percentile stays low).
    frame["image"][0, 0] = 5.0
    assert cc.measure_frame(frame).flags()["near_black"]


def test_magenta_lit_or_not():
    frame = good_frame()
    image = frame["image"].astype(np.float32)
    image[:4, :8] = (0.3, 0.0, 0.3)               # a lit missing texture: magenta at any brightness
    image[4:6, :8] = (1.0, 0.02, 0.97)
    frame["image"] = image.astype(np.float16)
    m = cc.measure_frame(frame)
    assert m.flags()["magenta"] and m.magenta_fraction == pytest.approx(48 / (H * W))
    assert not cc.measure_frame(good_frame()).flags()["magenta"]


def test_nonfinite_but_not_the_depth_background():
    frame = good_frame()
    assert cc.measure_frame(frame).nonfinite == 0      # +inf depth is the background
    frame["normal"] = frame["normal"].copy()
    frame["normal"][2, 3, 0] = np.nan
    frame["depth"] = frame["depth"].copy()
    frame["depth"][5, 5] = -np.inf
    m = cc.measure_frame(frame)
    assert m.nonfinite == 2 and m.flags()["nonfinite"]
    frame = good_frame()
    frame["image"] = frame["image"].copy()
    frame["image"][1, 1, 2] = np.inf
    assert cc.measure_frame(frame).flags()["nonfinite"]


def test_clipped_fraction():
    frame = good_frame()
    image = frame["image"].astype(np.float32)
    image[:5, :, 1] = 1.0                           # 5 of 18 rows: 27.8% clipped in one channel
    frame["image"] = image.astype(np.float16)
    m = cc.measure_frame(frame)
    assert m.clipped_fraction == pytest.approx(5 / 18) and m.flags()["clipped"]
    image[:5] = 0.5
    image[0, :10] = 2.0                             # 10 pixels: under the 5% threshold
    frame["image"] = image.astype(np.float16)
    assert not cc.measure_frame(frame).flags()["clipped"]


def test_backface_fraction_from_probe_rays():
    dirs = cc.sphere_directions()
    assert dirs.shape == (cc.INSIDE_RAYS, 3) and np.allclose(np.linalg.norm(dirs, axis=1), 1)
    hits = np.ones(len(dirs), bool)
    inside = cc.backface_fraction(dirs, dirs.copy(), hits)     # normals along the rays: back faces
    outside = cc.backface_fraction(dirs, -dirs, hits)          # normals facing the origin: a room
    assert inside == 1.0 and outside == 0.0
    assert cc.backface_fraction(dirs, dirs, np.zeros(len(dirs), bool)) is None  # open sky
    assert cc.measure_frame(good_frame(), inside_fraction=inside).flags()["inside_geometry"]
    assert not cc.measure_frame(good_frame(), inside_fraction=None).flags()["inside_geometry"]


def test_summary_names_the_bad_frames_and_no_motion():
    still = []
    for seed in range(4):
        frame = good_frame(seed)
        frame["motion"] = np.zeros((H, W, 2), np.float32)
        if seed in (1, 3):
            frame["image"] = np.zeros((H, W, 3), np.float16)
        still.append(cc.measure_frame(frame))
    checks = cc.summarise(still)
    assert checks.flagged["near_black"] == [1, 3] and checks.no_motion is True
    assert any(w.startswith("2 of 4 frames near-black") and "frames 1, 3" in w for w in checks.warnings)
    assert any(w.startswith("no motion at all") for w in checks.warnings)
    moving = cc.summarise([cc.measure_frame(good_frame(s)) for s in range(3)])
    assert moving.no_motion is False and moving.warnings == []
    # Without a motion buffer the sequence-level check is not made (null), not passed.
    assert cc.summarise([cc.measure_frame({"image": good_frame()["image"]})] * 2).no_motion is None
    attrs = {"num_frames": 4, fmt.CONTENT_CHECKS_KEY: checks.to_attrs()}
    assert fmt.check_sequence_attrs(attrs, "x/zarr.json") is attrs
    attrs[fmt.CONTENT_CHECKS_KEY]["frames"]["near_black"] = [7]
    with pytest.raises(GbufError, match="content_checks.frames.near_black"):
        fmt.check_sequence_attrs(attrs, "x/zarr.json")


def test_first_warning_once_per_check():
    seen: set[str] = set()
    dark = cc.measure_frame({"image": np.zeros((H, W, 3), np.float16)})
    assert "near-black" in cc.first_warning(dark, 0, seen)
    assert cc.first_warning(dark, 1, seen) is None


# ------------------------------------------------------------------------------ one real render


def _dark_inside_blend(path):
    import bpy

    import render_helpers as rh

    rh.new_scene((1, 2))
    bpy.ops.mesh.primitive_cube_add(size=4.0)     # outward normals: the camera sees their backs
    rh.add_camera((0.0, 0.0, 0.0), (90.0, 0.0, 0.0))
    world = bpy.data.worlds.new("black")
    world.color = (0.0, 0.0, 0.0)
    bpy.context.scene.world = world                 # no lights at all
    return rh.save(path)


def test_dark_render_warns_records_and_reports_samples(tmp_path, caplog):
    pytest.importorskip("bpy")
    import gbuf.datasets as gd
    from gbuf.datasets.summary import format_info, info
    from gbuf.progress import sample_label
    from gbuf.render import pipeline

    blend = _dark_inside_blend(tmp_path / "dark.blend")
    calls = []
    out = tmp_path / "ds.zarr"
    with caplog.at_level(logging.WARNING, logger="gbuf"):
        # pipeline.render: its progress follows the frames (and their samples) as the CLI's bar does.
        result = pipeline.render(str(blend), str(out), resolution=(W, H), scale=2, samples=16, denoise=False,
                                 progress=lambda label, done, total: calls.append((label, done, total)))
    checks = gd.open(out)[result.sequence].attrs[fmt.CONTENT_CHECKS_KEY]
    assert checks["checked_frames"] == 2
    assert checks["frames"]["near_black"] == [0, 1] and checks["frames"]["inside_geometry"] == [0, 1]
    assert checks["frames"]["magenta"] == [] and checks["no_motion"] is True
    assert checks["measures"]["inside_fraction"] == [1.0, 1.0]
    logged = caplog.text
    assert "frame 0: near-black" in logged and "every one of 2 frames near-black" in logged
    assert "no motion at all" in logged
    assert "warning: every one of 2 frames near-black" in format_info(info(out))

    # Cycles' own sample progress: increasing counts of 16 within each render, then complete.
    samples = [(d, t) for label, d, t in calls if label == sample_label(result.sequence)]
    assert samples and all(t == 16 for _, t in samples)
    assert samples[-1] == (16, 16) and any(0 < d < 16 for d, _ in samples)
    assert (result.sequence, 2, 2) in calls

    # A resumed render has only measured its own frames (here frame 1): the others are read back
    # from the store (their camera probe cast again by ``probe``), and the record is the same.
    hr = gd.open(out)[result.sequence]["hr"]
    frame1 = {b: v[0] for b, v in hr.read_many(hr.buffers, t=slice(1, 2)).items()}
    probed = []
    again = cc.check_sequence(str(out), result.sequence, {1: cc.measure_frame(frame1, 1.0)},
                              probe=lambda t: probed.append(t) or 1.0)
    assert probed == [0] and again.to_attrs() == checks
    assert gd.open(out)[result.sequence].attrs[fmt.CONTENT_CHECKS_KEY] == checks
    # A rerun that renders nothing leaves the record as it is (and reads nothing back).
    assert cc.check_sequence(str(out), result.sequence, {}) is None
