"""Night street: a city street in the rain, lit only by emissive surfaces.

No sun and an almost black sky: the light comes from street-lamp heads, lit
windows, neon signs in text (along the facades and hanging vertically over the
sidewalk) and the head- and tail-lights of passing cars, reflected in a wet
road, with rain streaking down, cables strung across the street and people
walking. Small, bright, moving emitters give the high dynamic
range, noise and flicker that real-time night scenes have (RDG's NYC and
Squire-night).
"""

from __future__ import annotations

import math
import random

import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "rainy night street lit only by emissive lamps, windows, neon text signs and car lights; wet road, rain streaks, cables, walkers; walking camera"
SEED_VARIES = ("rain (how heavy, wind slant), building widths and heights, window "
               "grids and the share lit, sign words, colours and places, lamp spacing, car colours, lanes and "
               "speeds, walkers, asphalt and sidewalk texture scale, the walk's side, speed and start")

SIGN_WORDS = ("HOTEL", "BAR", "NOODLES", "OPEN", "24H", "KARAOKE", "RAMEN", "PHARMACY", "CLUB", "MOTEL", "PIZZA",
              "ARCADE", "LIQUOR", "SUSHI", "CAFE", "DINER", "TATTOO", "JAZZ", "PAWN", "CINEMA")

STREET_HALF = 4.0      # road from y = -4 to 4
SIDEWALK = 3.0         # then a sidewalk, then the facades
LENGTH = 240.0


def _wet_asphalt(rng: random.Random):
    s = kit.Shader("WetAsphalt")
    co = s.coords(offset=kit.random_offset(rng))
    grain = s.node("TexNoise", {"Vector": co, "Scale": 50.0, "Detail": 10.0})
    puddles = s.node("TexNoise", {"Vector": co, "Scale": 0.35, "Detail": 4.0})
    wet = s.out(s.node("MapRange", {"Value": s.out(puddles, "Factor"), "From Min": 0.48,
                                    "From Max": 0.56}), "Result")
    base = s.ramp(s.out(grain, "Factor"), [(0.35, (0.02, 0.02, 0.022)), (0.65, (0.07, 0.07, 0.07))])
    # Wet patches are darker and nearly mirror-smooth; dry asphalt is rough.
    color = s.mix(wet, base, (0.01, 0.01, 0.012))
    roughness = s.out(s.node("MapRange", {"Value": wet, "To Min": 0.6, "To Max": 0.04}), "Result")
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    centre_line = s.math("LESS_THAN", s.math("ABSOLUTE", s.out(xyz, "Y")), 0.08)
    dashes = s.math("GREATER_THAN", s.math("SINE", s.math("MULTIPLY", s.out(xyz, "X"), 1.0)), 0.2)
    color = s.mix(s.math("MULTIPLY", centre_line, dashes), color, (0.6, 0.55, 0.3))
    return s.principled({"Base Color": color, "Roughness": roughness,
                         "Normal": s.bump(s.out(grain, "Factor"), 0.3, 0.01)})


def _sidewalk(rng: random.Random):
    s = kit.Shader("Sidewalk")
    co = s.coords(offset=kit.random_offset(rng))
    slabs = s.node("TexBrick", {"Vector": co, "Scale": 1.0, "Mortar Size": 0.01, "Brick Width": 1.0,
                                "Row Height": 1.0, "Color1": (0.25, 0.24, 0.23),
                                "Color2": (0.18, 0.18, 0.17), "Mortar": (0.05, 0.05, 0.05)}, offset=0.0)
    grain = s.node("TexNoise", {"Vector": co, "Scale": 80.0, "Detail": 6.0})
    color = s.mix(0.3, s.out(slabs, "Color"), s.out(grain, "Color"), "OVERLAY")
    return s.principled({"Base Color": color, "Roughness": 0.5,
                         "Normal": s.bump(s.math("MULTIPLY", s.out(slabs, "Factor"), -1.0), 0.7, 0.01)})


def _facade(rng: random.Random, index: int):
    """Concrete with a grid of windows, a random share of them lit (warm or cool)."""
    s = kit.Shader(f"Facade{index}")
    co = s.wall_coords(offset=kit.random_offset(rng))
    # Each "brick" is a window bay; the mortar is the wall between windows.
    bays = s.node("TexBrick", {"Vector": co, "Scale": 0.4, "Mortar Size": 0.06 + 0.04 * rng.random(),
                               "Brick Width": 0.6, "Row Height": 1.0, "Bias": 0.0,
                               "Color1": (0.0, 0.0, 0.0), "Color2": (1.0, 1.0, 1.0),
                               "Mortar": (0.0, 0.0, 0.0)}, offset=0.0, squash_frequency=1)
    window = s.math("SUBTRACT", 1.0, s.out(bays, "Factor"))
    lit = s.math("GREATER_THAN", s.out(s.node("SeparateColor", {"Color": s.out(bays, "Color")}), "Red"),
                 rng.uniform(0.45, 0.7))
    warm = (1.0, rng.uniform(0.55, 0.75), rng.uniform(0.25, 0.4))
    strength = s.math("MULTIPLY", s.math("MULTIPLY", window, lit), rng.uniform(0.5, 1.2))
    concrete = s.node("TexNoise", {"Vector": co, "Scale": 20.0, "Detail": 8.0})
    tint = rng.uniform(0.15, 0.35)
    wall = s.mix(0.4, (tint, tint * 0.95, tint * 0.9), s.out(concrete, "Color"), "MULTIPLY")
    color = s.mix(window, wall, (0.02, 0.02, 0.025))
    return s.principled({"Base Color": color, "Roughness": s.mix(window, (0.8,) * 3, (0.05,) * 3),
                         "Emission Color": warm, "Emission Strength": strength,
                         "Normal": s.bump(s.out(concrete, "Factor"), 0.3, 0.01)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    # A faint blue-black sky: enough to outline roofs, far too dim to light anything.
    kit.sky(zenith=(0.002, 0.003, 0.008), horizon=(0.01, 0.012, 0.02), ground=(0.0, 0.0, 0.0),
            strength=1.0)

    road = kit.MeshBuilder()
    road.grid((LENGTH, 2 * STREET_HALF))
    road.object("Road", [_wet_asphalt(rng)])

    walks = kit.MeshBuilder()
    for side in (-1, 1):
        walks.cube((LENGTH, SIDEWALK, 0.15), (0, side * (STREET_HALF + SIDEWALK / 2), 0.075))
    walks.object("Sidewalks", [_sidewalk(rng)])

    facade_materials = [_facade(rng, i) for i in range(4)]
    front = STREET_HALF + SIDEWALK
    for side in (-1, 1):
        x = -LENGTH / 2
        index = 0
        while x < LENGTH / 2:
            width = rng.uniform(8.0, 16.0)
            height = rng.uniform(9.0, 28.0)
            depth = 12.0
            block = kit.MeshBuilder()
            block.cube((width - 0.3, depth, height), (0, 0, height / 2))
            block.object(f"Building{'LR'[side > 0]}{index}", [rng.choice(facade_materials)],
                         location=(x + width / 2, side * (front + depth / 2), 0))
            x += width
            index += 1

    lamp_glow = kit.glow("LampHead", (1.0, 0.7, 0.4), 50.0)
    steel = kit.plain("DarkSteel", (0.05, 0.05, 0.05), roughness=0.4, metallic=1.0)
    lamps = kit.MeshBuilder()
    spacing = 16.0
    for side in (-1, 1):
        offset = rng.uniform(0, spacing)
        for i in range(int(LENGTH / spacing)):
            x = -LENGTH / 2 + offset + i * spacing
            y = side * (STREET_HALF + 0.4)
            lamps.cylinder(0.07, 6.0, (x, y, 3.0), segments=10, material=0)
            lamps.cube((0.1, 1.4, 0.1), (x, y - side * 0.7, 6.0), material=0)
            lamps.cube((0.5, 0.7, 0.14), (x, y - side * 1.4, 5.95), material=0)
            lamps.cube((0.4, 0.6, 0.02), (x, y - side * 1.4, 5.87), material=1)
    lamps.object("StreetLamps", [steel, lamp_glow])

    # Neon signs in text: flat along the facades, and vertical boards hanging over the sidewalk.
    neon_colors = [(1.0, 0.05, 0.5), (0.05, 0.8, 1.0), (0.4, 1.0, 0.1), (1.0, 0.3, 0.02), (1.0, 0.9, 0.3)]
    backing = kit.plain("SignBacking", (0.02, 0.02, 0.025), roughness=0.4)
    for index in range(int(rng.uniform(10, 16))):
        side = rng.choice((-1, 1))
        x = rng.uniform(-60, 60)
        z = rng.uniform(3.0, 8.0)
        word = rng.choice(SIGN_WORDS)
        neon = kit.glow(f"Neon{index}", rng.choice(neon_colors), rng.uniform(12.0, 30.0))
        facing = 0.0 if side > 0 else math.pi
        if rng.random() < 0.5:
            board = kit.ArrayMesh()
            board.boxes([(0, 0.06, 0)], (0.5 + 0.62 * len(word), 0.08, 1.0))
            holder = board.object(f"SignBoard{index}", [backing], location=(x, side * (front - 0.1), z),
                                  rotation=(0, 0, facing))
            label = kit.text(f"Neon{index}", word, neon, size=0.8, extrude=0.02, location=(0, -0.03, 0))
        else:
            # A vertical sign sticks out over the sidewalk, its letters stacked, read from along the street.
            board = kit.ArrayMesh()
            board.boxes([(0, 0, 0)], (0.08, 0.9, 0.75 * len(word) + 0.4))
            board.tubes([(0, 0.45, 0.3 * len(word)), (0, 0.45, -0.3 * len(word))],
                        [(0, 1.0, 0.3 * len(word)), (0, 1.0, -0.3 * len(word))], 0.02, segments=4)
            holder = board.object(f"SignBoard{index}", [backing],
                                  location=(x, side * (front - 1.1), z + 1.5), rotation=(0, 0, facing))
            label = kit.text(f"Neon{index}", "\n".join(word), neon, size=0.6, extrude=0.02,
                             location=(-0.05, 0, 0), rotation=(0, 0, -math.pi / 2))
        label.parent = holder

    # Cables strung across the street from facade to facade, sagging.
    cables = kit.ArrayMesh()
    for _ in range(int(rng.uniform(6, 12))):
        x0, x1 = rng.uniform(-50, 50), rng.uniform(-50, 50)
        x1 = x0 + max(-6.0, min(6.0, x1 - x0))
        z0, z1 = rng.uniform(6, 10), rng.uniform(6, 10)
        u = np.linspace(0, 1, 16)
        points = np.stack([x0 + (x1 - x0) * u, -front + 2 * front * u,
                           z0 + (z1 - z0) * u - rng.uniform(0.6, 1.5) * 4 * u * (1 - u)], 1)
        cables.polyline(points, 0.01, segments=4)
    cables.object("Cables", [kit.plain("CableBlack", (0.01, 0.01, 0.01), roughness=0.4)])

    # Cars in both lanes, looping along the street, so cars keep passing for any sequence length.
    for index in range(8):
        direction = 1 if index % 2 == 0 else -1
        speed = rng.uniform(8.0, 14.0)  # m/s, 30-50 km/h
        lane_y = -direction * STREET_HALF / 2
        x = parts.looping(-direction * LENGTH / 2, direction * LENGTH / 2, speed, rng.uniform(0, LENGTH))
        car = parts.car(f"Car{index}", rng, lights=1.0)
        parts.drive(car, frames, lambda t, x=x, y=lane_y, d=direction: (x(t), y, 0.0 if d > 0 else math.pi))

    for index in range(int(rng.uniform(3, 6))):
        direction, side = rng.choice((-1, 1)), rng.choice((-1, 1))
        x = parts.looping(-direction * 45, direction * 45, rng.uniform(1.0, 1.6), rng.uniform(0, 90))
        y = side * (STREET_HALF + rng.uniform(0.6, SIDEWALK - 0.5))
        parts.walk(parts.figure(f"Walker{index}", rng), frames,
                   lambda t, x=x, y=y, d=direction: (x(t), y, 0.0 if d > 0 else math.pi), phase=rng.uniform(0, 6.3))

    # Rain: thin streaks falling fast, slanted by the wind, faintly catching the light.
    heavy = rng.uniform(0.4, 1.0)
    slant = rng.uniform(-1.5, 1.5)
    streak = kit.ArrayMesh()
    streak.tubes([(0, 0, -0.18)], [(0, 0, 0.18)], 0.003, segments=4, caps=True)
    drop = streak.mesh("RainStreak")
    rain = kit.plain("Rain", (0.75, 0.8, 0.85), roughness=0.05, emission_color=(0.6, 0.65, 0.75),
                     emission_strength=0.6)
    rain.cycles.emission_sampling = "NONE"      # seen glinting, not a light: hundreds of them would be slow
    drop.materials.append(rain)

    def raindrop(r: random.Random):
        return ((r.uniform(-36, 36), r.uniform(-front, front), r.uniform(7.0, 10.0)),
                (slant, 0.3 * slant, -r.uniform(7.5, 9.0)))

    parts.particles("Rain", drop, frames, int(700 * heavy), seed, raindrop, life=1.0, align=True)

    # No fog: a Cycles volume puts its scatter distances in the depth pass (see docs/scenes.md).

    cam = kit.add_camera(26.0)
    walk = rng.uniform(1.0, 1.5)  # m/s along the sidewalk
    side = rng.choice((-1, 1))
    phase = rng.uniform(0, 2 * math.pi)

    def eye(t: float):
        # Back and forth along 60 m of sidewalk (bounded for any length), with a walker's bob.
        x = 30.0 * math.sin(phase + walk * t / 30.0)
        return (x, side * (STREET_HALF + 1.2), 1.7 + 0.03 * math.sin(2 * math.pi * 1.8 * t))

    def target(t: float):
        # Always looking down the street towards +x, swaying gently across it.
        return (eye(t)[0] + 20.0, -side * (1.0 + 1.5 * math.sin(0.4 * t)), 2.5)

    kit.key_camera(cam, frames, eye, target)
