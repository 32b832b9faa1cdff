"""Scene files other than .blend: glTF and FBX built here with bpy, rendered through the importers.

Each file holds a few primitives and no camera and no light, so gbuf adds its default
lights and (``--camera orbit``) an orbit camera; ``auto`` would give a flythrough
(tests/test_render_camera_paths.py). Checked: motion is the reprojection of depth with the stored
cameras (as in test_render_camera.py), the orbit path is recorded and a re-render of it
gives the same depth and motion; bad input fails in one line with nothing written.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("bpy")

import render_helpers as rh
from test_render_camera import TOLERANCE_PX, _smooth_surface, reprojected_motion

import gbuf.datasets as gd
from gbuf.errors import GbufError
from gbuf.render import render

pytestmark = pytest.mark.slow

SIZE = (96, 54)
SCALE = 2
OPTIONS = {"resolution": SIZE, "scale": SCALE, "samples": 4, "denoise": False, "quiet": True, "frames": (1, 3)}


def _primitives():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_plane_add(size=4.0)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 0.5))
    # Flat faces only: away from edges, the pixel filter then mixes neighbours on one plane.
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.2, 0.5, 0.4), rotation=(0.0, 0.0, 0.6))
    material = rh.emission_material("Tex", "noise", scale=2.0, strength=2.0)
    for obj in bpy.context.scene.objects:
        obj.data.materials.append(material)


def _export(tmp, kind):
    import bpy

    _primitives()
    path = tmp / f"prims.{kind}"
    if kind == "glb":
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")
    else:
        bpy.ops.export_scene.fbx(filepath=str(path))
    return path


def _fastest_seed(path) -> int:
    """The seed (of 16) whose orbit turns fastest: at 96 px wide, the most motion per frame."""
    from gbuf.fileio import file_sha256
    from gbuf.render.camera_paths import orbit_path

    sha = file_sha256(path)
    return max(range(16), key=lambda s: abs(orbit_path(sha, s, 0, (0, 0, 0), 1.0, 24.0).degrees_per_frame))


@pytest.fixture(scope="module", params=["glb", "fbx"])
def imported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"import_{request.param}")
    path = _export(tmp, request.param)
    seed = _fastest_seed(path)
    render(path, tmp / "a.zarr", seed=seed, camera="orbit", **OPTIONS)
    render(path, tmp / "b.zarr", seed=seed, camera="orbit", **OPTIONS)
    return path, gd.open(tmp / "a.zarr"), gd.open(tmp / "b.zarr")


def test_orbit_motion_is_reprojected_depth(imported):
    _, ds, _ = imported
    seq = ds[ds.sequences[0]]
    assert seq.attrs["camera_path"]["kind"] == "orbit"
    for group in ("hr", "lr"):
        res = seq[group]
        cam = res.read_camera()
        data = res.read_many(["depth", "motion"])
        for t in range(1, res.num_frames):
            depth = data["depth"][t, ..., 0].astype(np.float64)
            mask = _smooth_surface(depth)
            assert mask.sum() >= (30 if group == "hr" else 12), (group, t, int(mask.sum()))
            expected = reprojected_motion(depth, cam, t)
            if group == "hr":
                # The camera moved (an orbit keeps its centre still: motion is the parallax off it),
                # by more than the tolerance, so zero motion would fail below.
                assert np.abs(expected[mask]).max() > 2 * TOLERANCE_PX
            error = np.abs(data["motion"][t].astype(np.float64) - expected)[mask]
            assert error.max() <= TOLERANCE_PX, (group, t, float(error.max()))


def test_rerender_of_the_stored_path_is_identical(imported):
    _, a, b = imported
    sa, sb = a[a.sequences[0]], b[b.sequences[0]]
    assert sa.attrs["camera_path"] == sb.attrs["camera_path"]
    for group in ("hr", "lr"):
        ra, rb = sa[group].read_many(["depth", "motion"]), sb[group].read_many(["depth", "motion"])
        # Seen: an occasional silhouette pixel that hits the surface in one render and misses it
        # in the other (not yet explained; Embree's threaded BVH build is a suspect), so silhouettes
        # may differ on a few pixels; everything both renders see is identical.
        both = np.isfinite(ra["depth"][..., 0]) & np.isfinite(rb["depth"][..., 0])
        differ = np.isfinite(ra["depth"][..., 0]) != np.isfinite(rb["depth"][..., 0])
        assert differ.mean() <= 0.005, (group, int(differ.sum()))
        steady = np.stack([rh.erode(frame, 1) for frame in both])
        for name in ("depth", "motion"):
            np.testing.assert_array_equal(ra[name][steady], rb[name][steady])
        np.testing.assert_array_equal(sa[group].read_camera()["K"], sb[group].read_camera()["K"])


def test_orbit_path_is_a_function_of_file_seed_and_clip():
    from gbuf.render.camera_paths import orbit_path

    a = orbit_path("ab" * 32, 0, 0, (0, 0, 0), 1.0, 24.0)
    assert a == orbit_path("ab" * 32, 0, 0, (0, 0, 0), 1.0, 24.0)
    assert a != orbit_path("ab" * 32, 1, 0, (0, 0, 0), 1.0, 24.0)
    assert a != orbit_path("ab" * 32, 0, 1, (0, 0, 0), 1.0, 24.0)
    assert a != orbit_path("cd" * 32, 0, 0, (0, 0, 0), 1.0, 24.0)


def test_scene_without_lights_gets_the_default_and_a_warning(tmp_path, caplog):
    import bpy

    path = _export(tmp_path, "glb")
    with caplog.at_level(logging.WARNING):
        render(path, tmp_path / "out.zarr", **{**OPTIONS, "frames": (1, 1)})
    assert "no lights" in caplog.text and "no active camera" in caplog.text
    assert bpy.context.scene.world is not None
    assert any(obj.type == "LIGHT" for obj in bpy.context.scene.objects)


@pytest.mark.parametrize("content, suffix, message", [
    (b"not a gltf at all", ".glb", "cannot import"),
    (b"garbage\x00\x01", ".fbx", "cannot import"),
    (b"# an OBJ with nothing in it\n", ".obj", "no geometry"),
    (b"", ".3ds", "not a scene file"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    out = tmp_path / "out.zarr"
    with pytest.raises(GbufError, match=message) as err:
        render(path, out, **OPTIONS)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not out.exists()


def test_cli_bad_import_exits_2(tmp_path):
    from click.testing import CliRunner

    from gbuf.cli import main

    path = tmp_path / "bad.glb"
    path.write_bytes(b"nope")
    result = CliRunner().invoke(main, ["render", str(path), "-o", str(tmp_path / "o.zarr"), "--resolution", "64x36",
                                       "--scale", "2", "--quiet"])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "o.zarr").exists()
