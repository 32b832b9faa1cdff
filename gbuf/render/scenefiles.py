"""Scene files other than .blend (glTF, FBX, OBJ, USD), brought in through Blender's own importers.

An imported file is loaded into an empty scene; nothing it carries runs (these formats
hold no Python). What a render needs and the file may lack is added, with a warning:
lights (a sun and a sky, ``DEFAULT_LIGHTS``) and a camera (``--camera``: the generated
paths live in ``gbuf.render.camera_paths``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from gbuf.errors import GbufError, error_line

_log = logging.getLogger(__name__)

#: Suffix -> (what it is, the bpy operator that imports it: module, name).
IMPORTERS = {
    ".gltf": ("glTF", ("import_scene", "gltf")),
    ".glb": ("glTF binary", ("import_scene", "gltf")),
    ".fbx": ("FBX", ("import_scene", "fbx")),
    ".obj": ("OBJ", ("wm", "obj_import")),
    ".usd": ("USD", ("wm", "usd_import")),
    ".usda": ("USD", ("wm", "usd_import")),
    ".usdc": ("USD", ("wm", "usd_import")),
    ".usdz": ("USD", ("wm", "usd_import")),
}
SCENE_SUFFIXES = (".blend", *IMPORTERS)

#: Camera modes (``gbuf.render.camera_paths``, docs/rendering.md "Camera modes"): ``keep`` the
#: scene's own camera; ``flythrough``, ``walk``, ``orbit`` generated paths; ``auto``: keep where
#: the scene's camera is animated (or a .blend or recipe has a camera), else flythrough.
CAMERA_MODES = ("auto", "keep", "flythrough", "walk", "orbit")

#: What a scene without lights gets.
DEFAULT_LIGHTS = ("a sun (strength 3, 45 degrees up, from the south-west) and a multiple-scattering "
                  "sky texture world (strength 1)")

#: Object types that count as geometry Cycles can see.
GEOMETRY = {"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD", "VOLUME"}


def is_blend(path) -> bool:
    return Path(path).suffix.lower() == ".blend"


def check_scene_file(path) -> Path:
    """A readable scene file of a known kind (.blend checked by its header), or a one-line GbufError."""
    from gbuf.render import blend as _blend

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".blend" or suffix not in IMPORTERS:
        if suffix not in SCENE_SUFFIXES and p.is_file():
            raise GbufError(f"{p}: not a scene file gbuf can read (known: {', '.join(SCENE_SUFFIXES)})")
        return _blend.check_blend_file(p)
    if not p.exists():
        raise GbufError(f"{p}: no such file")
    if not p.is_file():
        raise GbufError(f"{p}: is a folder, not a {IMPORTERS[suffix][0]} file")
    return p


def import_scene(path) -> object:
    """Load ``path`` (not a .blend) into an empty bpy session; returns the scene. Bad input: GbufError."""
    import bpy

    p = check_scene_file(path)
    kind, (module, name) = IMPORTERS[p.suffix.lower()]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    operator = getattr(getattr(bpy.ops, module), name, None)
    try:
        if operator is None:
            raise AttributeError(name)
        operator.get_rna_type()
    except (AttributeError, KeyError, RuntimeError):
        raise GbufError(f"{p}: this Blender has no {kind} importer (bpy.ops.{module}.{name})") from None
    try:
        result = operator(filepath=str(p.resolve()))
    except RuntimeError as err:
        raise GbufError(f"{p}: Blender cannot import it as {kind} ({error_line(err, last=True)})") from None
    if "FINISHED" not in result:
        raise GbufError(f"{p}: Blender cannot import it as {kind} (the importer returned {sorted(result)})")
    scene = bpy.context.scene
    if not any(obj.type in GEOMETRY for obj in scene.objects):
        raise GbufError(f"{p}: the scene has no geometry (no mesh, curve or other renderable object)")
    if scene.camera is None:
        cameras = [obj for obj in scene.objects if obj.type == "CAMERA"]
        if cameras:
            scene.camera = cameras[0]
    return scene


def ensure_lights(scene, where: str) -> bool:
    """Add ``DEFAULT_LIGHTS`` to a scene with no light and no world; True when it did."""
    import bpy

    if any(obj.type == "LIGHT" for obj in scene.objects) or scene.world is not None:
        return False
    _log.warning("%s: no lights in the scene; adding %s", where, DEFAULT_LIGHTS)
    sun = bpy.data.lights.new("gbuf_sun", type="SUN")
    sun.energy = 3.0
    sun_obj = bpy.data.objects.new("gbuf_sun", sun)
    sun_obj.rotation_euler = (math.radians(45.0), 0.0, math.radians(-135.0))
    scene.collection.objects.link(sun_obj)
    world = bpy.data.worlds.new("gbuf_sky")
    nt = world.node_tree
    nt.nodes.clear()
    sky = nt.nodes.new("ShaderNodeTexSky")
    sky.sky_type = "MULTIPLE_SCATTERING"
    background = nt.nodes.new("ShaderNodeBackground")
    background.inputs["Strength"].default_value = 1.0
    output = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(sky.outputs["Color"], background.inputs["Color"])
    nt.links.new(background.outputs["Background"], output.inputs["Surface"])
    scene.world = world
    return True
