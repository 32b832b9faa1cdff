"""Shared assemblies for the recipes: cars, walking figures, trees, ferns, grass, particles, materials.

Built on ``_kit``. Everything here is something more than one recipe uses, so it
has one home: a car with spinning wheels and lights, an articulated figure whose
limbs are separate keyed objects (so the Vector pass sees each limb move), trees
with thousands of leaves, ferns made of alpha-tested cards, wind-swept grass,
and keyed particles (rain, snow, sparks, spray) that stay in a bounded region
for any sequence length.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, Sequence

import bpy
import numpy as np
from mathutils import Matrix, Vector

from . import _kit as kit

# --------------------------------------------------------------------------- materials


def wood(rng: random.Random, name: str = "Wood", color=(0.36, 0.2, 0.1), *, scale: float = 1.0,
         planks: bool = False, gloss: float = 0.35):
    """Wood grain (stretched rings and fibres), optionally in planks with seams."""
    s = kit.Shader(name)
    color = kit.vary_color(rng, color)
    co = s.coords(scale=(kit.vary_scale(rng, 1.0 * scale), 8.0 * scale, kit.vary_scale(rng, 1.0 * scale)),
                  offset=kit.random_offset(rng))
    rings = s.node("TexWave", {"Vector": co, "Scale": kit.vary_scale(rng, 2.0), "Distortion": 6.0,
                               "Detail": 4.0, "Detail Scale": 1.5}, wave_type="RINGS")
    fibres = s.node("TexNoise", {"Vector": co, "Scale": 40.0, "Detail": 4.0})
    dark = tuple(c * 0.45 for c in color)
    base = s.ramp(s.out(rings, "Factor"), [(0.0, dark), (0.6, color), (1.0, tuple(min(1, c * 1.3) for c in color))])
    base = s.mix(0.25, base, s.out(fibres, "Color"), "MULTIPLY")
    height = s.math("ADD", s.out(rings, "Factor"), s.math("MULTIPLY", s.out(fibres, "Factor"), 0.5))
    if planks:
        seams = s.node("TexBrick", {"Vector": s.coords(offset=kit.random_offset(rng)), "Scale": 1.0,
                                    "Mortar Size": 0.006, "Brick Width": kit.vary_scale(rng, 1.6),
                                    "Row Height": kit.vary_scale(rng, 0.16), "Color1": (1, 1, 1),
                                    "Color2": (0.8, 0.8, 0.8), "Mortar": (0.2, 0.2, 0.2)})
        base = s.mix(1.0, base, s.out(seams, "Color"), "MULTIPLY")
        height = s.math("SUBTRACT", height, s.math("MULTIPLY", s.out(seams, "Factor"), 3.0))
    return s.principled({"Base Color": base, "Roughness": gloss, "Normal": s.bump(height, 0.25, 0.005)})


def fabric(rng: random.Random, name: str = "Fabric", color=(0.5, 0.1, 0.1), *, weave: float = 120.0,
           pattern: str | None = None):
    """A woven cloth: two crossed thread waves a few millimetres apart, with a stripe or check on top."""
    s = kit.Shader(name)
    color = kit.vary_color(rng, color, hue=0.06)
    co = s.coords(kind="Object", offset=kit.random_offset(rng))
    weave = kit.vary_scale(rng, weave, 0.2)
    warp = s.node("TexWave", {"Vector": co, "Scale": weave, "Distortion": 0.5}, bands_direction="X")
    weft = s.node("TexWave", {"Vector": co, "Scale": weave, "Distortion": 0.5}, bands_direction="Y")
    threads = s.math("MULTIPLY", s.out(warp, "Factor"), s.out(weft, "Factor"))
    base = s.mix(0.35, color, s.out(warp, "Color"), "MULTIPLY")
    pattern = pattern or rng.choice(("plain", "stripe", "check"))
    if pattern != "plain":
        second = kit.vary_color(rng, (color[2], color[0], color[1]), hue=0.1)
        direction = "X" if pattern == "stripe" else "DIAGONAL"
        bands = s.node("TexWave", {"Vector": co, "Scale": kit.vary_scale(rng, 6.0), "Distortion": 0.0},
                       bands_direction=direction, wave_profile="SAW")
        stripe = s.math("GREATER_THAN", s.out(bands, "Factor"), 0.7)
        if pattern == "check":
            cross = s.node("TexChecker", {"Vector": co, "Scale": kit.vary_scale(rng, 8.0)})
            stripe = s.out(cross, "Factor")
        base = s.mix(stripe, base, second)
    return s.principled({"Base Color": base, "Roughness": 0.85, "Sheen Weight": 0.4,
                         "Normal": s.bump(threads, 0.35, 0.002)})


def glass(name: str = "Glass", color=(1.0, 1.0, 1.0), *, roughness: float = 0.0, ior: float = 1.45):
    """Refractive glass (solid: a path enters and leaves, two of the two transmission bounces)."""
    return kit.plain(name, color, roughness=roughness, transmission_weight=1.0, ior=ior)


def metal(name: str, color=(0.6, 0.6, 0.62), roughness: float = 0.3):
    return kit.plain(name, color, roughness=roughness, metallic=1.0)


def bark(rng: random.Random, name: str = "Bark", color=(0.2, 0.13, 0.08)):
    s = kit.Shader(name)
    co = s.coords(scale=(6.0, 6.0, 1.5), offset=kit.random_offset(rng))
    ridges = s.node("TexWave", {"Vector": co, "Scale": kit.vary_scale(rng, 3.0), "Distortion": 8.0,
                                "Detail": 6.0}, bands_direction="X")
    moss = s.node("TexNoise", {"Vector": co, "Scale": 2.0, "Detail": 4.0})
    color = kit.vary_color(rng, color)
    base = s.mix(0.5, color, s.out(ridges, "Color"), "MULTIPLY")
    mossy = s.out(s.node("MapRange", {"Value": s.out(moss, "Factor"), "From Min": 0.55, "From Max": 0.65}),
                  "Result")
    base = s.mix(s.math("MULTIPLY", mossy, 0.7), base, (0.1, 0.16, 0.04))
    return s.principled({"Base Color": base, "Roughness": 0.9,
                         "Normal": s.bump(s.out(ridges, "Factor"), 0.8, 0.02)})


def foliage(rng: random.Random, name: str = "Leaves", color=(0.09, 0.25, 0.04)):
    """Leaves: colour varying leaf to leaf (random per face), a midrib and a little translucency."""
    s = kit.Shader(name)
    color = kit.vary_color(rng, color, hue=0.05, value=0.3)
    info = s.node("ObjectInfo")
    per_leaf = s.node("TexWhiteNoise", {"Vector": s.out(s.node("TexCoord"), "Object")}, noise_dimensions="3D")
    spots = s.node("TexNoise", {"Vector": s.coords(kind="UV", scale=6.0), "Scale": 3.0, "Detail": 3.0})
    dark = tuple(c * 0.5 for c in color)
    light = tuple(min(1.0, c * 1.6) for c in color)
    vary = s.math("ADD", s.math("MULTIPLY", s.out(per_leaf, "Value"), 0.6),
                  s.math("MULTIPLY", s.out(info, "Random"), 0.4))
    base = s.ramp(vary, [(0.0, dark), (0.5, color), (1.0, light)])
    base = s.mix(0.25, base, s.out(spots, "Color"), "MULTIPLY")
    uv = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "UV")})
    rib = s.math("LESS_THAN", s.math("ABSOLUTE", s.math("SUBTRACT", s.out(uv, "X"), 0.5)), 0.03)
    base = s.mix(s.math("MULTIPLY", rib, 0.5), base, light)
    return s.principled({"Base Color": base, "Roughness": 0.5, "Subsurface Weight": 0.0,
                         "Transmission Weight": 0.0, "Sheen Weight": 0.2,
                         "Normal": s.bump(rib, 0.2, 0.002)})


def skin(rng: random.Random, name: str):
    tone = rng.choice(((0.85, 0.62, 0.5), (0.62, 0.42, 0.3), (0.38, 0.24, 0.16), (0.92, 0.75, 0.62)))
    return kit.plain(name, kit.vary_color(rng, tone, hue=0.01, value=0.1), roughness=0.55)


# --------------------------------------------------------------------------- cars


@dataclasses.dataclass
class Car:
    body: bpy.types.Object
    wheels: list[bpy.types.Object]
    radius: float        # of the wheels


def car(name: str, rng: random.Random, *, lights: float = 0.0, color=None, plate: bool = True) -> Car:
    """A car facing +X (headlights there), wheels as separate children that ``drive`` spins.

    ``lights``: 0 (off) .. 1 (night): head- and tail-lights' emission.
    """
    body = kit.MeshBuilder()
    length, width = rng.uniform(3.9, 4.7), rng.uniform(1.7, 1.95)
    body.cube((length, width, 0.6), (0, 0, 0.62), material=0)
    cabin = rng.uniform(0.45, 0.6) * length
    body.cube((cabin, width - 0.15, 0.5), (-0.08 * length, 0, 1.17), material=1)       # glass house
    body.cube((cabin - 0.25, width - 0.1, 0.06), (-0.08 * length, 0, 1.45), material=0)  # roof
    for sx in (-1, 1):
        body.cube((0.12, width + 0.04, 0.18), (sx * (length / 2 + 0.03), 0, 0.45), material=4)  # bumpers
    for y in (-1, 1):
        body.cube((0.05, 0.34, 0.13), (length / 2 + 0.005, y * (width / 2 - 0.3), 0.74), material=2)
        body.cube((0.05, 0.36, 0.1), (-length / 2 - 0.005, y * (width / 2 - 0.28), 0.78), material=3)
        body.cube((0.12, 0.04, 0.1), (0.1 * length, y * (width / 2 + 0.04), 1.0), material=4)   # mirrors
    if plate:
        for sx in (-1, 1):
            body.cube((0.02, 0.52, 0.12), (sx * (length / 2 + 0.07), 0, 0.48), material=5)
    paint = color if color is not None else kit.vary_color(rng, rng.choice(
        ((0.6, 0.02, 0.02), (0.02, 0.1, 0.45), (0.8, 0.8, 0.8), (0.05, 0.05, 0.05), (0.25, 0.3, 0.32),
         (0.9, 0.6, 0.05), (0.05, 0.3, 0.1))))
    materials = [
        kit.plain(f"{name}Paint", paint, roughness=0.12, metallic=0.5, coat_weight=1.0),
        kit.plain(f"{name}Glass", (0.02, 0.025, 0.03), roughness=0.02),
        kit.glow(f"{name}Head", (1.0, 0.95, 0.85), 0.5 + 60.0 * lights),
        kit.glow(f"{name}Tail", (1.0, 0.03, 0.01), 0.3 + 25.0 * lights),
        kit.plain(f"{name}Trim", (0.03, 0.03, 0.03), roughness=0.5),
        kit.plain(f"{name}Plate", (0.85, 0.85, 0.8), roughness=0.4),
    ]
    obj = body.object(name, materials)
    if plate:
        chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        number = "".join(rng.choice(chars) for _ in range(3)) + " " + "".join(rng.choice(chars[-10:]) for _ in range(3))
        ink = kit.plain(f"{name}Ink", (0.02, 0.02, 0.05), roughness=0.5)
        for sx in (-1, 1):
            label = kit.text(f"{name}Plate{'FR'[sx > 0]}", number, ink, size=0.085,
                             location=(sx * (length / 2 + 0.081), 0, 0.48),
                             rotation=(0, 0, math.pi / 2 if sx > 0 else -math.pi / 2))
            label.parent = obj

    radius = rng.uniform(0.32, 0.38)
    wheel = kit.MeshBuilder()
    wheel.cylinder(radius, 0.24, rotation=(math.pi / 2, 0, 0), segments=20, material=0)
    wheel.cylinder(radius * 0.62, 0.25, rotation=(math.pi / 2, 0, 0), segments=20, material=1)
    for k in range(5):                      # spokes: the spin shows, and disoccludes the brake behind
        a = 2 * math.pi * k / 5
        wheel.cube((0.05, 0.26, radius * 1.1), (0.25 * radius * math.sin(a), 0, 0.25 * radius * math.cos(a)),
                   (0, a, 0), material=2)
    wheel_mesh_obj = wheel.object(f"{name}Wheel0", [kit.plain(f"{name}Tyre", (0.02, 0.02, 0.02), roughness=0.85),
                                                    metal(f"{name}Rim", (0.5, 0.5, 0.52), 0.25),
                                                    metal(f"{name}Spoke", (0.7, 0.7, 0.72), 0.2)])
    wheels = [wheel_mesh_obj]
    spots = [(sx * length * 0.32, sy * (width / 2 - 0.1)) for sx in (1, -1) for sy in (1, -1)]
    for index, (x, y) in enumerate(spots):
        w = wheel_mesh_obj if index == 0 else kit.instance(f"{name}Wheel{index}", wheel_mesh_obj.data)
        w.parent = obj
        w.location = (x, y, radius)
        if index:
            wheels.append(w)
    return Car(obj, wheels, radius)


#: A path that moves further than this in one frame has looped back to its start (metres).
JUMP = 10.0


def _jumps(path: Callable[[float], Sequence[float]], f: int) -> bool:
    """Whether the path jumps (loops) between frame ``f`` and a neighbour: the mover is hidden there."""
    here = path(kit.seconds(f))
    for g in (f - 1, f + 1):
        there = path(kit.seconds(g))
        if math.hypot(there[0] - here[0], there[1] - here[1]) > JUMP:
            return True
    return False


def looping(start: float, end: float, speed: float, offset: float = 0.0) -> Callable[[float], float]:
    """x(t) running from ``start`` to ``end`` at ``speed`` m/s, then again from ``start``: traffic that keeps coming."""
    span = end - start

    def x(t: float) -> float:
        return start + math.fmod(offset + abs(speed) * t, abs(span)) * math.copysign(1.0, span)

    return x


def ellipse(centre, radii, speed: float, start: float = 0.0) -> Callable[[float], tuple[float, float, float]]:
    """A closed path round an ellipse at about ``speed`` m/s (negative: clockwise), heading along it.

    The heading is kept continuous (it is the parameter angle plus a quarter turn,
    corrected by the ellipse's small deviation from a circle), so keyed rotations
    never jump by a full turn.
    """
    ex, ey = radii
    rate = speed / ((ex + ey) / 2)

    def path(t: float) -> tuple[float, float, float]:
        a = start + rate * t
        dx, dy = -ex * math.sin(a) * rate, ey * math.cos(a) * rate
        guess = a + math.copysign(math.pi / 2, rate)
        heading = guess + (math.atan2(dy, dx) - guess + math.pi) % (2 * math.pi) - math.pi
        return (centre[0] + ex * math.cos(a), centre[1] + ey * math.sin(a), heading)

    return path


def drive(vehicle: Car, frames: int, path: Callable[[float], tuple[float, float, float]], *, z: float = 0.0) -> None:
    """Key a car along ``path(t) -> (x, y, heading)`` (t seconds); its wheels roll with the distance.

    A path may loop (jump back to its start, as ``looping`` does): the car is shrunk
    to nothing on the frames either side of the jump, as particles are at rebirth.
    """
    def pose(f: int) -> kit.Pose:
        x, y, heading = path(kit.seconds(f))
        size = 1e-4 if _jumps(path, f) else 1.0
        return {"location": (x, y, z), "rotation_euler": (0.0, 0.0, heading), "scale": (size, size, size)}

    kit.key_motion(vehicle.body, frames, pose)
    travelled = _arc_lengths(path, frames)
    for wheel in vehicle.wheels:
        kit.key_motion(wheel, frames, lambda f: {"rotation_euler": (0.0, travelled[f] / vehicle.radius, 0.0)})


def _arc_lengths(path: Callable[[float], Sequence[float]], frames: int, substeps: int = 8) -> list[float]:
    """Signed distance along ``path`` from frame 0 at frames 0..frames+1 (negative when reversing)."""
    out, total = [0.0], 0.0
    for f in range(frames + 1):
        for k in range(substeps):
            t0, t1 = kit.seconds(f + k / substeps), kit.seconds(f + (k + 1) / substeps)
            a, b = path(t0), path(t1)
            dx, dy = b[0] - a[0], b[1] - a[1]
            if math.hypot(dx, dy) > JUMP:
                continue                      # a loop back to the start is no distance travelled
            forward = dx * math.cos(a[2]) + dy * math.sin(a[2])
            total += math.copysign(math.hypot(dx, dy), forward)
        out.append(total)
    return out


# --------------------------------------------------------------------------- figures


@dataclasses.dataclass
class Figure:
    root: bpy.types.Object                # the pelvis; the others hang from it
    parts: dict[str, bpy.types.Object]
    height: float

    @property
    def hip(self) -> float:
        return 0.53 * self.height


def figure(name: str, rng: random.Random, *, height: float | None = None) -> Figure:
    """An articulated person facing +X: pelvis, torso, head, upper and lower arms and legs.

    Every limb is its own object parented at its joint (origin at the joint, hanging
    along -Z), so keyed joint angles move it rigidly and Cycles' Vector pass sees the
    motion of each limb: swinging legs and arms occlude and disocclude what is behind.
    """
    h = height if height is not None else rng.uniform(1.55, 1.9)
    shirt = fabric(rng, f"{name}Shirt", kit.vary_color(rng, rng.choice(
        ((0.6, 0.1, 0.1), (0.1, 0.2, 0.5), (0.8, 0.75, 0.6), (0.1, 0.35, 0.15), (0.9, 0.9, 0.9),
         (0.5, 0.3, 0.6)))), weave=300.0)
    trousers = fabric(rng, f"{name}Trousers", rng.choice(((0.08, 0.1, 0.25), (0.15, 0.12, 0.1),
                                                          (0.3, 0.28, 0.25), (0.05, 0.05, 0.05))),
                      weave=250.0, pattern="plain")
    body_skin = skin(rng, f"{name}Skin")
    hair = kit.plain(f"{name}Hair", kit.vary_color(rng, rng.choice(((0.05, 0.03, 0.02), (0.3, 0.18, 0.08),
                                                                    (0.6, 0.5, 0.3), (0.5, 0.5, 0.5)))),
                     roughness=0.6)
    shoes = kit.plain(f"{name}Shoes", (0.04, 0.03, 0.03), roughness=0.4)

    def part(label: str, build: Callable[[kit.MeshBuilder], None], materials, parent, at) -> bpy.types.Object:
        m = kit.MeshBuilder()
        build(m)
        obj = m.object(f"{name}{label}", materials)
        if parent is not None:
            obj.parent = parent
        obj.location = at
        return obj

    parts: dict[str, bpy.types.Object] = {}
    parts["pelvis"] = part("Pelvis", lambda m: m.cube((0.16 * h, 0.2 * h, 0.1 * h), (0, 0, 0.0)),
                           [trousers], None, (0, 0, 0.53 * h))
    parts["torso"] = part("Torso", lambda m: (
        m.cylinder(0.1 * h, 0.3 * h, (0, 0, 0.15 * h), radius_top=0.12 * h, segments=12),
        m.cylinder(0.03 * h, 0.05 * h, (0, 0, 0.32 * h), segments=8, material=1)),
        [shirt, body_skin], parts["pelvis"], (0, 0, 0.03 * h))
    parts["head"] = part("Head", lambda m: (
        m.sphere(0.068 * h, (0.0, 0, 0.07 * h), segments=16, rings=10),
        m.sphere(0.071 * h, (-0.012 * h, 0, 0.085 * h), segments=16, rings=10, material=1)),
        [body_skin, hair], parts["torso"], (0, 0, 0.33 * h))
    for side, y in (("L", 1), ("R", -1)):
        upper = part(f"UpperArm{side}", lambda m: m.cylinder(0.03 * h, 0.17 * h, (0, 0, -0.085 * h),
                                                              radius_top=0.035 * h, segments=10),
                     [shirt], parts["torso"], (0, y * 0.135 * h, 0.28 * h))
        lower = part(f"LowerArm{side}", lambda m: (
            m.cylinder(0.024 * h, 0.15 * h, (0, 0, -0.075 * h), radius_top=0.028 * h, segments=10),
            m.sphere(0.03 * h, (0, 0, -0.17 * h), segments=10, rings=6)),
            [body_skin], upper, (0, 0, -0.17 * h))
        thigh = part(f"Thigh{side}", lambda m: m.cylinder(0.045 * h, 0.245 * h, (0, 0, -0.1225 * h),
                                                          radius_top=0.055 * h, segments=10),
                     [trousers], parts["pelvis"], (0, y * 0.055 * h, -0.02 * h))
        shin = part(f"Shin{side}", lambda m: (
            m.cylinder(0.033 * h, 0.245 * h, (0, 0, -0.1225 * h), radius_top=0.042 * h, segments=10),
            m.cube((0.15 * h, 0.06 * h, 0.04 * h), (0.04 * h, 0, -0.25 * h), material=1)),
            [trousers, shoes], thigh, (0, 0, -0.245 * h))
        parts.update({f"upper_arm_{side}": upper, f"lower_arm_{side}": lower,
                      f"thigh_{side}": thigh, f"shin_{side}": shin})
    return Figure(parts["pelvis"], parts, h)


def walk(person: Figure, frames: int, path: Callable[[float], tuple[float, float, float]], *,
         phase: float = 0.0) -> None:
    """Key a walk along ``path(t) -> (x, y, heading)``: the gait follows the distance walked, so feet do not skate."""
    h = person.height
    stride = 0.75 * h                             # a full gait cycle (two steps)
    travelled = _arc_lengths(path, frames)

    def gait(f: int) -> float:
        return phase + 2 * math.pi * travelled[f] / stride

    def root(f: int) -> kit.Pose:
        x, y, heading = path(kit.seconds(f))
        g = gait(f)
        size = 1e-4 if _jumps(path, f) else 1.0      # hidden where a looping path jumps back
        return {"location": (x, y, person.hip + 0.015 * h * math.cos(2 * g)),
                "rotation_euler": (0.03 * math.sin(g), 0.0, heading), "scale": (size, size, size)}

    kit.key_motion(person.root, frames, root)
    kit.key_motion(person.parts["torso"], frames, lambda f: {"rotation_euler": (0, 0.05, -0.12 * math.sin(gait(f)))})
    kit.key_motion(person.parts["head"], frames, lambda f: {"rotation_euler": (0, -0.05, 0.1 * math.sin(gait(f)))})
    for side, offset in (("L", 0.0), ("R", math.pi)):
        def thigh(f: int, offset=offset) -> kit.Pose:
            return {"rotation_euler": (0, -0.42 * math.sin(gait(f) + offset), 0)}

        def shin(f: int, offset=offset) -> kit.Pose:
            # The knee bends while the leg swings forward (the thigh's angle rising).
            swing = max(0.0, math.cos(gait(f) + offset))
            return {"rotation_euler": (0, 0.1 + 0.75 * swing ** 1.5, 0)}

        def arm(f: int, offset=offset) -> kit.Pose:
            return {"rotation_euler": (0.08 if offset == 0.0 else -0.08, 0.35 * math.sin(gait(f) + offset), 0)}

        def forearm(f: int, offset=offset) -> kit.Pose:
            return {"rotation_euler": (0, -0.25 - 0.25 * max(0.0, -math.sin(gait(f) + offset)), 0)}

        kit.key_motion(person.parts[f"thigh_{side}"], frames, thigh)
        kit.key_motion(person.parts[f"shin_{side}"], frames, shin)
        kit.key_motion(person.parts[f"upper_arm_{side}"], frames, arm)
        kit.key_motion(person.parts[f"lower_arm_{side}"], frames, forearm)


def gesture(person: Figure, frames: int, location, heading: float, rng: random.Random) -> None:
    """Standing in place: weight shifting, head turning, one arm working (wiping, pointing, talking)."""
    rate = rng.uniform(0.8, 1.6)
    phase = rng.uniform(0, 2 * math.pi)
    x, y = location[0], location[1]
    kit.key_motion(person.root, frames, lambda f: {
        "location": (x, y + 0.02 * math.sin(0.5 * rate * kit.seconds(f)), person.hip),
        "rotation_euler": (0.0, 0.0, heading + 0.15 * math.sin(0.3 * rate * kit.seconds(f) + phase))})
    kit.key_motion(person.parts["head"], frames, lambda f: {
        "rotation_euler": (0.0, 0.1 * math.sin(0.7 * rate * kit.seconds(f)), 0.5 * math.sin(0.4 * rate * kit.seconds(f) + phase))})
    kit.key_motion(person.parts["upper_arm_R"], frames, lambda f: {
        "rotation_euler": (-0.3 + 0.25 * math.sin(2.1 * rate * kit.seconds(f)), -0.9 + 0.3 * math.sin(rate * kit.seconds(f)), 0)})
    kit.key_motion(person.parts["lower_arm_R"], frames, lambda f: {
        "rotation_euler": (0, -0.9 + 0.4 * math.sin(2.1 * rate * kit.seconds(f) + 1.0), 0)})


# --------------------------------------------------------------------------- plants


def _leaf_matrices(centres: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    n = len(centres)
    m = np.zeros((n, 4, 4))
    turn = kit.rotations(rng.uniform(0, 2 * math.pi, n), rng.uniform(-1.2, 1.2, n), rng.uniform(-1.4, 1.4, n))
    m[:, :3, :3] = turn * (size * rng.uniform(0.7, 1.3, n))[:, None, None]
    m[:, :3, 3] = centres
    m[:, 3, 3] = 1
    return m


def tree(name: str, rng: random.Random, *, height: float = 8.0, kind: str = "broadleaf",
         leaf_size: float = 0.12, leaves_per_twig: int = 18) -> bpy.types.Mesh:
    """A tree mesh (material 0 bark, 1 leaves) with thousands of leaves; share it between objects.

    ``broadleaf``: recursive branches ending in clusters of leaf-shaped polygons.
    ``conifer``: a tapering trunk with whorls of drooping branches clad in needle
    fronds, alpha-tested cards (``kit.cutout_card``) with a comb of needles.
    """
    local = np.random.default_rng(rng.getrandbits(32))
    mesh = kit.ArrayMesh()
    if kind == "conifer":
        _conifer(mesh, local, height)
        return mesh.mesh(name)
    starts, ends, radii, tips = [], [], [], []

    def grow(start: Vector, direction: Vector, length: float, radius: float, depth: int) -> None:
        end = start + direction * length
        starts.append(tuple(start))
        ends.append(tuple(end))
        radii.append(radius)
        if depth == 0:
            tips.append((tuple(start), tuple(end)))
            return
        for _ in range(int(local.integers(2, 4))):
            axis = Vector((local.uniform(-1, 1), local.uniform(-1, 1), local.uniform(-0.2, 0.2))).normalized()
            bent = Matrix.Rotation(local.uniform(0.35, 0.9), 3, axis) @ direction
            bent = (bent + Vector((0, 0, 0.25))).normalized()          # branches reach for the light
            grow(end, bent, length * local.uniform(0.62, 0.8), radius * 0.62, depth - 1)

    trunk = height * 0.38
    grow(Vector((0, 0, 0)), Vector((local.uniform(-0.08, 0.08), local.uniform(-0.08, 0.08), 1)).normalized(),
         trunk, height * 0.025, 5)
    s, e, r = np.array(starts), np.array(ends), np.array(radii)
    mesh.tubes(s, e, r, radius_end=r * 0.7, segments=7)
    # Leaves along the last two branch generations' tips, clustered near each twig's end.
    a = np.array([t[0] for t in tips])
    b = np.array([t[1] for t in tips])
    count = len(tips) * leaves_per_twig
    along = local.uniform(0.2, 1.15, count)[:, None]
    base = np.repeat(a, leaves_per_twig, 0) + (np.repeat(b - a, leaves_per_twig, 0)) * along
    base += local.normal(0, 0.3 * height / 8.0, (count, 3))
    template = kit.leaf_outline(8)
    uv = template[:, :2] / [0.5, 1.0] + [0.5, 0.0]
    mesh.instances(template, [np.arange(8)[None]], _leaf_matrices(base, local, leaf_size), uv=uv, material=1)
    return mesh.mesh(name)


def _conifer(mesh: kit.ArrayMesh, rng: np.random.Generator, height: float) -> None:
    mesh.tubes([[0, 0, 0]], [[0, 0, height]], height * 0.02, radius_end=height * 0.002, segments=8)
    verts, faces, uv = kit.cutout_card(_needles, (12, 20))
    cards, branches = [], []
    whorls = int(height / 0.35)
    for w in range(whorls):
        z = height * (0.15 + 0.83 * w / whorls)
        reach = (height - z) * 0.42 + 0.2
        for k in range(int(rng.integers(6, 9))):
            a = 2 * math.pi * (k + rng.uniform(-0.3, 0.3)) / 7 + w * 0.9
            droop = rng.uniform(0.15, 0.45)
            direction = np.array([math.cos(a) * math.cos(droop), math.sin(a) * math.cos(droop), -math.sin(droop)])
            start = np.array([0, 0, z])
            branches.append((start, start + direction * reach))
            # Fronds: cards lying along the branch, a little tilted, one after another.
            pieces = max(1, int(reach / 0.45))
            for p in range(pieces):
                centre = start + direction * reach * (p + 0.5) / pieces
                cards.append((centre, a, droop, min(0.55, reach / pieces * 1.2)))
    mesh.tubes([b[0] for b in branches], [b[1] for b in branches], 0.012, radius_end=0.004, segments=4)
    centre = np.array([c[0] for c in cards])
    a = np.array([c[1] for c in cards])
    droop = np.array([c[2] for c in cards])
    size = np.array([c[3] for c in cards])
    # Card u across the branch, v along it, drooping with it, tilted a little about its length.
    turn = kit.rotations(a - math.pi / 2, 0.0, rng.uniform(-0.5, 0.5, len(cards))) @ \
        kit.rotations(0.0, 0.0, -droop)
    scale = np.zeros((len(cards), 3, 3))
    scale[:, 0, 0], scale[:, 1, 1], scale[:, 2, 2] = size * 0.7, size, 1.0
    m = np.zeros((len(cards), 4, 4))
    m[:, :3, :3] = turn @ scale
    m[:, :3, 3] = centre - (m[:, :3, :3] @ np.array([0.5, 0.5, 0.0]))
    m[:, 3, 3] = 1
    mesh.instances(verts, faces, m, uv=uv, material=1)


def _needles(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A frond: a midrib along v with needles slanting outwards, shorter towards the tip."""
    across = np.abs(u - 0.5)
    rib = across < 0.06
    needles = (np.mod(v * 7 - across * 3.0, 1.0) < 0.4) & (across < 0.5 * (1.05 - v))
    return rib | needles


def fern(name: str, rng: random.Random, *, fronds: int = 7, length: float = 0.8) -> bpy.types.Mesh:
    """A fern (one material): arching fronds, each an alpha-tested card of leaflets, bent along its length."""
    local = np.random.default_rng(rng.getrandbits(32))
    mesh = kit.ArrayMesh()
    verts, faces, uv = kit.cutout_card(_leaflets, (16, 28))
    for k in range(fronds):
        a = 2 * math.pi * (k + local.uniform(-0.3, 0.3)) / fronds
        lift = local.uniform(0.6, 1.1)
        size = length * local.uniform(0.7, 1.15)
        v = verts[:, 1]
        # The frond arches up and over: v runs along a parabola from the crown outwards.
        radial = v * size
        up = size * (lift * v - 0.9 * v ** 2)
        across = (verts[:, 0] - 0.5) * 0.3 * size
        x = radial * math.cos(a) - across * math.sin(a)
        y = radial * math.sin(a) + across * math.cos(a)
        mesh.add(np.stack([x, y, up], 1), faces, uv=uv)
    return mesh.mesh(name)


def _leaflets(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    across = np.abs(u - 0.5)
    rib = across < 0.05
    width = 0.5 * np.sin(np.pi * np.clip(v, 0, 1)) ** 0.7
    leaflet = (np.mod(v * 11, 1.0) < 0.7 - across * 0.6) & (across < width)
    return (rib & (v < 0.97)) | leaflet


def grass(name: str, rng: random.Random, centres: np.ndarray, *, height: float = 0.3,
          width: float = 0.012) -> kit.ArrayMesh:
    """Grass blades (two segments each, bent, tapering to a point) at ``centres`` (N, 3)."""
    local = np.random.default_rng(rng.getrandbits(32))
    n = len(centres)
    yaw = local.uniform(0, 2 * math.pi, n)
    lean = local.uniform(0.05, 0.6, n)
    tall = height * local.uniform(0.5, 1.4, n)
    w = width * local.uniform(0.6, 1.4, n)
    side = np.stack([np.cos(yaw), np.sin(yaw), np.zeros(n)], 1)
    bend = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros(n)], 1)

    def at(s: float, half: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        lift = tall * s
        push = tall * lean * s ** 2
        mid = centres + bend * push[:, None] + np.array([0, 0, 1.0]) * lift[:, None]
        return mid - side * half, mid + side * half

    b0, b1 = at(0.0, (w / 2)[:, None])
    m0, m1 = at(0.55, (w * 0.35)[:, None])
    tip, _ = at(1.0, 0.0)
    verts = np.stack([b0, b1, m0, m1, tip], 1).reshape(-1, 3)
    base = (np.arange(n) * 5)[:, None]
    quads = base + np.array([[0, 1, 3, 2]])
    tris = base + np.array([[2, 3, 4]])
    uv = np.tile([[0, 0], [1, 0], [0, 0.55], [1, 0.55], [0.5, 1]], (n, 1))
    mesh = kit.ArrayMesh()
    mesh.add(verts, [quads, tris], uv=uv, smooth=True)
    return mesh


def grass_material(rng: random.Random, name: str = "Grass", color=(0.1, 0.28, 0.05)):
    """Blades darker at the root, lighter and yellower at the tip, varying blade to blade."""
    s = kit.Shader(name)
    color = kit.vary_color(rng, color, hue=0.06, value=0.3)
    uv = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "UV")})
    patches = s.node("TexNoise", {"Vector": s.coords(offset=kit.random_offset(rng)), "Scale": 0.6, "Detail": 3.0})
    tip = kit.vary_color(rng, (0.45, 0.5, 0.15), hue=0.05)
    base = s.mix(s.out(uv, "Y"), tuple(c * 0.35 for c in color), color)
    base = s.mix(s.math("MULTIPLY", s.math("POWER", s.out(uv, "Y"), 3.0), 0.7), base, tip)
    base = s.mix(0.35, base, s.out(patches, "Color"), "OVERLAY")
    return s.principled({"Base Color": base, "Roughness": 0.55, "Sheen Weight": 0.3})


def scatter(rng: np.random.Generator, count: int, x: tuple[float, float], y: tuple[float, float],
            keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
            height: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``count`` random ground points (N, 3) in a rectangle, where ``keep(x, y)`` holds, on ``height``."""
    px = rng.uniform(*x, count)
    py = rng.uniform(*y, count)
    if keep is not None:
        mask = keep(px, py)
        px, py = px[mask], py[mask]
    pz = np.zeros_like(px) if height is None else height(px, py)
    return np.stack([px, py, pz], 1)


# --------------------------------------------------------------------------- particles


def particles(name: str, mesh: bpy.types.Mesh, frames: int, count: int, seed: int,
              spawn: Callable[[random.Random], tuple[Sequence[float], Sequence[float]]], *,
              life: float, gravity: float = 0.0, align: bool = False,
              wobble: float = 0.0) -> list[bpy.types.Object]:
    """Keyed particles: ``count`` objects sharing ``mesh``, each living ``life`` seconds, then reborn.

    ``spawn(rng) -> (position, velocity)`` starts each life; a particle then flies
    ballistically (``gravity`` m/s^2 down), with an optional sideways ``wobble`` (snow).
    Lives are staggered. A particle is shrunk to nothing on the last frame of one life
    and the first of the next, so no frame shows it jumping back to its start (the
    motion vectors never see a rebirth). ``align`` turns its +Z along its velocity
    (rain streaks, sparks). No simulation, nothing to bake: every frame is keyed.
    """
    made = []
    for i in range(count):
        phase = random.Random(f"{seed}:{name}:{i}").random()
        births: dict[int, tuple] = {}

        def state(frame: int, i=i, phase=phase, births=births):
            u = kit.seconds(frame) / life + phase
            cycle = math.floor(u)
            if cycle not in births:
                p, v = spawn(random.Random(f"{seed}:{name}:{i}:{cycle}"))
                births[cycle] = (Vector(p), Vector(v), random.Random(f"{seed}:{i}:{cycle}w").uniform(0, 6.3))
            p0, v0, w = births[cycle]
            age = (u - cycle) * life
            pos = p0 + v0 * age + Vector((0, 0, -0.5 * gravity * age * age))
            if wobble:
                pos += Vector((math.sin(2.1 * age + w), math.cos(1.7 * age + w), 0)) * wobble
            vel = v0 + Vector((0, 0, -gravity * age))
            return cycle, pos, vel

        def pose(frame: int, state=state) -> kit.Pose:
            cycle, pos, vel = state(frame)
            shown = state(frame - 1)[0] == cycle == state(frame + 1)[0]
            # Nearly zero, not zero: a singular object matrix has no inverse for Cycles to use.
            size = 1.0 if shown else 1e-4
            out = {"location": tuple(pos), "scale": (size, size, size)}
            if align and vel.length > 1e-6:
                out["rotation_euler"] = tuple(vel.to_track_quat("Z", "Y").to_euler())
            return out

        obj = kit.instance(f"{name}{i}", mesh)
        kit.key_motion(obj, frames, pose)
        made.append(obj)
    return made


# --------------------------------------------------------------------------- buildings

SHOP_NAMES = ("CAFE", "BAKERY", "HOTEL", "PHARMACY", "NOODLES", "BOOKS", "FLOWERS", "PIZZA", "24H MARKET",
              "BAR", "CINEMA", "SUSHI", "LAUNDRY", "BANK", "TAILOR", "RAMEN", "DELI", "GYM", "KARAOKE",
              "PAWN SHOP", "OPTICIAN", "HARDWARE", "NEWS", "TATTOO", "ARCADE", "DINER", "TAXI", "DENTIST")


@dataclasses.dataclass
class BuildingLook:
    """The shared materials of a street's buildings (walls differ per building)."""
    frame: bpy.types.Material
    glass: bpy.types.Material
    lit: bpy.types.Material
    metal: bpy.types.Material
    awning: bpy.types.Material
    sign: bpy.types.Material
    lit_share: float           # of windows with a light on


def building_look(rng: random.Random, lamps: float) -> BuildingLook:
    """Window frames, dark and lit glass, railings, awnings, sign boards for a street at ``lamps`` (0 day .. 1 night)."""
    warm = (1.0, rng.uniform(0.6, 0.78), rng.uniform(0.3, 0.45))
    lit = kit.Shader("LitWindow")
    blinds = lit.node("TexWave", {"Vector": lit.coords(), "Scale": kit.vary_scale(rng, 12.0), "Distortion": 0.0},
                      bands_direction="Z")
    glow = lit.math("ADD", 0.4, lit.math("MULTIPLY", lit.out(blinds, "Factor"), 0.6))
    lit.principled({"Base Color": (0.05, 0.05, 0.05), "Roughness": 0.05, "Emission Color": warm,
                    "Emission Strength": lit.math("MULTIPLY", glow, 0.3 + 4.0 * lamps)})
    return BuildingLook(
        frame=kit.plain("WindowFrame", kit.vary_color(rng, rng.choice(((0.9, 0.9, 0.88), (0.1, 0.1, 0.1),
                                                                         (0.35, 0.22, 0.12)))), roughness=0.4),
        glass=kit.plain("WindowGlass", (0.05, 0.06, 0.07), roughness=0.03, metallic=0.6),
        lit=lit.material,
        metal=metal("Railing", (0.08, 0.08, 0.08), 0.4),
        awning=fabric(rng, "Awning", kit.vary_color(rng, rng.choice(((0.6, 0.05, 0.05), (0.05, 0.3, 0.1),
                                                                       (0.1, 0.15, 0.5)))), weave=150.0,
                      pattern="stripe"),
        sign=kit.plain("SignBoard", (0.05, 0.05, 0.06), roughness=0.3),
        lit_share=0.15 + 0.55 * lamps,
    )


def wall(rng: random.Random, name: str):
    """A facade: brick, plaster or concrete panels, colour and scale varying."""
    s = kit.Shader(name)
    co = s.wall_coords(offset=kit.random_offset(rng))
    kind = rng.choice(("brick", "plaster", "panels"))
    grime = s.node("TexNoise", {"Vector": co, "Scale": kit.vary_scale(rng, 3.0), "Detail": 8.0})
    if kind == "brick":
        pattern = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 2.4, 0.2), "Mortar Size": 0.01,
                                      "Brick Width": 0.5, "Row Height": 0.16,
                                      "Color1": kit.vary_color(rng, (0.45, 0.18, 0.1)),
                                      "Color2": kit.vary_color(rng, (0.3, 0.12, 0.07)),
                                      "Mortar": (0.5, 0.48, 0.45)})
    elif kind == "panels":
        pattern = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 0.35, 0.2), "Mortar Size": 0.02,
                                      "Brick Width": 1.0, "Row Height": 0.5, "Bias": 0.0,
                                      "Color1": kit.vary_color(rng, (0.55, 0.55, 0.52)),
                                      "Color2": kit.vary_color(rng, (0.48, 0.5, 0.5)),
                                      "Mortar": (0.15, 0.15, 0.15)}, offset=0.0)
    else:
        pattern = s.node("TexNoise", {"Vector": co, "Scale": 40.0, "Detail": 6.0})
    tint = kit.vary_color(rng, rng.choice(((0.75, 0.7, 0.6), (0.6, 0.45, 0.35), (0.7, 0.72, 0.75),
                                           (0.8, 0.65, 0.45))))
    base = s.out(pattern, "Color") if kind != "plaster" else s.mix(0.2, tint, s.out(pattern, "Color"), "OVERLAY")
    base = s.mix(0.35, base, s.out(grime, "Color"), "MULTIPLY")
    height = s.math("MULTIPLY", s.out(pattern, "Factor"), -1.0 if kind != "plaster" else 0.3)
    return s.principled({"Base Color": base, "Roughness": 0.8, "Normal": s.bump(height, 0.7, 0.01)})


def building(name: str, rng: random.Random, look: BuildingLook, wall_material, *, width: float, height: float,
             depth: float = 12.0, shop: bool = True, balconies: float = 0.3, sign_text: str | None = None,
             lamps: float = 0.0, location=(0, 0, 0), yaw: float = 0.0) -> bpy.types.Object:
    """A building whose facade (local y = 0, facing -Y) has real window geometry.

    Each window has a pane (dark or lit glass), a frame of four bars, a mullion, a
    transom and a sill; floors are marked by bands; some windows get a balcony with
    a railing of 1.5 cm bars; the ground floor may be a shop with a display window,
    a striped awning and a sign board with its name in text. Thin, regular,
    high-contrast geometry that aliases into moire at LR.
    """
    m = kit.ArrayMesh()
    boxes: dict[int, tuple[list, list]] = {k: ([], []) for k in range(7)}

    def box(material: int, centre, size) -> None:
        boxes[material][0].append(centre)
        boxes[material][1].append(size)

    box(0, (0, depth / 2, height / 2), (width - 0.2, depth, height))
    storey = rng.uniform(3.0, 3.5)
    floors = max(2, int(height / storey))
    spacing = rng.uniform(1.8, 2.8)
    cols = max(1, int((width - 1.2) / spacing))
    wx = spacing * rng.uniform(0.45, 0.65)
    wz = storey * rng.uniform(0.42, 0.55)
    first = 1 if shop else 0
    for i in range(first, floors):
        z0 = i * storey
        box(0, (0, -0.05, z0 + 0.05), (width - 0.1, 0.14, 0.14))                   # floor band
        has_balconies = rng.random() < balconies
        for j in range(cols):
            x = (j - (cols - 1) / 2) * spacing
            zc = z0 + storey * 0.5
            box(3 if rng.random() < look.lit_share else 2, (x, -0.02, zc), (wx, 0.02, wz))
            t = 0.05
            for dx, dz, sx, sz in ((-(wx + t) / 2, 0, t, wz + 2 * t), ((wx + t) / 2, 0, t, wz + 2 * t),
                                   (0, (wz + t) / 2, wx, t), (0, -(wz + t) / 2, wx, t)):
                box(1, (x + dx, -0.06, zc + dz), (sx, 0.09, sz))
            box(1, (x, -0.04, zc), (0.03, 0.04, wz))                                  # mullion
            box(1, (x, -0.04, zc + wz * 0.2), (wx, 0.04, 0.03))                       # transom
            box(0, (x, -0.1, zc - wz / 2 - 0.06), (wx + 0.2, 0.2, 0.06))              # sill
            if has_balconies and i >= 1:
                bw = wx + 0.7
                box(4, (x, -0.5, z0 + 0.05), (bw, 0.95, 0.1))
                bars = int(bw / 0.11)
                for k in range(bars + 1):
                    box(4, (x - bw / 2 + k * bw / bars, -0.95, z0 + 0.55), (0.015, 0.015, 0.95))
                for sx in (-1, 1):
                    for k in range(8):
                        box(4, (x + sx * bw / 2, -0.9 + k * 0.11, z0 + 0.55), (0.015, 0.015, 0.95))
                box(4, (x, -0.95, z0 + 1.03), (bw + 0.04, 0.04, 0.04))
    box(0, (0, 0.0, height + 0.4), (width, 0.5, 0.8))                                 # parapet
    if shop:
        box(3 if lamps > 0.2 else 2, (0, -0.03, 1.7), (width - 1.6, 0.04, 2.6))       # display window
        box(1, (0, -0.08, 3.1), (width - 1.4, 0.14, 0.2))
        box(1, (0, -0.08, 0.3), (width - 1.4, 0.14, 0.6))
        for k in range(int((width - 1.6) / 2.0) + 1):
            box(1, (-(width - 1.6) / 2 + k * 2.0, -0.07, 1.7), (0.06, 0.1, 2.6))
        box(6, (0, -0.12, 3.7), (min(width - 1.0, 7.0), 0.12, 0.8))                    # sign board
    for material, (centres, sizes) in boxes.items():
        m.boxes(centres, sizes, material=material)
    if shop:
        # Awning: a sloped striped canopy over the display window.
        aw = width - 1.2
        m.add([(-aw / 2, 0, 3.3), (aw / 2, 0, 3.3), (aw / 2, -1.6, 2.7), (-aw / 2, -1.6, 2.7),
               (-aw / 2, -1.6, 2.45), (aw / 2, -1.6, 2.45)],
              [np.array([[0, 1, 2, 3], [3, 2, 5, 4]])], material=5)
    for k in range(rng.randint(0, 3)):                                                # roof clutter
        m.boxes([(rng.uniform(-width / 3, width / 3), rng.uniform(2, depth - 2), height + 0.6)],
                [(1.2, 0.9, 1.0)], material=4)
    if rng.random() < 0.5:
        x = rng.uniform(-width / 3, width / 3)
        m.tubes([(x, 3, height), (x, 3, height + 3)], [(x, 3, height + 4), (x + 0.8, 3, height + 3)], 0.02)
    obj = m.object(name, [wall_material, look.frame, look.glass, look.lit, look.metal, look.awning, look.sign],
                   location=location, rotation=(0, 0, yaw))
    if shop:
        body = sign_text or rng.choice(SHOP_NAMES)
        bright = lamps > 0.2
        ink = (kit.glow(f"{name}Letters", kit.vary_color(rng, rng.choice(((1.0, 0.85, 0.5), (0.4, 0.9, 1.0),
                                                                            (1.0, 0.3, 0.5)))), 4.0 + 8 * lamps)
               if bright else kit.plain(f"{name}Letters", kit.vary_color(rng, (0.9, 0.85, 0.7)), roughness=0.3))
        label = kit.text(f"{name}Sign", body, ink, size=0.5, extrude=0.01, location=(0, -0.2, 3.7))
        label.parent = obj
    return obj
