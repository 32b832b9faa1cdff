"""Shared bpy helpers for the recipes: scene set-up, meshes, node materials, lights, keyed motion.

Everything is built from code: meshes with ``bmesh`` (``MeshBuilder``) or from
numpy arrays (``ArrayMesh``, for thousands of parts), materials from procedural
shader nodes (noise, Voronoi, brick, checker, wave), text from Blender's built-in
font, skies and suns for a time of day, wind as keyed shape keys; no image files
and no downloads. Motion is keyed at every frame from one frame before the range to
one frame after it, with linear interpolation and extrapolation, so the motion
vectors of the first and last frames see real movement (Blender evaluates the
neighbouring frames to compute them, and a constant-extrapolated curve would
make the first frame's motion zero).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import random
from typing import Callable, Sequence

import bmesh
import bpy
import numpy as np
from bpy_extras import anim_utils
from mathutils import Euler, Matrix, Vector, noise

FPS = 24

Pose = dict[str, Sequence[float]]

_LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value


# --------------------------------------------------------------------------- scene


def setup_scene(frames: int, *, resolution: tuple[int, int] = (1920, 1080)) -> bpy.types.Scene:
    """Frame range 1..frames at 24 fps, Cycles, full HD, no motion blur (it zeroes Vector)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    scene = bpy.context.scene
    scene.frame_start = 1
    scene.frame_end = frames
    scene.frame_current = 1
    scene.render.fps = FPS
    scene.render.fps_base = 1.0
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.use_motion_blur = False
    return scene


def variant(**choices: str) -> None:
    """Record what the seed chose (``time_of_day="dusk"``, ``season="autumn"``) on the scene, for readers."""
    scene = bpy.context.scene
    for key, value in choices.items():
        scene[f"gbuf_{key}"] = value


def seconds(frame: float) -> float:
    return frame / FPS


def link(obj: bpy.types.Object) -> bpy.types.Object:
    bpy.context.scene.collection.objects.link(obj)
    return obj


# --------------------------------------------------------------------------- motion


def key_motion(obj: bpy.types.ID, frames: int, pose: Callable[[int], Pose]) -> None:
    """Key ``pose(frame)`` (property path -> values) at frames 0..frames+1, linear in between and beyond.

    ``pose`` is called once per frame in increasing order, so it may keep state
    (the camera uses this to keep its Euler angles continuous).
    """
    keyed = list(range(0, frames + 2))
    samples: dict[str, list[Sequence[float]]] = {}
    for frame in keyed:
        for path, value in pose(frame).items():
            samples.setdefault(path, []).append(tuple(value))

    anim = obj.animation_data or obj.animation_data_create()
    action = bpy.data.actions.new(f"{obj.name}Motion")
    slot = action.slots.new(id_type=obj.id_type, name=obj.name)
    anim.action = action
    anim.action_slot = slot
    channelbag = anim_utils.action_ensure_channelbag_for_slot(action, slot)
    for path, values in samples.items():
        for index in range(len(values[0])):
            curve = channelbag.fcurves.new(path, index=index)
            curve.keyframe_points.add(len(keyed))
            coords = [c for frame, value in zip(keyed, values) for c in (frame, value[index])]
            curve.keyframe_points.foreach_set("co", coords)
            # One call for every key (particles have thousands): the enum's number for LINEAR.
            curve.keyframe_points.foreach_set("interpolation", [_LINEAR] * len(keyed))
            curve.extrapolation = "LINEAR"
            curve.update()


def look_at(eye: Sequence[float], target: Sequence[float], previous: Euler | None = None) -> Euler:
    """Euler rotation pointing a camera (looking down -Z, up +Y) from ``eye`` at ``target``."""
    quat = (Vector(target) - Vector(eye)).to_track_quat("-Z", "Y")
    return quat.to_euler("XYZ", previous) if previous is not None else quat.to_euler("XYZ")


def add_camera(lens: float = 32.0, *, name: str = "Camera") -> bpy.types.Object:
    data = bpy.data.cameras.new(name)
    data.lens = lens
    data.sensor_width = 36.0
    data.clip_start = 0.05
    data.clip_end = 500.0
    cam = link(bpy.data.objects.new(name, data))
    bpy.context.scene.camera = cam
    return cam


def key_camera(cam: bpy.types.Object, frames: int,
               eye: Callable[[float], Sequence[float]],
               target: Callable[[float], Sequence[float]],
               roll: Callable[[float], float] | None = None) -> None:
    """Key a camera flying along ``eye(t)`` while looking at ``target(t)`` (t in seconds)."""
    state: dict[str, Euler | None] = {"previous": None}

    def pose(frame: int) -> Pose:
        t = seconds(frame)
        rotation = look_at(eye(t), target(t), state["previous"])
        if roll is not None:
            # Roll about the viewing axis, applied in the camera's own frame.
            rotation = (rotation.to_matrix() @ Matrix.Rotation(roll(t), 3, "Z")).to_euler(
                "XYZ", rotation)
        state["previous"] = rotation
        return {"location": tuple(eye(t)), "rotation_euler": tuple(rotation)}

    key_motion(cam, frames, pose)


# --------------------------------------------------------------------------- meshes


def _matrix(location=(0, 0, 0), rotation=(0, 0, 0), scale=(1, 1, 1)) -> Matrix:
    return (Matrix.Translation(Vector(location)) @ Euler(rotation).to_matrix().to_4x4()
            @ Matrix.Diagonal(Vector((*scale, 1.0))))


class MeshBuilder:
    """Accumulates primitive parts into one mesh; each part may pick a material slot."""

    def __init__(self) -> None:
        self.bm = bmesh.new()

    def _finish(self, verts, material: int, smooth: bool) -> list:
        vert_set = set(verts)
        faces = {f for v in verts for f in v.link_faces if all(u in vert_set for u in f.verts)}
        for face in faces:
            face.material_index = material
            face.smooth = smooth
        return list(verts)

    def cube(self, size=(1, 1, 1), location=(0, 0, 0), rotation=(0, 0, 0), *,
             material: int = 0) -> list:
        made = bmesh.ops.create_cube(self.bm, size=1.0, matrix=_matrix(location, rotation, size))
        return self._finish(made["verts"], material, False)

    def sphere(self, radius: float, location=(0, 0, 0), *, segments: int = 32, rings: int = 16,
               material: int = 0, smooth: bool = True) -> list:
        made = bmesh.ops.create_uvsphere(self.bm, u_segments=segments, v_segments=rings,
                                         radius=radius, matrix=_matrix(location))
        return self._finish(made["verts"], material, smooth)

    def ico(self, radius: float, location=(0, 0, 0), *, subdivisions: int = 3,
            material: int = 0, smooth: bool = True) -> list:
        made = bmesh.ops.create_icosphere(self.bm, subdivisions=subdivisions, radius=radius,
                                          matrix=_matrix(location))
        return self._finish(made["verts"], material, smooth)

    def cylinder(self, radius: float, depth: float, location=(0, 0, 0), rotation=(0, 0, 0), *,
                 radius_top: float | None = None, segments: int = 24, material: int = 0,
                 smooth: bool = True) -> list:
        made = bmesh.ops.create_cone(
            self.bm, cap_ends=True, segments=segments, radius1=radius,
            radius2=radius if radius_top is None else radius_top, depth=depth,
            matrix=_matrix(location, rotation))
        return self._finish(made["verts"], material, smooth)

    def grid(self, size=(1, 1), location=(0, 0, 0), rotation=(0, 0, 0), *, segments=(1, 1),
             material: int = 0) -> list:
        made = bmesh.ops.create_grid(self.bm, x_segments=segments[0], y_segments=segments[1],
                                     size=1.0, matrix=_matrix(location, rotation,
                                                              (size[0] / 2, size[1] / 2, 1)))
        return self._finish(made["verts"], material, False)

    def torus(self, major: float, minor: float, location=(0, 0, 0), rotation=(0, 0, 0), *,
              major_segments: int = 48, minor_segments: int = 16, material: int = 0,
              smooth: bool = True) -> list:
        m = _matrix(location, rotation)
        rings = []
        for i in range(major_segments):
            a = 2 * math.pi * i / major_segments
            ring = []
            for j in range(minor_segments):
                b = 2 * math.pi * j / minor_segments
                r = major + minor * math.cos(b)
                ring.append(self.bm.verts.new(m @ Vector((r * math.cos(a), r * math.sin(a),
                                                          minor * math.sin(b)))))
            rings.append(ring)
        for i in range(major_segments):
            a, b = rings[i], rings[(i + 1) % major_segments]
            for j in range(minor_segments):
                k = (j + 1) % minor_segments
                self.bm.faces.new((a[j], b[j], b[k], a[k]))
        return self._finish([v for ring in rings for v in ring], material, smooth)

    def object(self, name: str, materials: Sequence[bpy.types.Material] = (), *,
               location=(0, 0, 0), rotation=(0, 0, 0)) -> bpy.types.Object:
        bmesh.ops.recalc_face_normals(self.bm, faces=self.bm.faces[:])
        # Vertices, then edges and faces, in an order fixed by the geometry alone: bmesh ops that
        # weld (create_uvsphere's poles) rebuild faces in an order that changes from run to run
        # (pointer hashing), and Cycles' BVH and light sampling follow element order, so an
        # unsorted mesh rendered different noise from each build of the same recipe and seed.
        self.bm.verts.index_update()
        verts = sorted(self.bm.verts, key=lambda v: (*v.co, v.index))
        rank = {v: i for i, v in enumerate(verts)}
        self.bm.verts.sort(key=rank.__getitem__)
        self.bm.verts.index_update()
        for seq in (self.bm.faces, self.bm.edges):
            rank = {e: i for i, e in enumerate(sorted(seq, key=lambda e: sorted(v.index for v in e.verts)))}
            seq.sort(key=rank.__getitem__)   # bmesh's sort takes a number as key
        mesh = bpy.data.meshes.new(name)
        self.bm.to_mesh(mesh)
        self.bm.free()
        # An edge's two ends come out in either order too; smaller index first.
        ends = np.zeros(2 * len(mesh.edges), np.int32)
        mesh.edges.foreach_get("vertices", ends)
        mesh.edges.foreach_set("vertices", np.sort(ends.reshape(-1, 2), axis=1).ravel())
        for material in materials:
            mesh.materials.append(material)
        obj = link(bpy.data.objects.new(name, mesh))
        obj.location = location
        obj.rotation_euler = rotation
        return obj


def displace(verts: list, amplitude: float, scale: float, *, center=None, offset=(0, 0, 0),
             octaves: int = 4) -> None:
    """Push vertices by fractal noise (rocks, terrain): real geometry, not bump.

    Vertices move away from ``center`` (round things) or along +Z when it is None (terrain).
    """
    for v in verts:
        p = v.co * scale + Vector(offset)
        direction = Vector((0, 0, 1)) if center is None else (v.co - Vector(center)).normalized()
        v.co += direction * amplitude * noise.fractal(p, 0.7, 2.0, octaves)


def wireframe(builder: MeshBuilder, verts: list, thickness: float, *, material: int = 0) -> None:
    """Turn the faces made from ``verts`` into a lattice of struts."""
    vert_set = set(verts)
    faces = list({f for v in verts for f in v.link_faces if all(u in vert_set for u in f.verts)})
    made = bmesh.ops.wireframe(builder.bm, faces=faces, thickness=thickness, use_replace=True,
                               use_even_offset=True, use_relative_offset=False)
    for face in made["faces"]:
        face.material_index = material


# --------------------------------------------------------------------------- materials


class Shader:
    """A material's node tree with a terse way to add and wire nodes.

    ``node("TexNoise", {"Scale": 4, "Vector": coords})`` adds ``ShaderNodeTexNoise``; an input
    value that is a socket (or a ``(node, output name)`` pair) is linked, anything else is set.
    """

    def __init__(self, name: str, *, world: bpy.types.World | None = None) -> None:
        if world is not None:
            self.material = world
        else:
            self.material = bpy.data.materials.new(name)
        self.tree = self.material.node_tree
        self.tree.nodes.clear()
        self.output = self.tree.nodes.new(
            "ShaderNodeOutputWorld" if world is not None else "ShaderNodeOutputMaterial")

    @staticmethod
    def out(node: bpy.types.Node, name: str | None = None) -> bpy.types.NodeSocket:
        sockets = [s for s in node.outputs if s.enabled]
        if name is None:
            return sockets[0]
        for socket in sockets:
            if socket.identifier == name or socket.name == name:
                return socket
        raise KeyError(f"{node.bl_idname} has no output {name!r}")

    def node(self, kind: str, inputs: dict | None = None, **props) -> bpy.types.Node:
        node = self.tree.nodes.new(kind if kind.startswith("ShaderNode") else "ShaderNode" + kind)
        for key, value in props.items():
            setattr(node, key, value)
        for key, value in (inputs or {}).items():
            self.set(node, key, value)
        return node

    def set(self, node: bpy.types.Node, name: str, value) -> None:
        candidates = [s for s in node.inputs
                      if s.enabled and (s.identifier == name or s.name.lower() == name.lower())]
        if not candidates:
            raise KeyError(f"{node.bl_idname} has no input {name!r}")
        socket = candidates[0]
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bpy.types.Node):
            value = self.out(*value)
        if isinstance(value, bpy.types.Node):
            value = self.out(value)
        if isinstance(value, bpy.types.NodeSocket):
            self.tree.links.new(value, socket)
        elif isinstance(value, Sequence) and len(value) == 3 and len(socket.default_value) == 4:
            socket.default_value = (*value, 1.0)
        else:
            socket.default_value = value

    def coords(self, kind: str = "Object", *, scale=1.0, offset=(0, 0, 0), rotation=(0, 0, 0)):
        """Texture coordinates scaled and offset (the offset is where a seed moves a pattern)."""
        texcoord = self.node("TexCoord")
        scale = (scale,) * 3 if isinstance(scale, (int, float)) else scale
        return self.out(self.node("Mapping", {"Vector": self.out(texcoord, kind), "Location": offset,
                                               "Rotation": rotation, "Scale": scale}))

    def wall_coords(self, *, scale=1.0, offset=(0, 0, 0)):
        """(x + y, z) of object space: a 2D pattern (bricks) wraps upright around box walls."""
        xyz = self.node("SeparateXYZ", {"Vector": self.out(self.node("TexCoord"), "Object")})
        u = self.math("ADD", self.out(xyz, "X"), self.out(xyz, "Y"))
        uv = self.node("CombineXYZ", {"X": u, "Y": self.out(xyz, "Z"), "Z": 0.0})
        scale = (scale,) * 3 if isinstance(scale, (int, float)) else scale
        return self.out(self.node("Mapping", {"Vector": uv, "Location": offset, "Scale": scale}))

    def ramp(self, factor, stops: Sequence[tuple[float, Sequence[float]]]) -> bpy.types.NodeSocket:
        """Colour ramp through ``(position, rgb)`` stops."""
        node = self.node("ValToRGB", {"Factor": factor})
        elements = node.color_ramp.elements
        while len(elements) < len(stops):
            elements.new(0.5)
        for element, (position, rgb) in zip(elements, stops):
            element.position = position
            element.color = (*rgb, 1.0)
        return self.out(node, "Color")

    def math(self, op: str, a, b=None) -> bpy.types.NodeSocket:
        inputs = {"Value": a} if b is None else {"Value": a, "Value_001": b}
        return self.out(self.node("Math", inputs, operation=op))

    def mix(self, factor, a, b, blend: str = "MIX") -> bpy.types.NodeSocket:
        node = self.node("Mix", data_type="RGBA", blend_type=blend)
        self.set(node, "Factor_Float", factor)
        self.set(node, "A_Color", a)
        self.set(node, "B_Color", b)
        return self.out(node, "Result_Color")

    def bump(self, height, strength: float = 0.5, distance: float = 0.02) -> bpy.types.NodeSocket:
        return self.out(self.node("Bump", {"Height": height, "Strength": strength,
                                           "Distance": distance}))

    def principled(self, inputs: dict) -> bpy.types.Material:
        bsdf = self.node("BsdfPrincipled", inputs)
        self.tree.links.new(self.out(bsdf), self.output.inputs["Surface"])
        return self.material

    def emission(self, color, strength) -> bpy.types.Material:
        node = self.node("Emission", {"Color": color, "Strength": strength})
        self.tree.links.new(self.out(node), self.output.inputs["Surface"])
        return self.material


def plain(name: str, color, *, roughness: float = 0.5, metallic: float = 0.0,
          **extra) -> bpy.types.Material:
    inputs = {"Base Color": color, "Roughness": roughness, "Metallic": metallic}
    inputs.update({k.replace("_", " "): v for k, v in extra.items()})
    return Shader(name).principled(inputs)


def mirror(name: str = "Mirror", color=(0.95, 0.95, 0.95), roughness: float = 0.0) -> bpy.types.Material:
    return plain(name, color, roughness=roughness, metallic=1.0)


def glow(name: str, color, strength: float, *, lights_scene: bool = True) -> bpy.types.Material:
    """An emissive material; ``lights_scene=False`` for many small emitters (sparks, rain, screens).

    Cycles samples every emissive triangle as a light unless told not to: hundreds of
    moving sparks would rebuild its light tree each frame and add noise for light they
    hardly give (a recipe adds one lamp for them instead).
    """
    material = Shader(name).emission(color, strength)
    if not lights_scene:
        material.cycles.emission_sampling = "NONE"
    return material


def random_offset(rng: random.Random, extent: float = 100.0) -> tuple[float, float, float]:
    return (rng.uniform(-extent, extent), rng.uniform(-extent, extent), rng.uniform(-extent, extent))


# --------------------------------------------------------------------------- world and lights


def sky(zenith, horizon, ground, *, strength: float = 1.0) -> bpy.types.World:
    """A gradient sky (ground below the horizon): something for mirrors to reflect."""
    world = bpy.data.worlds.new("Sky")
    bpy.context.scene.world = world
    s = Shader("Sky", world=world)
    direction = s.out(s.node("TexCoord"), "Generated")
    z = s.out(s.node("SeparateXYZ", {"Vector": direction}), "Z")
    factor = s.out(s.node("MapRange", {"Value": z, "From Min": -0.05, "From Max": 0.6}), "Result")
    color = s.ramp(factor, [(0.0, ground), (0.08, horizon), (1.0, zenith)])
    background = s.node("Background", {"Color": color, "Strength": strength})
    s.tree.links.new(s.out(background), s.output.inputs["Surface"])
    # A smooth gradient needs only a coarse importance map; Cycles' automatic size took
    # seconds to build on every render call, more than the frames themselves at test sizes.
    world.cycles.sampling_method = "MANUAL"
    world.cycles.sample_map_resolution = 128
    return world


def sun(elevation_deg: float, azimuth_deg: float, *, strength: float = 3.0,
        angle_deg: float = 2.0, color=(1.0, 0.95, 0.88)) -> bpy.types.Object:
    data = bpy.data.lights.new("Sun", "SUN")
    data.energy = strength
    data.angle = math.radians(angle_deg)
    data.color = color
    obj = link(bpy.data.objects.new("Sun", data))
    # A sun shines down its local -Z: tilt it from the zenith, then turn it about Z.
    obj.rotation_euler = Euler((math.radians(90 - elevation_deg), 0, math.radians(azimuth_deg)))
    return obj


def area(location, target, *, size: float = 2.0, energy: float = 500.0,
         color=(1.0, 1.0, 1.0), name: str = "Area") -> bpy.types.Object:
    data = bpy.data.lights.new(name, "AREA")
    data.size = size
    data.energy = energy
    data.color = color
    obj = link(bpy.data.objects.new(name, data))
    obj.location = location
    obj.rotation_euler = look_at(location, target)
    return obj


def point(location, *, energy: float = 100.0, radius: float = 0.1, color=(1.0, 1.0, 1.0),
          name: str = "Point") -> bpy.types.Object:
    data = bpy.data.lights.new(name, "POINT")
    data.energy = energy
    data.shadow_soft_size = radius
    data.color = color
    obj = link(bpy.data.objects.new(name, data))
    obj.location = location
    return obj


def time_of_day(rng: random.Random, choices: Sequence[str] = ("morning", "noon", "afternoon", "evening"),
                *, azimuth: float | None = None, strength: float = 1.0) -> "Daylight":
    """Pick one of ``choices`` (see ``TIMES``) and make its sky and sun; returns what was made.

    Night and dusk have no sun worth the name (a faint moon): the recipe's own lamps,
    windows and signs must carry the scene, and ``Daylight.lamps`` says how strongly.
    """
    name = rng.choice(list(choices))
    spec = TIMES[name]
    elevation = rng.uniform(*spec["elevation"])
    azimuth = rng.uniform(0, 360) if azimuth is None else azimuth
    sky(spec["zenith"], spec["horizon"], spec["ground"], strength=spec["sky"] * strength)
    light = sun(elevation, azimuth, strength=spec["sun"] * strength, color=spec["color"],
                angle_deg=spec.get("angle", 1.5))
    variant(time_of_day=name)
    return Daylight(name, elevation, azimuth, light, spec["lamps"])


@dataclasses.dataclass
class Daylight:
    name: str                 # a key of TIMES
    elevation: float          # sun (or moon) elevation, degrees
    azimuth: float
    sun: bpy.types.Object
    lamps: float              # 0 by day .. 1 at night: how much artificial lights should give


#: Sky colours, sun elevation (degrees), strength and colour for each time of day.
TIMES: dict[str, dict] = {
    "morning": {"elevation": (12, 25), "sun": 3.0, "color": (1.0, 0.86, 0.7), "sky": 0.9,
                "zenith": (0.22, 0.38, 0.7), "horizon": (0.85, 0.76, 0.66), "ground": (0.2, 0.18, 0.16),
                "lamps": 0.0},
    "noon": {"elevation": (50, 72), "sun": 4.0, "color": (1.0, 0.97, 0.92), "sky": 1.0,
             "zenith": (0.12, 0.3, 0.75), "horizon": (0.65, 0.74, 0.85), "ground": (0.22, 0.2, 0.18),
             "lamps": 0.0},
    "afternoon": {"elevation": (30, 45), "sun": 3.6, "color": (1.0, 0.92, 0.8), "sky": 1.0,
                  "zenith": (0.15, 0.32, 0.72), "horizon": (0.72, 0.74, 0.78), "ground": (0.22, 0.2, 0.18),
                  "lamps": 0.0},
    "evening": {"elevation": (4, 10), "sun": 2.8, "color": (1.0, 0.58, 0.32), "sky": 0.8,
                "zenith": (0.14, 0.18, 0.42), "horizon": (0.95, 0.52, 0.28), "ground": (0.12, 0.1, 0.09),
                "lamps": 0.3},
    "dusk": {"elevation": (2, 6), "sun": 0.25, "color": (0.9, 0.45, 0.35), "sky": 0.6,
             "zenith": (0.03, 0.05, 0.16), "horizon": (0.35, 0.2, 0.25), "ground": (0.03, 0.03, 0.03),
             "lamps": 0.8, "angle": 3.0},
    "night": {"elevation": (25, 50), "sun": 0.04, "color": (0.6, 0.7, 1.0), "sky": 1.0,
              "zenith": (0.003, 0.005, 0.014), "horizon": (0.015, 0.018, 0.03), "ground": (0.0, 0.0, 0.0),
              "lamps": 1.0, "angle": 0.5},
}


# --------------------------------------------------------------------------- variation


def vary_color(rng: random.Random, rgb: Sequence[float], *, hue: float = 0.03, saturation: float = 0.15,
               value: float = 0.2) -> tuple[float, float, float]:
    """``rgb`` moved a little in hue, saturation and value: the same material, another batch."""
    h, s, v = colorsys.rgb_to_hsv(*rgb[:3])
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = min(1.0, max(0.0, s * (1 + rng.uniform(-saturation, saturation))))
    v = min(1.0, max(0.0, v * (1 + rng.uniform(-value, value))))
    return colorsys.hsv_to_rgb(h, s, v)


def vary_scale(rng: random.Random, scale: float, spread: float = 0.3) -> float:
    """``scale`` times a log-uniform factor in [1 / (1 + spread), 1 + spread]: a texture's feature size."""
    return scale * math.exp(rng.uniform(-1, 1) * math.log1p(spread))


# --------------------------------------------------------------------------- array meshes


def _frames_around(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to each row of ``directions`` (N, 3) and to each other."""
    d = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    helper = np.where(np.abs(d[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(d, u)


def rotations(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """(N, 3, 3) rotation matrices: ``roll`` about X, then ``pitch`` about Y, then ``yaw`` about Z."""
    yaw, pitch, roll = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64))
                                             for a in (yaw, pitch, roll)))
    cz, sz, cy, sy, cx, sx = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                              np.cos(roll), np.sin(roll))
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


_BOX_CORNERS = np.array([[x, y, z] for z in (-0.5, 0.5) for y in (-0.5, 0.5) for x in (-0.5, 0.5)])
_BOX_FACES = np.array([[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]])


class ArrayMesh:
    """Parts given as numpy arrays, made into one mesh at the end.

    For thousands of parts (leaves, grass blades, window frames, roof tiles) where
    building face by face with ``bmesh`` would take most of a recipe's build time.
    Faces may have any number of corners; each ``add`` call takes faces of one size.
    UVs are per vertex (``(N, 2)``); parts without them get (0, 0).
    """

    def __init__(self) -> None:
        self._verts: list[np.ndarray] = []
        self._uvs: list[np.ndarray] = []
        self._faces: list[tuple[np.ndarray, int, bool]] = []   # (faces with global indices, material, smooth)
        self.count = 0

    def add(self, verts, faces, *, uv=None, material: int = 0, smooth: bool = False) -> int:
        """Append vertices and faces indexing them (0-based within this part); returns the offset."""
        verts = np.asarray(verts, np.float64).reshape(-1, 3)
        offset = self.count
        self._verts.append(verts)
        self._uvs.append(np.zeros((len(verts), 2)) if uv is None else np.asarray(uv, np.float64).reshape(-1, 2))
        for block in (faces if isinstance(faces, (list, tuple)) else [faces]):
            block = np.asarray(block, np.int64)
            if block.size:
                self._faces.append((block.reshape(len(block), -1) + offset, material, smooth))
        self.count += len(verts)
        return offset

    def instances(self, verts, faces, matrices, *, uv=None, material: int = 0, smooth: bool = False) -> None:
        """Copies of one template (``verts`` (k, 3), ``faces``), each moved by a 4x4 of ``matrices`` (N, 4, 4)."""
        verts = np.asarray(verts, np.float64).reshape(-1, 3)
        matrices = np.asarray(matrices, np.float64).reshape(-1, 4, 4)
        n, k = len(matrices), len(verts)
        if n == 0:
            return
        placed = np.einsum("nij,kj->nki", matrices[:, :3, :3], verts) + matrices[:, None, :3, 3]
        blocks = faces if isinstance(faces, (list, tuple)) else [faces]
        shifted = [(np.asarray(b, np.int64)[None] + (np.arange(n) * k)[:, None, None]).reshape(-1, np.shape(b)[-1])
                   for b in blocks]
        self.add(placed.reshape(-1, 3), shifted, uv=None if uv is None else np.tile(np.asarray(uv), (n, 1)),
                 material=material, smooth=smooth)

    def boxes(self, centres, sizes, *, yaw=None, material: int = 0) -> None:
        """Boxes (N of them) of ``sizes`` (N, 3) at ``centres`` (N, 3), turned by ``yaw`` (N,) about Z."""
        centres = np.asarray(centres, np.float64).reshape(-1, 3)
        n = len(centres)
        if n == 0:
            return
        sizes = np.broadcast_to(np.asarray(sizes, np.float64), centres.shape)
        matrices = np.zeros((n, 4, 4))
        turn = rotations(np.zeros(n) if yaw is None else np.broadcast_to(yaw, (n,)))
        matrices[:, :3, :3] = turn * sizes[:, None, :]
        matrices[:, :3, 3] = centres
        matrices[:, 3, 3] = 1.0
        self.instances(_BOX_CORNERS, _BOX_FACES, matrices, material=material)

    def tubes(self, starts, ends, radius, *, radius_end=None, segments: int = 6, material: int = 0,
              smooth: bool = True, caps: bool = False) -> None:
        """Open (or capped) tubes from ``starts`` to ``ends`` (N, 3): branches, wires, bars, pipes."""
        a = np.asarray(starts, np.float64).reshape(-1, 3)
        b = np.asarray(ends, np.float64).reshape(-1, 3)
        n = len(a)
        if n == 0:
            return
        r0 = np.broadcast_to(np.asarray(radius, np.float64), (n,))
        r1 = r0 if radius_end is None else np.broadcast_to(np.asarray(radius_end, np.float64), (n,))
        u, w = _frames_around(b - a)
        theta = 2 * math.pi * np.arange(segments) / segments
        ring = np.cos(theta)[None, :, None] * u[:, None] + np.sin(theta)[None, :, None] * w[:, None]
        verts = np.concatenate([a[:, None] + r0[:, None, None] * ring, b[:, None] + r1[:, None, None] * ring], 1)
        j = np.arange(segments)
        quad = np.stack([j, (j + 1) % segments, segments + (j + 1) % segments, segments + j], 1)
        faces = (quad[None] + (np.arange(n) * 2 * segments)[:, None, None]).reshape(-1, 4)
        blocks = [faces]
        if caps:
            base = (np.arange(n) * 2 * segments)[:, None]
            blocks += [base + j[::-1][None], base + segments + j[None]]
        v = np.linspace(0, 1, 2).repeat(segments)
        uv = np.stack([np.tile(j / segments, 2), v], 1)
        self.add(verts.reshape(-1, 3), blocks, uv=np.tile(uv, (n, 1)), material=material, smooth=smooth)

    def polyline(self, points, radius: float, *, segments: int = 6, material: int = 0) -> None:
        """A tube through ``points`` (M, 3), one straight piece per pair: a cable, a hose."""
        p = np.asarray(points, np.float64)
        self.tubes(p[:-1], p[1:], radius, segments=segments, material=material)

    def lathe(self, profile, *, segments: int = 24, location=(0, 0, 0), material: int = 0,
              smooth: bool = True, caps: bool = True) -> None:
        """A surface of revolution about Z through ``profile`` [(radius, z), ...] (bottles, lanterns).

        With ``caps``, an end of the profile off the axis is closed by a flat disc, so a
        solid (a glass, a bottle of liquid) has an inside for refraction.
        """
        prof = np.asarray(profile, np.float64)
        theta = 2 * math.pi * np.arange(segments) / segments
        x = prof[:, :1] * np.cos(theta)[None]
        y = prof[:, :1] * np.sin(theta)[None]
        z = np.broadcast_to(prof[:, 1:2], x.shape)
        verts = np.stack([x, y, z], -1).reshape(-1, 3) + np.asarray(location, np.float64)
        rows, j = len(prof), np.arange(segments)
        quads = [np.stack([i * segments + j, i * segments + (j + 1) % segments,
                           (i + 1) * segments + (j + 1) % segments, (i + 1) * segments + j], 1)
                 for i in range(rows - 1)]
        blocks = [np.concatenate(quads)]
        if caps and prof[0, 0] > 0:
            blocks.append(j[::-1][None])
        if caps and prof[-1, 0] > 0:
            blocks.append((rows - 1) * segments + j[None])
        uv = np.stack([np.tile(j / segments, rows), np.repeat(np.linspace(0, 1, rows), segments)], 1)
        self.add(verts, blocks, uv=uv, material=material, smooth=smooth)

    def mesh(self, name: str) -> bpy.types.Mesh:
        verts = np.concatenate(self._verts) if self._verts else np.zeros((0, 3))
        uvs = np.concatenate(self._uvs) if self._uvs else np.zeros((0, 2))
        faces = [f for f, _, _ in self._faces]
        sizes = np.concatenate([np.full(len(f), f.shape[1]) for f in faces]) if faces else np.zeros(0, int)
        loops = np.concatenate([f.ravel() for f in faces]) if faces else np.zeros(0, int)
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(len(verts))
        mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
        mesh.loops.add(len(loops))
        mesh.loops.foreach_set("vertex_index", loops.astype(np.int32))
        mesh.polygons.add(len(sizes))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
        mesh.polygons.foreach_set("loop_start", starts.astype(np.int32))
        mesh.polygons.foreach_set("loop_total", sizes.astype(np.int32))
        mesh.polygons.foreach_set("material_index", np.concatenate(
            [np.full(len(f), m) for f, m, _ in self._faces]).astype(np.int32) if faces else sizes)
        if len(loops):
            layer = mesh.uv_layers.new(name="UVMap")
            layer.data.foreach_set("uv", uvs[loops].astype(np.float32).ravel())
        mesh.update(calc_edges=True)
        mesh.validate(clean_customdata=False)
        smooth = np.concatenate([np.full(len(f), s) for f, _, s in self._faces]) if faces else sizes
        if len(smooth) == len(mesh.polygons):
            mesh.polygons.foreach_set("use_smooth", smooth.astype(bool))
        return mesh

    def object(self, name: str, materials: Sequence[bpy.types.Material] = (), *,
               location=(0, 0, 0), rotation=(0, 0, 0)) -> bpy.types.Object:
        mesh = self.mesh(name)
        for material in materials:
            mesh.materials.append(material)
        obj = link(bpy.data.objects.new(name, mesh))
        obj.location = location
        obj.rotation_euler = rotation
        return obj


def instance(name: str, mesh: bpy.types.Mesh, *, location=(0, 0, 0), rotation=(0, 0, 0),
             scale=1.0) -> bpy.types.Object:
    """Another object sharing ``mesh``: Cycles builds its geometry once (trees, bottles, particles)."""
    obj = link(bpy.data.objects.new(name, mesh))
    obj.location = location
    obj.rotation_euler = rotation
    obj.scale = (scale,) * 3 if isinstance(scale, (int, float)) else scale
    return obj


def leaf_outline(corners: int = 8, *, width: float = 0.45, tip: float = 1.0) -> np.ndarray:
    """A leaf's outline in its plane, (corners, 3): stem at the origin, tip at +Y, widest near the middle."""
    half = corners // 2
    s = np.linspace(0.0, 1.0, half + 1)[1:-1]
    w = width * 0.5 * np.sin(math.pi * s) ** 0.8 * (1.1 - 0.3 * s)
    right = np.stack([w, s * tip, np.zeros_like(s)], 1)
    left = np.stack([-w, s * tip, np.zeros_like(s)], 1)[::-1]
    pts = np.concatenate([[[0.0, 0.0, 0.0]], right, [[0.0, tip, 0.0]], left])
    return pts[:corners] if len(pts) >= corners else pts


def cutout_card(mask: Callable[[np.ndarray, np.ndarray], np.ndarray], texels: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An alpha-tested card with its alpha test baked into the faces.

    ``mask(u, v)`` (arrays in [0, 1]) says which texels are opaque; the card keeps a
    quad per opaque texel of a ``texels`` (nu, nv) grid, so its outline has the
    staircase edges of an alpha-tested texture of that resolution. gbuf's light paths
    (RDG's: transparent bounces 0) end a path at a Transparent BSDF, which would
    render a shader-masked card's holes black; cutting the holes out keeps the look
    and renders correctly. Returns (vertices in the card's plane (N, 3) with u along
    X and v along Y, faces (M, 4), uv (N, 2)).
    """
    nu, nv = texels
    cu, cv = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv, indexing="xy")
    keep = np.asarray(mask(cu, cv), bool)
    ju, jv = np.meshgrid(np.arange(nu + 1), np.arange(nv + 1), indexing="xy")
    index = jv * (nu + 1) + ju
    a = index[:-1, :-1][keep]
    faces = np.stack([a, a + 1, a + nu + 2, a + nu + 1], 1)
    used, inverse = np.unique(faces, return_inverse=True)
    uv = np.stack([ju.ravel() / nu, jv.ravel() / nv], 1)[used]
    verts = np.concatenate([uv, np.zeros((len(used), 1))], 1)
    return verts, inverse.reshape(faces.shape), uv


# --------------------------------------------------------------------------- wind and text


def wind(obj: bpy.types.Object, frames: int, *, amplitude: float, direction=(1.0, 0.0),
         wavelength: float = 8.0, period: float = 2.5, gust: float = 0.35, phase: float = 0.0,
         stiffness: float = 2.0, anchor: int = 2, normal=None) -> None:
    """Sway a mesh in the wind with two keyed shape keys: a gust wave travelling along ``direction``.

    Each vertex moves ``amplitude * h**stiffness`` along ``direction`` (h: its height
    above the mesh's lowest point over the mesh's height, so roots stay put; ``anchor``
    picks another axis for h, 0 for a flag held at its lowest x) times
    ``sin(k.p - w t)`` with wavenumber ``2 pi / wavelength`` and period ``period``
    seconds: two keys holding the sine and cosine of ``k.p`` whose values are keyed with
    the cosine and sine of ``w t`` make exactly that sum. Shape keys deform the mesh,
    so Cycles' Vector pass sees the sway.
    """
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    z0, z1 = co[:, anchor].min(), co[:, anchor].max()
    h = np.clip((co[:, anchor] - z0) / max(z1 - z0, 1e-6), 0, 1) ** stiffness
    d = np.array([direction[0], direction[1], 0.0])
    d /= max(np.linalg.norm(d), 1e-9)
    k = 2 * math.pi / wavelength
    spatial = k * (co @ d) + phase
    # Usually the sway is along the wind; a flag (``normal``) flaps across it, along its normal.
    if normal is not None:
        d = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    for name, wave in (("WindSin", np.sin(spatial)), ("WindCos", np.cos(spatial))):
        key = obj.shape_key_add(name=name, from_mix=False)
        key.slider_min, key.slider_max = -2.0, 2.0
        key.data.foreach_set("co", (co + (amplitude * h * wave)[:, None] * d).ravel())
    omega = 2 * math.pi / period

    def pose(frame: int) -> Pose:
        t = seconds(frame)
        strength = 1.0 + gust * math.sin(0.37 * omega * t + 1.3 * phase)
        # sin(kp) cos(wt) - cos(kp) sin(wt) = sin(kp - wt): the wave runs along +direction.
        return {'key_blocks["WindSin"].value': (strength * math.cos(omega * t),),
                'key_blocks["WindCos"].value': (-strength * math.sin(omega * t),)}

    key_motion(mesh.shape_keys, frames, pose)


def sway(obj: bpy.types.Object, frames: int, rng: random.Random, *, lean: float = 0.015,
         direction=(1.0, 0.0), rate: float = 0.7) -> None:
    """Rock a whole object (a tree, a fern) about its origin, at its own pace and phase.

    For plants that share one mesh: a keyed object rotation keeps Cycles' instancing
    (each instance is the same geometry moved), where ``wind`` (shape keys) would
    make every instance a deforming mesh of its own, with its own BVH each frame.
    """
    base = tuple(obj.rotation_euler)
    rate = rate * rng.uniform(0.75, 1.3)
    phase = rng.uniform(0, 2 * math.pi)
    dx, dy = direction

    def pose(frame: int) -> Pose:
        t = seconds(frame)
        a = lean * math.sin(2 * math.pi * rate * t + phase)
        b = 0.4 * lean * math.sin(2 * math.pi * 1.7 * rate * t + 2 * phase)   # a little across the wind
        return {"rotation_euler": (base[0] + a * dy + b * dx, base[1] - a * dx + b * dy, base[2])}

    key_motion(obj, frames, pose)


def text_mesh(body: str, *, size: float = 1.0, extrude: float = 0.0, align: str = "CENTER",
              resolution: int = 3) -> bpy.types.Mesh:
    """Blender's built-in font (no font file) turned into a mesh: signs, labels, menus."""
    curve = bpy.data.curves.new("Text", "FONT")
    curve.body = body
    curve.size = size
    curve.extrude = extrude
    curve.align_x = align
    curve.align_y = "CENTER"
    curve.resolution_u = resolution
    # Evaluated in a scratch scene of its own: the recipe's scene, with all its objects, is not
    # re-evaluated for every sign and number plate.
    scratch = bpy.data.scenes.new("TextScratch")
    holder = bpy.data.objects.new("TextSource", curve)
    scratch.collection.objects.link(holder)
    with bpy.context.temp_override(scene=scratch, view_layer=scratch.view_layers[0]):
        depsgraph = bpy.context.evaluated_depsgraph_get()
        mesh = bpy.data.meshes.new_from_object(holder.evaluated_get(depsgraph))
    mesh.name = f"Text {body[:20]}"
    bpy.data.objects.remove(holder)
    bpy.data.curves.remove(curve)
    bpy.data.scenes.remove(scratch)
    return mesh


def text(name: str, body: str, material: bpy.types.Material, *, size: float = 1.0, extrude: float = 0.0,
         location=(0, 0, 0), rotation=(0, 0, 0), align: str = "CENTER") -> bpy.types.Object:
    """A text object as a mesh, upright: its letters in the object's XZ plane, facing -Y."""
    mesh = text_mesh(body, size=size, extrude=extrude, align=align)
    # Letters are made in XY facing +Z; stand them up to face -Y (towards a viewer in front).
    mesh.transform(Matrix.Rotation(math.pi / 2, 4, "X"))
    mesh.materials.append(material)
    return instance(name, mesh, location=location, rotation=rotation)
