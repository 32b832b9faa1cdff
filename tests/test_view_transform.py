"""Blender's view transforms as ``gbuf.render.view_transform`` applies them (real bpy, real PNGs).

The fact docs/format.md rests on: Blender's "Standard" view is the IEC sRGB curve gbuf's own
``srgb_encode`` applies (to within one 8-bit level); Filmic and AgX are not (they compress
highlights, so linear 1.0 is not white), which is why the view an image went through matters.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bpy", reason="needs the render extra (bpy)")

from gbuf.datasets import colour  # noqa: E402
from gbuf.errors import GbufError  # noqa: E402
from gbuf.render import view_transform  # noqa: E402


def _ramp() -> np.ndarray:
    # every sRGB level and beyond: 0 .. 4 linear, varied per channel and row
    values = np.linspace(0.0, 4.0, 64 * 96 * 3, dtype=np.float32) ** 2 / 4.0
    return values.reshape(64, 96, 3)[:, :, ::-1].copy()


def test_standard_is_the_srgb_curve_gbuf_encodes_with():
    linear = _ramp()
    blender = view_transform.ViewEncoder("Standard")(linear).astype(int)
    ours = colour.to_uint8(colour.srgb_encode(linear)).astype(int)
    assert blender.shape == ours.shape == (64, 96, 3)
    assert np.abs(blender - ours).max() <= 1
    assert (blender == ours).mean() > 0.95
    # rows are not flipped nor channels swapped: the first pixel is the darkest
    assert blender[0, 0].sum() < blender[-1, -1].sum()


@pytest.mark.parametrize("view", ["Filmic", "AgX"])
def test_filmic_and_agx_compress_highlights(view):
    linear = _ramp()
    standard = view_transform.ViewEncoder("Standard")(linear).astype(int)
    other = view_transform.ViewEncoder(view)(linear).astype(int)
    white = np.all(linear >= 1.0, axis=-1)
    assert np.all(standard[white] == 255)
    assert other[white].min() < 250  # 1.0 linear is not white under a filmic curve
    assert np.abs(other - standard).mean() > 5


def test_the_session_scene_set_up_for_a_render_does_not_matter():
    import bpy

    scene = bpy.context.scene
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "MULTI_LAYER_IMAGE"  # as a render's multilayer EXR output leaves it
    settings.file_format = "OPEN_EXR_MULTILAYER"
    scene.view_settings.view_transform = "Filmic"
    linear = _ramp()
    standard = view_transform.ViewEncoder("Standard")(linear).astype(int)
    assert np.abs(standard - colour.to_uint8(colour.srgb_encode(linear)).astype(int)).max() <= 1
    assert settings.file_format == "OPEN_EXR_MULTILAYER" and scene.view_settings.view_transform == "Filmic"


def test_an_unknown_view_is_one_line_naming_the_valid_ones():
    with pytest.raises(GbufError, match=r"view transform 'Nope': not in this Blender \(.*Standard.*\)"):
        view_transform.ViewEncoder("Nope")
