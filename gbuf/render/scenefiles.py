"""Scene files other than .blend (glTF, FBX, OBJ, USD), brought in through Blender's own importers.

An imported file is loaded into an empty scene; nothing it carries runs (these formats
hold no Python). What a render needs and the file may lack is added, with a warning:
lights (a sun and a sky, ``DEFAULT_LIGHTS``) and a camera (``orbit``, below).

The orbit camera circles the scene's bounding sphere at a fixed elevation. Its path is a
pure function of (the scene file's sha256, the seed, the clip index) (``orbit_path``), and
its parameters are recorded in the sequence attrs (``camera_path``), so rendering that path
again gives the same frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
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

#: Camera modes: ``keep`` the scene's own (animated) camera, ``orbit`` one around its bounds;
#: ``auto``: keep if the scene has an active camera, else orbit.
CAMERA_MODES = ("auto", "keep", "orbit")

#: What a scene without lights gets.
DEFAULT_LIGHTS = ("a sun (strength 3, 45 degrees up, from the south-west) and a multiple-scattering "
                  "sky texture world (strength 1)")

#: Object types that count as geometry Cycles can see.
_GEOMETRY = {"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD", "VOLUME"}


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
    if not any(obj.type in _GEOMETRY for obj in scene.objects):
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


# ------------------------------------------------------------------------------------ orbit camera


@dataclasses.dataclass(frozen=True)
class OrbitPath:
    """A camera circling ``centre`` at ``distance``, ``elevation_deg`` up, from ``azimuth0_deg``."""

    centre: tuple[float, float, float]
    distance: float
    elevation_deg: float
    azimuth0_deg: float
    degrees_per_frame: float
    lens_mm: float
    clip: int

    def to_attrs(self) -> dict:
        return {"kind": "orbit", **{k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in dataclasses.asdict(self).items()}}

    def pose(self, index: float):
        """(location, look-at quaternion) at sequence frame ``index`` (0 = first rendered frame)."""
        from mathutils import Vector

        azimuth = math.radians(self.azimuth0_deg + self.degrees_per_frame * index)
        elevation = math.radians(self.elevation_deg)
        centre = Vector(self.centre)
        offset = Vector((math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                         math.sin(elevation))) * self.distance
        location = centre + offset
        return location, (centre - location).to_track_quat("-Z", "Y")


#: Sensor width (mm) and focal length (mm) of the orbit camera: a 40 degree horizontal view.
ORBIT_SENSOR_MM = 36.0
ORBIT_LENS_MM = 36.0 / (2.0 * math.tan(math.radians(20.0)))


def scene_bounds(scene, where: str) -> tuple[tuple[float, float, float], float]:
    """(centre, radius) of the bounding sphere of the world-space bounding boxes of the geometry."""
    from mathutils import Vector

    corners = [obj.matrix_world @ Vector(c) for obj in scene.objects if obj.type in _GEOMETRY
               for c in obj.bound_box]
    if not corners:
        raise GbufError(f"{where}: the scene has no geometry to put an orbit camera around")
    lo = Vector((min(c.x for c in corners), min(c.y for c in corners), min(c.z for c in corners)))
    hi = Vector((max(c.x for c in corners), max(c.y for c in corners), max(c.z for c in corners)))
    centre = (lo + hi) / 2.0
    return tuple(centre), max((hi - lo).length / 2.0, 1e-3)


def orbit_path(sha256: str, seed: int, clip: int, centre, radius: float, fps: float) -> OrbitPath:
    """The orbit of clip ``clip``: a pure function of (file sha256, seed, clip index), the bounds and fps.

    Elevation 15-40 degrees, any start azimuth, 5-15 degrees per second either way round; the
    bounding sphere spans the image's width (flat scenes seen from above fill it less in height).
    """
    digest = hashlib.sha256(f"gbuf-orbit:{sha256}:{int(seed)}:{int(clip)}".encode()).digest()
    u = [int.from_bytes(digest[4 * i:4 * i + 4], "little") / 2**32 for i in range(4)]
    distance = radius / math.sin(math.radians(20.0))
    speed = 5.0 + 10.0 * u[2]                        # degrees per second
    direction = 1.0 if u[3] < 0.5 else -1.0
    return OrbitPath(centre=tuple(float(c) for c in centre), distance=float(distance),
                     elevation_deg=15.0 + 25.0 * u[0], azimuth0_deg=360.0 * u[1],
                     degrees_per_frame=direction * speed / float(fps), lens_mm=ORBIT_LENS_MM, clip=int(clip))


def add_orbit_camera(scene, path: OrbitPath, start: int, end: int):
    """A new active camera on ``path``, keyed at every frame from ``start - 1`` to ``end + 1``."""
    import bpy

    data = bpy.data.cameras.new("gbuf_orbit")
    data.lens = path.lens_mm
    data.sensor_width = ORBIT_SENSOR_MM
    data.sensor_fit = "HORIZONTAL"
    data.clip_start = max(path.distance * 1e-3, 1e-3)
    data.clip_end = path.distance * 10.0
    cam = bpy.data.objects.new("gbuf_orbit", data)
    scene.collection.objects.link(cam)
    cam.rotation_mode = "QUATERNION"
    previous = None
    # Keys at every integer frame (Cycles reads t-1 and t+1 for the Vector pass), linear, so
    # each rendered frame is exactly the path; quaternion signs kept continuous between keys.
    for frame in range(start - 1, end + 2):
        location, rotation = path.pose(frame - start)
        if previous is not None and previous.dot(rotation) < 0:
            rotation.negate()
        previous = rotation
        cam.location = location
        cam.rotation_quaternion = rotation
        cam.keyframe_insert("location", frame=frame)
        cam.keyframe_insert("rotation_quaternion", frame=frame)
    from gbuf.render.animation import action_fcurves

    for fcurve in action_fcurves(cam.animation_data.action):
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"
    scene.camera = cam
    return cam
