"""City block: a street of buildings at any time of day, with traffic and pedestrians.

Buildings with real window geometry (frames, mullions, sills, lit or dark
panes), balconies with railings of thin bars, shops with striped awnings and
signs in text; a crossing with zebra stripes and traffic lights, street lamps,
overhead tram wires, trees in planters swaying, parked cars, cars driving both
ways and people walking on the sidewalks with swinging limbs. Regular thin
structures (railings, mullions, wires, stripes) alias into moire at LR; moving
cars and walkers disocclude the street behind them.
"""

from __future__ import annotations

import math
import random

import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "city street: window grids, balconies, shop signs in text, traffic lights, tram wires, trees, parked and moving cars, walking people; any time of day"
SEED_VARIES = ("time of day (morning to night: sun, sky, lit windows, lamps, sign glow), building widths, "
               "heights, wall materials (brick, plaster, panels; colour and scale), window grids, balconies, "
               "shop names, car colours, lanes and speeds, walkers, the camera's height, speed and path")

ROAD = 5.0          # road from y = -5 to 5
WALK = 3.5          # sidewalk width; facades at y = +-(ROAD + WALK)
LENGTH = 160.0


def _asphalt(rng: random.Random):
    s = kit.Shader("Asphalt")
    co = s.coords(offset=kit.random_offset(rng))
    grain = s.node("TexNoise", {"Vector": co, "Scale": kit.vary_scale(rng, 70.0), "Detail": 10.0})
    patches = s.node("TexNoise", {"Vector": co, "Scale": 0.3, "Detail": 3.0})
    base = s.ramp(s.out(grain, "Factor"), [(0.35, (0.05, 0.05, 0.055)), (0.65, (0.16, 0.16, 0.16))])
    base = s.mix(0.3, base, s.out(patches, "Color"), "MULTIPLY")
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    y = s.math("ABSOLUTE", s.out(xyz, "Y"))
    dash = s.math("GREATER_THAN", s.math("SINE", s.math("MULTIPLY", s.out(xyz, "X"), 0.6)), 0.0)
    centre = s.math("MULTIPLY", s.math("LESS_THAN", y, 0.07), dash)
    edge = s.math("LESS_THAN", s.math("ABSOLUTE", s.math("SUBTRACT", y, ROAD - 0.4)), 0.06)
    paint = s.math("MAXIMUM", centre, edge)
    base = s.mix(paint, base, (0.75, 0.72, 0.6))
    return s.principled({"Base Color": base, "Roughness": s.mix(paint, (0.75,) * 3, (0.5,) * 3),
                         "Normal": s.bump(s.out(grain, "Factor"), 0.4, 0.01)})


def _pavers(rng: random.Random):
    s = kit.Shader("Pavers")
    co = s.coords(offset=kit.random_offset(rng))
    stones = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 3.0), "Mortar Size": 0.015,
                                 "Brick Width": 0.5, "Row Height": 0.25,
                                 "Color1": kit.vary_color(rng, (0.5, 0.48, 0.45)),
                                 "Color2": kit.vary_color(rng, (0.38, 0.36, 0.34)), "Mortar": (0.15, 0.15, 0.14)})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 90.0, "Detail": 5.0})
    base = s.mix(0.3, s.out(stones, "Color"), s.out(grain, "Color"), "OVERLAY")
    return s.principled({"Base Color": base, "Roughness": 0.7,
                         "Normal": s.bump(s.math("MULTIPLY", s.out(stones, "Factor"), -1.0), 0.8, 0.01)})


def _traffic_light(m: kit.ArrayMesh, x: float, y: float, side: int, state: int) -> None:
    """Pole, arm over the road and a head with three lamps; materials 0 pole, 1 off lamp, 2..4 red/amber/green on."""
    m.tubes([(x, y, 0)], [(x, y, 5.6)], 0.09, radius_end=0.07, segments=10, caps=True)
    m.tubes([(x, y, 5.4)], [(x, y - side * 4.0, 5.4)], 0.05, segments=8, caps=True)
    for hx, hz in ((x, 3.0), (x, 5.4)):
        hy = y if hz < 4 else y - side * 3.6
        m.boxes([(hx, hy, hz)], [(0.35, 0.3, 1.0)])
        for k, colour in enumerate((2, 3, 4)):
            lamp = colour if k == state else 1
            ball = [(0.1 * math.sin(a), 0.1 * math.cos(a)) for a in np.linspace(0.2, math.pi - 0.2, 7)]
            m.lathe(ball, segments=10, material=lamp, location=(hx - 0.14, hy, hz + 0.3 - 0.3 * k))


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    daylight = kit.time_of_day(rng, ("morning", "noon", "afternoon", "evening", "dusk", "night"))
    lamps = daylight.lamps

    road = kit.MeshBuilder()
    road.grid((LENGTH, 2 * ROAD + 0.2))
    road.object("Road", [_asphalt(rng)])
    walks = kit.ArrayMesh()
    walks.boxes([(0, s * (ROAD + WALK / 2), 0.075) for s in (-1, 1)], [(LENGTH, WALK, 0.15)])
    walks.boxes([(0, s * (ROAD + 0.1), 0.08) for s in (-1, 1)], [(LENGTH, 0.2, 0.16)], material=1)
    walks.object("Sidewalks", [_pavers(rng), kit.plain("Curb", (0.55, 0.55, 0.53), roughness=0.6)])

    # A crossing: zebra stripes, thin and bright, across the road.
    cross_x = rng.uniform(-10, 25)
    stripes = kit.ArrayMesh()
    count = int(2 * ROAD / 0.9)
    stripes.boxes([(cross_x, -ROAD + 0.45 + 0.9 * k, 0.005) for k in range(count)], [(3.0, 0.45, 0.01)])
    stripes.object("Zebra", [kit.plain("Paint", (0.85, 0.85, 0.82), roughness=0.5)])

    look = parts.building_look(rng, lamps)
    walls = [parts.wall(rng, f"Wall{i}") for i in range(5)]
    front = ROAD + WALK
    for side in (-1, 1):
        x = -LENGTH / 2
        index = 0
        while x < LENGTH / 2:
            width = rng.uniform(9.0, 18.0)
            if abs(x + width / 2 - cross_x) < width / 2 + 6 and side < 0:
                x += width              # a side street opens at the crossing on one side
                continue
            height = rng.uniform(10.0, 32.0)
            parts.building(f"Building{'SN'[side > 0]}{index}", rng, look, rng.choice(walls), width=width,
                           height=height, shop=rng.random() < 0.75, balconies=rng.uniform(0.1, 0.6),
                           lamps=lamps, location=(x + width / 2, side * front, 0),
                           yaw=0.0 if side > 0 else math.pi)
            x += width
            index += 1

    # Street furniture: lamps, wires between them, traffic lights, planters with trees.
    steel = parts.metal("Steel", (0.12, 0.12, 0.13), 0.4)
    lamp_head = kit.glow("LampHead", (1.0, 0.8, 0.55), 0.2 + 40.0 * lamps)
    furniture = kit.ArrayMesh()
    spacing = rng.uniform(18.0, 26.0)
    posts = []
    for side in (-1, 1):
        start = rng.uniform(0, spacing)
        for i in range(int(LENGTH / spacing)):
            x, y = -LENGTH / 2 + start + i * spacing, side * (ROAD + 0.5)
            furniture.tubes([(x, y, 0)], [(x, y, 7.5)], 0.08, radius_end=0.06, segments=10)
            furniture.tubes([(x, y, 7.3)], [(x, y - side * 1.6, 7.6)], 0.04, segments=6)
            furniture.boxes([(x, y - side * 1.7, 7.55)], [(0.7, 0.35, 0.15)])
            furniture.boxes([(x, y - side * 1.7, 7.46)], [(0.55, 0.28, 0.03)], material=1)
            posts.append((x, y))
    # Tram wires: catenaries sagging between the posts of one side, two wires per span.
    north = sorted(p for p in posts if p[1] > 0)
    for (x0, y0), (x1, _) in zip(north, north[1:]):
        for dy in (-1.6, -1.9):
            xs = np.linspace(x0, x1, 12)
            sag = 0.35 * (1 - ((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2)
            furniture.polyline(np.stack([xs, np.full(12, y0 + dy * 2.4), 7.2 - sag], 1), 0.012, segments=4)
    furniture.object("StreetLamps", [steel, lamp_head])
    state = rng.randrange(3)
    signals = kit.ArrayMesh()
    for sx, sy in ((-1, -1), (1, 1)):
        _traffic_light(signals, cross_x + sx * 2.5, sy * (ROAD + 0.6), sy, state if sx < 0 else 2 - state)
    signals.object("TrafficLights", [parts.metal("SignalGrey", (0.2, 0.22, 0.2), 0.5),
                                     kit.plain("LampOff", (0.05, 0.05, 0.05), roughness=0.2),
                                     kit.glow("Red", (1.0, 0.05, 0.02), 30.0),
                                     kit.glow("Amber", (1.0, 0.5, 0.02), 30.0),
                                     kit.glow("Green", (0.1, 1.0, 0.4), 30.0)])

    tree_mesh = parts.tree("StreetTree", rng, height=rng.uniform(5.0, 7.0), leaf_size=0.13, leaves_per_twig=24)
    tree_mesh.materials.append(parts.bark(rng))
    tree_mesh.materials.append(parts.foliage(rng, "StreetLeaves", (0.1, 0.28, 0.05)))
    planters = kit.ArrayMesh()
    trees = []
    for side in (-1, 1):
        start = rng.uniform(0, 12)
        for i in range(int(LENGTH / 12)):
            x, y = -LENGTH / 2 + start + i * 12.0, side * (ROAD + WALK * 0.55)
            if abs(x - cross_x) < 5:
                continue
            planters.boxes([(x, y, 0.3)], [(1.3, 1.3, 0.45)])
            trees.append(kit.instance(f"StreetTree{len(trees)}", tree_mesh, location=(x, y, 0.45),
                                      rotation=(0, 0, rng.uniform(0, 6.3)), scale=rng.uniform(0.8, 1.1)))
    planters.object("Planters", [kit.plain("Concrete", (0.45, 0.44, 0.42), roughness=0.8)])
    breeze = (rng.uniform(-1, 1), 1.0)
    for tree in trees:
        kit.sway(tree, frames, rng, lean=0.015, direction=breeze)

    # Parked cars along both curbs; moving cars in both lanes, looping along the street.
    for i in range(int(rng.uniform(6, 12))):
        side = rng.choice((-1, 1))
        x = rng.uniform(-60, 60)
        if abs(x - cross_x) < 6:
            continue
        parked = parts.car(f"Parked{i}", rng, lights=0.0)
        parked.body.location = (x, side * (ROAD - 1.2), 0)
        parked.body.rotation_euler = (0, 0, 0 if side < 0 else math.pi)
    for i in range(int(rng.uniform(4, 8))):
        direction = 1 if i % 2 == 0 else -1
        speed = rng.uniform(6.0, 14.0)
        lane_y = -direction * ROAD / 2.5
        x = parts.looping(-direction * LENGTH / 2, direction * LENGTH / 2, speed, rng.uniform(0, LENGTH))
        moving = parts.car(f"Car{i}", rng, lights=lamps)
        parts.drive(moving, frames, lambda t, x=x, y=lane_y, d=direction: (x(t), y, 0.0 if d > 0 else math.pi))

    for i in range(int(rng.uniform(4, 8))):
        direction = rng.choice((-1, 1))
        side = rng.choice((-1, 1))
        y = side * (ROAD + rng.uniform(0.9, WALK - 0.6))
        x = parts.looping(-direction * 40, direction * 40, rng.uniform(1.1, 1.6), rng.uniform(0, 80))
        person = parts.figure(f"Walker{i}", rng)
        parts.walk(person, frames, lambda t, x=x, y=y, d=direction: (x(t), y, 0.0 if d > 0 else math.pi),
                   phase=rng.uniform(0, 6.3))

    cam = kit.add_camera(rng.uniform(22.0, 30.0))
    height = rng.uniform(1.6, 4.5)
    lane = rng.uniform(-ROAD + 1.5, ROAD - 1.5)
    speed = rng.uniform(1.5, 4.0)
    start = rng.uniform(0, 2 * math.pi)
    facing = rng.choice((-1.0, 1.0))     # looks one way down the street, whichever way it moves

    def eye(t: float):
        return (20.0 * math.sin(start + speed * t / 20.0), lane + 0.3 * math.sin(0.2 * t), height)

    def target(t: float):
        return (eye(t)[0] + 18.0 * facing, 2.5 * math.sin(0.15 * t + start), height + 1.5 + 1.5 * math.sin(0.1 * t))

    kit.key_camera(cam, frames, eye, target)
