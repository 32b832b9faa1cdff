"""Sci-fi corridor: panel detail, emissive strips, grated floor, sliding doors and sparks.

A long station corridor of bulkhead ribs and wall panels covered in greebles,
vent grilles, pipes and sagging cables, a floor of fine grating over a lit
service pit, ceiling and floor light strips, screens with status text,
hazard stripes, bulkhead doors sliding open and shut, a fan turning behind a
vent, a drone floating along, sparks spraying from a broken panel and windows
onto a star field. Fine regular grating and grilles, small bright emitters and
doors that disocclude the corridor beyond: what RDG's ZeroDay scene stresses.
"""

from __future__ import annotations

import math
import random

import bpy
import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "sci-fi corridor: greebled panels, fine floor grating, pipes and cables, emissive strips and screens with text, sliding doors, sparks, drone, star windows"
SEED_VARIES = ("lighting mood (clean white, red alert with pulsing lights, amber, cyan), panel and trim colours "
               "and texture scales, greeble layout, door timing, screen text, where the sparks fly, the drone's "
               "and the camera's paths")

L, W, H = 64.0, 4.0, 3.4          # corridor along x from -L/2 to L/2, y from -W/2 to W/2, floor at z = 0
RIB = 4.0                          # bulkhead rib spacing
MOODS = {
    "clean": {"light": (0.9, 0.95, 1.0), "accent": (0.2, 0.6, 1.0), "pulse": 0.0},
    "alert": {"light": (1.0, 0.25, 0.15), "accent": (1.0, 0.1, 0.05), "pulse": 0.8},
    "amber": {"light": (1.0, 0.7, 0.35), "accent": (1.0, 0.45, 0.05), "pulse": 0.0},
    "cyan": {"light": (0.5, 1.0, 0.95), "accent": (0.1, 1.0, 0.8), "pulse": 0.2},
}
SCREENS = ("DECK 7", "SECTOR C-12", "O2 98%", "AIRLOCK", "REACTOR", "CARGO BAY", "MED BAY", "HANGAR 3",
           "GRAVITY 0.9G", "LIFT 4", "NO ENTRY", "HULL OK", "COMMS", "LAB 2")


def _panels(rng: random.Random, colour):
    """Painted metal panels: seams in a grid, scratches and grime."""
    s = kit.Shader("HullPanels")
    co = s.wall_coords(offset=kit.random_offset(rng))
    seams = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 0.9), "Mortar Size": 0.01,
                                "Brick Width": 1.0, "Row Height": 0.5, "Bias": 0.0,
                                "Color1": kit.vary_color(rng, colour), "Color2": kit.vary_color(rng, colour),
                                "Mortar": (0.05, 0.05, 0.05)}, offset=0.5)
    scratches = s.node("TexNoise", {"Vector": s.coords(scale=(60.0, 2.0, 60.0)), "Scale": 6.0, "Detail": 4.0})
    grime = s.node("TexNoise", {"Vector": co, "Scale": 3.0, "Detail": 6.0})
    base = s.mix(0.3, s.out(seams, "Color"), s.out(grime, "Color"), "MULTIPLY")
    rough = s.out(s.node("MapRange", {"Value": s.out(scratches, "Factor"), "To Min": 0.2, "To Max": 0.55}), "Result")
    return s.principled({"Base Color": base, "Metallic": 0.6, "Roughness": rough,
                         "Normal": s.bump(s.math("MULTIPLY", s.out(seams, "Factor"), -1.0), 0.8, 0.01)})


def _hazard():
    s = kit.Shader("Hazard")
    bands = s.node("TexWave", {"Vector": s.coords(), "Scale": 1.6, "Distortion": 0.0},
                   bands_direction="DIAGONAL", wave_profile="SAW")
    stripe = s.math("GREATER_THAN", s.out(bands, "Factor"), 0.5)
    return s.principled({"Base Color": s.mix(stripe, (0.85, 0.6, 0.02), (0.02, 0.02, 0.02)), "Roughness": 0.5})


def _stars(rng: random.Random) -> None:
    world = bpy.data.worlds.new("Space")
    bpy.context.scene.world = world
    s = kit.Shader("Space", world=world)
    direction = s.out(s.node("TexCoord"), "Generated")
    cells = s.node("TexVoronoi", {"Vector": direction, "Scale": 300.0, "Randomness": 1.0})
    star = s.math("LESS_THAN", s.out(cells, "Distance"), 0.06)
    bright = s.math("MULTIPLY", star, s.math("POWER", s.out(s.node("SeparateColor", {"Color": s.out(cells, "Color")}),
                                                               "Red"), 4.0))
    nebula = s.node("TexNoise", {"Vector": direction, "Scale": 2.0, "Detail": 6.0})
    tint = kit.vary_color(rng, (0.05, 0.02, 0.08), hue=0.3)
    color = s.mix(s.math("MULTIPLY", s.out(nebula, "Factor"), 0.5), (0.0, 0.0, 0.0), tint)
    color = s.mix(s.math("MINIMUM", s.math("MULTIPLY", bright, 20.0), 1.0), color, (1.0, 1.0, 1.0))
    background = s.node("Background", {"Color": color, "Strength": 1.0})
    s.tree.links.new(s.out(background), s.output.inputs["Surface"])
    # Stars light nothing; an importance map of this fine a pattern takes Cycles ~20 s per render to build.
    world.cycles.sampling_method = "NONE"


def _pulse(material, frames: int, base: float, depth: float, rate: float) -> None:
    """Key an emission material's strength: a slow alarm pulse."""
    if depth <= 0:
        return
    kit.key_motion(material.node_tree, frames, lambda f: {
        'nodes["Emission"].inputs[1].default_value': (base * (1 - depth * 0.5 * (1 + math.sin(2 * math.pi * rate * kit.seconds(f)))),)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    local = np.random.default_rng(seed)
    kit.setup_scene(frames)
    mood_name = rng.choice(list(MOODS))
    mood = MOODS[mood_name]
    kit.variant(mood=mood_name)
    _stars(rng)

    hull_colour = rng.choice(((0.6, 0.62, 0.65), (0.3, 0.33, 0.36), (0.7, 0.68, 0.6), (0.25, 0.3, 0.35)))
    panels = _panels(rng, hull_colour)
    dark = parts.metal("DarkMetal", (0.08, 0.085, 0.09), rng.uniform(0.25, 0.45))
    trim = kit.plain("Trim", kit.vary_color(rng, rng.choice(((0.8, 0.35, 0.05), (0.1, 0.3, 0.6), (0.85, 0.85, 0.85)))),
                     roughness=0.35, metallic=0.3)
    strip = kit.glow("StripLight", mood["light"], 8.0)
    accent = kit.glow("Accent", mood["accent"], 8.0)
    _pulse(strip, frames, 8.0, mood["pulse"], 0.7)
    _pulse(accent, frames, 8.0, mood["pulse"], 0.7)

    shell = kit.ArrayMesh()
    # Walls, ceiling and the pit under the grating (the floor is the grating itself).
    shell.boxes([(0, 0, H + 0.1)], [(L, W + 0.6, 0.2)])
    for sy in (-1, 1):
        shell.boxes([(0, sy * (W / 2 - 0.25), H - 0.25)], [(L, 0.5, 0.5)])               # upper chamfer
    shell.boxes([(0, 0, -0.65)], [(L, W, 0.1)], material=1)
    windows = []
    for i, x in enumerate(np.arange(-L / 2 + RIB / 2, L / 2, RIB)):
        # Ribs: a frame round the section at every bulkhead.
        shell.boxes([(x, sy * (W / 2 - 0.12), H / 2) for sy in (-1, 1)], (0.3, 0.26, H), material=2)
        shell.boxes([(x, 0, H - 0.12)], (0.3, W, 0.26), material=2)
        shell.boxes([(x, sy * (W / 2 - 0.35), H - 0.35) for sy in (-1, 1)], (0.32, 0.45, 0.45), material=2)
        # Walls between ribs: solid and greebled, or open round a window onto the stars.
        for sy in (-1, 1):
            wx, wy = x + RIB / 2, sy * (W / 2 + 0.1)
            if rng.random() < 0.2 and len(windows) < 4:
                windows.append((wx, sy))
                shell.boxes([(wx, wy, 0.55), (wx, wy, (2.1 + H + 0.2) / 2)], [(RIB, 0.2, 1.1), (RIB, 0.2, H + 0.2 - 2.1)])
                shell.boxes([(wx - RIB / 2 + 0.65, wy, 1.6), (wx + RIB / 2 - 0.65, wy, 1.6)], (1.3, 0.2, 1.0))
                continue
            shell.boxes([(wx, wy, H / 2)], [(RIB, 0.2, H + 0.4)])
            n = int(rng.uniform(6, 16))
            cx = x + RIB / 2 + local.uniform(-1.5, 1.5, n)
            cz = local.uniform(0.4, H - 0.7, n)
            sz = np.stack([local.uniform(0.1, 0.7, n), local.uniform(0.04, 0.15, n), local.uniform(0.05, 0.5, n)], 1)
            shell.boxes(np.stack([cx, sy * (W / 2 - sz[:, 1] / 2), cz], 1), sz, material=1)
            if rng.random() < 0.5:          # a vent grille: many thin slats
                gx, gz = x + RIB / 2 + rng.uniform(-1.2, 1.2), rng.uniform(0.6, 1.6)
                shell.boxes([(gx, sy * (W / 2 - 0.03), gz + 0.035 * k) for k in range(14)], (0.6, 0.04, 0.012), material=2)
    # Window frames round the openings, with refractive panes.
    for wx, sy in windows:
        y = sy * (W / 2 + 0.1)
        shell.boxes([(wx, y, 1.1), (wx, y, 2.1)], (1.5, 0.26, 0.06), material=2)
        shell.boxes([(wx - 0.72, y, 1.6), (wx + 0.72, y, 1.6)], (0.06, 0.26, 1.0), material=2)
    shell.object("Corridor", [panels, dark, trim])
    glass_panes = kit.ArrayMesh()
    for wx, sy in windows:
        glass_panes.boxes([(wx, sy * (W / 2 + 0.1), 1.6)], (1.4, 0.04, 0.95))
    if windows:
        glass_panes.object("Portholes", [parts.glass("PortGlass", (0.9, 0.95, 1.0), ior=1.5)])

    # Floor grating: bars 1.5 cm wide every 5 cm over the pit, on rails.
    grating = kit.ArrayMesh()
    xs = np.arange(-L / 2, L / 2, 0.05)
    grating.boxes(np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], 1), (0.015, W - 0.4, 0.04))
    grating.boxes([(0, y, -0.04) for y in np.linspace(-W / 2 + 0.3, W / 2 - 0.3, 5)], (L, 0.03, 0.06))
    grating.object("Grating", [parts.metal("GratingMetal", (0.35, 0.35, 0.36), 0.35)])
    pit = kit.ArrayMesh()
    pit.boxes([(x, y, -0.55) for x in np.arange(-L / 2, L / 2, 2.0) for y in (-0.9, 0.9)], (1.2, 0.08, 0.04))
    pit.object("PitLights", [accent])

    # Light strips in the ceiling and along the floor; pipes and cables along the upper corners.
    lights = kit.ArrayMesh()
    lights.boxes([(0, y, H - 0.01) for y in (-0.6, 0.6)], (L, 0.12, 0.03))
    lights.boxes([(0, sy * (W / 2 - 0.02), 0.15) for sy in (-1, 1)], (L, 0.03, 0.05))
    lights.object("Strips", [strip])
    # Area lights under the strips: the same light, sampled directly (emissive strips alone are noisy).
    for x in np.arange(-L / 2 + RIB, L / 2, 2 * RIB):
        kit.area((x, 0, H - 0.05), (x, 0, 0), size=1.2, energy=70.0, color=mood["light"], name="CeilingLight")
    pipes = kit.ArrayMesh()
    for sy in (-1, 1):
        for k, (dy, dz, r) in enumerate(((0.5, 0.7, 0.06), (0.7, 0.55, 0.04), (0.4, 0.48, 0.03))):
            pipes.tubes([(-L / 2, sy * (W / 2 - dy), H - dz)], [(L / 2, sy * (W / 2 - dy), H - dz)], r,
                        segments=10, material=k % 2)
        for x in np.arange(-L / 2, L / 2, RIB):
            xx = np.linspace(x, x + RIB, 10)
            sag = 0.25 * (1 - ((xx - x - RIB / 2) / (RIB / 2)) ** 2)
            pipes.polyline(np.stack([xx, np.full(10, sy * (W / 2 - 0.2)), H - 0.9 - sag], 1), 0.012, segments=4,
                           material=2)
    pipes.object("Pipes", [parts.metal("Copper", (0.75, 0.45, 0.3), 0.3), dark,
                           kit.plain("Cable", (0.02, 0.02, 0.02), roughness=0.5)])

    # Doors at every fourth rib: hazard-striped frames and two halves that slide open and shut.
    hazard = _hazard()
    door_x = [x for x in np.arange(-L / 2 + RIB / 2, L / 2, RIB)][2::4]
    for i, x in enumerate(door_x):
        frame = kit.ArrayMesh()
        frame.boxes([(x, sy * (W / 2 - 0.3), H / 2) for sy in (-1, 1)], (0.4, 0.6, H))
        frame.boxes([(x, 0, H - 0.3)], (0.4, W, 0.6))
        frame.object(f"DoorFrame{i}", [hazard])
        period = rng.uniform(3.0, 6.0)
        phase = rng.uniform(0, 1)
        for side in (-1, 1):
            half = kit.ArrayMesh()
            half.boxes([(0, side * (W - 1.2) / 4, (H - 0.6) / 2)], ((0.12, (W - 1.2) / 2, H - 0.6)))
            half.boxes([(-0.07, side * 0.25, 1.3)], ((0.02, 0.1, 0.6)), material=1)
            door = half.object(f"Door{i}{'LR'[side > 0]}", [panels, accent], location=(x, 0, 0))

            def slide(f: int, side=side, period=period, phase=phase, x=x) -> kit.Pose:
                # Smoothly open and close: 0 shut .. 1 open.
                u = 0.5 - 0.5 * math.cos(2 * math.pi * (kit.seconds(f) / period + phase))
                return {"location": (x, side * u * (W - 1.2) / 2 * 0.95, 0)}

            kit.key_motion(door, frames, slide)

    # Screens with status text.
    screen = kit.glow("Screen", kit.vary_color(rng, mood["accent"]), 2.5, lights_scene=False)
    bezel = kit.plain("ScreenGlass", (0.01, 0.015, 0.02), roughness=0.05)
    for i in range(int(rng.uniform(5, 9))):
        x = rng.uniform(-L / 2 + 2, L / 2 - 2)
        sy = rng.choice((-1, 1))
        board = kit.ArrayMesh()
        board.boxes([(0, 0.04, 0)], (1.2, 0.06, 0.6))
        b = board.object(f"Screen{i}", [bezel], location=(x, sy * (W / 2 - 0.1), rng.uniform(1.4, 1.9)),
                         rotation=(0, 0, 0 if sy > 0 else math.pi))
        body = "\n".join(rng.sample(SCREENS, 2))
        label = kit.text(f"ScreenText{i}", body, screen, size=0.13, location=(0, -0.0, 0))
        label.parent = b

    # A fan turning behind one vent.
    fan = kit.ArrayMesh()
    fan.boxes([(0.3 * math.cos(a), 0.0, 0.3 * math.sin(a)) for a in np.arange(6) * math.pi / 3],
              (0.5, 0.02, 0.12), yaw=np.zeros(6))
    fan.lathe([(0.001, -0.05), (0.1, -0.05), (0.1, 0.05), (0.001, 0.05)], segments=12)
    fx, fsy = rng.uniform(-L / 4, L / 4), rng.choice((-1, 1))
    fan_obj = fan.object("Fan", [dark], location=(fx, fsy * (W / 2 + 0.05), 0.9))
    spin = rng.uniform(4.0, 9.0)
    kit.key_motion(fan_obj, frames, lambda f: {"rotation_euler": (0, spin * kit.seconds(f), 0)})

    # A drone floating along the corridor.
    drone = kit.ArrayMesh()
    drone.lathe([(0.001, -0.18), (0.15, -0.12), (0.18, 0.0), (0.15, 0.1), (0.001, 0.14)], segments=20)
    drone.lathe([(0.3, -0.02), (0.34, 0.0), (0.3, 0.02)], segments=32, caps=False)
    drone.lathe([(0.001, -0.03), (0.05, 0.0), (0.001, 0.03)], segments=10, material=1, location=(0.17, 0, 0))
    drone_obj = drone.object("Drone", [parts.metal("DroneShell", (0.8, 0.8, 0.82), 0.15), accent])
    range_x, rate, phase = rng.uniform(6, 12), rng.uniform(0.15, 0.3), rng.uniform(0, 6.3)
    kit.key_motion(drone_obj, frames, lambda f: {
        "location": (range_x * math.sin(phase + rate * kit.seconds(f)), 0.6 * math.sin(0.7 * kit.seconds(f) + phase),
                     2.2 + 0.25 * math.sin(1.3 * kit.seconds(f))),
        "rotation_euler": (0.2 * math.sin(1.1 * kit.seconds(f)), 0.0, 0.3 * math.sin(0.5 * kit.seconds(f)))})

    # Sparks from a broken panel: short emissive streaks flying out and falling.
    spark = kit.ArrayMesh()
    spark.tubes([(0, 0, -0.03)], [(0, 0, 0.03)], 0.004, segments=4, caps=True)
    spark_mesh = spark.mesh("Spark")
    spark_mesh.materials.append(kit.glow("SparkGlow", (1.0, 0.55, 0.15), 60.0, lights_scene=False))
    sx, ssy = rng.uniform(-6, 6), rng.choice((-1, 1))
    source = (sx, ssy * (W / 2 - 0.2), rng.uniform(2.0, 2.8))

    def burst(r: random.Random):
        return (source, (r.uniform(-1.2, 1.2), -ssy * r.uniform(0.5, 2.5), r.uniform(-0.5, 2.0)))

    parts.particles("Spark", spark_mesh, frames, int(rng.uniform(50, 90)), seed, burst, life=rng.uniform(0.7, 1.1),
                    gravity=9.81, align=True)
    kit.point(source, energy=30.0, radius=0.05, color=(1.0, 0.6, 0.2), name="SparkLight")

    cam = kit.add_camera(rng.uniform(16.0, 22.0))
    facing = rng.choice((-1.0, 1.0))
    pace, start = rng.uniform(1.0, 2.5), rng.uniform(0, 2 * math.pi)
    lane, height = rng.uniform(-0.8, 0.8), rng.uniform(1.4, 1.9)

    def eye(t: float):
        return (16.0 * math.sin(start + pace * t / 16.0), lane + 0.2 * math.sin(0.4 * t), height + 0.05 * math.sin(1.1 * t))

    kit.key_camera(cam, frames, eye, target=lambda t: (eye(t)[0] + facing * 10.0, 0.8 * math.sin(0.2 * t + start),
                                                       height + 0.3 * math.sin(0.15 * t)))
