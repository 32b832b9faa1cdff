"""Bar: an interior of glass, gloss, wood and fabric under warm lamps.

A back bar of shelves lined with refractive bottles in front of a mirror, glasses
on a glossy counter with a brass foot rail, stools with woven seats, tables with
checked cloths and candles, plank floor, wood panelling and wallpaper, a
chalkboard menu in small text and a neon sign. Pendant lamps swing a little on
their cords, a ceiling fan turns, a bartender works and a guest walks between
the tables; a window shows the time of day outside. Refraction, mirror
reflections, small bright highlights and fine text: what RDG's Bar scene holds.
"""

from __future__ import annotations

import math
import random

import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "bar interior: refractive bottles and glasses, mirror back bar, wood, woven fabric, neon and chalkboard text, swinging pendants, fan, bartender and guest"
SEED_VARIES = ("time of day through the window (noon to night, and the lamps' strength with it), lamp colour, "
               "bar name on the neon sign, menu, wood, wallpaper and fabric colours and scales, bottle shapes "
               "and colours, table layout, the people, the camera's dolly")

W, D, H = 14.0, 9.0, 3.6          # room: x from -W/2 to W/2, y from -D/2 to D/2 (back bar at +y)
NAMES = ("THE BLUE MOON", "OLD HARBOUR", "NIGHTJAR", "COPPER FOX", "LAST ORDERS", "THE LANTERN", "ZEPHYR",
         "BRASS MONKEY", "NORTH STAR", "VELVET")
DRINKS = ("Negroni", "Old Fashioned", "Martini", "Mojito", "Daiquiri", "Sazerac", "Paloma", "Gimlet",
          "Manhattan", "Sidecar", "Spritz", "Highball", "Sour", "Mule", "Julep", "Toddy")


def _wallpaper(rng: random.Random):
    s = kit.Shader("Wallpaper")
    co = s.wall_coords(scale=kit.vary_scale(rng, 4.0), offset=kit.random_offset(rng))
    damask = s.node("TexVoronoi", {"Vector": co, "Scale": 2.0, "Randomness": 0.0})
    stripes = s.node("TexWave", {"Vector": co, "Scale": 1.0, "Distortion": 0.0}, bands_direction="X")
    ground = kit.vary_color(rng, rng.choice(((0.15, 0.25, 0.2), (0.35, 0.1, 0.1), (0.12, 0.12, 0.25),
                                             (0.4, 0.33, 0.2))))
    motif = tuple(min(1.0, c * 1.8 + 0.05) for c in ground)
    pattern = s.math("MULTIPLY", s.math("LESS_THAN", s.out(damask, "Distance"), 0.22),
                     s.math("GREATER_THAN", s.out(stripes, "Factor"), 0.3))
    return s.principled({"Base Color": s.mix(pattern, ground, motif), "Roughness": 0.6,
                         "Normal": s.bump(pattern, 0.2, 0.002)})


def _chalkboard(rng: random.Random):
    s = kit.Shader("Chalkboard")
    smudge = s.node("TexNoise", {"Vector": s.coords(offset=kit.random_offset(rng)), "Scale": 8.0, "Detail": 6.0})
    return s.principled({"Base Color": s.mix(0.15, (0.03, 0.05, 0.04), s.out(smudge, "Color"), "SCREEN"),
                         "Roughness": 0.9})


def _bottle_profiles(rng: random.Random) -> list[list[tuple[float, float]]]:
    """A few bottle silhouettes (radius, height): wine, spirits, liqueur, squat."""
    out = []
    for _ in range(4):
        r = rng.uniform(0.03, 0.045)
        body = rng.uniform(0.14, 0.22)
        shoulder = rng.uniform(0.02, 0.07)
        neck = rng.uniform(0.05, 0.1)
        out.append([(r * 0.9, 0.0), (r, 0.005), (r, body), (r * 0.45, body + shoulder),
                    (0.012, body + shoulder + 0.01), (0.012, body + shoulder + neck),
                    (0.014, body + shoulder + neck + 0.005), (0.014, body + shoulder + neck + 0.015)])
    return out


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    daylight = kit.time_of_day(rng, ("noon", "afternoon", "evening", "dusk", "night"), strength=1.0)
    lamps = 0.5 + 0.5 * daylight.lamps            # the bar's own lamps are on at every hour
    warm = kit.vary_color(rng, (1.0, 0.72, 0.45), hue=0.03)
    name = rng.choice(NAMES)
    kit.variant(bar_name=name)

    wood = parts.wood(rng, "DarkWood", kit.vary_color(rng, (0.25, 0.12, 0.06)), gloss=0.25)
    floor_wood = parts.wood(rng, "Planks", kit.vary_color(rng, (0.35, 0.22, 0.12)), planks=True, gloss=0.4)
    room = kit.ArrayMesh()
    room.boxes([(0, 0, -0.05)], [(W, D, 0.1)], material=0)                           # floor
    room.boxes([(0, 0, H + 0.05)], [(W, D, 0.1)], material=3)                        # ceiling
    for x in np.linspace(-W / 2 + 1, W / 2 - 1, 6):
        room.boxes([(x, 0, H - 0.15)], [(0.25, D, 0.3)], material=1)                   # beams
    # Walls: wainscot panelling below, wallpaper above; the front wall (-y) has a window.
    win_x, win_w, win_z, win_h = rng.uniform(-3, 3), 3.0, 1.0, 1.9
    for sx in (-1, 1):
        room.boxes([(sx * (W / 2 + 0.1), 0, H / 2)], [(0.2, D, H)], material=2)
    room.boxes([(0, D / 2 + 0.1, H / 2)], [(W, 0.2, H)], material=2)
    front = -D / 2 - 0.1
    room.boxes([((-W / 2 + win_x - win_w / 2) / 2, front, H / 2)], [(win_x - win_w / 2 + W / 2, 0.2, H)], material=2)
    room.boxes([((W / 2 + win_x + win_w / 2) / 2, front, H / 2)], [(W / 2 - win_x - win_w / 2, 0.2, H)], material=2)
    room.boxes([(win_x, front, win_z / 2)], [(win_w, 0.2, win_z)], material=2)
    room.boxes([(win_x, front, (win_z + win_h + H) / 2)], [(win_w, 0.2, H - win_z - win_h)], material=2)
    for sx in (-1, 1):                                                                 # wainscot panels
        room.boxes([(sx * (W / 2 - 0.02), 0, 0.55)], [(0.06, D - 0.2, 1.1)], material=1)
    for x in np.linspace(-W / 2 + 0.6, W / 2 - 0.6, 16):
        room.boxes([(x, -D / 2 + 0.02, 0.55)], [(0.05, 0.06, 1.1)], material=1)
    room.boxes([(0, -D / 2 + 0.03, 1.12)], [(W, 0.08, 0.05)], material=1)
    room.object("Room", [floor_wood, wood, _wallpaper(rng), kit.plain("Ceiling", (0.08, 0.07, 0.06), roughness=0.8)])
    window = kit.ArrayMesh()
    window.boxes([(win_x, front, win_z + win_h / 2)], [(win_w, 0.02, win_h)], material=1)
    bars = [(win_x + dx, front - 0.03, win_z + win_h / 2) for dx in np.linspace(-win_w / 2, win_w / 2, 5)]
    window.boxes(bars, [(0.05, 0.06, win_h)])
    window.boxes([(win_x, front - 0.03, win_z + z) for z in (0.0, win_h * 0.6, win_h)], [(win_w, 0.06, 0.05)])
    window.object("Window", [wood, parts.glass("WindowGlass", (0.95, 0.97, 0.96))])
    outside = kit.ArrayMesh()                 # a facade across the street, for the window to show
    outside.boxes([(win_x, -D / 2 - 9, 6)], [(30, 1, 12)])
    outside.object("Opposite", [parts.wall(rng, "OppositeWall")])

    # Counter with a glossy top and a brass foot rail; the back bar behind it.
    cy = D / 2 - 2.4
    counter = kit.ArrayMesh()
    counter.boxes([(0, cy, 0.55)], [(W - 3.0, 0.6, 1.1)], material=0)
    counter.boxes([(0, cy - 0.05, 1.13)], [(W - 2.8, 0.8, 0.06)], material=1)
    counter.tubes([(-(W - 3.2) / 2, cy - 0.5, 0.2)], [((W - 3.2) / 2, cy - 0.5, 0.2)], 0.025, segments=10)
    for x in np.linspace(-(W - 3.4) / 2, (W - 3.4) / 2, 9):
        counter.tubes([(x, cy - 0.5, 0.0)], [(x, cy - 0.5, 0.2)], 0.012, segments=6)
    counter.object("Counter", [wood, kit.plain("CounterTop", kit.vary_color(rng, (0.05, 0.04, 0.04)),
                                               roughness=0.08, coat_weight=1.0),
                               parts.metal("Brass", (0.85, 0.6, 0.3), 0.2)])

    back = D / 2 - 0.35
    shelves = kit.ArrayMesh()
    shelf_z = [1.2, 1.65, 2.1, 2.55]
    for z in shelf_z:
        shelves.boxes([(0, back, z - 0.02)], [(W - 3.0, 0.35, 0.04)], material=0)
    for x in np.linspace(-(W - 3.0) / 2, (W - 3.0) / 2, 7):
        shelves.boxes([(x, back, 1.9)], [(0.06, 0.36, 1.5)], material=0)
    shelves.boxes([(0, D / 2 - 0.05, 1.9)], [(W - 3.0, 0.04, 1.6)], material=1)          # mirror behind
    shelves.object("BackBar", [wood, kit.mirror("BarMirror", (0.85, 0.85, 0.82), 0.02)])

    liquids = [(0.6, 0.3, 0.05), (0.2, 0.5, 0.15), (0.9, 0.85, 0.7), (0.5, 0.05, 0.05), (0.15, 0.3, 0.6),
               (0.85, 0.6, 0.2)]
    bottle_glass = [parts.glass(f"BottleGlass{i}", kit.vary_color(rng, c), ior=1.5)
                    for i, c in enumerate(rng.sample(liquids, 4))]
    profiles = _bottle_profiles(rng)
    bottles = kit.ArrayMesh()
    for z in shelf_z:
        x = -(W - 3.2) / 2
        while x < (W - 3.2) / 2:
            shape = rng.randrange(len(profiles))
            bottles.lathe(profiles[shape], segments=16, location=(x, back - 0.05 + rng.uniform(-0.05, 0.05), z),
                          material=rng.randrange(4))
            x += rng.uniform(0.1, 0.16)
    bottles.object("Bottles", bottle_glass)

    glasses = kit.ArrayMesh()
    wine = [(0.035, 0.0), (0.035, 0.005), (0.004, 0.01), (0.004, 0.1), (0.03, 0.12), (0.042, 0.17),
            (0.038, 0.22)]
    tumbler = [(0.035, 0.0), (0.037, 0.09), (0.038, 0.1)]
    for i in range(int(rng.uniform(8, 14))):
        x = rng.uniform(-(W - 3.6) / 2, (W - 3.6) / 2)
        glasses.lathe(rng.choice((wine, tumbler)), segments=20, location=(x, cy + rng.uniform(-0.35, 0.2), 1.16))
    glasses.object("Glasses", [parts.glass("ClearGlass", (0.98, 0.98, 0.98), ior=1.5)])

    # Stools in front of the counter, tables and chairs in the room.
    seat = parts.fabric(rng, "SeatFabric", kit.vary_color(rng, (0.45, 0.08, 0.05)), weave=220.0)
    cloth = parts.fabric(rng, "TableCloth", kit.vary_color(rng, (0.8, 0.78, 0.7)), weave=180.0, pattern="check")
    steel = parts.metal("StoolSteel", (0.15, 0.15, 0.15), 0.3)
    furniture = kit.ArrayMesh()
    for x in np.linspace(-(W - 4) / 2, (W - 4) / 2, 8):
        sy = cy - 0.9
        furniture.lathe([(0.001, 0.78), (0.2, 0.78), (0.21, 0.8), (0.2, 0.85), (0.001, 0.86)], segments=20,
                        location=(x, sy, 0), material=1)
        for k in range(4):
            a = k * math.pi / 2 + 0.4
            furniture.tubes([(x + 0.2 * math.cos(a), sy + 0.2 * math.sin(a), 0)], [(x + 0.1 * math.cos(a),
                            sy + 0.1 * math.sin(a), 0.78)], 0.012, segments=6)
        furniture.tubes([(x - 0.17, sy, 0.3)], [(x + 0.17, sy, 0.3)], 0.008, segments=5)
    tables = []
    for k in range(int(rng.uniform(3, 6))):
        tx, ty = rng.uniform(-W / 2 + 1.5, W / 2 - 1.5), rng.uniform(-D / 2 + 1.4, cy - 2.0)
        if any(math.hypot(tx - a, ty - b) < 1.8 for a, b in tables):
            continue
        tables.append((tx, ty))
        furniture.lathe([(0.001, 0.74), (0.5, 0.74), (0.52, 0.72), (0.52, 0.5), (0.5, 0.5), (0.001, 0.7)],
                        segments=32, location=(tx, ty, 0), material=2)
        furniture.tubes([(tx, ty, 0)], [(tx, ty, 0.7)], 0.04, segments=8, material=0)
        furniture.lathe([(0.02, 0.0), (0.02, 0.08)], segments=8, location=(tx + 0.1, ty, 0.74), material=3)
    furniture.object("Furniture", [steel, seat, cloth, kit.plain("Wax", (0.9, 0.88, 0.8), roughness=0.5)])
    flames = kit.ArrayMesh()
    for tx, ty in tables:
        flames.lathe([(0.001, 0.0), (0.01, 0.01), (0.006, 0.025), (0.001, 0.035)], segments=8,
                     location=(tx + 0.1, ty, 0.83))
    if tables:
        flames.object("Candles", [kit.glow("Flame", (1.0, 0.6, 0.25), 15.0 + 15.0 * lamps)])

    # Pendant lamps: cords, shades and bulbs, each swinging a little about its ceiling mount.
    shade = parts.metal("ShadeMetal", kit.vary_color(rng, (0.1, 0.25, 0.15)), 0.3)
    bulb = kit.glow("Bulb", warm, 20.0 + 30.0 * lamps)
    for i, x in enumerate(np.linspace(-(W - 5) / 2, (W - 5) / 2, 5)):
        pendant = kit.ArrayMesh()
        drop = rng.uniform(1.0, 1.3)
        pendant.tubes([(0, 0, 0)], [(0, 0, -drop)], 0.004, segments=4, material=0)
        pendant.lathe([(0.02, -drop), (0.05, -drop - 0.05), (0.16, -drop - 0.22), (0.17, -drop - 0.23)],
                      segments=24, material=0)
        pendant.lathe([(0.001, -drop - 0.12), (0.04, -drop - 0.16), (0.001, -drop - 0.2)], segments=12, material=1)
        lamp = pendant.object(f"Pendant{i}", [shade, bulb], location=(x, cy - 0.1, H))
        light = kit.point((0, 0, -drop - 0.2), energy=40.0 + 60.0 * lamps, radius=0.05, color=warm, name=f"PendantLight{i}")
        light.parent = lamp
        rate, phase, swing = rng.uniform(0.4, 0.7), rng.uniform(0, 6.3), rng.uniform(0.03, 0.07)
        kit.key_motion(lamp, frames, lambda f, rate=rate, phase=phase, swing=swing: {
            "rotation_euler": (swing * math.sin(2 * math.pi * rate * kit.seconds(f) + phase),
                               0.5 * swing * math.cos(2 * math.pi * rate * kit.seconds(f) + phase), 0)})
    kit.area((0, -1.0, H - 0.05), (0, -1.0, 0), size=4.0, energy=700.0 + 600.0 * lamps, color=warm, name="RoomLight")
    kit.area((0, back - 0.3, 2.9), (0, back - 0.3, 1.0), size=1.5, energy=150.0 + 150.0 * lamps, color=warm,
             name="ShelfLight")

    fan = kit.ArrayMesh()
    fan.lathe([(0.08, 0), (0.12, -0.1), (0.001, -0.15)], segments=16)
    fan.boxes([(0.45 * math.cos(a), 0.45 * math.sin(a), -0.1) for a in np.arange(4) * math.pi / 2],
              [(0.7, 0.12, 0.01)], yaw=np.arange(4) * math.pi / 2)
    fan.tubes([(0, 0, 0)], [(0, 0, 0.3)], 0.015, segments=6)
    fan_obj = fan.object("CeilingFan", [wood], location=(rng.uniform(-4, 4), -1.5, H - 0.35))
    spin = rng.uniform(2.5, 4.5)
    kit.key_motion(fan_obj, frames, lambda f: {"rotation_euler": (0, 0, spin * kit.seconds(f))})

    # The sign and the menu: text, emissive and chalk.
    neon = kit.glow("Neon", kit.vary_color(rng, rng.choice(((1.0, 0.1, 0.4), (0.1, 0.7, 1.0), (1.0, 0.5, 0.05)))),
                    8.0 + 12.0 * lamps)
    kit.text("BarSign", name, neon, size=0.32, extrude=0.01, location=(0, D / 2 - 0.08, 3.05))
    board = kit.ArrayMesh()
    bx = rng.choice((-1, 1)) * (W / 2 - 0.12)
    board.boxes([(bx, -0.5, 2.0)], [(0.04, 1.6, 1.1)])
    board.object("MenuBoard", [_chalkboard(rng)])
    chalk = kit.plain("Chalk", (0.85, 0.85, 0.8), roughness=0.9)
    lines = rng.sample(DRINKS, 8)
    menu = "\n".join(f"{drink:<14}{rng.randint(6, 15)}" for drink in lines)
    kit.text("Menu", menu, chalk, size=0.09, location=(bx - math.copysign(0.03, bx), -0.5, 2.0),
             rotation=(0, 0, -math.pi / 2 if bx > 0 else math.pi / 2))

    bartender = parts.figure("Bartender", rng)
    parts.gesture(bartender, frames, (rng.uniform(-3, 3), cy + 0.7), -math.pi / 2, rng)
    guest = parts.figure("Guest", rng)
    parts.walk(guest, frames, parts.ellipse((rng.uniform(-1.5, 1.5), -0.8), (rng.uniform(2.5, 4.0), rng.uniform(0.8, 1.4)),
                                            rng.choice((-1, 1)) * rng.uniform(0.9, 1.3), rng.uniform(0, 2 * math.pi)))

    cam = kit.add_camera(rng.uniform(20.0, 26.0))
    side = rng.uniform(-1, 1)
    rate = rng.uniform(0.12, 0.2)
    phase = rng.uniform(0, 2 * math.pi)
    kit.key_camera(cam, frames,
                   eye=lambda t: (3.5 * math.sin(phase + rate * t), -D / 2 + 1.3 + 0.3 * math.sin(0.3 * t),
                                  1.55 + 0.1 * math.sin(0.4 * t)),
                   target=lambda t: (3.5 * math.sin(phase + rate * t) * 0.6 + side, back, 1.5))
