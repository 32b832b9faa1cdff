"""Temple: traditional architecture with roof tiles, lattices, railings and lanterns.

A pagoda of several tiers on a stone platform, each tier with lacquered
pillars, lattice windows over paper screens, a balcony railing of thin
balusters and a curved hip roof covered in rows of round tiles over a fringe
of rafter ends; paper lanterns hang from the eaves and swing, stone lanterns
line the path through a torii gate, and trees stand around. Snow, cherry
petals or autumn leaves fall. Hundreds of small, regular, repeated parts (tile
rows, rafters, balusters, lattice bars) are what RDG's Tenshu scene stresses.
"""

from __future__ import annotations

import math
import random

import numpy as np
from mathutils import Matrix

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "pagoda: curved roofs of tile rows, rafter ends, lattice windows, thin balcony railings, swinging paper lanterns, torii, stone lanterns, falling snow or petals"
SEED_VARIES = ("time of day (morning to night; lanterns and paper screens glow in the dark), season and its "
               "particles (snow, cherry petals, autumn leaves), number of tiers, proportions, lacquer, roof and "
               "stone colours, lattice density, trees, the camera's approach")

SEASONS = {
    "winter": {"particle": (0.95, 0.95, 1.0), "size": 0.02, "fall": (0.6, 1.0), "wobble": 0.25, "snow": 0.6},
    "spring": {"particle": (1.0, 0.7, 0.8), "size": 0.025, "fall": (0.5, 0.9), "wobble": 0.4, "snow": 0.0},
    "autumn": {"particle": (0.75, 0.2, 0.05), "size": 0.04, "fall": (0.7, 1.2), "wobble": 0.35, "snow": 0.0},
}


def _stone(rng: random.Random, name: str, snow: float):
    s = kit.Shader(name)
    co = s.coords(offset=kit.random_offset(rng))
    blocks = s.node("TexBrick", {"Vector": co, "Scale": kit.vary_scale(rng, 1.2), "Mortar Size": 0.012,
                                 "Brick Width": 0.6, "Row Height": 0.3,
                                 "Color1": kit.vary_color(rng, (0.45, 0.43, 0.4)),
                                 "Color2": kit.vary_color(rng, (0.35, 0.34, 0.32)), "Mortar": (0.2, 0.2, 0.19)})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 50.0, "Detail": 8.0})
    base = s.mix(0.35, s.out(blocks, "Color"), s.out(grain, "Color"), "OVERLAY")
    base = _snow_cover(s, base, snow)
    height = s.math("ADD", s.math("MULTIPLY", s.out(blocks, "Factor"), -1.0), s.math("MULTIPLY", s.out(grain, "Factor"), 0.3))
    return s.principled({"Base Color": base, "Roughness": 0.85, "Normal": s.bump(height, 0.7, 0.01)})


def _snow_cover(s: kit.Shader, base, snow: float):
    """White on what faces up, when it snows."""
    if snow <= 0:
        return base
    up = s.out(s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Normal")}), "Z")
    cover = s.math("MULTIPLY", s.math("GREATER_THAN", up, 0.6), snow)
    return s.mix(cover, base, (0.9, 0.92, 0.95))


def _roof(rng: random.Random, snow: float):
    s = kit.Shader("RoofTiles")
    co = s.coords(offset=kit.random_offset(rng))
    grain = s.node("TexNoise", {"Vector": co, "Scale": 30.0, "Detail": 6.0})
    tint = kit.vary_color(rng, rng.choice(((0.12, 0.13, 0.15), (0.3, 0.32, 0.3), (0.08, 0.2, 0.18),
                                           (0.45, 0.2, 0.1))))
    base = s.mix(0.3, tint, s.out(grain, "Color"), "MULTIPLY")
    base = _snow_cover(s, base, snow)
    return s.principled({"Base Color": base, "Roughness": 0.35, "Metallic": 0.2, "Coat Weight": 0.3,
                         "Normal": s.bump(s.out(grain, "Factor"), 0.3, 0.005)})


def _paper(rng: random.Random, glow: float, color=(1.0, 0.9, 0.75)):
    s = kit.Shader("Paper")
    fibres = s.node("TexNoise", {"Vector": s.coords(), "Scale": 80.0, "Detail": 6.0})
    return s.principled({"Base Color": s.mix(0.15, color, s.out(fibres, "Color"), "MULTIPLY"), "Roughness": 0.9,
                         "Emission Color": kit.vary_color(rng, (1.0, 0.7, 0.4)), "Emission Strength": glow})


def _hip_roof(m: kit.ArrayMesh, hx: float, hy: float, z0: float, rise: float, *, material: int,
              tile_material: int, rafter_material: int, spacing: float = 0.28) -> None:
    """A hip roof over the rectangle |x| < hx, |y| < hy at eave height z0: concave slopes, tile rows, rafter ends."""
    ridge = max(hx - hy, 0.05)
    eave = [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
    top = [(-ridge, 0.0), (ridge, 0.0), (ridge, 0.0), (-ridge, 0.0)]
    rows = 8
    s = np.linspace(0, 1, rows + 1)
    lift = rise * s ** 1.8                      # concave: flat at the eaves, steep near the ridge
    for side in range(4):
        a0, a1 = np.array(eave[side]), np.array(eave[(side + 1) % 4])
        b0, b1 = np.array(top[side]), np.array(top[(side + 1) % 4])
        cols = max(2, int(np.linalg.norm(a1 - a0) / spacing))
        u = np.linspace(0, 1, cols + 1)
        lo = a0[None] + (a1 - a0)[None] * u[:, None]
        hi = b0[None] + (b1 - b0)[None] * u[:, None]
        xy = lo[None] + (hi - lo)[None] * s[:, None, None]                      # (rows+1, cols+1, 2)
        verts = np.concatenate([xy, (z0 + lift)[:, None, None] * np.ones((1, cols + 1, 1))], -1)
        ju, jv = np.meshgrid(np.arange(cols), np.arange(rows))
        idx = (jv * (cols + 1) + ju).ravel()
        m.add(verts.reshape(-1, 3), np.stack([idx, idx + 1, idx + cols + 2, idx + cols + 1], 1), material=material)
        # Tile rows: a round ridge down the slope at every spacing, just above the roof surface.
        for c in range(cols + 1):
            line = verts[:, c].copy()
            line[:, 2] += 0.05
            m.polyline(line, 0.045, segments=5, material=tile_material)
        # Rafter ends poking out under the eave, and the eave board.
        direction = (a1 - a0) / np.linalg.norm(a1 - a0)
        normal = np.array([direction[1], -direction[0]])
        ends = lo[1:-1] + normal * 0.15
        m.boxes(np.concatenate([ends, np.full((len(ends), 1), z0 - 0.12)], 1), (0.09, 0.09, 0.12),
                yaw=np.full(len(ends), math.atan2(direction[1], direction[0])), material=rafter_material)
        m.tubes([(*a0, z0 - 0.02)], [(*a1, z0 - 0.02)], 0.07, segments=4, material=rafter_material)
    m.tubes([(-ridge - 0.2, 0, z0 + rise + 0.08)], [(ridge + 0.2, 0, z0 + rise + 0.08)], 0.12, segments=8,
            material=tile_material)


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    local = np.random.default_rng(seed)
    kit.setup_scene(frames)
    daylight = kit.time_of_day(rng, ("morning", "noon", "evening", "dusk", "night"))
    lamps = daylight.lamps
    season = rng.choice(list(SEASONS))
    spec = SEASONS[season]
    kit.variant(season=season)
    snow = spec["snow"]

    gravel = kit.Shader("Gravel")
    co = gravel.coords(offset=kit.random_offset(rng))
    pebbles = gravel.node("TexVoronoi", {"Vector": co, "Scale": kit.vary_scale(rng, 45.0)})
    base = gravel.mix(0.6, kit.vary_color(rng, (0.5, 0.48, 0.44)), gravel.out(pebbles, "Color"), "OVERLAY")
    base = _snow_cover(gravel, base, snow * 1.3)
    gravel.principled({"Base Color": base, "Roughness": 0.9,
                       "Normal": gravel.bump(gravel.out(pebbles, "Distance"), 0.8, 0.01)})
    ground = kit.MeshBuilder()
    ground.grid((160, 160))
    ground.object("Ground", [gravel.material])

    stone = _stone(rng, "Stone", snow)
    lacquer = kit.plain("Lacquer", kit.vary_color(rng, rng.choice(((0.6, 0.08, 0.04), (0.5, 0.15, 0.05),
                                                                   (0.15, 0.1, 0.08)))), roughness=0.25,
                        coat_weight=0.6)
    timber = parts.wood(rng, "Timber", kit.vary_color(rng, (0.22, 0.13, 0.07)), gloss=0.5)
    roof_material = _roof(rng, snow)
    paper = _paper(rng, 0.02 + 0.7 * lamps)

    # Platform and steps.
    plat = kit.ArrayMesh()
    tiers = rng.randint(2, 5)
    half = rng.uniform(5.0, 7.0)
    plat.boxes([(0, 0, 0.6)], [(2 * half + 3, 2 * half + 3, 1.2)])
    for k in range(6):
        plat.boxes([(0, -half - 1.5 - 0.35 * (k + 0.5), 0.1 * (5 - k) + 0.1)], [(4.0, 0.35, 0.2 * (6 - k))])
    plat.object("Platform", [stone])

    hall = kit.ArrayMesh()
    z = 1.2
    mounts = []
    lattice = rng.choice((0.08, 0.1, 0.14))
    for tier in range(tiers):
        hx = half * (1 - 0.16 * tier)
        hy = hx * rng.uniform(0.75, 0.95)
        storey = rng.uniform(2.8, 3.4) if tier == 0 else rng.uniform(2.0, 2.6)
        # Floor, walls (paper screens in timber frames) and pillars.
        hall.boxes([(0, 0, z + 0.1)], [(2 * hx + 0.4, 2 * hy + 0.4, 0.2)], material=1)
        hall.boxes([(0, 0, z + storey / 2)], [(2 * hx - 0.6, 2 * hy - 0.6, storey)], material=3)
        pillars = []
        for px in np.linspace(-hx + 0.3, hx - 0.3, max(3, int(hx / 1.5))):
            pillars += [(px, -hy + 0.3), (px, hy - 0.3)]
        for py in np.linspace(-hy + 0.3, hy - 0.3, max(3, int(hy / 1.5)))[1:-1]:
            pillars += [(-hx + 0.3, py), (hx - 0.3, py)]
        p = np.array(pillars)
        hall.tubes(np.concatenate([p, np.full((len(p), 1), z + 0.2)], 1),
                   np.concatenate([p, np.full((len(p), 1), z + storey)], 1), 0.14, segments=12, material=2)
        # Lattice: thin bars over the front and back screens.
        for sy in (-1, 1):
            y = sy * (hy - 0.29)
            xs = np.arange(-hx + 0.7, hx - 0.7, lattice)
            zs = np.arange(z + 0.9, z + storey - 0.3, lattice)
            hall.boxes([(x, y, (z + 0.9 + z + storey - 0.3) / 2) for x in xs], (0.018, 0.02, storey - 1.2), material=1)
            hall.boxes([(0, y, zz) for zz in zs], (2 * hx - 1.4, 0.02, 0.018), material=1)
        # Balcony railing around the upper tiers, balusters every 12 cm.
        if tier > 0:
            rx, ry = hx + 0.1, hy + 0.1
            for (x0, y0), (x1, y1) in (((-rx, -ry), (rx, -ry)), ((rx, -ry), (rx, ry)), ((rx, ry), (-rx, ry)),
                                       ((-rx, ry), (-rx, -ry))):
                n = int(math.hypot(x1 - x0, y1 - y0) / 0.12)
                t = np.linspace(0, 1, n)[:, None]
                feet = np.array([x0, y0]) + (np.array([x1, y1]) - np.array([x0, y0])) * t
                hall.tubes(np.concatenate([feet, np.full((n, 1), z + 0.2)], 1),
                           np.concatenate([feet, np.full((n, 1), z + 0.95)], 1), 0.012, segments=4, material=2)
                hall.tubes([(x0, y0, z + 0.95), (x0, y0, z + 0.55)], [(x1, y1, z + 0.95), (x1, y1, z + 0.55)],
                           0.025, segments=6, material=2)
        z += storey
        overhang = rng.uniform(1.2, 1.8)
        rise = rng.uniform(1.0, 1.5) if tier < tiers - 1 else rng.uniform(2.0, 3.0)
        _hip_roof(hall, hx + overhang, hy + overhang, z, rise, material=4, tile_material=5, rafter_material=1)
        mounts += [(sx * (hx + overhang - 0.2), sy * (hy + overhang - 0.2), z - 0.15) for sx in (-1, 1) for sy in (-1, 1)]
        z += rise * (0.55 if tier < tiers - 1 else 1.0)
    # Finial: stacked rings on a mast.
    hall.tubes([(0, 0, z - 0.2)], [(0, 0, z + 2.5)], 0.06, segments=8, material=6)
    for k in range(7):
        hall.lathe([(0.001, 0), (0.22 - 0.02 * k, 0.04), (0.001, 0.08)], segments=16, material=6,
                   location=(0, 0, z + 0.3 + 0.25 * k))
    hall.object("Pagoda", [stone, timber, lacquer, paper, kit.plain("RoofUnder", (0.15, 0.1, 0.07), roughness=0.7),
                           roof_material, parts.metal("Bronze", (0.55, 0.4, 0.2), 0.35)])

    # Paper lanterns under the eaves' corners, swinging on short cords.
    lantern_paper = _paper(rng, 0.3 + 8.0 * lamps, kit.vary_color(rng, rng.choice(((0.9, 0.15, 0.08), (1.0, 0.95, 0.85)))))
    lantern = kit.ArrayMesh()
    lantern.tubes([(0, 0, 0)], [(0, 0, -0.35)], 0.005, segments=4, material=1)
    profile = [(0.06, -0.35), (0.16, -0.42), (0.2, -0.55), (0.16, -0.68), (0.06, -0.75)]
    lantern.lathe(profile, segments=20, material=0)
    for zz in np.linspace(-0.4, -0.7, 6):                                         # ribs
        r = np.interp(-zz, [-p[1] for p in profile], [p[0] for p in profile]) + 0.004
        lantern.lathe([(r, zz - 0.004), (r, zz + 0.004)], segments=20, caps=False, material=1)
    lantern_mesh = lantern.mesh("Lantern")
    lantern_mesh.materials.append(lantern_paper)
    lantern_mesh.materials.append(kit.plain("Cord", (0.05, 0.04, 0.03), roughness=0.7))
    for i, mount in enumerate(mounts):
        obj = kit.instance(f"Lantern{i}", lantern_mesh, location=mount)
        rate, phase, swing = rng.uniform(0.5, 0.9), rng.uniform(0, 6.3), rng.uniform(0.05, 0.12)
        kit.key_motion(obj, frames, lambda f, rate=rate, phase=phase, swing=swing: {
            "rotation_euler": (swing * math.sin(2 * math.pi * rate * kit.seconds(f) + phase),
                               0.6 * swing * math.sin(2 * math.pi * rate * kit.seconds(f) + 1.3 * phase), 0)})
        if lamps > 0.3 and i % 2 == 0:
            kit.point((0, 0, -0.55), energy=15.0 * lamps, radius=0.1, color=(1.0, 0.6, 0.3), name=f"LanternLight{i}").parent = obj

    # Torii gate and stone lanterns along the path.
    gate_y = -half - rng.uniform(9.0, 13.0)
    gate = kit.ArrayMesh()
    span = rng.uniform(2.2, 3.0)
    gate.tubes([(-span, gate_y, 0), (span, gate_y, 0)], [(-span * 0.95, gate_y, 4.6), (span * 0.95, gate_y, 4.6)],
               0.22, radius_end=0.18, segments=16, caps=True)
    gate.boxes([(0, gate_y, 3.8)], [(2 * span + 1.0, 0.25, 0.3)])
    kasagi = np.array([(x, gate_y, 4.75 + 0.04 * (x / span) ** 2) for x in np.linspace(-span - 1.4, span + 1.4, 12)])
    gate.polyline(kasagi, 0.2, segments=6, material=1)
    gate.object("Torii", [lacquer, kit.plain("TopBeam", (0.03, 0.03, 0.03), roughness=0.4)])
    toro = kit.ArrayMesh()
    toro.lathe([(0.25, 0), (0.25, 0.15), (0.08, 0.2), (0.08, 0.9), (0.3, 0.95), (0.3, 1.05)], segments=12)
    toro.boxes([(0, 0, 1.3)], [(0.42, 0.42, 0.5)])
    toro.boxes([(0, 0, 1.3)], [(0.44, 0.2, 0.25)], material=1)
    toro.lathe([(0.45, 1.55), (0.4, 1.7), (0.06, 1.9), (0.001, 2.0)], segments=8)
    toro_mesh = toro.mesh("StoneLantern")
    toro_mesh.materials.append(stone)
    toro_mesh.materials.append(_paper(rng, 0.2 + 6.0 * lamps))
    for k, y in enumerate(np.arange(gate_y + 2.0, -half - 2.5, 2.8)):
        for sx in (-1, 1):
            kit.instance(f"StoneLantern{k}{'LR'[sx > 0]}", toro_mesh, location=(sx * 2.4, y, 0), rotation=(0, 0, 0.1 * sx))
    path = kit.ArrayMesh()
    path.boxes([(0, (gate_y - 6 - half - 1.5) / 2, 0.02)], [(2.8, abs(gate_y - 6 + half + 1.5), 0.04)])
    path.object("Path", [_stone(rng, "PathStone", snow)])

    # Trees around the temple, swaying.
    bark = parts.bark(rng)
    leaf_color = {"winter": (0.05, 0.12, 0.05), "spring": (0.95, 0.65, 0.75), "autumn": (0.7, 0.2, 0.03)}[season]
    kinds = [parts.tree("TempleTree", rng, height=rng.uniform(6, 9), leaf_size=0.12, leaves_per_twig=26),
             parts.tree("TemplePine", rng, kind="conifer", height=rng.uniform(8, 12))]
    kinds[0].materials.append(bark)
    kinds[0].materials.append(parts.foliage(rng, "TempleLeaves", leaf_color))
    kinds[1].materials.append(bark)
    kinds[1].materials.append(parts.foliage(rng, "PineNeedles", (0.04, 0.12, 0.05)))
    placed = []
    for spot in parts.scatter(local, 40, (-35, 35), (-35, 30),
                              keep=lambda x, y: (np.abs(x) > half + 6) | (y > half + 6)):
        mesh = kinds[int(rng.random() < 0.5)]
        placed.append(kit.instance(f"Tree{len(placed)}", mesh, location=(float(spot[0]), float(spot[1]), 0),
                                   rotation=(0, 0, rng.uniform(0, 6.3)), scale=rng.uniform(0.8, 1.2)))
    breeze = (1.0, rng.uniform(-1, 1))
    for tree in placed:
        kit.sway(tree, frames, rng, lean=0.012, direction=breeze)

    # Falling snow, petals or leaves around the camera's approach.
    flake = kit.ArrayMesh()
    if season == "winter":
        flake.lathe([(0.001, -1), (0.8, -0.5), (0.8, 0.5), (0.001, 1)], segments=6)
    else:
        flake.add(kit.leaf_outline(6, width=0.8), [np.arange(6)[None]])
    flake_mesh = flake.mesh("Flake")
    flake_mesh.transform(Matrix.Scale(spec["size"], 4))
    flake_mesh.materials.append(kit.plain("FlakeMaterial", spec["particle"], roughness=0.6))

    def spawn(r: random.Random):
        return ((r.uniform(-10, 10), r.uniform(gate_y - 8, 0), r.uniform(4, 10)),
                (r.uniform(0.1, 0.4), r.uniform(-0.1, 0.1), -r.uniform(*spec["fall"])))

    parts.particles("Flake", flake_mesh, frames, int(rng.uniform(250, 400)), seed, spawn, life=9.0,
                    wobble=spec["wobble"])

    cam = kit.add_camera(rng.uniform(17.0, 24.0))
    near, far = -half - 6.0, gate_y - 6.0
    pace = rng.uniform(0.8, 1.4)
    start = rng.uniform(0, 2 * math.pi)
    side = rng.uniform(-2.0, 2.0)
    look_up = rng.uniform(4.0, 7.0)

    def eye(t: float):
        u = 0.5 + 0.5 * math.sin(start + pace * t / abs(far - near))
        return (side + 0.8 * math.sin(0.2 * t), far + (near - far) * u, 1.7 + 0.5 * u)

    kit.key_camera(cam, frames, eye, target=lambda t: (0.3 * side, 0.0, look_up + 0.5 * math.sin(0.15 * t)))
