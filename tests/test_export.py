"""ONNX export of RDG-s's one-frame step and of a single-image model, checked with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="gbuf export needs the 'export' extra (onnx, onnxruntime)")

import onnxruntime as ort  # noqa: E402

from gbuf.train import checkpoints, export, inference, models  # noqa: E402


@pytest.mark.slow
def test_rdg_s_step_round_trip_streams_a_sequence(shared_reference, tmp_path, gbuf_cli):
    """The exported step, fed its own state, reproduces the PyTorch sequence forward."""
    ckpt = shared_reference / "rdg" / "RDG_Small.pth"
    out_path = tmp_path / "rdg_s.onnx"
    proc = gbuf_cli("export", "rdg-s", "--ckpt", ckpt, "--onnx", out_path, "--lr-size", "14x18",
                    "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert "max abs error" in proc.stdout and out_path.is_file()
    # the graph optimiser's notes on a correct graph are not shown
    assert "constant folding" not in proc.stderr and "deduplication" not in proc.stderr, proc.stderr
    error = float(proc.stdout.split("max abs error ")[1].split()[0])
    assert error <= 1e-4

    # Independently of the built-in check: run three frames through ONNX Runtime from the zero
    # state and compare with the PyTorch sequence forward.
    model = models.create("rdg-s").eval()
    checkpoints.load(model, ckpt)
    frames = [inference.example_frame(model, (14, 18), seed=10 + t) for t in range(3)]
    clip = {k: torch.stack([f[k] for f in frames], 1) for k in frames[0]}
    with torch.no_grad():
        expected = model(clip).numpy()
    session = ort.InferenceSession(str(out_path), export.session_options(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names[:5] == ["image", "depth", "normal", "motion", "brdf"]
    state = [s.numpy() for s in model.initial_state(frames[0])]
    for t, frame in enumerate(frames):
        outputs = session.run(None, dict(zip(names, [frame[k].numpy() for k in names[:5]] + state)))
        assert np.abs(outputs[0] - expected[:, t]).max() <= 1e-4
        state = outputs[1:]


def test_single_image_model_export(tmp_path):
    torch.manual_seed(0)
    report = export.export_onnx("safmn", tmp_path / "safmn.onnx", lr_size=(12, 16), threads=2)
    assert report.input_names == ["image"] and report.output_names == ["output"] and report.threads == 2
    assert report.max_abs_error <= 1e-4
    session = ort.InferenceSession(str(report.path), export.session_options(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": np.zeros((1, 3, 12, 16), np.float32)})
    assert out.shape == (1, 3, 48, 64)


def test_export_bad_input(tmp_path):
    from click.testing import CliRunner

    from gbuf.cli import main

    def cli(*args):
        return CliRunner().invoke(main, ["export", *map(str, args)])

    result = cli("rdg-xs", "--onnx", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "unknown model 'rdg-xs'; known models: rdg, rdg-s" in result.stderr
    result = cli("safmn", "--onnx", tmp_path / "x.txt")
    assert result.exit_code == 2 and "must end in .onnx" in result.stderr
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    result = cli("safmn", "--ckpt", tmp_path / "junk.pth", "--onnx", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "junk.pth: not a PyTorch checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x.onnx").exists()
