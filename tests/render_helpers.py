"""Small analytic Blender scenes for the render tests, and the camera maths to check them.

Scenes are built with bpy in the test process and saved as .blend files, which the
tests then render through ``gbuf.render.render`` (or the real CLI). The camera
model below is written from first principles (pinhole, horizontal sensor fit), not
taken from Blender, so the tests compare Blender against independent maths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

LENS = 50.0          # mm, Blender's default
SENSOR = 36.0        # mm, Blender's default sensor width (fit: horizontal for landscape images)


def new_scene(frames: tuple[int, int]):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.frame_start, scene.frame_end = frames
    scene.render.fps = 24
    return scene


def add_camera(location, rotation_deg=(0.0, 0.0, 0.0), *, ortho_scale: float | None = None):
    import bpy

    data = bpy.data.cameras.new("Camera")
    data.lens = LENS
    data.sensor_width = SENSOR
    data.sensor_fit = "AUTO"
    if ortho_scale is not None:
        data.type = "ORTHO"
        data.ortho_scale = ortho_scale
    cam = bpy.data.objects.new("Camera", data)
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    cam.location = location
    cam.rotation_euler = tuple(math.radians(a) for a in rotation_deg)
    return cam


def add_plane(size: float, location=(0.0, 0.0, 0.0), rotation_deg=(0.0, 0.0, 0.0), material=None):
    import bpy

    bpy.ops.mesh.primitive_plane_add(size=size, location=location,
                                     rotation=tuple(math.radians(a) for a in rotation_deg))
    obj = bpy.context.object
    if material is not None:
        obj.data.materials.append(material)
    return obj


def emission_material(name: str, kind: str = "noise", *, scale: float = 3.0, strength: float = 1.0):
    """An emission shader (no lighting noise): ``noise`` texture, ``object`` coordinates, or a grey."""
    import bpy

    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    nt.nodes.clear()
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    emit = nt.nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = strength
    nt.links.new(emit.outputs[0], out.inputs["Surface"])
    if kind == "object":
        coords = nt.nodes.new("ShaderNodeTexCoord")
        nt.links.new(coords.outputs["Object"], emit.inputs["Color"])
    elif kind == "noise":
        coords = nt.nodes.new("ShaderNodeTexCoord")
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = scale
        noise.inputs["Detail"].default_value = 4.0
        nt.links.new(coords.outputs["Object"], noise.inputs["Vector"])
        nt.links.new(noise.outputs["Color"], emit.inputs["Color"])
    else:
        emit.inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    return mat


def key_linear(obj, data_path: str, values: dict[int, tuple]) -> None:
    """Key ``data_path`` at the given frames with linear interpolation (extrapolation stays constant)."""
    for frame, value in values.items():
        setattr(obj, data_path, value)
        obj.keyframe_insert(data_path, frame=frame)
    from gbuf.render.animation import action_fcurves

    for fcurve in action_fcurves(obj.animation_data.action):
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"


def save(path: Path) -> Path:
    import bpy

    bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    return path


# ------------------------------------------------------------------------------- analytic camera


def focal_pixels(width: int) -> float:
    """Focal length in pixels for a horizontally fitted sensor."""
    return LENS / SENSOR * width


def euler_xyz(rotation_deg) -> np.ndarray:
    """Blender's XYZ Euler rotation matrix (applied X first, then Y, then Z)."""
    x, y, z = (math.radians(a) for a in rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pixel_rays(width: int, height: int) -> np.ndarray:
    """(H, W, 3) camera-space ray directions through pixel centres (camera looks down -Z, y up), z = -1."""
    k = focal_pixels(width)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return np.stack([(xs - width / 2) / k, -(ys - height / 2) / k, -np.ones_like(xs)], axis=-1)


def project(points_cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 2) pixel positions (x right, y down, pixel centres at +0.5) of camera-space points."""
    k = focal_pixels(width)
    depth = -points_cam[..., 2]
    x = width / 2 + points_cam[..., 0] / depth * k
    y = height / 2 - points_cam[..., 1] / depth * k
    return np.stack([x, y], axis=-1)


def rotation_motion(width: int, height: int, rot_now, rot_prev) -> np.ndarray:
    """gbuf motion (t -> t-1) of every pixel for a camera that only rotates (depth-independent)."""
    rays = pixel_rays(width, height)
    world = rays @ euler_xyz(rot_now).T
    prev = world @ euler_xyz(rot_prev)          # R_prev^T applied to row vectors
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return project(prev, width, height) - np.stack([xs, ys], axis=-1)


def erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        shrunk = out.copy()
        shrunk[1:] &= out[:-1]
        shrunk[:-1] &= out[1:]
        shrunk[:, 1:] &= out[:, :-1]
        shrunk[:, :-1] &= out[:, 1:]
        out = shrunk
    return out

