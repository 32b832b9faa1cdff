"""`gbuf dataset preview --camera-path` (gbuf.render.path_preview): a tiny render of a camera moving
diagonally over a ground plane with one raised block, then its path drawn on the top view. The
drawing is checked where the stored camera centres must land (an independent map of the view's
world rectangle to pixels), and the top view against the block's known place."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gbuf.datasets import preview as pv
from gbuf.render import path_preview as pp

BLOCK = (2.0, -3.0)           # centre of the raised block's top (x, y), 1.5 high
START, END = (-4.0, -4.0, 3.0), (4.0, 4.0, 3.0)


def test_camera_centres_from_world_to_camera():
    # A camera at c looking along world +x (OpenCV: x right = world -y, y down = world -z).
    rotation = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    c = np.array([1.0, 2.0, 3.0])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, -rotation @ c
    centres, views = pp.camera_centres(w2c[None])
    assert np.allclose(centres[0], c) and np.allclose(views[0], (1.0, 0.0, 0.0))


def test_view_rectangle_keeps_the_path_and_a_sane_aspect():
    path = np.array([[0.0, 0.0], [10.0, 0.5]])
    x0, y0, x1, y1 = pp.view_rectangle(path, (-100.0, -100.0, 0.0), (100.0, 100.0, 5.0))
    assert x0 < 0 and x1 > 10 and y0 < 0 and y1 > 0.5
    assert pp.ASPECT_RANGE[0] - 1e-9 <= (x1 - x0) / (y1 - y0) <= pp.ASPECT_RANGE[1] + 1e-9
    assert x1 - x0 < 50          # a big level around a short path: the part near it, not all of it


def test_draw_camera_path_marks_start_end_and_ticks():
    picture = np.full((60, 80, 3), 100, np.uint8)
    points = np.array([[10.5, 50.5], [40.5, 30.5], [70.5, 10.5]])
    pv.draw_camera_path(picture, points, np.array([[1.0, 0.0]] * 3), every=1, width=2.0)
    assert tuple(picture[50, 10]) == pv.START_MARK and tuple(picture[10, 70]) == pv.END_MARK
    assert tuple(picture[30, 48]) == pv.VIEW_TICK           # the tick of frame 1 points right
    assert tuple(picture[0, 0]) == (100, 100, 100)          # nothing drawn far from the path


def _scene(path):
    import bpy
    import render_helpers as rh

    rh.new_scene((1, 3))
    rh.add_plane(12.0)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(BLOCK[0], BLOCK[1], 0.75), scale=(2.0, 2.0, 1.5))
    cam = rh.add_camera(START, (60.0, 0.0, -90.0))          # looking along world +x, 30 degrees down
    rh.key_linear(cam, "location", {1: START, 3: END})
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    bpy.context.scene.collection.objects.link(sun)
    return rh.save(path)


def test_camera_path_picture_of_a_real_render(tmp_path):
    pytest.importorskip("bpy")
    import gbuf.render as gr
    from PIL import Image

    blend = _scene(tmp_path / "diagonal.blend")
    out = tmp_path / "ds.zarr"
    gr.render(str(blend), str(out), resolution=(32, 18), scale=2, samples=1, denoise=False, camera="keep")
    png = tmp_path / "path.png"
    result = pp.write_camera_path(out, png, width=96, samples=1, every=1)
    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape == (result.height, result.width, 3) and result.width == 96
    assert result.view_height == 96 < result.height                  # a square view (12 x 12), a caption below

    # Where the stored camera centres must land: the view's world rectangle mapped onto the picture.
    assert np.allclose(result.centres, [START, (0.0, 0.0, 3.0), END], atol=1e-4)
    x0, y0, x1, y1 = result.view
    expected = np.c_[(result.centres[:, 0] - x0) / (x1 - x0) * 96, (y1 - result.centres[:, 1]) / (y1 - y0) * 96]
    assert np.allclose(result.pixels, expected, atol=0.05)
    (sx, sy), (mx, my), (ex, ey) = (np.floor(p).astype(int) for p in result.pixels)
    assert tuple(picture[sy, sx]) == pv.START_MARK and tuple(picture[ey, ex]) == pv.END_MARK
    middle = picture[my, mx].astype(int)
    assert middle.max() - middle.min() > 60, middle          # a path colour, not the grey plan
    # The view ticks point along +x (to the right), the way the camera looks.
    assert tuple(picture[sy, sx + 8]) == pv.VIEW_TICK

    # The top view lines up with that projection: the raised block is lighter than the ground.
    def at(x, y):
        return picture[int((y1 - y) / (y1 - y0) * 96), int((x - x0) / (x1 - x0) * 96)].astype(int)

    block, ground = at(*BLOCK), at(-3.0, 3.0)
    assert block.sum() > ground.sum() + 60 and abs(int(block[0]) - int(block[2])) < 8, (block, ground)
    assert math.isclose(x1 - x0, 12.0, rel_tol=0.02) and result.cut_height is None


def test_camera_path_needs_a_png(tmp_path):
    from gbuf.errors import GbufError

    with pytest.raises(GbufError, match="expected a .png"):
        pp.write_camera_path(tmp_path / "missing.zarr", tmp_path / "x.jpg")


def test_cli_camera_path_needs_one_png(tmp_path):
    from click.testing import CliRunner

    from gbuf.cli import main

    for extra in ([], ["-o", str(tmp_path / "p.png"), "--video", str(tmp_path / "v.mp4")]):
        result = CliRunner().invoke(main, ["dataset", "preview", str(tmp_path / "ds.zarr"), "--camera-path", *extra])
        assert result.exit_code == 2 and "--camera-path writes one picture" in result.output
    assert not list(tmp_path.iterdir())
