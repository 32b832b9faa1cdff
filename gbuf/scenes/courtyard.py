"""Courtyard: fine textures and complex geometry in daylight.

Small bricks with mortar relief, paving stones, veined marble columns, noise-
displaced rocks, a branching shrub with hundreds of leaves, a railing of thin
bars and a rotating lattice sphere: the high-frequency detail that aliases at
low resolution. A ball rolls across the paving while the camera dollies along
the courtyard.
"""

from __future__ import annotations

import math
import random

from mathutils import Matrix, Vector

from . import _kit as kit

DESCRIPTION = "daylight courtyard: fine bricks, paving, marble columns, displaced rocks, shrubs, railing, rotating lattice; camera dolly"
SEED_VARIES = ("time of day (morning to evening), texture offsets, rock shapes, sizes and places, the shrubs' "
               "branching and places, the ledge, lattice spin, the ball's lane and speed, the dolly's phase")


def _bricks(rng: random.Random):
    s = kit.Shader("Bricks")
    co = s.wall_coords(offset=kit.random_offset(rng))
    # Real bricks are about 21.5 x 6.5 cm: Brick Width 0.5 and Row Height 0.25 at Scale 2.3.
    bricks = s.node("TexBrick", {"Vector": co, "Scale": 2.3, "Mortar Size": 0.008, "Mortar Smooth": 0.3,
                                 "Brick Width": 0.5, "Row Height": 0.15, "Bias": -0.2,
                                 "Color1": (0.42, 0.16, 0.08), "Color2": (0.26, 0.10, 0.06),
                                 "Mortar": (0.55, 0.53, 0.5)})
    grime = s.node("TexNoise", {"Vector": co, "Scale": 6.0, "Detail": 10.0, "Roughness": 0.6})
    pits = s.node("TexNoise", {"Vector": co, "Scale": 90.0, "Detail": 4.0})
    color = s.mix(0.35, s.out(bricks, "Color"), s.out(grime, "Color"), "MULTIPLY")
    height = s.math("ADD", s.math("MULTIPLY", s.out(bricks, "Factor"), -1.0),
                    s.math("MULTIPLY", s.out(pits, "Factor"), 0.4))
    return s.principled({"Base Color": color, "Roughness": 0.85, "Normal": s.bump(height, 1.0, 0.01)})


def _paving(rng: random.Random):
    s = kit.Shader("Paving")
    co = s.coords(offset=kit.random_offset(rng))
    stones = s.node("TexBrick", {"Vector": co, "Scale": 1.6, "Mortar Size": 0.012, "Mortar Smooth": 0.5,
                                 "Brick Width": 0.5, "Row Height": 0.3, "Bias": 0.0,
                                 "Color1": (0.5, 0.48, 0.44), "Color2": (0.36, 0.34, 0.32),
                                 "Mortar": (0.12, 0.11, 0.1)}, offset=0.5)
    speckle = s.node("TexVoronoi", {"Vector": co, "Scale": 120.0})
    moss = s.node("TexNoise", {"Vector": co, "Scale": 1.5, "Detail": 6.0})
    moss_mask = s.out(s.node("MapRange", {"Value": s.out(moss, "Factor"), "From Min": 0.55,
                                          "From Max": 0.7}), "Result")
    base = s.mix(0.25, s.out(stones, "Color"), s.out(speckle, "Color"), "OVERLAY")
    color = s.mix(s.math("MULTIPLY", moss_mask, s.math("SUBTRACT", 1.0, s.out(stones, "Factor"))),
                  base, (0.12, 0.2, 0.05))
    height = s.math("ADD", s.math("MULTIPLY", s.out(stones, "Factor"), -1.0),
                    s.math("MULTIPLY", s.out(speckle, "Distance"), 0.3))
    return s.principled({"Base Color": color, "Roughness": 0.75, "Normal": s.bump(height, 0.9, 0.02)})


def _marble(rng: random.Random):
    s = kit.Shader("Marble")
    co = s.coords(offset=kit.random_offset(rng))
    veins = s.node("TexWave", {"Vector": co, "Scale": 1.3, "Distortion": 14.0, "Detail": 8.0,
                               "Detail Scale": 2.0}, wave_type="BANDS", bands_direction="DIAGONAL")
    color = s.ramp(s.out(veins, "Factor"), [(0.0, (0.25, 0.24, 0.22)), (0.25, (0.8, 0.78, 0.74)),
                                            (1.0, (0.92, 0.91, 0.88))])
    # Flutes: a sine of the angle around the column, as bump.
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    angle = s.math("ARCTAN2", s.out(xyz, "Y"), s.out(xyz, "X"))
    flutes = s.math("SINE", s.math("MULTIPLY", angle, 20.0))
    return s.principled({"Base Color": color, "Roughness": 0.25,
                         "Normal": s.bump(flutes, 0.5, 0.01)})


def _rock(rng: random.Random, index: int):
    s = kit.Shader(f"Rock{index}")
    co = s.coords(offset=kit.random_offset(rng))
    cells = s.node("TexVoronoi", {"Vector": co, "Scale": 8.0})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 30.0, "Detail": 12.0})
    tint = (rng.uniform(0.25, 0.4), rng.uniform(0.22, 0.33), rng.uniform(0.18, 0.28))
    color = s.mix(0.6, tint, s.out(grain, "Color"), "MULTIPLY")
    color = s.mix(s.math("MULTIPLY", s.out(cells, "Distance"), 0.6), color, (0.55, 0.53, 0.5))
    height = s.math("ADD", s.out(cells, "Distance"), s.out(grain, "Factor"))
    return s.principled({"Base Color": color, "Roughness": 0.9, "Normal": s.bump(height, 0.6, 0.02)})


def _leaves():
    s = kit.Shader("Leaves")
    co = s.coords()
    var = s.node("TexNoise", {"Vector": co, "Scale": 12.0, "Detail": 3.0})
    color = s.ramp(s.out(var, "Factor"), [(0.3, (0.05, 0.18, 0.03)), (0.7, (0.2, 0.35, 0.05))])
    return s.principled({"Base Color": color, "Roughness": 0.55, "Transmission Weight": 0.0,
                         "Normal": s.bump(s.out(var, "Factor"), 0.3, 0.01)})


def _ball():
    s = kit.Shader("Ball")
    # A checker in object space, so the ball's rolling is visible (and in the motion vectors).
    checker = s.node("TexChecker", {"Vector": s.coords(), "Scale": 3.0,
                                    "Color1": (0.7, 0.35, 0.1), "Color2": (0.9, 0.88, 0.8)})
    return s.principled({"Base Color": s.out(checker, "Color"), "Roughness": 0.45})


def _shrub(builder: kit.MeshBuilder, rng: random.Random, base: Vector) -> None:
    """Recursive branches ending in leaf clusters (material 0 bark, 1 leaves)."""

    def grow(start: Vector, direction: Vector, length: float, radius: float, depth: int) -> None:
        end = start + direction * length
        mid = (start + end) / 2
        rotation = direction.to_track_quat("Z", "Y").to_euler()
        builder.cylinder(radius, length, mid, rotation, radius_top=radius * 0.7, segments=8,
                         material=0)
        if depth == 0:
            for _ in range(6):
                offset = Vector((rng.gauss(0, 0.12), rng.gauss(0, 0.12), rng.gauss(0, 0.1)))
                builder.ico(rng.uniform(0.05, 0.09), end + offset, subdivisions=1, material=1,
                            smooth=False)
            return
        for _ in range(rng.choice((2, 3))):
            axis = Vector((rng.uniform(-1, 1), rng.uniform(-1, 1), 0)).normalized()
            turn = Matrix.Rotation(rng.uniform(0.35, 0.8), 3, axis)
            grow(end, (turn @ direction).normalized(), length * rng.uniform(0.65, 0.8),
                 radius * 0.65, depth - 1)

    grow(base, Vector((0, 0, 1)), 0.8, 0.07, 4)


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    # The sun stands over the open side, so it shines into the courtyard.
    kit.time_of_day(rng, ("morning", "noon", "afternoon", "evening"), azimuth=rng.uniform(200, 340))

    ground = kit.MeshBuilder()
    ground.grid((120, 120))
    ground.object("Paving", [_paving(rng)])

    walls = kit.MeshBuilder()
    walls.cube((17, 0.4, 4.5), (0, 8.2, 2.25))
    walls.cube((0.4, 14, 4.5), (-8.5, 1.4, 2.25))
    walls.cube((0.4, 14, 4.5), (8.5, 1.4, 2.25))
    # A doorway-like recess and a ledge: more edges at different depths.
    walls.cube((3, 0.6, 0.25), (rng.uniform(-4, 4), 7.9, 3.0))
    walls.object("Walls", [_bricks(rng)])

    columns = kit.MeshBuilder()
    for i in range(5):
        x = -6 + 3 * i
        columns.cylinder(0.25, 3.6, (x, 4.5, 2.0), segments=48)
        columns.cube((0.7, 0.7, 0.2), (x, 4.5, 0.1))
        columns.cube((0.7, 0.7, 0.2), (x, 4.5, 3.9))
    columns.cube((13.0, 0.8, 0.35), (0, 4.5, 4.17))
    columns.object("Colonnade", [_marble(rng)])

    for index in range(rng.randint(7, 10)):
        rock = kit.MeshBuilder()
        radius = rng.uniform(0.2, 0.55)
        verts = rock.ico(radius, subdivisions=5)
        kit.displace(verts, radius * 0.45, 2.5 / radius, center=(0, 0, 0),
                     offset=kit.random_offset(rng))
        side = rng.choice((-1, 1))
        rock.object(f"Rock{index}", [_rock(rng, index)],
                    location=(side * rng.uniform(5.0, 7.8), rng.uniform(-1.0, 7.0), radius * 0.5),
                    rotation=(rng.uniform(0, 6.3), rng.uniform(0, 6.3), rng.uniform(0, 6.3)))

    for index in range(2):
        shrub = kit.MeshBuilder()
        _shrub(shrub, rng, Vector((0, 0, 0)))
        shrub.object(f"Shrub{index}", [kit.plain("Bark", (0.16, 0.1, 0.06), roughness=0.9), _leaves()],
                     location=((-1) ** index * rng.uniform(2.5, 4.0), rng.uniform(5.8, 7.2), 0))

    railing = kit.MeshBuilder()
    for i in range(60):
        railing.cube((0.025, 0.025, 1.0), (-7.5, -1.5 + i * 0.12, 0.5))
    railing.cube((0.06, 7.2, 0.05), (-7.5, 2.07, 1.0))
    railing.object("Railing", [kit.plain("Iron", (0.05, 0.05, 0.05), roughness=0.4, metallic=1.0)])

    lattice = kit.MeshBuilder()
    kit.wireframe(lattice, lattice.ico(0.9, subdivisions=2, smooth=False), 0.04)
    lattice_obj = lattice.object("Lattice", [kit.plain("Bronze", (0.7, 0.45, 0.2), roughness=0.3,
                                                      metallic=1.0)])
    pedestal = kit.MeshBuilder()
    pedestal.cube((1.0, 1.0, 0.8), (0, 0, 0.4))
    pedestal.object("Pedestal", [_marble(rng)], location=(0, 2.0, 0))
    spin = rng.uniform(0.5, 0.9)
    kit.key_motion(lattice_obj, frames, lambda f: {
        "location": (0, 2.0, 1.75),
        "rotation_euler": (0.3, 0.2 * kit.seconds(f), spin * kit.seconds(f))})

    ball = kit.MeshBuilder()
    radius = 0.3
    ball.sphere(radius)
    ball_obj = ball.object("Ball", [_ball()])
    speed = rng.uniform(1.5, 2.5)
    phase = rng.uniform(0, 2 * math.pi)
    lane = rng.uniform(-0.5, 0.5)

    def roll(f: int) -> kit.Pose:
        x = 4.0 * math.sin(phase + speed * kit.seconds(f) / 4.0)
        return {"location": (x, lane, radius), "rotation_euler": (0, x / radius, 0)}

    kit.key_motion(ball_obj, frames, roll)

    cam = kit.add_camera(28.0)
    cam_phase = rng.uniform(0, 2 * math.pi)
    kit.key_camera(cam, frames,
                   eye=lambda t: (4.5 * math.sin(cam_phase + 0.12 * t), -6.5 + 0.6 * math.sin(0.3 * t),
                                  1.7 + 0.15 * math.sin(0.5 * t)),
                   target=lambda t: (1.5 * math.sin(cam_phase + 0.12 * t + 0.8), 3.0, 1.3))
