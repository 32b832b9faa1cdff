"""Procedural scene recipes: listing without bpy, packaging, building .blend files, rendering end to end.

Every recipe is built into a real .blend, opened again with bpy and checked for
an active camera, the frame range, motion of the camera and of objects (also one
frame beyond each end, which the first frame's motion vectors need) and its
theme; then each of three seeds is rendered at 128x72 (x4 LR, 2 samples, 3
frames) through ``gbuf.render.render`` into a store that ``gbuf.datasets.verify``
accepts, its buffers pass the content checks (``content_problems``: no near-black
frame, no missing-texture magenta, no NaN or inf, little clipping, motion in
every frame), and the three seeds' images differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gbuf.errors import GbufError

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["default", "bar", "city_block", "courtyard", "forest", "night_street", "plaza", "scifi_corridor",
           "showroom", "speedway", "temple"]
SEEDS = (0, 1, 2)
FRAMES = 3

# Content checks of a rendered sequence (thresholds stated here and in docs/scenes.md).
DARK_MEAN = 0.02          # a frame whose mean luminance is below this is near-black ...
DARK_PEAK = 0.1           # ... and so is one whose 99th-percentile luminance is below this
MAGENTA_SHARE = 0.005     # Blender's missing-texture magenta (r = b, g = 0) on at most 0.5% of pixels
CLIPPED_SHARE = 0.12      # pixels with any channel > 1: at most 12%
SATURATED_SHARE = 0.06    # pixels with every channel >= 1 (blown to white): at most 6%
MOTION_MIN = 0.05         # HR pixels: the largest motion of every frame is at least this
SEEDS_DIFFER = 0.03       # mean |difference| of the display images of two seeds: at least this


def test_listing_and_describing_do_not_import_bpy():
    code = ("import json, sys\n"
            "from gbuf.render import recipes\n"
            "names = recipes.names()\n"
            "print(json.dumps({'names': names, 'descriptions': [recipes.describe(n) for n in names],\n"
            "                  'bpy': 'bpy' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    facts = json.loads(out.stdout)
    assert facts["bpy"] is False
    assert facts["names"][0] == "default"
    assert sorted(facts["names"]) == sorted(RECIPES) and len(RECIPES) >= 8
    for description in facts["descriptions"]:
        assert description.strip() and "\n" not in description


def test_every_recipe_says_what_its_seed_varies(gbuf_cli):
    from gbuf.render import recipes

    for name in recipes.names():
        found = recipes.info(name)
        assert found.name == name and found.description == recipes.describe(name)
        assert len(found.seed_varies) > 40 and "\n" not in found.seed_varies
    proc = gbuf_cli("scene", "show", "forest", check=True)
    assert "--seed varies: " + recipes.info("forest").seed_varies in proc.stdout
    proc = gbuf_cli("scene", "show", "nope")
    assert proc.returncode == 2 and "unknown scene recipe" in proc.stderr


def test_cli_scene_list(gbuf_cli):
    from gbuf.render import recipes

    proc = gbuf_cli("scene", "list", check=True)
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == recipes.names()
    for line, name in zip(lines, recipes.names()):
        assert recipes.describe(name) in line


def test_recipes_ship_inside_the_gbuf_package(tmp_path):
    # The recipes are an ordinary sub-package (gbuf/scenes/): an install carries every recipe file,
    # and no top-level "scenes" module leaks out of it.
    code = ("import importlib.util, json\n"
            "import gbuf.scenes\n"
            "top = importlib.util.find_spec('scenes')\n"
            "print(json.dumps({'pkg': gbuf.scenes.__file__, 'top': top.origin if top else None}))\n")
    # Run outside the repository, so the checkout's own folder is not on sys.path.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    facts = json.loads(out.stdout)
    assert Path(facts["pkg"]).resolve() == (REPO / "gbuf" / "scenes" / "__init__.py").resolve()
    assert facts["top"] is None


def test_unknown_recipe_and_bad_output(tmp_path, gbuf_cli):
    from gbuf.render import recipes

    with pytest.raises(GbufError, match="unknown scene recipe; known: default, bar"):
        recipes.describe("nope")
    proc = gbuf_cli("scene", "build", "nope", tmp_path / "x.blend")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "known: default" in proc.stderr
    proc = gbuf_cli("scene", "build", "default", tmp_path / "x.png")
    assert proc.returncode == 2 and "must be a .blend" in proc.stderr
    proc = gbuf_cli("scene", "build", "default", tmp_path / "missing" / "x.blend")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "afile").write_text("x")
    proc = gbuf_cli("scene", "build", "default", tmp_path / "afile" / "x.blend")
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
    assert not list(tmp_path.rglob("*.blend"))


def test_scene_build_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    import os

    from gbuf.render import recipes

    real = os.access
    # (the tests may run as root, whom chmod does not stop)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK else real(path, mode, **kw))
    with pytest.raises(GbufError, match=r"x\.blend: folder .* is not writable"):
        recipes.build_blend("default", tmp_path / "x.blend")
    assert not list(tmp_path.iterdir())


def test_cli_scene_build(tmp_path, gbuf_cli):
    out = tmp_path / "demo.blend"
    proc = gbuf_cli("scene", "build", "default", out, "--seed", "2", "--frames", "4", check=True)
    assert out.is_file() and out.read_bytes()[:4] in (b"BLEN", b"\x28\xb5\x2f\xfd")  # plain or zstd
    assert str(out) in proc.stdout and "the seed varies" in proc.stdout
    assert not list(tmp_path.glob("*.partial*"))


# --------------------------------------------------------------------------- built scenes


@pytest.fixture(scope="module")
def blends(tmp_path_factory):
    """``blends(name, seed)``: the recipe built (3 frames) into a .blend, once per module."""
    pytest.importorskip("bpy")
    from gbuf.render import recipes

    folder = tmp_path_factory.mktemp("recipes")
    built: dict[tuple[str, int], Path] = {}

    def get(name: str, seed: int = 1) -> Path:
        if (name, seed) not in built:
            built[name, seed] = recipes.build_blend(name, folder / f"{name}-{seed}.blend", seed=seed, frames=FRAMES)
        return built[name, seed]

    return get


def _open_blend(path: Path):
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
    return bpy.context.scene


def _pose(scene, frame: int) -> dict[str, np.ndarray]:
    scene.frame_set(frame)
    return {obj.name: np.array(obj.matrix_world) for obj in scene.objects}


def _fingerprint(scene) -> np.ndarray:
    scene.frame_set(scene.frame_start)
    return np.array(sorted(tuple(np.round(o.matrix_world.translation, 4)) for o in scene.objects))


@pytest.mark.blender
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_an_animated_scene(name, blends):
    import bpy

    scene = _open_blend(blends(name, 1))
    assert scene.camera is not None and scene.camera.type == "CAMERA"
    assert (scene.frame_start, scene.frame_end) == (1, FRAMES)
    assert scene.render.fps / scene.render.fps_base == 24
    assert scene.render.use_motion_blur is False
    assert scene["gbuf_recipe"] == name and scene["gbuf_seed"] == 1
    assert len(bpy.data.scenes) == 1          # no scratch scene (text is made in one) left behind

    # Frames 0 and FRAMES + 1 lie outside the range: motion must continue there too.
    poses = [_pose(scene, f) for f in range(0, FRAMES + 2)]
    cam = scene.camera.name
    for a, b in zip(poses, poses[1:]):
        assert not np.allclose(a[cam], b[cam], atol=1e-5), "camera must move between every two frames"
        movers = [n for n in a if n != cam and not np.allclose(a[n], b[n], atol=1e-5)]
        assert movers, "some object besides the camera must move between every two frames"
    # Every F-curve is defined beyond both ends (keys from frame 0 to FRAMES + 1, or extrapolated).
    from gbuf.render.animation import action_fcurves

    for action in bpy.data.actions:
        for fcurve in action_fcurves(action):
            keys = [k.co[0] for k in fcurve.keyframe_points]
            assert fcurve.extrapolation == "LINEAR" or (min(keys) <= 0 and max(keys) >= FRAMES + 1), action.name

    # Built from code only: no image files, no linked libraries, procedural texture nodes.
    assert not [img for img in bpy.data.images if img.source in ("FILE", "SEQUENCE", "MOVIE")]
    assert not list(bpy.data.libraries)
    assert not [o for o in bpy.data.objects if o.animation_data and len(o.animation_data.drivers)]
    texture_nodes = [n for m in bpy.data.materials if m.node_tree for n in m.node_tree.nodes
                     if n.bl_idname.startswith("ShaderNodeTex") and n.bl_idname != "ShaderNodeTexCoord"]
    assert texture_nodes

    # The seed changes the scene.
    here = _fingerprint(scene)
    other = _fingerprint(_open_blend(blends(name, 2)))
    assert here.shape != other.shape or not np.allclose(here, other)


def _principled(material, socket: str):
    for node in material.node_tree.nodes if material.node_tree else ():
        if node.bl_idname == "ShaderNodeBsdfPrincipled":
            inp = node.inputs[socket]
            return None if inp.is_linked else inp.default_value
    return None


def _emitters(bpy) -> list:
    found = []
    for m in bpy.data.materials:
        for node in m.node_tree.nodes if m.node_tree else ():
            if node.bl_idname == "ShaderNodeEmission" or (
                    node.bl_idname == "ShaderNodeBsdfPrincipled"
                    and (node.inputs["Emission Strength"].is_linked
                         or node.inputs["Emission Strength"].default_value > 0)):
                found.append(m.name)
    return found


def _triangles(scene, prefix: str = "") -> int:
    total = 0
    for obj in scene.objects:
        if obj.type == "MESH" and obj.name.startswith(prefix):
            obj.data.calc_loop_triangles()
            total += len(obj.data.loop_triangles)
    return total


def _refractive(bpy) -> list:
    return [m.name for m in bpy.data.materials if _principled(m, "Transmission Weight") == 1.0]


def _texts(scene) -> list:
    return [o.name for o in scene.objects if o.type == "MESH" and o.data.name.startswith("Text ")]


def _swaying(scene) -> list:
    """Meshes whose shape keys are keyed (wind)."""
    return [o.name for o in scene.objects if o.type == "MESH" and o.data.shape_keys is not None
            and o.data.shape_keys.animation_data is not None]


def _limbs_move(scene, prefix: str) -> bool:
    """An articulated figure: a thigh parented to a pelvis, turning about its joint between frames."""
    thighs = [o for o in scene.objects if o.name.startswith(prefix) and "Thigh" in o.name]
    assert thighs and thighs[0].parent is not None and "Pelvis" in thighs[0].parent.name
    scene.frame_set(1)
    before = np.array(thighs[0].matrix_local)
    scene.frame_set(2)
    return not np.allclose(before, np.array(thighs[0].matrix_local), atol=1e-4)


@pytest.mark.blender
def test_recipe_themes(blends):
    """Each recipe stresses what it says: detail, mirrors, speed, emissive-only night light, foliage, ..."""
    import bpy

    # Fine textures and complex geometry.
    scene = _open_blend(blends("courtyard"))
    assert _triangles(scene) > 40_000
    bricks = [n for m in bpy.data.materials for n in m.node_tree.nodes if n.bl_idname == "ShaderNodeTexBrick"]
    assert bricks

    # Mirrors and glossy metals.
    _open_blend(blends("showroom"))
    mirrors = [m for m in bpy.data.materials if _principled(m, "Metallic") == 1.0
               and _principled(m, "Roughness") is not None and _principled(m, "Roughness") <= 0.025]
    assert len(mirrors) >= 2

    # Fast motion: some object moves more than a metre per frame; a fence of thin wires.
    scene = _open_blend(blends("speedway"))
    a, b = _pose(scene, 1), _pose(scene, 2)
    fastest = max(np.linalg.norm(a[n][:3, 3] - b[n][:3, 3]) for n in a)
    assert fastest > 0.8
    assert _triangles(scene, "CatchFence") > 20_000 and len(_texts(scene)) >= 8

    # Night: no lamps, no sun, a dark sky; light comes from emissive surfaces; rain falls.
    scene = _open_blend(blends("night_street"))
    assert not [o for o in scene.objects if o.type == "LIGHT"]
    assert len(_emitters(bpy)) >= 5 and len(_texts(scene)) >= 10
    assert len([o for o in scene.objects if o.name.startswith("Rain")]) >= 300

    # Dense foliage: tens of thousands of grass blades and leaves, swaying in the wind, alpha-tested cards.
    scene = _open_blend(blends("forest"))
    assert _triangles(scene, "Grass") > 60_000 and _triangles(scene) > 400_000
    assert "Grass" in _swaying(scene)
    trees = [o.name for o in scene.objects if o.name.startswith("Tree")]
    a, b = _pose(scene, 1), _pose(scene, 2)
    assert len(trees) >= 30 and all(not np.allclose(a[t], b[t], atol=1e-6) for t in trees)   # swaying
    assert len({scene.objects[t].data.name for t in trees}) <= 3                              # instances
    assert len([o for o in scene.objects if o.name.startswith("FernPlant")]) >= 30

    # City: text signs and plates, walking articulated people, moving cars.
    scene = _open_blend(blends("city_block"))
    assert len(_texts(scene)) >= 10 and _limbs_move(scene, "Walker")
    assert _triangles(scene, "Building") > 50_000

    # Bar: refractive bottles and glasses, a mirror, text.
    scene = _open_blend(blends("bar"))
    assert len(_refractive(bpy)) >= 4 and len(_texts(scene)) >= 2
    assert [o for o in scene.objects if o.type == "LIGHT"]

    # Temple: many small repeated parts (tile rows, rafters, balusters) and falling particles.
    scene = _open_blend(blends("temple"))
    assert _triangles(scene, "Pagoda") > 30_000
    assert len([o for o in scene.objects if o.name.startswith("Flake")]) >= 200
    assert len([o for o in scene.objects if o.name.startswith("Lantern")]) >= 8

    # Sci-fi: fine grating, emissive strips and screens, sliding doors, sparks.
    scene = _open_blend(blends("scifi_corridor"))
    assert _triangles(scene, "Grating") > 10_000 and len(_emitters(bpy)) >= 3 and len(_texts(scene)) >= 5
    doors = [o for o in scene.objects if o.name.startswith("Door") and "Frame" not in o.name]
    a, b = _pose(scene, 1), _pose(scene, 3)
    assert doors and any(not np.allclose(a[d.name], b[d.name]) for d in doors)
    assert len([o for o in scene.objects if o.name.startswith("Spark") and o.type == "MESH"]) >= 40

    # Plaza: many walking figures with moving limbs.
    scene = _open_blend(blends("plaza"))
    assert len([o for o in scene.objects if o.name.endswith("Pelvis")]) >= 8 and _limbs_move(scene, "Person")


# --------------------------------------------------------------------------- particles and loops


@pytest.mark.blender
def test_particles_and_looping_movers_hide_when_they_jump(tmp_path):
    """A particle reborn at its start, or a car looping to its street's end, is shrunk to nothing there."""
    pytest.importorskip("bpy")
    import random

    import bpy

    from gbuf.scenes import _kit as kit
    from gbuf.scenes import _parts as parts

    bpy.ops.wm.read_factory_settings(use_empty=True)
    frames = 60
    kit.setup_scene(frames)
    mesh = kit.ArrayMesh()
    mesh.boxes([(0, 0, 0)], (0.1, 0.1, 0.1))
    drop = mesh.mesh("Drop")
    made = parts.particles("P", drop, frames, 3, 7, lambda r: ((r.uniform(-1, 1), 0, 5), (0, 0, -4)), life=0.5)
    car = parts.car("C", random.Random(1))
    parts.drive(car, frames, lambda t: (parts.looping(-20, 20, 30.0)(t), 0.0, 0.0))
    scene = bpy.context.scene
    for obj in made + [car.body]:
        positions, sizes = [], []
        for f in range(0, frames + 2):
            scene.frame_set(f)
            positions.append(np.array(obj.matrix_world.translation))
            sizes.append(obj.matrix_world.to_scale()[0])
        steps = [np.linalg.norm(b - a) for a, b in zip(positions, positions[1:])]
        typical = np.median(steps)
        jumps = [i for i, d in enumerate(steps) if d > 5 * typical]
        assert jumps, "the mover must be reborn or loop within the test's frames"
        for i in jumps:
            # Both ends of a jump are hidden; a visible frame never moves by more than its speed.
            assert sizes[i] < 1e-3 and sizes[i + 1] < 1e-3
        visible = [i for i, d in enumerate(steps) if sizes[i] > 0.5 and sizes[i + 1] > 0.5]
        assert visible and max(steps[i] for i in visible) < 3 * typical


# --------------------------------------------------------------------------- end to end


def content_problems(seq) -> list[str]:
    """What is wrong with a rendered sequence's buffers: the content checks, one line per problem."""
    problems = []
    for group in ("hr", "lr"):
        data = seq[group]
        for buffer in data.buffers:
            values = data.read(buffer).astype(np.float32)
            if buffer == "depth":
                # +inf marks "no surface" (docs/format.md); anything else must be finite and positive.
                bad = np.isnan(values) | (values == -np.inf) | (np.isfinite(values) & (values < 0))
            else:
                bad = ~np.isfinite(values)
            if bad.any():
                problems.append(f"{group}/{buffer}: {int(bad.sum())} NaN, inf or negative-depth values")
    image = seq["hr"].read("image").astype(np.float32)
    luminance = image @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    for t in range(len(image)):
        mean, peak = float(luminance[t].mean()), float(np.percentile(luminance[t], 99))
        if mean < DARK_MEAN or peak < DARK_PEAK:
            problems.append(f"frame {t}: near-black (mean luminance {mean:.4f}, 99th percentile {peak:.4f})")
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    magenta = (r > 0.2) & (np.abs(r - b) < 0.1 * r) & (g < 0.1 * np.minimum(r, b))
    if magenta.mean() > MAGENTA_SHARE:
        problems.append(f"missing-texture magenta on {magenta.mean():.2%} of pixels")
    clipped = (image > 1.0).any(axis=-1).mean()
    if clipped > CLIPPED_SHARE:
        problems.append(f"{clipped:.1%} of pixels clipped (> 1)")
    saturated = (image >= 1.0).all(axis=-1).mean()
    if saturated > SATURATED_SHARE:
        problems.append(f"{saturated:.1%} of pixels blown to white")
    motion = np.abs(seq["hr"].read("motion")).reshape(len(image), -1).max(axis=1)
    for t, largest in enumerate(motion):
        if largest < MOTION_MIN:
            problems.append(f"frame {t}: no motion (largest {largest:.3f} px)")
    return problems


def test_content_checks_catch_what_they_should():
    """The checks themselves: a black frame, magenta, NaN, clipping and stillness are each reported."""

    class Group:
        def __init__(self, buffers):
            self._b = buffers
            self.buffers = list(buffers)

        def read(self, name):
            return self._b[name]

    def seq(image, motion=None, depth=None):
        t, h, w = image.shape[:3]
        buffers = {"image": image, "depth": np.full((t, h, w, 1), 3.0) if depth is None else depth,
                   "motion": np.full((t, h, w, 2), 0.5) if motion is None else motion}
        return {"hr": Group(buffers), "lr": Group(buffers)}

    rng = np.random.default_rng(0)
    good = rng.uniform(0.05, 0.8, (2, 8, 8, 3)).astype(np.float32)
    assert content_problems(seq(good)) == []
    black = good.copy()
    black[1] = 0.001
    assert any("near-black" in p for p in content_problems(seq(black)))
    magenta = good.copy()
    magenta[0, :4] = (0.8, 0.0, 0.8)
    assert any("magenta" in p for p in content_problems(seq(magenta)))
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    assert any("NaN" in p for p in content_problems(seq(nan)))
    assert content_problems(seq(good, depth=np.full((2, 8, 8, 1), np.inf))) == []      # no surface is fine
    hot = good.copy()
    hot[:, :4] = 3.0
    assert any("clipped" in p for p in content_problems(seq(hot)))
    assert any("blown" in p for p in content_problems(seq(hot)))
    assert any("no motion" in p for p in content_problems(seq(good, motion=np.zeros((2, 8, 8, 2)))))


@pytest.mark.slow
@pytest.mark.blender
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_renders_three_different_seeds(name, blends, tmp_path):
    import gbuf.datasets as gd
    from gbuf.render import render

    display = {}
    for seed in SEEDS:
        store = tmp_path / f"{seed}.zarr"
        result = render(blends(name, seed), store, resolution=(128, 72), scale=4, samples=2, denoise=False,
                        quiet=True, sequence=name)
        assert result.num_frames == FRAMES and result.rendered == FRAMES
        report = gd.verify(store)
        assert report.ok, report.problems

        seq = gd.open(store)[name]
        hr, lr = seq["hr"], seq["lr"]
        assert (hr.width, hr.height, lr.width, lr.height) == (128, 72, 32, 18)
        assert content_problems(seq) == [], f"seed {seed}"
        image = hr.read("image").astype(np.float32)
        luminance = image.mean(axis=-1)
        # A real scene, not an empty or flat frame: lit over most of it, with contrast (even at night).
        assert float(np.mean(luminance > 1e-3)) > 0.5
        assert float(np.std(luminance)) > 0.02
        assert np.isfinite(hr.read("depth")).mean() > 0.3
        display[seed] = np.clip(image, 0, 1) ** (1 / 2.2)
    # Different seeds build visibly different scenes.
    for a, b in ((0, 1), (0, 2), (1, 2)):
        difference = float(np.abs(display[a] - display[b]).mean())
        assert difference > SEEDS_DIFFER, f"seeds {a} and {b} differ by only {difference:.3f}"
