"""Shared bpy helpers for the recipes: scene set-up, meshes, node materials, lights, keyed motion.

Everything is built from code: meshes with ``bmesh``, materials from procedural
shader nodes (noise, Voronoi, brick, checker, wave), no image files and no
downloads. Motion is keyed at every frame from one frame before the range to
one frame after it, with linear interpolation and extrapolation, so the motion
vectors of the first and last frames see real movement (Blender evaluates the
neighbouring frames to compute them, and a constant-extrapolated curve would
make the first frame's motion zero).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import bmesh
import bpy
from bpy_extras import anim_utils
from mathutils import Euler, Matrix, Vector, noise

FPS = 24

Pose = dict[str, Sequence[float]]


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
            for point in curve.keyframe_points:
                point.interpolation = "LINEAR"
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
        mesh = bpy.data.meshes.new(name)
        self.bm.to_mesh(mesh)
        self.bm.free()
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


def glow(name: str, color, strength: float) -> bpy.types.Material:
    return Shader(name).emission(color, strength)


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
