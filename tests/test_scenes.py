"""Procedural scene recipes: listing without bpy, packaging, building .blend files, rendering end to end.

Every recipe is built into a real .blend, opened again with bpy and checked for
an active camera, the frame range, motion of the camera and of objects (also one
frame beyond each end, which the first frame's motion vectors need) and its
theme; then rendered at 128x72 (x4 LR, 2 samples, 3 frames) through
``gbuf.render.render`` into a store that ``gbuf.datasets.verify`` accepts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from gbuf.errors import GbufError

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["default", "courtyard", "showroom", "speedway", "night_street"]
FRAMES = 3


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
    assert sorted(facts["names"]) == sorted(RECIPES)
    for description in facts["descriptions"]:
        assert description.strip() and "\n" not in description


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

    with pytest.raises(GbufError, match="unknown scene recipe; known: default, courtyard"):
        recipes.describe("nope")
    proc = gbuf_cli("scene", "build", "nope", tmp_path / "x.blend")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "known: default" in proc.stderr
    proc = gbuf_cli("scene", "build", "default", tmp_path / "x.png")
    assert proc.returncode == 2 and "must be a .blend" in proc.stderr
    proc = gbuf_cli("scene", "build", "default", tmp_path / "missing" / "x.blend")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not list(tmp_path.rglob("*.blend"))


def test_cli_scene_build(tmp_path, gbuf_cli):
    out = tmp_path / "demo.blend"
    proc = gbuf_cli("scene", "build", "default", out, "--seed", "2", "--frames", "4", check=True)
    assert out.is_file() and out.read_bytes()[:4] in (b"BLEN", b"\x28\xb5\x2f\xfd")  # plain or zstd
    assert str(out) in proc.stdout
    assert not list(tmp_path.glob("*.partial*"))


# --------------------------------------------------------------------------- built scenes


@pytest.fixture(scope="module")
def blends(tmp_path_factory):
    """Each recipe built once (seed 1, 3 frames) into a .blend shared by the tests below."""
    pytest.importorskip("bpy")
    from gbuf.render import recipes

    folder = tmp_path_factory.mktemp("recipes")
    return {name: recipes.build_blend(name, folder / f"{name}.blend", seed=1, frames=FRAMES)
            for name in RECIPES}


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

    scene = _open_blend(blends[name])
    assert scene.camera is not None and scene.camera.type == "CAMERA"
    assert (scene.frame_start, scene.frame_end) == (1, FRAMES)
    assert scene.render.fps / scene.render.fps_base == 24
    assert scene.render.use_motion_blur is False
    assert scene["gbuf_recipe"] == name and scene["gbuf_seed"] == 1

    # Frames 0 and FRAMES + 1 lie outside the range: motion must continue there too.
    poses = [_pose(scene, f) for f in range(0, FRAMES + 2)]
    cam = scene.camera.name
    for a, b in zip(poses, poses[1:]):
        assert not np.allclose(a[cam], b[cam], atol=1e-5), "camera must move between every two frames"
        movers = [n for n in a if n != cam and not np.allclose(a[n], b[n], atol=1e-5)]
        assert movers, "some object besides the camera must move between every two frames"

    # Built from code only: no image files, no linked libraries, procedural texture nodes.
    assert not [img for img in bpy.data.images if img.source in ("FILE", "SEQUENCE", "MOVIE")]
    assert not list(bpy.data.libraries)
    assert not [o for o in bpy.data.objects if o.animation_data and len(o.animation_data.drivers)]
    texture_nodes = [n for m in bpy.data.materials if m.node_tree for n in m.node_tree.nodes
                     if n.bl_idname.startswith("ShaderNodeTex") and n.bl_idname != "ShaderNodeTexCoord"]
    assert texture_nodes

    # The seed changes the scene.
    from gbuf.render import recipes

    here = _fingerprint(scene)
    recipes.build(name, seed=2, frames=FRAMES)
    other = _fingerprint(bpy.context.scene)
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


@pytest.mark.blender
def test_recipe_themes(blends):
    """Each recipe stresses what it says: detail, mirrors, speed, emissive-only night light."""
    import bpy

    # Fine textures and complex geometry.
    scene = _open_blend(blends["courtyard"])
    triangles = 0
    for obj in scene.objects:
        if obj.type == "MESH":
            obj.data.calc_loop_triangles()
            triangles += len(obj.data.loop_triangles)
    assert triangles > 40_000
    bricks = [n for m in bpy.data.materials for n in m.node_tree.nodes if n.bl_idname == "ShaderNodeTexBrick"]
    assert bricks

    # Mirrors and glossy metals.
    _open_blend(blends["showroom"])
    mirrors = [m for m in bpy.data.materials if _principled(m, "Metallic") == 1.0
               and _principled(m, "Roughness") is not None and _principled(m, "Roughness") <= 0.025]
    assert len(mirrors) >= 2

    # Fast motion: some object moves more than a metre per frame.
    scene = _open_blend(blends["speedway"])
    a, b = _pose(scene, 1), _pose(scene, 2)
    fastest = max(np.linalg.norm(a[n][:3, 3] - b[n][:3, 3]) for n in a)
    assert fastest > 0.8

    # Night: no lamps, no sun, a dark sky; light comes from emissive surfaces.
    scene = _open_blend(blends["night_street"])
    assert not [o for o in scene.objects if o.type == "LIGHT"]
    assert len(_emitters(bpy)) >= 5


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.blender
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_renders_into_a_valid_store(name, blends, tmp_path):
    import gbuf.datasets as gd
    from gbuf.render import render

    store = tmp_path / "data.zarr"
    result = render(blends[name], store, resolution=(128, 72), scale=4, samples=2, denoise=False,
                    quiet=True, sequence=name)
    assert result.num_frames == FRAMES and result.rendered == FRAMES
    report = gd.verify(store)
    assert report.ok, report.problems

    seq = gd.open(store)[name]
    hr, lr = seq["hr"], seq["lr"]
    assert (hr.width, hr.height, lr.width, lr.height) == (128, 72, 32, 18)
    image = hr.read("image").astype(np.float32)
    assert np.isfinite(image).all()
    luminance = image.mean(axis=-1)
    # A real scene, not an empty or flat frame: lit over most of it, with contrast (even at night).
    assert float(np.mean(luminance > 1e-3)) > 0.5
    assert float(np.mean(luminance)) > 0.02 and float(np.std(luminance)) > 0.02
    depth = hr.read("depth")
    assert np.isfinite(depth).mean() > 0.3
    # Frame 0 has motion: the recipes are animated before their first frame.
    motion = hr.read("motion", t=slice(0, 1))
    assert float(np.abs(motion).max()) > 0.05
