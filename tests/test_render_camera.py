"""Per-frame camera data (``Resolution.read_camera``), checked against real Cycles renders.

A static scene seen by a moving camera: unprojecting each surface pixel's depth with the
camera of frame t and projecting it with the camera of frame t-1 must give the stored
motion, at HR and at LR; K must match the analytic lens; a bright marker at a known world
point must show where the stored camera projects it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("bpy")

import render_helpers as rh

import gbuf.datasets as gd
from gbuf.errors import GbufError
from gbuf.render import render

pytestmark = pytest.mark.slow

HR_SIZE = (128, 72)
SCALE = 4
TOLERANCE_PX = 0.05
SHIFT = (0.05, -0.03)          # lens shift, in units of the image's larger side
MARKER = np.array([0.4, 0.9, 0.02])   # world centre of the bright marker card
ORTHO_SCALE = 6.0


def _scene(tmp, *, ortho: bool):
    rh.new_scene((1, 3))
    cam = rh.add_camera((0.0, -6.0, 5.0), (45.0, 0.0, 0.0), ortho_scale=ORTHO_SCALE if ortho else None)
    cam.data.shift_x, cam.data.shift_y = SHIFT
    rh.add_plane(60.0, material=rh.emission_material("Ground", "noise", scale=1.2, strength=1.0))
    marker = rh.add_plane(0.3, location=tuple(MARKER), material=rh.emission_material("Marker", "grey", strength=60.0))
    marker.name = "Marker"
    # Truck, dolly and turn: every part of the extrinsics moves (orthographic: no zoom, see pipeline).
    rh.key_linear(cam, "location", {0: (0.0, -6.0, 5.0), 5: (1.0, -5.0, 5.0 if ortho else 4.5)})
    rh.key_linear(cam, "rotation_euler", {0: (math.radians(45.0), 0.0, 0.0),
                                          5: (math.radians(48.0), 0.0, math.radians(6.0))})
    blend = rh.save(tmp / ("ortho.blend" if ortho else "persp.blend"))
    render(blend, tmp / "out.zarr", resolution=HR_SIZE, scale=SCALE, samples=16, denoise=False, quiet=True)
    ds = gd.open(tmp / "out.zarr")
    return ds[ds.sequences[0]]


@pytest.fixture(scope="module")
def perspective(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("camera_persp"), ortho=False)


@pytest.fixture(scope="module")
def orthographic(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("camera_ortho"), ortho=True)


def _pixel_centres(height, width):
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return xs, ys


def reprojected_motion(depth, cam, t, orthographic=False):
    """gbuf motion (t -> t-1) of a static scene from depth and the stored cameras (OpenCV axes)."""
    height, width = depth.shape
    depth = np.where(np.isfinite(depth), depth, 0.0)   # background: no point to move (masked out)
    xs, ys = _pixel_centres(height, width)
    k_now = cam["K"][t]
    if orthographic:
        xy = np.stack([xs, ys], axis=-1) - k_now[:2, 2]
        cam_xy = xy @ np.linalg.inv(k_now[:2, :2]).T
        points = np.concatenate([cam_xy, depth[..., None], np.ones_like(depth[..., None])], axis=-1)
    else:
        rays = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(k_now).T
        points = np.concatenate([rays * depth[..., None], np.ones_like(depth[..., None])], axis=-1)
    world = points @ np.linalg.inv(cam["world_to_camera"][t]).T
    prev = (world @ cam["world_to_camera"][t - 1].T)[..., :3]
    if orthographic:
        px = np.concatenate([prev[..., :2], np.ones_like(prev[..., :1])], axis=-1) @ cam["K"][t - 1].T
    else:
        px = prev @ cam["K"][t - 1].T
        px = px / px[..., 2:3]
    return px[..., :2] - np.stack([xs, ys], axis=-1)


def _smooth_surface(depth):
    """Pixels on one smooth surface, 2 px away from any depth edge (the pixel filter mixes neighbours).

    An edge is where depth bends: its second difference (about zero across a plane) is large.
    """
    finite = np.isfinite(depth)
    safe = np.where(finite, depth, 0.0)
    ok = finite.copy()
    bend_y = np.abs(safe[2:] - 2 * safe[1:-1] + safe[:-2]) > 0.01 * np.abs(safe[1:-1])
    bend_x = np.abs(safe[:, 2:] - 2 * safe[:, 1:-1] + safe[:, :-2]) > 0.01 * np.abs(safe[:, 1:-1])
    ok[1:-1] &= ~bend_y
    ok[:, 1:-1] &= ~bend_x
    return rh.erode(ok, 2)


def _check_reprojection(seq, orthographic):
    for group in ("hr", "lr"):
        res = seq[group]
        cam = res.read_camera()
        data = res.read_many(["depth", "motion"])
        assert cam["orthographic"].all() == orthographic and not cam["cut"].any()
        for t in range(1, res.num_frames):
            depth = data["depth"][t, ..., 0].astype(np.float64)
            mask = _smooth_surface(depth)
            assert mask.mean() > 0.5, (group, t, mask.mean())
            expected = reprojected_motion(depth, cam, t, orthographic)
            error = np.abs(data["motion"][t].astype(np.float64) - expected)[mask]
            assert np.abs(expected[mask]).max() > 1.0 / (SCALE if group == "lr" else 1)  # the camera did move
            assert error.max() <= TOLERANCE_PX, (group, t, float(error.max()))


def test_motion_is_reprojected_depth_perspective(perspective):
    _check_reprojection(perspective, orthographic=False)


def test_motion_is_reprojected_depth_orthographic(orthographic):
    _check_reprojection(orthographic, orthographic=True)


@pytest.mark.parametrize("group", ["hr", "lr"])
def test_intrinsics_match_the_lens(perspective, orthographic, group):
    width, height = HR_SIZE if group == "hr" else (HR_SIZE[0] // SCALE, HR_SIZE[1] // SCALE)
    # Horizontal fit (landscape, AUTO); shift in units of the larger side moves the view, so the
    # optical axis lands the other way in x, and (y down) the same way in y.
    centre = (width / 2 - SHIFT[0] * width, height / 2 + SHIFT[1] * width)
    focal = rh.focal_pixels(width)
    k = perspective[group].read_camera()["K"]
    expected = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]])
    np.testing.assert_allclose(k, np.broadcast_to(expected, k.shape), atol=1e-6)
    k = orthographic[group].read_camera()["K"]
    pixels_per_unit = width / ORTHO_SCALE
    expected = np.array([[pixels_per_unit, 0, centre[0]], [0, pixels_per_unit, centre[1]], [0, 0, 1]])
    np.testing.assert_allclose(k, np.broadcast_to(expected, k.shape), atol=1e-6)
    cam = perspective[group].read_camera()
    np.testing.assert_allclose(cam["jitter"], 0.0)
    np.testing.assert_allclose(cam["near"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(cam["exposure"], 1.0)


def test_projected_world_point_lands_on_the_marker(perspective):
    res = perspective["hr"]
    cam = res.read_camera()
    image = res.read("image")[..., 0].astype(np.float64)
    for t in range(res.num_frames):
        weight = np.clip(image[t] - 5.0, 0.0, None)
        assert weight.sum() > 0
        xs, ys = _pixel_centres(*weight.shape)
        seen = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        point = cam["world_to_camera"][t] @ np.append(MARKER, 1.0)
        projected = cam["K"][t] @ point[:3]
        assert point[2] > 0   # in front of an OpenCV camera: +z
        np.testing.assert_allclose(projected[:2] / projected[2], seen, atol=0.3)


def test_store_without_camera_data_says_so(tmp_path):
    from gbuf.datasets import SequenceWriter

    with SequenceWriter(tmp_path / "old.zarr", "seq", num_frames=1,
                        resolutions={"hr": (8, 8, ["image"])}) as writer:
        writer.append({"hr": {"image": np.zeros((8, 8, 3), np.float32)}})
    res = gd.open(tmp_path / "old.zarr")["seq"]["hr"]
    with pytest.raises(GbufError, match="no camera data") as err:
        res.read_camera()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fit, aspect", [("VERTICAL", (1.0, 1.0)), ("HORIZONTAL", (1.0, 1.0)),
                                         ("VERTICAL", (2.0, 1.0)), ("AUTO", (1.0, 2.0))])
def test_intrinsics_follow_sensor_fit_and_pixel_aspect(fit, aspect):
    """K from Blender's projection against the analytic pinhole (no render needed)."""
    from gbuf.render import convert
    from gbuf.render.pipeline import camera_matrices

    scene = rh.new_scene((1, 1))
    cam = rh.add_camera((0.0, 0.0, 5.0))
    cam.data.sensor_fit, cam.data.sensor_height = fit, 20.0
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = aspect
    width, height = 120, 90
    k = convert.camera_intrinsics(camera_matrices(scene, cam, width, height)[0], width, height)
    # Pixel aspect: a pixel is aspect_x / aspect_y times as wide as it is tall.
    ratio = aspect[0] / aspect[1]
    if fit == "VERTICAL":
        fy = rh.LENS / 20.0 * height
        fx = fy / ratio
    elif fit == "HORIZONTAL" or width * aspect[0] >= height * aspect[1]:
        fx = rh.LENS / rh.SENSOR * width
        fy = fx * ratio
    else:
        fy = rh.LENS / rh.SENSOR * height
        fx = fy / ratio
    np.testing.assert_allclose(k, [[fx, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], rtol=1e-6, atol=1e-6)
