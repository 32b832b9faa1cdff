"""``gbuf render A.blend B.blend -o STORE --ray``: a local Ray instance (2 CPUs) renders blocks into one store.

The real CLI runs in a subprocess; it starts a local Ray, plans both sequences,
runs one Ray task (its own process with its own bpy) per block that is not yet
complete, shuts Ray down, consolidates and verifies.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gbuf.datasets as gd
from gbuf.datasets.integrity import verify

pytest.importorskip("bpy")
pytest.importorskip("ray", reason="ray is not installed (pip install 'gbuf[share]'); --ray cannot run")

TINY_ARGS = ["--resolution", "64x36", "--scale", "4", "--samples", "1", "--no-denoise", "--frames", "1:4",
             "--frames-per-shard", "2"]


def _gbuf(*args, timeout=300):
    # Ray sets RAY_AUTH_MODE in the process that first starts it; a CLI call starts from a clean slate.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run([sys.executable, "-m", "gbuf", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


@pytest.mark.slow
@pytest.mark.blender
def test_local_ray_renders_two_scenes_in_block_tasks_into_one_store(tmp_path):
    from gbuf.render import recipes

    first = tmp_path / "alpha.blend"
    subprocess.run([sys.executable, "-c", (f"from gbuf.render import recipes; "
                                           f"recipes.build_blend({recipes.DEFAULT!r}, {str(first)!r}, frames=4)")],
                   check=True, capture_output=True, timeout=120)
    second = tmp_path / "beta.blend"
    shutil.copyfile(first, second)
    store = tmp_path / "ray.zarr"

    # Block 0 of alpha is already there (as after an interrupted job): Ray must skip it.
    for extra in (["--plan"], ["--block", "0"]):
        proc = _gbuf("render", str(first), "-o", str(store), "--quiet", *TINY_ARGS, *extra)
        assert proc.returncode == 0, proc.stderr

    proc = _gbuf("render", str(first), str(second), "-o", str(store), *TINY_ARGS, "--ray")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "alpha, beta: 3 block task(s) run, 1 already complete, 16 frames verified" in summary, summary
    assert "Token authentication" not in proc.stderr, proc.stderr

    report = verify(store)
    assert report.ok, report.problems
    assert report.frames_checked == 16
    ds = gd.open(store)
    assert sorted(ds.sequences) == ["alpha", "beta"]
    for name in ds.sequences:
        for group in ("hr", "lr"):
            assert ds[name][group].attrs["complete"] and ds[name][group].num_frames == 4
    # Same scene, same seed: the two sequences hold the same pixels, whichever task rendered them.
    for buf in ds["alpha"]["hr"].buffers:
        np.testing.assert_array_equal(ds["alpha"]["hr"].read(buf), ds["beta"]["hr"].read(buf))
    assert not (store / ".gbuf").exists()


def test_ray_refuses_bad_input_before_starting_ray(tmp_path):
    missing = _gbuf("render", str(tmp_path / "nope.blend"), "-o", str(tmp_path / "x.zarr"), "--ray", timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"gbuf: error: {tmp_path / 'nope.blend'}: no such file"
    assert not (tmp_path / "x.zarr").exists()
    block = _gbuf("render", "-o", str(tmp_path / "x.zarr"), "--block", "0", "--ray", timeout=60)
    assert block.returncode == 2 and "leave out --block" in block.stderr


def test_a_failed_block_process_is_retried_and_bad_input_is_not(tmp_path):
    """The block task's Ray options on a real local Ray: exit 1 once, then success; exit 2 is final."""
    import ray

    from gbuf.render.blocks import _block_task, block_task_options, ray_session

    counter = tmp_path / "attempts"
    flaky = [sys.executable, "-c",
             (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = len(p.read_text()) if p.exists() "
              f"else 0; p.write_text('x' * (n + 1)); print('attempt', n + 1); sys.exit(1 if n == 0 else 0)")]
    bad = [sys.executable, "-c", ("import sys; print('gbuf: error: x.blend: not a .blend', file=sys.stderr); "
                                  "sys.exit(2)")]
    with ray_session(local_cpus=2):
        task = ray.remote(**block_task_options(2))(_block_task)
        ok, refused = ray.get([task.remote(flaky, "s", 0), task.remote(bad, "s", 1)])
    assert not ray.is_initialized()
    assert ok.ok and ok.message == "attempt 2" and counter.read_text() == "xx"
    assert not refused.ok and refused.message == "gbuf: error: x.blend: not a .blend"


def test_ray_session_drops_the_token_notice_and_nothing_else(monkeypatch):
    """Ray announces token authentication on every local start; gbuf drops that one notice only."""
    from gbuf.render import blocks

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)   # as in a fresh process: Ray then announces it
    seen, shown = [], []
    real = blocks._DropTokenNotice.filter
    monkeypatch.setattr(blocks._DropTokenNotice, "filter",
                        lambda self, record: seen.append(record.getMessage()) or real(self, record))
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: shown.append(record.getMessage())
    log = logging.getLogger(blocks.RAY_TOKEN_LOGGER)
    log.addHandler(handler)
    try:
        with blocks.ray_session(local_cpus=1) as ray:
            assert ray.is_initialized()
        log.warning("Token authentication is enabled for this Ray cluster. (after the session)")
    finally:
        log.removeHandler(handler)
    assert any(m.startswith(blocks.RAY_TOKEN_NOTICE) for m in seen), seen     # Ray said it ...
    assert shown == ["Token authentication is enabled for this Ray cluster. (after the session)"], shown
    # ... and only that notice goes: the warning that a cluster runs without authentication stays.
    disabled = logging.makeLogRecord({"msg": "Token authentication is disabled for this Ray cluster."})
    assert blocks._DropTokenNotice().filter(disabled)
