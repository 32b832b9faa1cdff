"""Showroom: glossy and mirror reflections.

A polished stone floor, a mirror wall, light strips in the ceiling and
coloured panels for the mirrors to reflect; chrome, gold, copper, lacquer and
glass objects, some orbiting or spinning, while the camera circles the room.
Reflections move differently from the surfaces that hold them, which is what
makes them hard for motion-vector based upscalers.
"""

from __future__ import annotations

import math
import random

from . import _kit as kit

DESCRIPTION = "reflections: polished floor, mirror wall, chrome, gold, glass, lacquer objects orbiting and spinning; camera orbit"
SEED_VARIES = ("lighting mood (neutral, warm, cool, dim with a strong key), panel colours, floor and steel "
               "texture offsets, ball sizes, orbits and speeds, the glass sphere's bob, the torus' turn, the "
               "camera's start and direction")
#: Mood: ceiling strip colour, key light colour, ceiling level.
MOODS = {"neutral": ((1.0, 0.97, 0.92), (1.0, 0.85, 0.7), 1.0),
         "warm": ((1.0, 0.82, 0.6), (1.0, 0.7, 0.45), 0.9),
         "cool": ((0.8, 0.9, 1.0), (0.9, 0.95, 1.0), 1.0),
         "dim": ((1.0, 0.95, 0.9), (1.0, 0.8, 0.6), 0.4)}


def _polished_floor(rng: random.Random):
    s = kit.Shader("PolishedStone")
    co = s.coords(offset=kit.random_offset(rng))
    tiles = s.node("TexChecker", {"Vector": co, "Scale": 0.6,
                                  "Color1": (0.03, 0.03, 0.035), "Color2": (0.55, 0.54, 0.52)})
    veins = s.node("TexWave", {"Vector": co, "Scale": 2.0, "Distortion": 10.0, "Detail": 6.0},
                   wave_type="BANDS", bands_direction="DIAGONAL")
    color = s.mix(0.35, s.out(tiles, "Color"), s.out(veins, "Color"), "OVERLAY")
    smudge = s.node("TexNoise", {"Vector": co, "Scale": 3.0, "Detail": 5.0})
    roughness = s.out(s.node("MapRange", {"Value": s.out(smudge, "Factor"), "From Min": 0.4,
                                          "From Max": 0.7, "To Min": 0.02, "To Max": 0.18}), "Result")
    return s.principled({"Base Color": color, "Roughness": roughness, "Coat Weight": 0.5,
                         "Coat Roughness": 0.02})


def _panels(rng: random.Random):
    s = kit.Shader("Panels")
    co = s.wall_coords(offset=kit.random_offset(rng))
    bands = s.node("TexWave", {"Vector": co, "Scale": 0.12, "Distortion": 0.0},
                   wave_type="BANDS", bands_direction="X", wave_profile="SAW")
    # Muted colours: a grey base with a small random tint each.
    hues = [tuple(g + rng.uniform(-0.12, 0.12) for _ in range(3))
            for g in (rng.uniform(0.25, 0.6) for _ in range(4))]
    color = s.ramp(s.out(bands, "Factor"), [(0.0, hues[0]), (0.25, hues[1]), (0.5, hues[2]),
                                            (0.75, hues[3])])
    s.tree.nodes[-1].color_ramp.interpolation = "CONSTANT"
    return s.principled({"Base Color": color, "Roughness": 0.6})


def _brushed(rng: random.Random):
    s = kit.Shader("BrushedSteel")
    co = s.coords(scale=(1.0, 1.0, 200.0), offset=kit.random_offset(rng))
    streaks = s.node("TexNoise", {"Vector": co, "Scale": 4.0, "Detail": 4.0})
    roughness = s.out(s.node("MapRange", {"Value": s.out(streaks, "Factor"), "To Min": 0.15,
                                          "To Max": 0.35}), "Result")
    return s.principled({"Base Color": (0.8, 0.8, 0.82), "Metallic": 1.0, "Roughness": roughness,
                         "Anisotropic": 0.8})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    kit.sky(zenith=(0.35, 0.4, 0.5), horizon=(0.6, 0.6, 0.62), ground=(0.1, 0.1, 0.1), strength=0.4)
    # Indoors the hour does not show; the seed picks the lighting's mood instead.
    mood = rng.choice(list(MOODS))
    kit.variant(mood=mood)
    strip_color, key_color, level = MOODS[mood]

    room = kit.MeshBuilder()
    room.grid((60, 60), material=0)
    room.cube((24, 0.3, 6), (0, 9, 3), material=1)                # back wall with coloured panels
    room.cube((0.3, 18, 6), (-10, 0, 3), material=1)              # side wall
    room.cube((0.3, 18, 6), (10, 0, 3), material=1)
    room.object("Room", [_polished_floor(rng), _panels(rng)])

    mirror_wall = kit.MeshBuilder()
    mirror_wall.cube((0.05, 8, 4), (-9.8, 1, 2.2))
    mirror_wall.cube((0.12, 8.3, 0.15), (-9.78, 1, 4.25), material=1)
    mirror_wall.cube((0.12, 8.3, 0.15), (-9.78, 1, 0.15), material=1)
    mirror_wall.object("MirrorWall", [kit.mirror(), kit.plain("Frame", (0.02, 0.02, 0.02), roughness=0.3)])

    strips = kit.MeshBuilder()
    for i in range(5):
        strips.cube((14, 0.25, 0.05), (0, -6 + 3 * i, 5.5))
    strips.object("LightStrips", [kit.glow("StripLight", strip_color, 5.0 * level)])
    kit.area((0, 0, 5.3), (0, 0, 0), size=8.0, energy=550.0 * level, color=strip_color)
    kit.area((6, -6, 4), (0, 0, 0.5), size=2.0, energy=400.0, color=key_color, name="KeyLight")

    pedestals = kit.MeshBuilder()
    spots = [(-3.0, 3.0), (0.0, 4.5), (3.0, 3.0), (3.5, -1.0)]
    for x, y in spots:
        pedestals.cylinder(0.5, 0.8, (x, y, 0.4), segments=48)
    pedestals.object("Pedestals", [kit.plain("WhiteLacquer", (0.85, 0.85, 0.85), roughness=0.08,
                                             coat_weight=1.0)])

    gold = kit.MeshBuilder()
    gold.sphere(0.45, (spots[0][0], spots[0][1], 1.25), segments=64, rings=32)
    gold.object("GoldSphere", [kit.plain("Gold", (1.0, 0.76, 0.33), roughness=0.18, metallic=1.0)])

    copper = kit.MeshBuilder()
    copper.cylinder(0.3, 1.0, (spots[2][0], spots[2][1], 1.3), segments=64, smooth=True)
    copper.object("BrushedColumn", [_brushed(rng)])

    glass = kit.MeshBuilder()
    glass.sphere(0.42, segments=64, rings=32)
    glass_obj = glass.object("GlassSphere", [kit.plain("Glass", (1.0, 1.0, 1.0), roughness=0.0,
                                                      transmission_weight=1.0, ior=1.45)])
    glass_obj.location = (spots[3][0], spots[3][1], 1.22)
    bob = rng.uniform(1.5, 2.5)
    kit.key_motion(glass_obj, frames, lambda f: {
        "location": (spots[3][0], spots[3][1], 1.3 + 0.25 * math.sin(bob * kit.seconds(f)))})

    torus = kit.MeshBuilder()
    torus.torus(0.55, 0.16, major_segments=96, minor_segments=32)
    torus_obj = torus.object("ChromeTorus", [kit.mirror("Chrome", (0.9, 0.9, 0.92), 0.02)])
    turn = rng.uniform(0.8, 1.4)
    kit.key_motion(torus_obj, frames, lambda f: {
        "location": (spots[1][0], spots[1][1], 1.55),
        "rotation_euler": (math.pi / 2 + 0.3 * math.sin(kit.seconds(f)), 0, turn * kit.seconds(f))})

    # Mirror and lacquer balls orbit the middle of the room at different heights and speeds.
    ball_colors = [(0.7, 0.02, 0.02), (0.02, 0.15, 0.6), (0.9, 0.45, 0.02)]
    for index in range(4):
        ball = kit.MeshBuilder()
        radius = rng.uniform(0.25, 0.45)
        ball.sphere(radius, segments=48, rings=24)
        material = (kit.mirror() if index == 0 else
                    kit.plain(f"Lacquer{index}", ball_colors[index - 1], roughness=0.05, coat_weight=1.0))
        ball_obj = ball.object(f"OrbitBall{index}", [material])
        orbit = rng.uniform(1.2, 2.2)
        rate = rng.choice((-1, 1)) * rng.uniform(0.6, 1.2)
        start = rng.uniform(0, 2 * math.pi)
        height = radius + rng.uniform(0.0, 0.6)

        def pose(f: int, orbit=orbit, rate=rate, start=start, height=height) -> kit.Pose:
            a = start + rate * kit.seconds(f)
            return {"location": (orbit * math.cos(a), 0.8 + orbit * math.sin(a), height)}

        kit.key_motion(ball_obj, frames, pose)

    cam = kit.add_camera(30.0)
    cam_start = rng.uniform(-2.2, -1.0)
    rate = rng.choice((-1, 1)) * rng.uniform(0.1, 0.16)
    kit.key_camera(cam, frames,
                   eye=lambda t: (7.5 * math.cos(cam_start + rate * t),
                                  1.5 + 7.5 * math.sin(cam_start + rate * t),
                                  1.9 + 0.2 * math.sin(0.6 * t)),
                   target=lambda t: (0.0, 1.8, 1.0))
