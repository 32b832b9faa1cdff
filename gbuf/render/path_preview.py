"""A picture of a sequence's camera path drawn on a top view of its scene (``gbuf dataset preview
--camera-path``).

The scene is opened again from the sequence's attrs, as the render opened it (``scene.file``,
imported through ``scenefiles`` when not a .blend, or ``scene.recipe`` built with its
``recipe_seed`` and ``recipe_frames``), at the sequence's first frame. A straight-down
orthographic camera renders it in a few Cycles samples as a plan: every material is replaced
by a flat, unlit shade (lighter the higher a surface and the more it faces up; no lights, no
shadows, so a few samples suffice), and whatever lies higher than the camera path by more than
``CUT_MARGIN`` of the view is cut away (the camera's near plane), so roofs and ceilings do not
hide a path inside a building; the faces seen through such a cut are the insides of solids,
drawn dark (``CUT_SHADE``), as on an architect's section. The camera centres come from the
stored camera data (``Resolution.read_camera()``: centre ``-R^T t`` of ``world_to_camera``, the
view direction the OpenCV +z axis ``R^T (0, 0, 1)``) and are projected with the top camera's own
``K`` and ``world_to_camera`` (the conventions of docs/format.md), then drawn with
``gbuf.datasets.preview.draw_camera_path``.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np

from gbuf import fileio
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

_log = logging.getLogger(__name__)

#: Geometry higher than the highest camera centre by more than this fraction of the view's
#: larger side is cut away.
CUT_MARGIN = 0.03
#: Margin around the camera path, as a fraction of the path's larger side (at least 2% of the scene's).
PATH_MARGIN = 0.25
#: The picture's aspect (width / height) is kept within these, growing the shorter side.
ASPECT_RANGE = (9 / 16, 16 / 9)
#: Grey levels (linear) of the plan: the lowest and the highest surfaces facing up, the share of
#: that a face turned sideways gets, and cut solids.
LOW_SHADE, HIGH_SHADE, SIDE_FACTOR, CUT_SHADE = 0.18, 0.7, 0.45, 0.03
#: Background (sRGB 0-255) where the top view sees no geometry.
BACKGROUND = (46, 52, 64)


@dataclasses.dataclass
class CameraPathPreview:
    """What ``write_camera_path`` drew."""

    path: Path
    sequence: str
    width: int
    height: int                         # the whole picture: the top view, then a caption strip below it
    view_height: int                    # rows of the top view (pixel coordinates are the view's)
    centres: np.ndarray                 # (T, 3) camera centres, Blender world axes
    pixels: np.ndarray                  # (T, 2) where they are drawn: continuous pixel coordinates
    view: tuple[float, float, float, float]   # world x0, y0, x1, y1 the picture shows
    cut_height: float | None            # world z above which geometry was cut away (None: nothing cut)


def camera_centres(world_to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) camera centres and (T, 3) view directions in world axes from (T, 4, 4) world_to_camera."""
    w2c = np.asarray(world_to_camera, dtype=np.float64)
    rotation, translation = w2c[:, :3, :3], w2c[:, :3, 3]
    centres = -np.einsum("tji,tj->ti", rotation, translation)
    return centres, rotation[:, 2, :]            # OpenCV +z (the view axis) in world axes


def view_rectangle(centres_xy: np.ndarray, scene_lo, scene_hi) -> tuple[float, float, float, float]:
    """World (x0, y0, x1, y1) to show: the path with a margin, the scene's part near it, aspect clamped."""
    lo, hi = centres_xy.min(axis=0), centres_xy.max(axis=0)
    scene_lo, scene_hi = np.asarray(scene_lo[:2], float), np.asarray(scene_hi[:2], float)
    scene_size = float(max((scene_hi - scene_lo).max(), 1e-3))
    margin = max(PATH_MARGIN * float((hi - lo).max()), 0.02 * scene_size, 1e-3)
    view_lo, view_hi = lo - margin, hi + margin
    # The scene near the path (no further than the path is long): an orbit shows all it circles,
    # a walk through a big level shows the rooms around it, not the whole level.
    reach = float((hi - lo).max()) + margin
    view_lo = np.minimum(view_lo, np.maximum(scene_lo, lo - reach))
    view_hi = np.maximum(view_hi, np.minimum(scene_hi, hi + reach))
    size = view_hi - view_lo
    aspect = size[0] / size[1]
    low, high = ASPECT_RANGE
    if aspect < low:
        grow = size[1] * low - size[0]
        view_lo[0], view_hi[0] = view_lo[0] - grow / 2, view_hi[0] + grow / 2
    elif aspect > high:
        grow = size[0] / high - size[1]
        view_lo[1], view_hi[1] = view_lo[1] - grow / 2, view_hi[1] + grow / 2
    return float(view_lo[0]), float(view_lo[1]), float(view_hi[0]), float(view_hi[1])


def project(points: np.ndarray, K: np.ndarray, world_to_camera: np.ndarray, orthographic: bool) -> np.ndarray:
    """(N, 2) continuous pixel coordinates of world points (N, 3) under one camera (docs/format.md)."""
    points = np.asarray(points, dtype=np.float64)
    cam = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    if orthographic:
        return np.c_[cam[:, :2], np.ones(len(cam))] @ K[:2].T
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:3]


def write_camera_path(dataset, out_png, *, sequence: str | None = None, width: int = 960, samples: int = 4,
                      every: int | None = None, allow_scripts: bool = False) -> CameraPathPreview:
    """Draw the camera path of ``sequence`` (default: the first) on a top view of its scene into ``out_png``.

    ``width``: the picture's width in pixels (its height follows the view's aspect);
    ``samples``: Cycles samples of the top view; ``every``: a view-direction tick every this
    many frames (default: about 12 along the path); ``allow_scripts``: as for ``gbuf render``.
    """
    from gbuf.datasets import preview

    out = Path(out_png)
    preview._atomic_target(out, (".png",))           # a bad path is refused before Blender starts
    if width < 16 or width > 8192:
        raise GbufError(f"{out}: picture width {width} must be 16 to 8192 pixels")
    ds, seq, res = preview._select(dataset, sequence, fmt.HR)
    cameras = res.read_camera()
    centres, views = camera_centres(cameras["world_to_camera"])
    frames = seq.attrs.get("frame_range") or [1, 1]
    from gbuf.render import blend as _blend

    with tempfile.TemporaryDirectory(prefix="gbuf-path-") as tmp, \
            _blend.native_output_to(Path(tmp) / "blender.log"):
        scene, where = _open_scene(seq, Path(tmp), allow_scripts)
        scene.frame_set(int(frames[0]))
        shot = _top_view(scene, where, centres, width, samples, Path(tmp))
    top_k, top_w2c = shot["K"], shot["world_to_camera"]
    pixels = project(centres, top_k, top_w2c, orthographic=True)
    ahead = project(centres + views, top_k, top_w2c, orthographic=True) - pixels
    picture = shot["picture"]
    every = every or max(1, len(centres) // 12)
    preview.draw_camera_path(picture, pixels, ahead, every=every, width=max(2.0, picture.shape[1] / 320))
    x0, y0, x1, y1 = shot["view"]
    lines = [f"{seq.name}: camera path over {len(centres)} frames, top view {x1 - x0:.3g} x {y1 - y0:.3g} "
             f"scene units",
             f"green: start, red: end, yellow: view direction every {every} frames"
             + (f"; cut above z = {shot['cut']:.3g}" if shot["cut"] is not None else "")]
    view_height = picture.shape[0]
    picture = preview.caption(picture, lines)
    preview.write_png(picture, out)
    return CameraPathPreview(path=out, sequence=seq.name, width=picture.shape[1], height=picture.shape[0],
                             view_height=view_height, centres=centres, pixels=pixels, view=shot["view"], cut_height=shot["cut"])


def _open_scene(seq, tmp: Path, allow_scripts: bool):
    """The sequence's scene, opened as ``gbuf render`` opened it; (scene, where)."""
    import bpy

    from gbuf.render import blend as _blend
    from gbuf.render import scenefiles

    scene_attrs = seq.attrs.get("scene")
    if not isinstance(scene_attrs, dict) or not (scene_attrs.get("file") or scene_attrs.get("recipe")):
        raise GbufError(f"{seq.where}: the sequence records no scene file or recipe (not rendered by "
                        f"`gbuf render`?); nothing to draw its camera path on")
    if scene_attrs.get("file"):
        path = Path(scene_attrs["file"])
        where = str(path)
        if not path.is_file():
            raise GbufError(f"{path}: the scene file of sequence {seq.name!r} is not there (moved or deleted)")
        recorded = scene_attrs.get("sha256")
        if recorded and fileio.file_sha256(path) != recorded:
            _log.warning("%s: the scene file changed since sequence %r was rendered; the top view shows it as it "
                         "is now", path, seq.name)
        if scenefiles.is_blend(path):
            return _blend.open_blend(path, allow_scripts=allow_scripts), where
        return scenefiles.import_scene(path), where
    from gbuf.render import recipes

    name = scene_attrs["recipe"]
    recipes.build(name, seed=int(scene_attrs.get("recipe_seed") or 0), frames=scene_attrs.get("recipe_frames"))
    return bpy.context.scene, f"recipe {name}"


def _plan_material(low: float, high: float):
    """The override material of the plan: unlit, lighter the higher and the more a face looks up,
    dark inside solids (back faces seen through the cut)."""
    import bpy

    mat = bpy.data.materials.new("gbuf_plan")
    nt = mat.node_tree
    nt.nodes.clear()

    def node(kind, **settings):
        n = nt.nodes.new(kind)
        for key, value in settings.items():
            setattr(n, key, value)
        return n

    def math_node(operation, a, b=None):
        n = node("ShaderNodeMath", operation=operation)
        for socket, value in zip(n.inputs, (a, b)):
            if value is None:
                continue
            if isinstance(value, (int, float)):
                socket.default_value = float(value)
            else:
                nt.links.new(value, socket)
        return n.outputs[0]

    geometry = node("ShaderNodeNewGeometry")
    xyz = node("ShaderNodeSeparateXYZ")
    nt.links.new(geometry.outputs["Position"], xyz.inputs[0])
    normal = node("ShaderNodeSeparateXYZ")
    nt.links.new(geometry.outputs["Normal"], normal.inputs[0])
    height = node("ShaderNodeMapRange", clamp=True)       # world z low..high -> LOW_SHADE..HIGH_SHADE
    nt.links.new(xyz.outputs["Z"], height.inputs["Value"])
    height.inputs["From Min"].default_value, height.inputs["From Max"].default_value = low, max(high, low + 1e-6)
    height.inputs["To Min"].default_value, height.inputs["To Max"].default_value = LOW_SHADE, HIGH_SHADE
    # Faces turned sideways get SIDE_FACTOR of the shade, faces looking up or down all of it.
    facing = math_node("MULTIPLY_ADD", math_node("ABSOLUTE", normal.outputs["Z"]), 1.0 - SIDE_FACTOR)
    facing.node.inputs[2].default_value = SIDE_FACTOR
    # No ambient occlusion or lights: shading by height and facing needs no more samples than the
    # edges do (an AO node cost 20x the render time here for little).
    shade = math_node("MULTIPLY", height.outputs["Result"], facing)
    cut = node("ShaderNodeMix", data_type="FLOAT")
    nt.links.new(geometry.outputs["Backfacing"], cut.inputs["Factor"])
    nt.links.new(shade, cut.inputs["A"])
    cut.inputs["B"].default_value = CUT_SHADE
    emission = node("ShaderNodeEmission")
    nt.links.new(cut.outputs["Result"], emission.inputs["Color"])
    output = node("ShaderNodeOutputMaterial")
    nt.links.new(emission.outputs[0], output.inputs["Surface"])
    return mat


def _top_view(scene, where: str, centres: np.ndarray, width: int, samples: int, tmp: Path) -> dict:
    """Render the plan of ``scene`` around ``centres``: the picture, the top camera's K and world_to_camera."""
    import bpy

    from gbuf.render import convert
    from gbuf.render.camera_paths import scene_box
    from gbuf.render.pipeline import camera_matrices, render_still

    box = scene_box(scene, where)
    x0, y0, x1, y1 = view_rectangle(centres[:, :2], box.lo, box.hi)
    height = max(1, int(round(width * (y1 - y0) / (x1 - x0))))
    y_mid = (y0 + y1) / 2.0
    y0, y1 = y_mid - (x1 - x0) * height / width / 2.0, y_mid + (x1 - x0) * height / width / 2.0
    size = max(x1 - x0, y1 - y0)
    top = max(box.hi[2], float(centres[:, 2].max())) + 0.1 * size + 1e-3
    bottom = min(box.lo[2], float(centres[:, 2].min())) - 0.1 * size
    cut = float(centres[:, 2].max()) + CUT_MARGIN * size
    cut = cut if cut < box.hi[2] else None

    data = bpy.data.cameras.new("gbuf_top")
    data.type = "ORTHO"
    data.sensor_fit = "HORIZONTAL"
    data.ortho_scale = x1 - x0
    data.clip_start = (top - cut) if cut is not None else 1e-3
    data.clip_end = top - bottom
    camera = bpy.data.objects.new("gbuf_top", data)
    scene.collection.objects.link(camera)
    camera.location = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, top)
    camera.rotation_euler = (0.0, 0.0, 0.0)             # looking down -Z, image up = +Y
    scene.camera = camera

    for obj in scene.objects:
        if obj.type == "LIGHT":
            obj.hide_render = True                      # unlit: the plan shades itself
    material = _plan_material(box.lo[2], cut if cut is not None else box.hi[2])
    bpy.context.view_layer.material_override = material
    scene.world = None
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.use_motion_blur = False
    render.use_compositing = False
    render.use_sequencer = False
    render.use_single_layer = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = max(1, int(samples))
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False                        # OIDN costs more here than 10x the samples
    cycles.max_bounces = 0                              # emission only: the camera ray is all
    cycles.seed = 0
    path = tmp / "top.png"
    render_still(scene, path, where=f"{where}: top view")

    from PIL import Image

    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    picture = rgba[..., :3] * 255.0 * alpha + np.asarray(BACKGROUND, np.float32) * (1.0 - alpha)
    projection, world = camera_matrices(scene, camera, width, height)
    return {"picture": np.clip(np.round(picture), 0, 255).astype(np.uint8),
            "K": convert.camera_intrinsics(projection, width, height), "world_to_camera": convert.world_to_camera(world),
            "view": (x0, y0, x1, y1), "cut": cut}
