"""Scene-linear colour -> 8-bit display colour through Blender's own view transforms (bpy's OCIO).

gbuf stores scene-linear images and encodes them with the "Standard" view (the IEC sRGB curve,
``gbuf.datasets.colour.srgb_encode``) wherever a display image is needed. Data made by Blender
for other tools went through the scene's view transform instead: RDG's PNGs were saved by Blender
3.6, whose default is Filmic (AgX is Blender 4's). ``ViewEncoder`` reproduces such a file: the
pixels go through ``Image.save_render`` with the scene's view settings (look None, exposure 0,
gamma 1, display sRGB, no dither), as an 8-bit PNG. ``benchmarks/view_transform.py`` uses it to
score the authors' weights on the same renders encoded each way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gbuf.errors import GbufError

#: The view transforms compared in docs/results.md (Blender 5.3 has more: ``names()``).
VIEWS = ("Standard", "Filmic", "AgX")


#: The scene whose view settings the encoders use (made on first use).
_SCENE = "gbuf-view-transform"


def names() -> list[str]:
    """The view transforms this Blender offers for the sRGB display."""
    import bpy

    scene = bpy.data.scenes.get(_SCENE) or bpy.data.scenes.new(_SCENE)
    scene.display_settings.display_device = "sRGB"
    try:
        scene.view_settings.view_transform = "?"  # the error message lists the valid names
    except TypeError as err:
        text = str(err)
        return [n.strip(" '\"()") for n in text[text.find("(") + 1:text.rfind(")")].split(",")]
    return []


class ViewEncoder:
    """``encoder(linear)``: (H, W, 3) scene-linear Rec.709 -> (H, W, 3) uint8 through ``view``."""

    def __init__(self, view: str):
        import bpy

        self._bpy = bpy
        # A scene of its own: the session's scene may be set up for a render (a multilayer EXR
        # output, whose media type admits no PNG; other view settings), and is left as it is.
        scene = bpy.data.scenes.get(_SCENE) or bpy.data.scenes.new(_SCENE)
        scene.display_settings.display_device = "sRGB"
        try:
            scene.view_settings.view_transform = view
        except TypeError:
            raise GbufError(f"view transform {view!r}: not in this Blender ({', '.join(names())})") from None
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        scene.render.dither_intensity = 0.0  # Blender dithers 8-bit saves by default; keep it exact
        settings = scene.render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5: the kind of output comes first
            settings.media_type = "IMAGE"
        settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "8"
        self.view, self._scene = view, scene
        self._folder = tempfile.TemporaryDirectory(prefix="gbuf-view-")

    def __call__(self, linear: np.ndarray) -> np.ndarray:
        from PIL import Image

        linear = np.asarray(linear, dtype=np.float32)
        if linear.ndim != 3 or linear.shape[-1] != 3:
            raise GbufError(f"view transform {self.view}: expected an (H, W, 3) image, got shape {linear.shape}")
        h, w, _ = linear.shape
        self._scene.view_settings.view_transform = self.view  # another encoder may share the scene
        image = self._bpy.data.images.new("gbuf-view", w, h, alpha=True, float_buffer=True)
        try:
            image.colorspace_settings.name = "Linear Rec.709"
            rgba = np.concatenate([linear, np.ones((h, w, 1), np.float32)], axis=-1)
            image.pixels.foreach_set(rgba[::-1].ravel())  # Blender's rows run bottom to top
            path = Path(self._folder.name) / "frame.png"
            image.save_render(str(path), scene=self._scene)
            with Image.open(path) as png:
                return np.asarray(png.convert("RGB")).copy()
        finally:
            self._bpy.data.images.remove(image)
