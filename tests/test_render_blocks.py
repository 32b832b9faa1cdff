"""Shard-aligned blocks: planning, block writers, and ``gbuf render --plan/--block`` in separate processes.

Concurrent writers into one zarr shard lose data, so parallel rendering rests on two
facts checked here: block planning never puts two blocks in one shard and covers
the frames exactly; and blocks written by separate processes give the same store,
byte for byte, as one process rendering every frame.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gbuf.datasets as gd
from gbuf.datasets import SequenceWriter
from gbuf.datasets.integrity import verify
from gbuf.errors import GbufError
from gbuf.render.blocks import block_plan, block_range, cli_options, pending_blocks, plan_blocks
from gbuf.render.settings import RenderSettings, ScaleOut, make_settings

TINY_ARGS = ["--resolution", "64x36", "--scale", "4", "--samples", "1", "--no-denoise", "--quiet"]


# ------------------------------------------------------------------------------ planning


@pytest.mark.parametrize("frames,per_shard,per_block", [(1, 1, None), (6, 2, None), (7, 2, 4), (64, 16, 32),
                                                        (10, 4, 8), (5, 8, None)])
def test_blocks_are_whole_shards_and_cover_the_range_exactly(frames, per_shard, per_block):
    blocks = plan_blocks(frames, per_shard, per_block)
    covered = [t for start, stop in blocks for t in range(start, stop)]
    assert covered == list(range(frames))               # every frame once, in order
    shard_owner = {}
    for k, (start, stop) in enumerate(blocks):
        assert start % per_shard == 0
        assert stop % per_shard == 0 or stop == frames
        for t in range(start, stop):
            owner = shard_owner.setdefault(t // per_shard, k)
            assert owner == k, f"shard {t // per_shard} in blocks {owner} and {k}"
    assert block_range(frames, per_shard, len(blocks) - 1, per_block) == blocks[-1]


def test_block_sizes_that_split_a_shard_are_refused():
    with pytest.raises(GbufError, match="multiple"):
        plan_blocks(12, 4, 6)
    with pytest.raises(GbufError, match="--block 3"):
        block_range(12, 4, 3)
    with pytest.raises(GbufError, match="--block -1"):
        block_range(12, 4, -1)


@pytest.mark.parametrize("settings,extra", [
    (RenderSettings(), {}),
    (make_settings(resolution=(64, 36), scale=2, samples=3, denoise=False, lr_mode="aliased", device="cuda",
                   passes="normal,alpha,image", seed=-4),
     {"frames": (-3, 5), "sequence": "take 2", "frames_per_shard": 4, "allow_scripts": True}),
])
def test_block_tasks_get_the_drivers_settings_through_the_cli(settings, extra, monkeypatch):
    """What render_on_ray hands each task (``cli_options``) parses back, through the real CLI, to the same
    typed settings: every block of a sequence records what the driver was asked for."""
    from click.testing import CliRunner

    from gbuf.cli import main
    from gbuf.render import job

    seen = []
    monkeypatch.setattr(job, "render_scenes", lambda scenes, output, settings, **kw: seen.append((settings, kw))
                        or job.RenderRun(output=output, results=[], plans=[]))
    options = cli_options(settings, **extra)
    result = CliRunner().invoke(main, ["render", "-o", "x.zarr", *options, "--block", "1"])
    assert result.exit_code == 0, result.output
    (got, kw), = seen
    assert got == settings
    assert (kw["frames"], kw["sequence"], kw["allow_scripts"]) == (extra.get("frames"), extra.get("sequence"),
                                                                   extra.get("allow_scripts", False))
    assert kw["scale_out"] == ScaleOut(frames_per_shard=extra.get("frames_per_shard"), block=1)


# ---------------------------------------------------------------------- block writers (no bpy)


def _frame(t: int, h=8, w=12):
    rng = np.random.default_rng(t)
    return {"hr": {"image": rng.random((h, w, 3)).astype(np.float16),
                   "depth": rng.random((h, w, 1)).astype(np.float32)},
            "lr": {"image": rng.random((h // 2, w // 2, 3)).astype(np.float16)}}


SPECS = {"hr": (8, 12, ["image", "depth"]), "lr": (4, 6, ["image"])}


def test_block_writers_fill_a_store_in_any_order_and_the_last_one_consolidates(tmp_path):
    path = tmp_path / "blocks.zarr"
    SequenceWriter(path, "s", 7, SPECS, frames_per_shard=2).close()      # arrays first, final shape
    blocks = plan_blocks(7, 2, 4)                                         # (0, 4), (4, 7)
    for start, stop in reversed(blocks):
        with SequenceWriter(path, "s", 7, SPECS, frame_range=(start, stop)) as w:
            assert w.next_frame == start
            for t in range(start, stop):
                w.append(_frame(t))
            with pytest.raises(GbufError, match="all written"):
                w.append(_frame(stop))
        complete = gd.open(path)["s"]["hr"].attrs.get("complete", False)
        assert complete == (start == 0)        # only once every shard has its marker
    assert pending_blocks(path, "s", 4) == ([], 2)
    plan = block_plan(path, "s", 4)
    assert (plan.num_frames, plan.frames_per_shard, plan.frames_per_block, plan.blocks, plan.pending) == (7, 2, 4, 2, [])
    assert verify(path).ok
    assert not (path / ".gbuf").exists()
    res = gd.open(path)["s"]["hr"]
    for t in range(7):
        np.testing.assert_array_equal(res.read("image", t=slice(t, t + 1))[0], _frame(t)["hr"]["image"])


def test_a_block_writer_resumes_inside_its_block_and_refuses_unaligned_ranges(tmp_path):
    path = tmp_path / "resume.zarr"
    SequenceWriter(path, "s", 8, SPECS, frames_per_shard=2).close()
    with SequenceWriter(path, "s", 8, SPECS, frame_range=(4, 8)) as w:
        for t in range(4, 7):                                  # interrupted after frame 6
            w.append(_frame(t))
    assert pending_blocks(path, "s", 4) == ([0, 1], 2)
    w = SequenceWriter(path, "s", 8, SPECS, frame_range=(4, 8))
    assert w.next_frame == 7
    w.append(_frame(7))
    assert w.complete and pending_blocks(path, "s", 4) == ([0], 2)
    assert block_plan(path, "s").pending == [0, 1] and block_plan(path, "s").blocks == 4   # blocks of one shard
    for bad in [(1, 4), (4, 5), (0, 9), (6, 6)]:
        with pytest.raises(GbufError, match="frame range"):
            SequenceWriter(path, "s", 8, SPECS, frame_range=bad)


# -------------------------------------------------------------- real renders, separate processes


def _gbuf(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "gbuf", *args], capture_output=True, text=True, timeout=240,
                          check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny_blend(tmp_path_factory):
    pytest.importorskip("bpy")
    from gbuf.render import recipes

    path = tmp_path_factory.mktemp("scene") / "tiny.blend"
    # The recipe is built in a child process: this process keeps no bpy state.
    subprocess.run([sys.executable, "-c", (f"from gbuf.render import recipes; "
                                           f"recipes.build_blend({recipes.DEFAULT!r}, {str(path)!r}, frames=6)")],
                   check=True, capture_output=True, timeout=120)
    return path


@pytest.mark.slow
@pytest.mark.blender
def test_blocks_rendered_by_concurrent_processes_equal_one_process(tmp_path, tiny_blend):
    blocks = tmp_path / "blocks.zarr"
    frames = ["--frames", "1:6", "--frames-per-shard", "2"]
    plan = _gbuf("render", str(tiny_blend), "-o", str(blocks), *TINY_ARGS, *frames, "--plan")
    assert plan.stdout.strip().endswith("tiny: 6 frames, blocks 0..2 of 2 frames (2 per shard), 3 to render")
    hr = gd.open(blocks)["tiny"]["hr"]
    assert (hr.planned_frames, hr.num_frames) == (6, 0)      # final shape, nothing written yet
    # Blocks of 4 frames = 2 shards: block 0 is frames 0-3, block 1 frames 4-5. Both run at once.
    procs = [subprocess.Popen([sys.executable, "-m", "gbuf", "render", str(tiny_blend), "-o", str(blocks),
                               *TINY_ARGS, *frames, "--block", str(k), "--blocks-of", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
    report = verify(blocks)
    assert report.ok, report.problems
    assert report.frames_checked == 12
    assert not (blocks / ".gbuf").exists()      # consolidated by the last block

    single = tmp_path / "single.zarr"
    _gbuf("render", str(tiny_blend), "-o", str(single), *TINY_ARGS, *frames)
    a, b = gd.open(blocks)["tiny"], gd.open(single)["tiny"]
    for group in ("hr", "lr"):
        assert a[group].attrs["checksums"] == b[group].attrs["checksums"]
        for buf in a[group].buffers:
            np.testing.assert_array_equal(a[group].read(buf), b[group].read(buf))
    assert a.attrs["render_settings"] == b.attrs["render_settings"]

    # A block that is already complete renders nothing; a block past the end is bad input.
    again = _gbuf("render", str(tiny_blend), "-o", str(blocks), *TINY_ARGS, *frames, "--block", "1",
                  "--blocks-of", "4")
    assert again.returncode == 0
    bad = _gbuf("render", str(tiny_blend), "-o", str(blocks), *TINY_ARGS, *frames, "--block", "2",
                "--blocks-of", "4", check=False)
    assert bad.returncode == 2 and "--block 2" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    odd = _gbuf("render", str(tiny_blend), "-o", str(blocks), *TINY_ARGS, *frames, "--block", "0",
                "--blocks-of", "3", check=False)
    assert odd.returncode == 2 and "multiple" in odd.stderr


@pytest.mark.blender
def test_a_rerun_with_other_settings_names_what_differs(tmp_path, tiny_blend):
    """Issue 13, case 15: extending a sequence (or changing a setting) is refused naming the value that
    differs, as stored and as asked."""
    out = tmp_path / "ext.zarr"
    # Rendered as a plan and its one block, given as a file:// URL (a local folder like any other).
    for step in (["--plan"], ["--block", "0"]):
        _gbuf("render", str(tiny_blend), "-o", out.as_uri(), *TINY_ARGS, "--frames", "1:2", *step)
    assert verify(out).ok and gd.open(out)["tiny"]["hr"].num_frames == 2
    for extra, says in ((["--frames", "1:3"], "frame range: 1:2 in the store, 1:3 asked"),
                        (["--frames", "1:2", "--samples", "2"], "render settings samples: 1 in the store, 2 asked")):
        proc = _gbuf("render", str(tiny_blend), "-o", str(out), *TINY_ARGS, *extra, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"sequence 'tiny' exists with a different {says}; use --overwrite" in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.blender
def test_a_second_ctrl_c_stops_a_block_render_at_once(tmp_path, tiny_blend):
    """Issue 13, case 15: Python runs a signal handler only between bytecodes, never while Cycles renders a
    frame; two Ctrl-C within one frame used to reach it as one, after the frame (>= 50 s at full size)."""
    import os
    import signal
    import time

    out = tmp_path / "sigint.zarr"
    # 2^20 samples per pixel: the first frame would take far longer than this test waits.
    args = ["render", str(tiny_blend), "-o", str(out), "--resolution", "64x36", "--samples", str(1 << 20),
            "--no-denoise", "--frames", "1:4", "--frames-per-shard", "2", "--block", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "gbuf", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (out / "tiny" / "lr" / "zarr.json").is_file():
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(3)  # well inside Cycles' render of the first frame
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        asked = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert took < 10, f"a second Ctrl-C took {took:.1f} s to stop the render"
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "stopping after the current frame" in stderr and "stopped at once (second Ctrl-C)" in stderr, stderr
    assert gd.open(out)["tiny"]["hr"].num_frames == 0  # nothing half-written


def test_a_ray_render_takes_a_file_url_as_its_folder(tmp_path, monkeypatch):
    """``render --ray -o file:///...`` renders into that folder (the tasks are given its path)."""
    from gbuf.render import blocks

    seen = []
    monkeypatch.setattr(blocks, "_render_on_ray", lambda scenes, output, **kw: seen.append(output) or "done")
    assert blocks.render_on_ray([None], (tmp_path / "x.zarr").as_uri()) == "done"
    assert seen == [str(tmp_path / "x.zarr")]
