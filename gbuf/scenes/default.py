"""The default scene: a small, quick mix of everything the other recipes stress.

A tiled floor, a brick block, a mirror ball rolling past, a spinning glossy ring
and a glowing lamp under a gradient sky, seen by a camera on a slow arc. Small
enough to render in seconds at test sizes; what ``gbuf render`` uses when it
gets no scene.
"""

from __future__ import annotations

import math
import random

from mathutils import Quaternion

from . import _kit as kit

DESCRIPTION = "quick mix: tiled floor, brick block, rolling mirror ball, spinning glossy ring, lamp; slow camera arc"
SEED_VARIES = ("time of day (morning, noon, afternoon: sun height, direction and colour), where the block, "
               "ring and lamp stand, spin and roll speeds, texture offsets, the camera's start and direction")


def _floor_tiles(rng: random.Random):
    s = kit.Shader("FloorTiles")
    co = s.coords(scale=1.0, offset=kit.random_offset(rng))
    checker = s.node("TexChecker", {"Vector": co, "Scale": 1.2,
                                    "Color1": (0.55, 0.52, 0.47), "Color2": (0.18, 0.17, 0.16)})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 40.0, "Detail": 6.0})
    color = s.mix(0.25, s.out(checker, "Color"), s.out(grain, "Color"), "OVERLAY")
    # Grout lines: a brick texture with square "bricks" on the same grid as the checker.
    grout = s.node("TexBrick", {"Vector": co, "Scale": 1.2 / 2, "Mortar Size": 0.01,
                                "Brick Width": 1.0, "Row Height": 1.0, "Mortar Smooth": 0.2},
                   offset=0.0)
    height = s.math("MULTIPLY", s.out(grout, "Factor"), -1.0)
    rough = s.math("ADD", s.math("MULTIPLY", s.out(grain, "Factor"), 0.3), 0.25)
    return s.principled({"Base Color": color, "Roughness": rough,
                         "Normal": s.bump(height, 0.6, 0.01)})


def _bricks(rng: random.Random):
    s = kit.Shader("Bricks")
    co = s.wall_coords(offset=kit.random_offset(rng))
    bricks = s.node("TexBrick", {"Vector": co, "Scale": 4.0, "Mortar Size": 0.015,
                                 "Color1": (0.45, 0.12, 0.06), "Color2": (0.30, 0.08, 0.05),
                                 "Mortar": (0.6, 0.58, 0.55), "Bias": 0.0})
    dirt = s.node("TexNoise", {"Vector": co, "Scale": 25.0, "Detail": 8.0})
    color = s.mix(0.3, s.out(bricks, "Color"), s.out(dirt, "Color"), "MULTIPLY")
    height = s.math("ADD", s.math("MULTIPLY", s.out(bricks, "Factor"), -1.0),
                    s.math("MULTIPLY", s.out(dirt, "Factor"), 0.3))
    return s.principled({"Base Color": color, "Roughness": 0.8,
                         "Normal": s.bump(height, 0.8, 0.02)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    kit.time_of_day(rng, ("morning", "noon", "afternoon"), strength=0.9)

    floor = kit.MeshBuilder()
    floor.grid((200, 200))
    floor.object("Floor", [_floor_tiles(rng)])

    block = kit.MeshBuilder()
    block.cube((1.2, 1.2, 1.2), (0, 0, 0.6))
    block_obj = block.object("BrickBlock", [_bricks(rng)],
                             location=(rng.uniform(-1.5, -0.5), rng.uniform(-0.5, 0.5), 0))
    spin = rng.choice((-1, 1)) * rng.uniform(0.4, 0.8)  # rad/s
    kit.key_motion(block_obj, frames, lambda f: {"rotation_euler": (0, 0, spin * kit.seconds(f))})

    cam_start = rng.uniform(0, 2 * math.pi)
    ball = kit.MeshBuilder()
    radius = 0.45
    ball.sphere(radius)
    ball_obj = ball.object("MirrorBall", [kit.mirror()])
    # The ball rolls back and forth across the camera's initial line of sight, 3 m in front of
    # the centre, so it stays in view however long the sequence is.
    toward = (math.cos(cam_start), math.sin(cam_start))
    across = (-toward[1], toward[0])
    speed = rng.uniform(1.2, 2.0)  # m/s, rolling without slipping
    phase = rng.uniform(0, 2 * math.pi)

    def roll(f: int) -> kit.Pose:
        d = 2.0 * math.sin(phase + speed * kit.seconds(f) / 2.0)
        x, y = 3.0 * toward[0] + d * across[0], 3.0 * toward[1] + d * across[1]
        # Rolling without slipping: turned by distance / radius about z x (direction of travel).
        turn = Quaternion((-across[1], across[0], 0.0), d / radius)
        return {"location": (x, y, radius), "rotation_quaternion": tuple(turn)}

    ball_obj.rotation_mode = "QUATERNION"
    kit.key_motion(ball_obj, frames, roll)

    ring = kit.MeshBuilder()
    ring.torus(0.5, 0.12)
    ring_obj = ring.object("GlossyRing", [kit.plain("RedLacquer", (0.7, 0.05, 0.04), roughness=0.12,
                                                    coat_weight=1.0)])
    ring_x, ring_y = rng.uniform(1.2, 2.0), rng.uniform(-1.2, -0.4)
    kit.key_motion(ring_obj, frames, lambda f: {
        "location": (ring_x, ring_y, 1.0 + 0.2 * math.sin(2.0 * kit.seconds(f))),
        "rotation_euler": (1.2 * kit.seconds(f), 0.5, 0.7 * kit.seconds(f))})

    lamp = kit.MeshBuilder()
    lamp.cylinder(0.04, 1.6, (0, 0, 0.8), material=0)
    lamp.sphere(0.16, (0, 0, 1.7), material=1)
    lamp.object("Lamp", [kit.plain("Steel", (0.6, 0.6, 0.62), roughness=0.3, metallic=1.0),
                         kit.glow("Bulb", (1.0, 0.75, 0.45), 25.0)],
                location=(rng.uniform(-0.5, 0.5), rng.uniform(-2.2, -1.6), 0))

    cam = kit.add_camera(32.0)
    rate = rng.choice((-1, 1)) * rng.uniform(0.12, 0.2)  # rad/s
    kit.key_camera(cam, frames,
                   eye=lambda t: (7.0 * math.cos(cam_start + rate * t), 7.0 * math.sin(cam_start + rate * t),
                                  2.2 + 0.3 * math.sin(0.7 * t)),
                   target=lambda t: (0.0, 0.0, 0.7))
