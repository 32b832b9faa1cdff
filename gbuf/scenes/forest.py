"""Forest: dense foliage in wind and dappled sun, walked through along a path.

Broadleaf trees with thousands of leaf polygons each and conifers clad in
alpha-tested needle fronds, tens of thousands of grass blades, ferns made of
alpha-tested leaflet cards, bushes, rocks and a fallen log on hilly ground
covered in leaf litter. Everything that grows moves: gusts of wind travel
through the grass and the crowns (shape keys, so the Vector pass sees it), trees
sway, ferns nod and leaves fall. A low sun with a small disc throws sharp
dappled shadows. Thin blades, leaf edges and moving gaps in the canopy alias and
disocclude at every frame: the hardest content for an upscaler.
"""

from __future__ import annotations

import math
import random

import numpy as np
from mathutils import Vector, noise

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "dense forest: leafy trees, alpha-tested conifers and ferns, 30k+ wind-swept grass blades, falling leaves, dappled sun; walk along a path"
SEED_VARIES = ("season palette (spring, summer, autumn leaves and grass), time of day and sun direction, "
               "tree species mix and placement, grass density, rocks, wind direction and strength, "
               "litter and bark texture scale and colour, the walk's start and speed")

SEASONS = {
    "spring": {"leaves": [(0.22, 0.45, 0.06), (0.3, 0.5, 0.1)], "grass": (0.16, 0.38, 0.06)},
    "summer": {"leaves": [(0.06, 0.2, 0.03), (0.1, 0.26, 0.04)], "grass": (0.1, 0.26, 0.05)},
    "autumn": {"leaves": [(0.65, 0.28, 0.03), (0.55, 0.12, 0.03), (0.7, 0.5, 0.08)], "grass": (0.28, 0.3, 0.08)},
}


def _litter(rng: random.Random):
    """The forest floor: leaf litter (Voronoi flakes), moss patches and bare soil."""
    s = kit.Shader("Litter")
    co = s.coords(offset=kit.random_offset(rng))
    flakes = s.node("TexVoronoi", {"Vector": co, "Scale": kit.vary_scale(rng, 14.0)})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 60.0, "Detail": 6.0})
    moss = s.node("TexNoise", {"Vector": co, "Scale": kit.vary_scale(rng, 0.4), "Detail": 4.0})
    leaf = kit.vary_color(rng, (0.3, 0.16, 0.06), hue=0.05)
    soil = kit.vary_color(rng, (0.12, 0.08, 0.05))
    base = s.mix(s.out(flakes, "Distance"), leaf, soil)
    base = s.mix(0.5, base, s.out(flakes, "Color"), "OVERLAY")
    base = s.mix(0.3, base, s.out(grain, "Color"), "MULTIPLY")
    mossy = s.out(s.node("MapRange", {"Value": s.out(moss, "Factor"), "From Min": 0.5, "From Max": 0.6}), "Result")
    base = s.mix(mossy, base, kit.vary_color(rng, (0.08, 0.18, 0.03)))
    height = s.math("ADD", s.out(flakes, "Distance"), s.math("MULTIPLY", s.out(grain, "Factor"), 0.5))
    return s.principled({"Base Color": base, "Roughness": 0.85, "Normal": s.bump(height, 0.7, 0.02)})


def _rock(rng: random.Random):
    s = kit.Shader("Rock")
    co = s.coords(offset=kit.random_offset(rng))
    cells = s.node("TexVoronoi", {"Vector": co, "Scale": 6.0})
    grain = s.node("TexNoise", {"Vector": co, "Scale": 35.0, "Detail": 10.0})
    moss = s.node("TexNoise", {"Vector": co, "Scale": 2.0, "Detail": 3.0})
    base = s.mix(0.6, kit.vary_color(rng, (0.32, 0.3, 0.27)), s.out(grain, "Color"), "MULTIPLY")
    top = s.out(s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Normal")}), "Z")
    mossy = s.math("MULTIPLY", s.math("GREATER_THAN", top, 0.5), s.math("GREATER_THAN", s.out(moss, "Factor"), 0.45))
    base = s.mix(mossy, base, (0.1, 0.2, 0.04))
    return s.principled({"Base Color": base, "Roughness": 0.9,
                         "Normal": s.bump(s.math("ADD", s.out(cells, "Distance"), s.out(grain, "Factor")), 0.6, 0.02)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    local = np.random.default_rng(seed)
    kit.setup_scene(frames)
    season = rng.choice(list(SEASONS))
    palette = SEASONS[season]
    kit.variant(season=season)
    daylight = kit.time_of_day(rng, ("morning", "noon", "afternoon", "evening"))
    daylight.sun.data.angle = math.radians(0.6)          # a small disc: crisp dapples through the crown
    offset = Vector(kit.random_offset(rng, 50.0))
    hills = rng.uniform(0.4, 1.0)

    def ground(x: float, y: float) -> float:
        # Rolling ground, flattened along the path (|y| < 2) the walk follows.
        flat = min(1.0, (abs(y) / 5.0) ** 2)
        return hills * (0.3 + flat) * noise.fractal(Vector((x * 0.06, y * 0.06, 0)) + offset, 0.7, 2.0, 3)

    # The ground as a 1 m grid; grass and plants read their height from it (bilinear), not from noise again.
    ticks = np.linspace(-60, 60, 121)
    gx, gy = np.meshgrid(ticks, ticks, indexing="xy")
    gz = np.array([[ground(x, y) for x in ticks] for y in ticks])
    terrain = kit.ArrayMesh()
    index = np.arange(121 * 121).reshape(121, 121)
    a = index[:-1, :-1].ravel()
    terrain.add(np.stack([gx, gy, gz], -1).reshape(-1, 3), np.stack([a, a + 1, a + 122, a + 121], 1))
    terrain.object("ForestFloor", [_litter(rng)])

    def heights(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        fx, fy = np.clip(x + 60, 0, 119.999), np.clip(y + 60, 0, 119.999)
        i, j = fx.astype(int), fy.astype(int)
        u, v = fx - i, fy - j
        return ((1 - u) * (1 - v) * gz[j, i] + u * (1 - v) * gz[j, i + 1] + (1 - u) * v * gz[j + 1, i]
                + u * v * gz[j + 1, i + 1])

    wind_angle = rng.uniform(0, 2 * math.pi)
    wind_dir = (math.cos(wind_angle), math.sin(wind_angle))
    gust = rng.uniform(0.6, 1.4)

    # Trees: two broadleaf species and a conifer, shared meshes placed many times.
    bark = parts.bark(rng)
    leaf_materials = [parts.foliage(rng, f"Leaves{i}", c) for i, c in enumerate(palette["leaves"])]
    needles = parts.foliage(rng, "Needles", (0.04, 0.14, 0.05))
    species = []
    for i in range(2):
        mesh = parts.tree(f"Broadleaf{i}", rng, height=rng.uniform(8.0, 12.0), leaf_size=rng.uniform(0.16, 0.24),
                          leaves_per_twig=int(rng.uniform(30, 45)))
        mesh.materials.append(bark)
        mesh.materials.append(leaf_materials[i % len(leaf_materials)])
        species.append(mesh)
    conifer = parts.tree("Conifer", rng, kind="conifer", height=rng.uniform(9.0, 14.0))
    conifer.materials.append(bark)
    conifer.materials.append(needles)
    species.append(conifer)
    conifer_share = rng.uniform(0.1, 0.6)

    trees = []
    # Denser near the path, so the crowns close over it.
    for spot in parts.scatter(local, int(rng.uniform(140, 200)), (-40, 40), (-30, 30),
                              keep=lambda x, y: (np.abs(y) > 3.0) & (local.random(len(x)) < 6.0 / np.abs(y))):
        x, y = float(spot[0]), float(spot[1])
        mesh = species[2] if rng.random() < conifer_share else species[rng.randrange(2)]
        tree = kit.instance(f"Tree{len(trees)}", mesh, location=(x, y, ground(x, y) - 0.1),
                            rotation=(0, 0, rng.uniform(0, 2 * math.pi)), scale=rng.uniform(0.75, 1.2))
        trees.append(tree)
    # Whole trees sway about their roots, each at its own pace (gusts reach them at different times).
    # Rigid sway, not shape keys: the trees share three meshes and stay instances.
    for tree in trees:
        kit.sway(tree, frames, rng, lean=0.012 * gust, direction=wind_dir, rate=0.7 * gust)

    # Bushes: small broadleaf trees as undergrowth.
    bush = parts.tree("Bush", rng, height=rng.uniform(1.4, 2.2), leaf_size=0.07, leaves_per_twig=10)
    bush.materials.append(bark)
    bush.materials.append(leaf_materials[-1])
    for i, spot in enumerate(parts.scatter(local, int(rng.uniform(20, 35)), (-25, 25), (-14, 14),
                                           keep=lambda x, y: np.abs(y) > 2.2)):
        x, y = float(spot[0]), float(spot[1])
        kit.instance(f"Bush{i}", bush, location=(x, y, ground(x, y)), rotation=(0, 0, rng.uniform(0, 6.3)),
                     scale=rng.uniform(0.6, 1.1))

    # Ferns (alpha-tested leaflet cards), nodding in the wind.
    fern_material = parts.foliage(rng, "Fern", kit.vary_color(rng, (0.12, 0.3, 0.05)))
    ferns = [parts.fern(f"Fern{i}", rng, length=rng.uniform(0.6, 1.0)) for i in range(3)]
    for mesh in ferns:
        mesh.materials.append(fern_material)
    for i, spot in enumerate(parts.scatter(local, int(rng.uniform(50, 80)), (-16, 16), (-8, 8),
                                           keep=lambda x, y: np.abs(y) > 1.2)):
        x, y = float(spot[0]), float(spot[1])
        fern = kit.instance(f"FernPlant{i}", ferns[i % 3], location=(x, y, ground(x, y)),
                            rotation=(0, 0, rng.uniform(0, 6.3)), scale=rng.uniform(0.7, 1.3))
        kit.sway(fern, frames, rng, lean=0.05, direction=wind_dir, rate=0.8 * gust)

    # Grass: densest beside the path, thinning away from it; gusts run through it.
    count = int(rng.uniform(30000, 45000))
    spots = parts.scatter(local, count * 3, (-22, 22), (-12, 12),
                          keep=lambda x, y: local.random(len(x)) < np.exp(-np.maximum(np.abs(y) - 1.0, 0) / 3.5)
                          * (np.abs(y) > 0.7))[:count]
    spots[:, 2] = heights(spots[:, 0], spots[:, 1]) - 0.02
    field = parts.grass("Grass", rng, spots, height=rng.uniform(0.25, 0.45))
    grass = field.object("Grass", [parts.grass_material(rng, color=palette["grass"])])
    kit.wind(grass, frames, amplitude=0.08 * gust, direction=wind_dir, wavelength=rng.uniform(3.0, 6.0),
             period=rng.uniform(1.2, 2.0), stiffness=1.5)

    rock_material = _rock(rng)
    for i in range(int(rng.uniform(5, 10))):
        rock = kit.MeshBuilder()
        radius = rng.uniform(0.25, 0.9)
        kit.displace(rock.ico(radius, subdivisions=4), radius * 0.4, 2.0 / radius, center=(0, 0, 0),
                     offset=kit.random_offset(rng))
        x, y = rng.uniform(-15, 15), rng.choice((-1, 1)) * rng.uniform(2.0, 8.0)
        rock.object(f"Rock{i}", [rock_material], location=(x, y, ground(x, y)),
                    rotation=(rng.uniform(0, 6.3), rng.uniform(0, 6.3), rng.uniform(0, 6.3)))

    log = kit.ArrayMesh()
    lx, ly = rng.uniform(-8, 8), rng.choice((-1, 1)) * rng.uniform(2.5, 4.0)
    log.tubes([[-2.5, 0, 0]], [[2.5, 0, 0]], 0.28, radius_end=0.22, segments=14, caps=True)
    log.tubes([[0.8, 0, 0.1], [-1.2, 0, 0.15]], [[1.3, 0.6, 0.7], [-1.6, -0.5, 0.6]], 0.07, radius_end=0.03)
    log.object("FallenLog", [bark], location=(lx, ly, ground(lx, ly) + 0.2), rotation=(0, 0, rng.uniform(-0.5, 0.5)))

    walk = rng.uniform(0.9, 1.4) * rng.choice((-1, 1))  # m/s along the path
    start = rng.uniform(0, 2 * math.pi)

    def eye(t: float):
        x = 12.0 * math.sin(start + walk * t / 12.0)
        y = 0.4 * math.sin(0.3 * t + start)
        return (x, y, ground(x, y) + 1.6 + 0.025 * math.sin(2 * math.pi * 1.7 * t))

    facing = rng.choice((-1.0, 1.0))     # looks one way along the path, whichever way it walks

    def target(t: float):
        x = eye(t)[0] + facing * 10.0
        return (x, 2.5 * math.sin(0.25 * t + start), ground(x, 0.0) + 1.8 + 0.8 * math.sin(0.2 * t))

    kit.key_camera(kit.add_camera(24.0), frames, eye, target)

    # Leaves falling through the view, drifting in the wind.
    falling = kit.ArrayMesh()
    falling.add(kit.leaf_outline(8) * 0.08, [np.arange(8)[None]], uv=kit.leaf_outline(8)[:, :2] + [0.5, 0.0])
    fall_mesh = falling.mesh("FallingLeaf")
    fall_mesh.materials.append(leaf_materials[0])

    def spawn(r: random.Random):
        return ((r.uniform(-14, 14), r.uniform(-5, 5), r.uniform(3.0, 7.0)),
                (wind_dir[0] * 0.6 * gust, wind_dir[1] * 0.6 * gust, -r.uniform(0.6, 1.1)))

    parts.particles("FallingLeaf", fall_mesh, frames, int(rng.uniform(40, 70)), seed, spawn, life=6.0,
                    wobble=0.3)
