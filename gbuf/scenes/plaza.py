"""Plaza: a town square full of walking people round a fountain.

Articulated figures (pelvis, torso, head, arms and legs as separate keyed
objects) stroll round the fountain and cross the square; water sprays from the
fountain's top bowl; flags flap on their poles, trees sway, parasols shade a
café, and buildings with shops close the square. Many independently moving,
swinging limbs occlude and disocclude the paving behind them every frame:
the motion that RDG's Square scene has and a camera pan does not.
"""

from __future__ import annotations

import math
import random

import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "town square: walking articulated figures, fountain spray, flapping flags, swaying trees, café parasols, shopfronts; orbiting camera"
SEED_VARIES = ("time of day (morning to night), how many people walk where and how fast, their sizes and "
               "clothes, paving pattern, scale and colour, the buildings round the square, flag colours, "
               "tree and café layout, wind, the camera's orbit radius, height and direction")

HALF = 26.0            # the square spans +-HALF in x and y


def _paving(rng: random.Random):
    s = kit.Shader("PlazaPaving")
    co = s.coords(offset=kit.random_offset(rng))
    stones = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 2.2), "Mortar Size": 0.012,
                                 "Brick Width": rng.choice((0.5, 0.6, 1.0)), "Row Height": 0.25,
                                 "Color1": kit.vary_color(rng, (0.6, 0.56, 0.5)),
                                 "Color2": kit.vary_color(rng, (0.45, 0.42, 0.38)), "Mortar": (0.18, 0.17, 0.16)},
                    offset=rng.choice((0.0, 0.5)))
    # Rings of darker stone round the fountain.
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    radius = s.math("SQRT", s.math("ADD", s.math("MULTIPLY", s.out(xyz, "X"), s.out(xyz, "X")),
                                   s.math("MULTIPLY", s.out(xyz, "Y"), s.out(xyz, "Y"))))
    ring = s.math("LESS_THAN", s.math("PINGPONG", radius, kit.vary_scale(rng, 3.0)), 0.35)
    grain = s.node("TexNoise", {"Vector": co, "Scale": 70.0, "Detail": 5.0})
    base = s.mix(s.math("MULTIPLY", ring, 0.6), s.out(stones, "Color"), kit.vary_color(rng, (0.22, 0.2, 0.22)))
    base = s.mix(0.25, base, s.out(grain, "Color"), "OVERLAY")
    return s.principled({"Base Color": base, "Roughness": 0.65,
                         "Normal": s.bump(s.math("MULTIPLY", s.out(stones, "Factor"), -1.0), 0.8, 0.01)})


def _water(rng: random.Random):
    s = kit.Shader("Water")
    ripples = s.node("TexNoise", {"Vector": s.coords(offset=kit.random_offset(rng)), "Scale": 6.0, "Detail": 4.0})
    return s.principled({"Base Color": (0.05, 0.1, 0.1), "Roughness": 0.02, "IOR": 1.33,
                         "Normal": s.bump(s.out(ripples, "Factor"), 0.3, 0.02)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    daylight = kit.time_of_day(rng, ("morning", "noon", "afternoon", "evening", "dusk", "night"))
    lamps = daylight.lamps

    ground = kit.MeshBuilder()
    ground.grid((4 * HALF, 4 * HALF))
    ground.object("Paving", [_paving(rng)])

    # Buildings on three sides, facing the square.
    look = parts.building_look(rng, lamps)
    walls = [parts.wall(rng, f"Wall{i}") for i in range(4)]
    for side, yaw in ((0, 0.0), (1, math.pi / 2), (2, math.pi)):
        x = -HALF
        index = 0
        while x < HALF:
            width = rng.uniform(8.0, 14.0)
            centre = x + width / 2
            # Local facade runs along x facing -Y; place each side's row round the square.
            spot = {0: (centre, HALF + 1, 0), 1: (-HALF - 1, centre, 0), 2: (-centre, -HALF - 1, 0)}[side]
            if side == 2 and abs(centre) < 9:
                x += width                        # the square opens to a street towards the camera's side
                continue
            parts.building(f"House{side}{index}", rng, look, rng.choice(walls), width=width,
                           height=rng.uniform(9.0, 20.0), shop=rng.random() < 0.8, balconies=rng.uniform(0.2, 0.7),
                           lamps=lamps, location=spot, yaw=yaw)
            x += width
            index += 1

    # The fountain: a basin with water, a column with two bowls; spray from the top.
    stone = parts.wall(rng, "FountainStone")
    fountain = kit.ArrayMesh()
    basin = rng.uniform(3.0, 4.2)
    fountain.lathe([(basin - 0.4, 0.0), (basin, 0.0), (basin, 0.55), (basin + 0.1, 0.6), (basin - 0.3, 0.65),
                    (basin - 0.3, 0.35), (0.5, 0.35), (0.35, 0.4), (0.3, 1.6), (1.3, 1.7), (1.4, 1.9), (0.25, 1.85),
                    (0.2, 2.6), (0.7, 2.7), (0.75, 2.85), (0.1, 2.8), (0.08, 3.2), (0.001, 3.3)], segments=48)
    fountain.object("Fountain", [stone])
    pool = kit.ArrayMesh()
    pool.lathe([(0.4, 0.48), (basin - 0.32, 0.48)], segments=48, caps=False)
    pool.lathe([(0.3, 1.82), (1.3, 1.82)], segments=32, caps=False)
    pool.object("Pool", [_water(rng)])
    drop = kit.ArrayMesh()
    drop.lathe([(0.001, -0.03), (0.012, -0.01), (0.012, 0.01), (0.001, 0.03)], segments=6)
    drop_mesh = drop.mesh("Drop")
    drop_mesh.materials.append(kit.plain("Spray", (0.8, 0.9, 0.95), roughness=0.05, transmission_weight=0.0))

    def jet(r: random.Random):
        a = r.uniform(0, 2 * math.pi)
        speed = r.uniform(1.5, 2.6)
        return ((0.0, 0.0, 3.25), (speed * math.cos(a), speed * math.sin(a), r.uniform(2.0, 3.2)))

    parts.particles("Spray", drop_mesh, frames, int(rng.uniform(120, 200)), seed, jet, life=1.0, gravity=9.81,
                    align=True)

    # Benches round the fountain and lamps.
    slats = parts.wood(rng, "BenchWood", kit.vary_color(rng, (0.4, 0.25, 0.12)))
    iron = parts.metal("Iron", (0.05, 0.05, 0.05), 0.45)
    benches = kit.ArrayMesh()
    for k in range(int(rng.uniform(4, 8))):
        a = 2 * math.pi * k / 6 + rng.uniform(-0.2, 0.2)
        r = basin + 2.5
        cx, cy = r * math.cos(a), r * math.sin(a)
        yaw = a + math.pi / 2
        along = np.array([math.cos(yaw), math.sin(yaw)])
        out = np.array([math.cos(a), math.sin(a)])
        for j in range(5):
            c = np.array([cx, cy]) + out * (j - 2) * 0.09
            benches.boxes([(*c, 0.45)], (1.8, 0.07, 0.03), yaw=[yaw])
        for j in range(3):
            c = np.array([cx, cy]) + out * 0.26
            benches.boxes([(*c, 0.6 + 0.1 * j)], (1.8, 0.03, 0.06), yaw=[yaw])
        for sgn in (-1, 1):
            leg = np.array([cx, cy]) + along * sgn * 0.8
            benches.boxes([(*leg, 0.3)], (0.05, 0.5, 0.6), yaw=[yaw], material=1)
    benches.object("Benches", [slats, iron])
    lamp_glass = kit.glow("LampGlass", (1.0, 0.85, 0.6), 0.3 + 25.0 * lamps)
    posts = kit.ArrayMesh()
    for k in range(8):
        a = 2 * math.pi * (k + 0.5) / 8
        r = rng.uniform(10.0, 13.0)
        x, y = r * math.cos(a), r * math.sin(a)
        posts.tubes([(x, y, 0)], [(x, y, 4.0)], 0.07, radius_end=0.05, segments=10)
        posts.lathe([(0.12, 4.0), (0.2, 4.3), (0.16, 4.6), (0.001, 4.75)], segments=12, location=(x, y, 0), material=1)
    posts.object("LampPosts", [iron, lamp_glass])

    # Trees along two sides, swaying; flags flapping on poles.
    tree_mesh = parts.tree("PlazaTree", rng, height=rng.uniform(6.0, 8.0), leaf_size=0.13, leaves_per_twig=26)
    tree_mesh.materials.append(parts.bark(rng))
    tree_mesh.materials.append(parts.foliage(rng, "PlazaLeaves", (0.1, 0.28, 0.05)))
    trees = []
    for sgn in (-1, 1):
        for x in np.arange(-HALF + 4, HALF - 3, rng.uniform(5.5, 7.5)):
            trees.append(kit.instance(f"Tree{len(trees)}", tree_mesh, location=(sgn * (HALF - 4), x, 0),
                                      rotation=(0, 0, rng.uniform(0, 6.3)), scale=rng.uniform(0.85, 1.1)))
    wind_angle = rng.uniform(0, 2 * math.pi)
    wind_dir = (math.cos(wind_angle), math.sin(wind_angle))
    for tree in trees:
        kit.sway(tree, frames, rng, lean=0.015, direction=wind_dir)
    for k in range(3):
        x, y = -6.0 + 6.0 * k, HALF - 6.0
        pole = kit.ArrayMesh()
        pole.tubes([(0, 0, 0)], [(0, 0, 8.0)], 0.05, radius_end=0.035, segments=8, caps=True)
        pole.object(f"FlagPole{k}", [iron], location=(x, y, 0))
        flag = kit.MeshBuilder()
        flag.grid((1.8, 1.2), (0.9, 0, 0), (math.pi / 2, 0, 0), segments=(18, 12))
        cloth = parts.fabric(rng, f"Flag{k}", kit.vary_color(rng, rng.choice(((0.7, 0.05, 0.05), (0.05, 0.15, 0.6),
                                                                            (0.95, 0.8, 0.1), (0.05, 0.4, 0.15)))),
                             weave=200.0, pattern="stripe")
        flag_obj = flag.object(f"Flag{k}", [cloth], location=(x, y, 7.3), rotation=(0, 0, wind_angle))
        kit.wind(flag_obj, frames, amplitude=0.25, direction=(1.0, 0.0), wavelength=1.4, period=0.8, stiffness=1.2,
                 anchor=0, normal=(0.0, 1.0, 0.0), phase=rng.uniform(0, 6.3))

    # A café: tables with parasols on one side of the square.
    canvas = parts.fabric(rng, "Parasol", kit.vary_color(rng, (0.85, 0.82, 0.7)), weave=160.0, pattern="stripe")
    cafe = kit.ArrayMesh()
    cafe_x = rng.choice((-1, 1)) * rng.uniform(8, 14)
    for k in range(int(rng.uniform(3, 6))):
        tx, ty = cafe_x + rng.uniform(-4, 4), HALF - 9.0 - 3.0 * k
        cafe.lathe([(0.001, 0.74), (0.4, 0.74), (0.4, 0.7), (0.001, 0.7)], segments=20, location=(tx, ty, 0))
        cafe.tubes([(tx, ty, 0)], [(tx, ty, 2.4)], 0.025, segments=6)
        cafe.lathe([(0.001, 2.55), (1.3, 2.1), (1.3, 2.05)], segments=16, location=(tx, ty, 0), material=1,
                   caps=False)
    cafe.object("Cafe", [iron, canvas])

    # People: some stroll round the fountain, others cross the square and come back round.
    for i in range(int(rng.uniform(8, 14))):
        person = parts.figure(f"Person{i}", rng)
        speed = rng.uniform(1.0, 1.6)
        if i % 2 == 0:
            radius = rng.uniform(basin + 1.2, basin + 6.0)
            path = parts.ellipse((0, 0), (radius, radius * rng.uniform(0.8, 1.1)), rng.choice((-1, 1)) * speed,
                                 rng.uniform(0, 2 * math.pi))
        else:
            across = rng.uniform(-HALF + 6, HALF - 6)
            direction = rng.choice((-1, 1))
            x = parts.looping(-direction * (HALF - 2), direction * (HALF - 2), speed, rng.uniform(0, 2 * HALF))
            if rng.random() < 0.5:
                path = (lambda t, x=x, a=across, d=direction: (x(t), a, 0.0 if d > 0 else math.pi))
            else:
                path = (lambda t, x=x, a=across, d=direction: (a, x(t), math.pi / 2 if d > 0 else -math.pi / 2))
        parts.walk(person, frames, path, phase=rng.uniform(0, 6.3))

    cam = kit.add_camera(rng.uniform(22.0, 30.0))
    orbit, height = rng.uniform(13.0, 19.0), rng.uniform(1.7, 6.0)
    rate, start = rng.choice((-1, 1)) * rng.uniform(0.05, 0.1), rng.uniform(-2.4, -0.7)
    kit.key_camera(cam, frames,
                   eye=lambda t: (orbit * math.cos(start + rate * t), orbit * math.sin(start + rate * t),
                                  height + 0.2 * math.sin(0.3 * t)),
                   target=lambda t: (2.0 * math.sin(0.1 * t), 1.0 * math.cos(0.13 * t), 1.8))
