"""``gbuf render`` end to end: bad input, untrusted .blend files, failures, resume after SIGKILL.

Scenes are built here with bpy and rendered tiny (64x32 HR) by the real CLI in a
subprocess where the behaviour is about the process (exit codes, output, kill),
and in-process where it is about the library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("bpy")

import render_helpers as rh

import gbuf.datasets as gd
from gbuf.errors import GbufError
from gbuf.render import pipeline, render

TINY = {"resolution": (64, 32), "scale": 4, "samples": 2, "denoise": False, "quiet": True}
TINY_ARGS = ["--resolution", "64x32", "--scale", "4", "--samples", "2", "--no-denoise"]


def _card_scene(frames: tuple[int, int], *, camera: bool = True, sky: bool = False):
    """A textured card sliding across a grey floor (or across the sky), keyed beyond both ends."""
    rh.new_scene(frames)
    if camera:
        rh.add_camera((0.0, 0.0, 10.0))
    if not sky:
        rh.add_plane(40.0, material=rh.emission_material("Floor", "grey"))
    else:
        rh.add_plane(1.5, location=(2.2, 0.0, 1.0))   # Cycles' default surface: diffuse grey
    card = rh.add_plane(1.5 if sky else 3.0, location=(0.0, 0.0, 2.0), material=rh.emission_material("Card", "noise"))
    first, last = frames
    rh.key_linear(card, "location", {first - 1: (-1.0, 0.0, 2.0), last + 1: (1.0, 0.3, 2.0)})
    return card


@pytest.fixture(scope="module")
def card_blend(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "card.blend"
    _card_scene((1, 12))
    return rh.save(path)


def _gbuf(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gbuf", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=timeout)


def _all_buffers(store, sequence):
    seq = gd.open(store)[sequence]
    return {(group, name): seq[group].read(name) for group in ("hr", "lr") for name in seq[group].buffers}


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tmp_path, card_blend):
    not_blend = tmp_path / "notes.blend"
    not_blend.write_text("hello, I am not a scene\n")
    truncated = tmp_path / "truncated.blend"
    truncated.write_bytes(card_blend.read_bytes()[:4000])
    rh.new_scene((1, 3))
    rh.add_plane(2.0)
    no_camera = rh.save(tmp_path / "no_camera.blend")
    rh.new_scene((1, 3))
    zoom = rh.add_camera((0.0, 0.0, 10.0), ortho_scale=4.0)
    rh.key_linear(zoom.data, "ortho_scale", {1: 4.0, 3: 5.0})  # Cycles' Vector ignores this zoom
    ortho = rh.save(tmp_path / "ortho.blend")
    out = tmp_path / "out.zarr"
    cases = [
        ([tmp_path / "missing.blend"], "missing.blend: no such file"),
        ([not_blend], "not a .blend file"),
        ([truncated], "truncated.blend: Blender cannot open it"),
        ([no_camera, "--camera", "keep"], "no active camera"),
        ([ortho], "changes its orthographic scale"),
        ([card_blend, "--frames", "5:2"], "empty frame range"),
        ([card_blend, "--resolution", "66x32"], "not divisible by the scale 4"),
        ([card_blend, "--passes", "image,sparkle"], "unknown buffer 'sparkle'"),
        ([card_blend, "--device", "quantum"], "device 'quantum': unknown"),
    ]
    for args, message in cases:
        proc = _gbuf("render", "-o", out, *TINY_ARGS, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gbuf: error:"), (args, proc.stderr)
        assert message in lines[0], (message, lines[0])
        assert not out.exists(), f"{args}: wrote output despite the error"


def test_missing_gpu_is_a_clean_error(tmp_path, card_blend):
    import bpy  # noqa: F401  (the check needs Cycles' device list)

    with pytest.raises(GbufError, match="device 'cuda'") as info:
        render(card_blend, tmp_path / "out.zarr", device="cuda", **TINY)
    if "no CUDA device" not in str(info.value) and "no CUDA support" not in str(info.value):
        pytest.fail(f"unexpected message: {info.value}")
    assert not (tmp_path / "out.zarr").exists()


# ---------------------------------------------------------------------------- untrusted .blend


@pytest.mark.slow
def test_embedded_scripts_do_not_run_unless_allowed(tmp_path):
    import bpy

    on_load = tmp_path / "text_block_ran"
    in_driver = tmp_path / "driver_ran"
    _card_scene((1, 1))
    text = bpy.data.texts.new("autorun.py")
    text.write(f"open({str(on_load)!r}, 'w').write('x')\n")
    text.use_module = True                # "Register": runs when the file loads, if allowed
    floor = bpy.data.objects["Plane"]
    driver = floor.driver_add("location", 2).driver
    driver.type = "SCRIPTED"
    driver.expression = f"__import__('pathlib').Path({str(in_driver)!r}).touch() or 0.0"
    blend = rh.save(tmp_path / "scripted.blend")
    on_load.unlink(missing_ok=True)
    in_driver.unlink(missing_ok=True)

    render(blend, tmp_path / "safe.zarr", **TINY)
    assert not on_load.exists(), "an embedded text block ran although scripts were not allowed"
    assert not in_driver.exists(), "a driver's Python expression ran although scripts were not allowed"
    assert gd.verify(tmp_path / "safe.zarr").ok

    render(blend, tmp_path / "trusted.zarr", allow_scripts=True, **TINY)
    assert on_load.exists() and in_driver.exists(), "--allow-scripts should let the file's Python run"


# --------------------------------------------------------------------------- failure and resume


@pytest.mark.slow
def test_failure_halfway_keeps_written_frames_and_resumes(tmp_path, card_blend, monkeypatch):
    out = tmp_path / "out.zarr"
    calls = {"n": 0}
    real = pipeline.render_still

    def failing(scene, path, *, where):
        calls["n"] += 1
        if calls["n"] == 5:              # frame index 2, HR: after frames 0 and 1 are written
            raise GbufError(f"{where}: render failed (simulated)")
        return real(scene, path, where=where)

    monkeypatch.setattr(pipeline, "render_still", failing)
    with pytest.raises(GbufError, match="frame 3 \\(hr\\): render failed"):
        render(card_blend, out, frames=(1, 5), **TINY)
    seq = gd.open(out)["card"]
    assert seq.num_frames == 2
    written = seq["hr"].read("image", t=slice(0, 2))
    report = gd.verify(out)
    assert all("incomplete" in p.message for p in report.problems), report.problems

    monkeypatch.setattr(pipeline, "render_still", real)
    result = render(card_blend, out, frames=(1, 5), **TINY)
    assert (result.resumed_from, result.rendered) == (2, 3)
    assert gd.verify(out).ok
    assert np.array_equal(gd.open(out)["card"]["hr"].read("image", t=slice(0, 2)), written)

    # Same settings again: nothing to do. Other settings: refused, unless overwriting.
    assert render(card_blend, out, frames=(1, 5), **TINY).rendered == 0
    with pytest.raises(GbufError, match="different render settings"):
        render(card_blend, out, frames=(1, 5), **{**TINY, "samples": 3})
    assert render(card_blend, out, frames=(1, 5), overwrite=True, **{**TINY, "samples": 3}).rendered == 5
    assert gd.open(out)["card"].attrs["render_settings"]["samples"] == 3


@pytest.mark.slow
def test_sigkill_then_restart_equals_an_uninterrupted_render(tmp_path, card_blend):
    killed = tmp_path / "killed.zarr"
    # Enough samples that a frame takes a noticeable moment, so the kill lands mid-sequence.
    args = ["render", card_blend, "--resolution", "64x32", "--samples", "256", "--no-denoise",
            "--frames", "1:12", "--seed", "7"]
    proc = subprocess.Popen([sys.executable, "-m", "gbuf", *map(str, args), "-o", str(killed), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = gd.open(killed)["card"]["lr"].num_frames
        except Exception:  # noqa: BLE001  (the store is being created)
            done = 0
        if done >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the render finished before it could be killed"
    seq = gd.open(killed)["card"]
    assert 3 <= seq.num_frames < 12

    resumed = _gbuf(*args, "-o", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "" and resumed.stderr == "", "--quiet should print nothing"

    whole = tmp_path / "whole.zarr"
    uninterrupted = _gbuf(*args, "-o", whole)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert "rendered 12 of 12 frames" in uninterrupted.stdout
    assert "12/12 frames" in uninterrupted.stderr and "frames/s" in uninterrupted.stderr
    assert "Fra:" not in uninterrupted.stdout + uninterrupted.stderr, "Blender's own output leaked"

    for store in (killed, whole):
        report = gd.verify(store)
        assert report.ok, report.problems
    a, b = _all_buffers(killed, "card"), _all_buffers(whole, "card")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape[0] == 12
        assert np.array_equal(a[key], b[key]), f"{key} differs between resumed and uninterrupted renders"


@pytest.mark.slow
def test_ctrl_c_stops_after_a_complete_frame_and_the_rerun_finishes(tmp_path, card_blend):
    """SIGINT must stop the render (Blender would otherwise swallow it inside Cycles' Python and
    carry on), keep every complete frame, exit with one clear line, and resume on rerun."""
    out = tmp_path / "interrupted.zarr"
    args = ["render", card_blend, "--resolution", "64x32", "--samples", "256", "--no-denoise",
            "--frames", "1:12", "--seed", "7"]
    proc = subprocess.Popen([sys.executable, "-m", "gbuf", *map(str, args), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = gd.open(out)["card"]["lr"].num_frames
        except Exception:  # noqa: BLE001  (the store is being created)
            done = 0
        if done >= 2:
            os.kill(proc.pid, signal.SIGINT)
            break
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, f"the render did not stop on SIGINT (rc {proc.returncode}): {stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun the same command" in lines[0], stderr
    stored = gd.open(out)["card"]["lr"].num_frames
    assert 2 <= stored < 12
    assert f"resume at frame {stored}" in lines[0]

    resumed = _gbuf(*args, "-o", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    report = gd.verify(out)
    assert report.ok, report.problems
    assert gd.open(out)["card"]["lr"].num_frames == 12


# -------------------------------------------------------------------------------- passes, recipe


@pytest.mark.slow
def test_optional_passes_alpha_emission_and_brdf(tmp_path):
    _card_scene((1, 2), sky=True)
    blend = rh.save(tmp_path / "sky.blend")
    every = "image,depth,normal,motion,brdf,diffuse_color,glossy_color,emission,alpha"
    render(blend, tmp_path / "all.zarr", passes=every, **TINY)
    render(blend, tmp_path / "rdg.zarr", **TINY)
    full = gd.open(tmp_path / "all.zarr")["sky"]["hr"].read_many(every.split(","))
    rdg = gd.open(tmp_path / "rdg.zarr")["sky"]["hr"]
    assert set(rdg.buffers) == {"image", "depth", "normal", "motion", "brdf"}
    surface = np.isfinite(full["depth"][..., 0])
    inner = np.stack([rh.erode(m, 1) for m in surface])
    sky = np.stack([rh.erode(~m, 2) for m in surface])
    assert inner.any() and sky.any()
    alpha = full["alpha"][..., 0].astype(np.float32)
    assert np.all(alpha[inner] > 0.999) and np.all(alpha[sky] < 1e-3)
    # A transparent film adds the world back from the Environment pass: the image is unchanged.
    assert np.allclose(full["image"].astype(np.float32), rdg.read("image").astype(np.float32), atol=2e-3)
    # The card is pure emission: the Emission pass is the image there.
    card = inner & (full["diffuse_color"].astype(np.float32).sum(-1) == 0)
    assert card.sum() > 20
    assert np.allclose(full["emission"][card].astype(np.float32), full["image"][card].astype(np.float32),
                       atol=2e-3)
    brdf = full["diffuse_color"].astype(np.float32) + full["glossy_color"].astype(np.float32)
    assert brdf.max() > 0.5, "the grey plane should have a diffuse colour"
    assert np.allclose(full["brdf"].astype(np.float32), brdf, atol=2e-3)


@pytest.mark.slow
def test_default_recipe_renders_without_a_scene_file(tmp_path):
    out = tmp_path / "default.zarr"
    proc = _gbuf("render", "-o", out, "--resolution", "64x32", "--frames", "1:2", "--samples", "1",
                 "--no-denoise", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = gd.verify(out)
    assert report.ok, report.problems
    seq = gd.open(out)["default"]
    assert seq.attrs["scene"]["recipe"] == "default" and seq.attrs["frame_range"] == [1, 2]
    assert seq.attrs["renderer"].startswith("Blender 5.") and seq.attrs["renderer"].endswith("Cycles")
    assert seq["lr"].width == 16 and seq["hr"].num_frames == 2
