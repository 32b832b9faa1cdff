"""gbuf.runtime: devices, --threads on every torch command (validated, honoured, restored), and the
torch noise dropped from stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gbuf import runtime
from gbuf.errors import GbufError


def _cli(*args):
    from click.testing import CliRunner

    from gbuf.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# --- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["train", "rdg-s", "--data", "nosuch.zarr"],
    ["eval", "bicubic", "--data", "nosuch.zarr"],
    ["upscale", "bicubic", "--data", "nosuch.zarr", "--sequence", "s", "-o", "out"],
    ["bench", "rdg-s", "--lr-size", "8x12"],
    ["export", "safmn", "--onnx", "x.onnx"],
    ["degrade", "nosuch.zarr", "--bicubic"],
])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_threads_below_one_is_a_one_line_error(command, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _cli(*command, "--threads", value)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"gbuf: error: --threads {value}: must be an integer >= 1\n"
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "out").exists()


def test_threads_context_sets_validates_and_restores(monkeypatch):
    monkeypatch.delenv("GBUF_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    with runtime.threads(None) as n:
        assert n == torch.get_num_threads() == runtime.DEFAULT_THREADS == 1
    assert torch.get_num_threads() == 2
    with runtime.threads(3) as n:
        assert n == torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    with pytest.raises(GbufError, match=r"--threads 0: must be an integer >= 1"):
        with runtime.threads(0):
            pass
    with pytest.raises(GbufError):
        runtime.check_threads(True)
    assert torch.get_num_threads() == 2
    # the environment replaces the default; GBUF_THREADS first
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.default_threads() == 2
    monkeypatch.setenv("GBUF_THREADS", "3")
    assert runtime.default_threads() == 3
    monkeypatch.setenv("GBUF_THREADS", "many")
    with pytest.raises(GbufError, match=r"GBUF_THREADS='many': must be an integer >= 1"):
        runtime.default_threads()


def test_bench_and_eval_run_with_the_thread_count_they_are_given(monkeypatch, tmp_path):
    from gbuf.train import bench, evaluate, inference
    from train_helpers import synthetic_store

    torch.set_num_threads(1)
    for n in (1, 2):
        (row,) = bench.bench(["rdg-s"], lr_size=(8, 12), frames=1, warmup=0, repeats=1, threads=n)
        assert row.threads == n  # torch.get_num_threads() while the frames ran
        assert torch.get_num_threads() == 1  # and restored after the call

    seen = []
    real = inference.model_frames

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        yield from real(*args, **kwargs)

    monkeypatch.setattr(inference, "model_frames", recording)
    store = synthetic_store(tmp_path, sequences=1, frames=2, height=32, width=48)
    report = evaluate.evaluate([("bicubic", None)], str(store), vmaf="off", device="cpu", threads=2)
    assert seen and set(seen) == {2} and report.threads == 2
    assert torch.get_num_threads() == 1


def test_degrade_runs_with_the_thread_count_it_is_given(tmp_path, monkeypatch):
    import numpy as np

    from gbuf.datasets import folder
    from gbuf.datasets.degrade import api

    clip = tmp_path / "in"
    clip.mkdir()
    folder.write_png(clip / "0000.png", np.full((16, 16, 3), 128, np.uint8))
    seen = []
    real = api._degrade_images

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_degrade_images", recording)
    torch.set_num_threads(1)
    api.degrade_folder(clip, tmp_path / "out", "bicubic", scale=4, threads=2)
    assert seen == [2] and torch.get_num_threads() == 1


# --- devices ------------------------------------------------------------------------------------


def test_resolve_device():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device("CPU") == torch.device("cpu")
    assert runtime.resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(GbufError, match=r"device 'gpu7': not a device"):
        runtime.resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(GbufError, match=r"CUDA is not available"):
            runtime.resolve_device("cuda:1")
    assert runtime.autocast_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(GbufError, match=r"--amp fp16 needs CUDA"):
        runtime.autocast_dtype("fp16", torch.device("cpu"))


def test_importing_gbuf_runtime_loads_no_torch():
    code = "import sys, gbuf, gbuf.runtime, gbuf.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- noise --------------------------------------------------------------------------------------


def test_drop_stderr_lines_drops_only_the_patterns(capfd):
    with runtime.drop_stderr_lines(r"^USDT:.*profiler_start"):
        os.write(2, b"USDT:2026-01-01 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"a real error\n")
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "profiler_start" not in err
    assert "a real error\n" in err and "from python\n" in err


def test_bench_stderr_has_no_profiler_noise(gbuf_cli):
    """torch's profiler (the CPU memory figure) prints trace points and, without a GPU, a failed GPU
    count on stderr; gbuf bench drops exactly those lines."""
    proc = gbuf_cli("bench", "rdg-s", "--lr-size", "8x12", "--repeats", "1", "--warmup", "0", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["benchmarking rdg-s ..."], proc.stderr
    assert proc.stdout.splitlines()[1].startswith("rdg-s,303680,")
    assert proc.stdout.splitlines()[1].endswith(",1")  # the default: one thread
