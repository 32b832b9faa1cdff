"""DAP (deformable attention pyramid, online VSR) and its motion-seeded variant: causality, the
use of the rendered motion, the motion seed's convention, streaming, and the commands
(train, eval, bench, export) end to end on tiny inputs."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from gbuf.errors import GbufError
from gbuf.train import bench, export, models
from gbuf.train.models.dap import DAP
from gbuf.train.ops import backward_warp
from train_helpers import synthetic_store

SCALE = 4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clip(t=4, h=12, w=10, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(b, t, 3, h, w, generator=g),
            "motion": (torch.rand(b, t, 2, h, w, generator=g) - 0.5) * 4.0}


def small(name, **options):
    """A narrow DAP (fast on CPU) with the registered name's fixed options."""
    torch.manual_seed(0)
    return models.create(name, num_feat=16, **options).eval()


def trained_a_little(model, batch, steps=3):
    """A few Adam steps, so the zero-initialised offset heads are no longer zero."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.rand(batch["image"].shape[:2] + (3,) + tuple(s * SCALE for s in batch["image"].shape[-2:]),
                        generator=torch.Generator().manual_seed(9))
    for _ in range(steps):
        optimizer.zero_grad()
        out = model({k: batch[k] for k in model.inputs})
        (out - target).abs().mean().backward()
        optimizer.step()
    return model.eval()


def test_registry_interface_and_parameter_count():
    dap, seeded = models.create("dap"), models.create("dap-motion")
    assert dap.inputs == ("image",) and seeded.inputs == ("image", "motion")
    assert dap.recurrent and seeded.recurrent and dap.scale == seeded.scale == SCALE
    # DAP-128 as built here (the paper gives no count); the motion seed adds no weights
    count = sum(p.numel() for p in dap.parameters())
    assert count == 2_869_456 == sum(p.numel() for p in seeded.parameters())
    with pytest.raises(GbufError, match="num_feat"):
        DAP(num_feat=30, num_heads=4)
    with pytest.raises(GbufError, match="num_levels"):
        DAP(num_levels=0)


@pytest.mark.parametrize("name", ["dap", "dap-motion"])
def test_causal_output_of_frame_t_ignores_later_frames(name):
    model = trained_a_little(small(name).train(), clip(seed=3))
    batch = clip(t=5)
    later = {k: v.clone() for k, v in batch.items()}
    later["image"][:, 3:] = torch.rand_like(later["image"][:, 3:])
    later["motion"][:, 3:] = -later["motion"][:, 3:]
    with torch.no_grad():
        a = model({k: batch[k] for k in model.inputs})
        b = model({k: later[k] for k in model.inputs})
    assert torch.equal(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-4)  # the later frames did change


def test_motion_variant_uses_the_motion():
    batch = clip(t=3)
    moved = dict(batch, motion=batch["motion"] + 1.5)
    seeded = small("dap-motion")
    with torch.no_grad():
        a, b = seeded(batch), seeded(moved)
    # every frame after the first aligns a state with it
    assert all((a[:, t] - b[:, t]).abs().max() > 1e-3 for t in (1, 2))
    plain = small("dap")
    with torch.no_grad():
        assert torch.equal(plain(batch), plain(moved))  # image only: the motion is not read
    with pytest.raises(GbufError, match="missing buffer 'motion'"):
        seeded({"image": batch["image"]})


def test_motion_seed_is_the_backward_warp_of_the_state():
    """With zero residual offsets, values = the state and an identity output projection, the
    aligned state is the state warped by the rendered motion (gbuf convention: p + motion(p)
    in frame t-1); without the seed it is the state itself."""
    c, h, w = 16, 12, 10
    for use_motion in (True, False):
        model = DAP(num_feat=c, use_motion=use_motion)
        with torch.no_grad():
            for level in model.levels:
                level.offset_net[-1].weight.zero_()
                level.offset_net[-1].bias.zero_()
                level.project.weight.copy_(torch.eye(c).view(c, c, 1, 1))
                level.project.bias.zero_()
            kv = model.to_key_value
            kv.weight.zero_()
            kv.bias.zero_()
            kv.weight[c:, :, 0, 0] = torch.eye(c)
        g = torch.Generator().manual_seed(1)
        features, hidden = torch.rand(1, c, h, w, generator=g), torch.rand(1, c, h, w, generator=g)
        motion = torch.stack((torch.full((h, w), 1.25), torch.full((h, w), -0.75)))[None]
        with torch.no_grad():
            aligned = model.align(features, hidden, motion if use_motion else None)
        expected = backward_warp(hidden, motion, padding_mode="zeros") if use_motion else hidden
        assert torch.allclose(aligned, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["dap", "dap-motion"])
def test_step_equals_forward_and_the_state_carries(name):
    model = trained_a_little(small(name).train(), clip(seed=4))
    batch = clip(t=4, b=2, seed=1)
    with torch.no_grad():
        whole = model({k: batch[k] for k in model.inputs})
        state, streamed = None, []
        for t in range(4):
            out, state = model.step({k: batch[k][:, t] for k in model.inputs}, state)
            streamed.append(out)
        restarted, _ = model.step({k: batch[k][:, 3] for k in model.inputs}, None)
        zero_start, _ = model.step({k: batch[k][:, 0] for k in model.inputs},
                                   model.initial_state({"image": batch["image"][:, 0]}))
    assert torch.allclose(torch.stack(streamed, dim=1), whole, atol=1e-6, rtol=0)
    assert torch.equal(zero_start, streamed[0])
    assert not torch.allclose(restarted, streamed[3], atol=1e-4)
    assert len(state) == 1 and state[0].shape == (2, 16, 12, 10)


def test_every_parameter_learns_and_odd_sizes_work():
    model = small("dap-motion").train()
    batch = clip(t=3, h=13, w=7)
    out = model(batch)
    assert out.shape == (1, 3, 3, 13 * SCALE, 7 * SCALE) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Behind a zero-initialised offset head nothing moves before that head has: train a little
    model = trained_a_little(small("dap-motion").train(), batch)
    model.train().zero_grad()
    (model(batch) - torch.rand(1, 3, 3, 13 * SCALE, 7 * SCALE)).abs().mean().backward()
    frozen = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not frozen, frozen


@pytest.mark.parametrize("name", ["dap", "dap-motion"])
def test_bench_and_onnx_export(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="gbuf export needs the 'export' extra")
    row = bench.bench_model(name, lr_size=(8, 12), frames=1, warmup=0, repeats=1, num_feat=16)
    assert row.mode == "step" and row.latency_ms > 0 and row.gflops > 0
    report = export.export_onnx(name, tmp_path / f"{name}.onnx", lr_size=(12, 16), model=small(name))
    assert report.input_names == list(small(name).inputs) + ["hidden"]
    assert report.output_names == ["output", "next_hidden"]
    assert report.max_abs_error <= 1e-4 and report.state_rel_error <= 1e-4


@pytest.mark.slow
def test_commands_train_eval_bench_export(tmp_path):
    """``gbuf train dap``, ``gbuf eval dap``, ``gbuf bench dap`` and ``gbuf export dap --onnx``."""
    pytest.importorskip("onnxruntime", reason="gbuf export needs the 'export' extra")
    from gbuf.cli import main

    store = synthetic_store(tmp_path, sequences=2, frames=3)
    run = CliRunner()

    def cli(*args):
        result = run.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    out = tmp_path / "run"
    cli("train", "dap-motion", "--data", store, "--out", out, "--iters", 2, "--batch-size", 1, "--frames", 2,
        "--patch", 64, "--workers", 0, "--val-every", 0, "--device", "cpu", "--set", "run.progress=false",
        "--set", "run.tensorboard=false", "--set", "model_options.num_feat=16")
    ckpt = out / "ckpt" / "step_2.pt"
    assert ckpt.is_file()
    result = cli("eval", "dap-motion", "--ckpt", ckpt, "--data", store, "--vmaf", "off", "--device", "cpu",
                 "--table", tmp_path / "t.csv")
    assert "dap-motion" in (tmp_path / "t.csv").read_text()
    result = cli("bench", "dap", "--lr-size", "8x12", "--repeats", "1", "--warmup", "0", "--format", "csv")
    assert any(line.startswith("dap,2869456,") for line in result.stdout.splitlines())
    result = cli("export", "dap", "--onnx", tmp_path / "dap.onnx", "--lr-size", "8x12")
    assert (tmp_path / "dap.onnx").is_file() and "max abs error" in result.stdout
