"""gbuf bench: the table's columns are measured, per frame, for any registered model."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from gbuf.errors import GbufError
from gbuf import runtime
from gbuf.train import bench, inference


def test_bench_rows_measure_params_flops_memory_latency():
    torch.set_num_threads(2)
    rows = bench.bench(["rdg-s", "smfanet"], lr_size=(16, 24), frames=2, warmup=1, repeats=2)
    by_name = {r.model: r for r in rows}
    assert by_name["rdg-s"].params == 303_680 and by_name["smfanet"].params == 197_328
    assert by_name["rdg-s"].mode == "step" and by_name["smfanet"].mode == "clip/2"
    for row in rows:
        assert row.latency_ms > 0 and row.peak_mib is not None
        # The weights alone are resident; activations come on top.
        assert row.peak_mib > row.params * 4 / 2**20
    # FLOPs scale with the pixel count (convolutions dominate): 4x the pixels, ~4x the FLOPs.
    bigger = bench.bench_model("smfanet", lr_size=(32, 48), frames=1, warmup=0, repeats=1)
    assert 3.9 < bigger.gflops / by_name["smfanet"].gflops < 4.1
    # SMFANet's convolutions and the matrix products counted by hand would be slow to restate;
    # its first conv alone is 2 * 27 * 36 multiply-adds per pixel: a lower bound.
    assert by_name["smfanet"].gflops * 1e9 > 2 * 27 * 36 * 16 * 24

    table = bench.format_table(rows, "csv")
    parsed = list(csv.DictReader(io.StringIO(table)))
    assert [r["model"] for r in parsed] == ["rdg-s", "smfanet"] and parsed[0]["params"] == "303680"
    markdown = bench.format_table(rows, "markdown")
    assert "| rdg-s | 0.304 |" in markdown
    text = bench.format_table(rows, "text")
    assert "LR 16x24 -> 64x96" in text and "latency (ms/frame)" in text


def test_every_registered_model_gets_example_inputs():
    """bench builds inputs from model.inputs for any model the registry returns."""
    from gbuf.train import models

    for name in models.names():
        model = models.create(name)  # a model that fails to import fails this test, never skips
        frame = inference.example_frame(model, (8, 12))
        assert set(frame) == set(model.inputs)
        for key, value in frame.items():
            s = model.scale if key.startswith("hr_") else 1
            assert value.shape[-2:] == (8 * s, 12 * s)


def _cli(*args):
    from click.testing import CliRunner

    from gbuf.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_bench_and_bad_input():
    result = _cli("bench", "rdg-s", "--lr-size", "8x12", "--repeats", "1", "--warmup", "0", "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if not line.startswith("benchmarking")]
    assert lines[1].startswith("rdg-s,303680,")
    result = _cli("bench", "rdg-s", "nosuch")
    assert result.exit_code == 2 and "unknown model 'nosuch'; known models:" in result.stderr
    result = _cli("bench", "--lr-size", "270by480")
    assert result.exit_code == 2 and "expected HEIGHTxWIDTH" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_is_a_clear_error():
    with pytest.raises(GbufError, match="CUDA is not available"):
        runtime.resolve_device("cuda")
