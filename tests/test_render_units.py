"""The renderer's parts that need no render: EXR reading, options, jitter, animation extension."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gbuf.errors import GbufError
from gbuf.render import convert, exr, settings
from gbuf.render.blend import check_blend_file


def test_importing_gbuf_render_loads_neither_bpy_nor_torch():
    code = "import sys, gbuf.render, gbuf.cli.render; print('bpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_read_layers_groups_blender_style_channels(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    h, w = 5, 7
    rng = np.random.default_rng(0)
    rgba = rng.random((h, w, 4), dtype=np.float32)
    vec = {c: rng.random((h, w), dtype=np.float32) for c in "XYZW"}
    depth = rng.random((h, w), dtype=np.float32)
    # As Blender writes it: one part per pass, channels <view layer>.<pass>.<channel>.
    parts = [
        OpenEXR.Part({"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage},
                     {f"ViewLayer.Combined.{c}": rgba[..., i].copy() for i, c in enumerate("RGBA")},
                     name="ViewLayer.Combined"),
        OpenEXR.Part({"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage},
                     {f"ViewLayer.Vector.{c}": v for c, v in vec.items()}, name="ViewLayer.Vector"),
        OpenEXR.Part({"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage},
                     {"ViewLayer.Depth.Z": depth}, name="ViewLayer.Depth"),
        OpenEXR.Part({"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage},
                     {"Other.Depth.Z": depth + 1}, name="Other.Depth"),
    ]
    path = tmp_path / "layers.exr"
    with OpenEXR.File(parts) as f:
        f.write(str(path))
    layers = exr.read_layers(path, "ViewLayer")
    assert set(layers) == {"Combined", "Vector", "Depth"}
    np.testing.assert_array_equal(layers["Combined"], rgba)
    np.testing.assert_array_equal(layers["Vector"], np.stack([vec[c] for c in "XYZW"], -1))
    np.testing.assert_array_equal(layers["Depth"][..., 0], depth)
    with pytest.raises(GbufError, match="no pass of view layer 'Missing'"):
        exr.read_layers(path, "Missing")
    (tmp_path / "broken.exr").write_bytes(b"not an exr")
    with pytest.raises(GbufError, match="broken.exr: cannot read"):
        exr.read_layers(tmp_path / "broken.exr", "ViewLayer")


def test_conversion_follows_the_format_conventions():
    h, w = 2, 3
    vector = np.zeros((h, w, 4), np.float32)
    vector[0, 0] = (1.5, 2.0, -0.5, 0.25)
    depth = np.full((h, w, 1), 4.0, np.float32)
    depth[1, 2] = convert.BACKGROUND_DEPTH
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = 0.5                           # an edge pixel: averaged with the background
    normal[1, 2] = 0
    layers = {"Combined": np.ones((h, w, 4), np.float32), "Depth": depth, "Normal": normal, "Vector": vector,
              "Diffuse Color": np.full((h, w, 3), 0.25, np.float32),
              "Glossy Color": np.full((h, w, 3), 0.5, np.float32)}
    cameras = (_view_projection(0.0), _view_projection(0.02))
    out = convert.to_buffers(layers, ["image", "depth", "normal", "motion", "brdf"], cameras=cameras)
    assert out["motion"][0, 0].tolist() == [1.5, -2.0]           # (X, -Y): y down
    sky = convert.camera_background_motion(*cameras, w, h)[1, 2]   # background: the camera's motion
    assert sky[0] > 0.01 and np.allclose(out["motion"][1, 2], sky)
    assert out["motion"][0, 1].tolist() == [0.0, 0.0]            # a still surface stays still
    assert np.isinf(out["depth"][1, 2, 0]) and out["depth"][0, 0, 0] == 4.0
    assert np.allclose(out["normal"][0, 0], [0, 0, 1]) and not out["normal"][1, 2].any()
    assert np.allclose(out["brdf"], 0.75)
    with pytest.raises(GbufError, match="lacks the 'Emission' pass"):
        convert.to_buffers(layers, ["emission"])


def _view_projection(yaw):
    """A perspective camera at the origin looking down -Z, turned by ``yaw`` about its Y axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    f, n, far = 2.0, 0.1, 100.0
    proj = np.array([[f, 0, 0, 0], [0, f * 16 / 9, 0, 0],
                     [0, 0, (far + n) / (n - far), 2 * far * n / (n - far)], [0, 0, -1, 0]])
    return proj @ world_to_camera


def test_camera_background_motion_of_a_still_and_a_turning_camera():
    import math

    view_projection = _view_projection
    still = convert.camera_background_motion(view_projection(0.0), view_projection(0.0), 17, 9)
    assert not still.any()
    turned = convert.camera_background_motion(view_projection(0.0), view_projection(0.01), 17, 9)
    # The previous camera saw the centre ray tan(yaw) off its axis: f * tan(yaw) * width / 2 pixels right.
    assert turned[4, 8, 0] == pytest.approx(2.0 * math.tan(0.01) * 17 / 2, rel=1e-4)
    assert abs(turned[4, 8, 1]) < 1e-6
    mask = np.zeros((9, 17), bool)
    mask[2:5, 3:9] = True
    only = convert.camera_background_motion(view_projection(0.0), view_projection(0.01), 17, 9, only=mask)
    assert np.allclose(only, turned[mask])


def test_options_are_checked_before_blender_starts():
    good = settings.make_settings(resolution=(64, 32), scale=4, passes="depth, motion")
    assert good.buffers == ("image", "depth", "motion") and good.lr_size == (16, 8)
    for kwargs, message in [
        ({"resolution": (65, 32)}, "not divisible by the scale 4"),
        ({"scale": 0}, "scale 0"),
        ({"samples": 0}, "samples 0"),
        ({"lr_mode": "fancy"}, "lr mode 'fancy'"),
        ({"device": "gpu"}, "device 'gpu': unknown"),
        ({"passes": "image,image"}, "named twice"),
        ({"passes": ""}, "empty"),
    ]:
        with pytest.raises(GbufError, match=message):
            settings.make_settings(**kwargs)


def test_jitter_is_a_zero_centred_halton_cycle():
    jitter = np.array(settings.jitter_sequence(40))
    assert jitter.shape == (40, 2)
    assert np.all(np.abs(jitter) < 0.5)
    assert np.array_equal(jitter[:16], jitter[16:32])               # period 16
    assert len({tuple(j) for j in jitter[:16]}) == 16
    assert np.abs(jitter[:16].mean(0)).max() < 0.07                  # evenly spread around the centre
    assert jitter[0].tolist() == [0.0, 1 / 3 - 0.5]                   # Halton(2,3) point 1, centred


def test_blend_header_check(tmp_path):
    import gzip

    import zstandard

    plain = tmp_path / "plain.blend"
    plain.write_bytes(b"BLENDER-v279" + b"\0" * 20)
    packed = tmp_path / "packed.blend"
    packed.write_bytes(zstandard.ZstdCompressor().compress(b"BLENDER17-01v0500" + b"\0" * 20))
    old = tmp_path / "old.blend"
    old.write_bytes(gzip.compress(b"BLENDER_v249" + b"\0" * 20))
    for ok in (plain, packed, old):
        assert check_blend_file(ok) == ok
    fake = tmp_path / "fake.blend"
    fake.write_bytes(zstandard.ZstdCompressor().compress(b"PNG not a scene"))
    with pytest.raises(GbufError, match="fake.blend: not a .blend file"):
        check_blend_file(fake)
    with pytest.raises(GbufError, match="is a folder"):
        check_blend_file(tmp_path)


def test_extend_before_adds_a_tangent_key_and_keeps_authored_frames():
    pytest.importorskip("bpy")
    import bpy

    from gbuf.render.animation import action_fcurves, extend_before

    bpy.ops.wm.read_factory_settings(use_empty=True)
    objects = {}
    for name, keys, interpolation in [
        ("eased", {1: 0.0, 5: 2.0, 9: 1.0}, "BEZIER"),        # starts at rest: tangent 0
        ("linear", {1: 0.0, 5: 2.0}, "LINEAR"),              # starts moving at 0.5 per frame
        ("early", {-3: 5.0, 6: 1.0}, "LINEAR"),              # already keyed before frame 0
        ("late", {4: 1.0, 8: 3.0}, "LINEAR"),                # still until frame 4: left alone
    ]:
        obj = bpy.data.objects.new(name, None)
        bpy.context.scene.collection.objects.link(obj)
        for frame, value in keys.items():
            obj.location.x = value
            obj.keyframe_insert("location", index=0, frame=frame)
        for fc in action_fcurves(obj.animation_data.action):
            for key in fc.keyframe_points:
                key.interpolation = interpolation
            fc.update()
        objects[name] = next(iter(action_fcurves(obj.animation_data.action)))
    frames = np.arange(1.0, 12.0, 0.25)
    before = {n: [fc.evaluate(f) for f in frames] for n, fc in objects.items()}
    previous = {n: fc.evaluate(0.0) for n, fc in objects.items()}

    assert extend_before(1) == 2
    for name, fc in objects.items():
        assert np.allclose([fc.evaluate(f) for f in frames], before[name], atol=1e-6), name
    assert objects["eased"].evaluate(0.0) == pytest.approx(0.0, abs=1e-6)
    assert objects["linear"].evaluate(0.0) == pytest.approx(-0.5, abs=1e-6)
    assert objects["early"].evaluate(0.0) == pytest.approx(previous["early"])
    assert objects["late"].evaluate(0.0) == pytest.approx(previous["late"])
    assert extend_before(1) == 0                                       # idempotent
