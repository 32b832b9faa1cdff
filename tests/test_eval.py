"""gbuf eval: metrics against independent computations, the bicubic baseline, tables, plots, bad input."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from gbuf.datasets.writer import SequenceWriter
from gbuf.errors import GbufError
from gbuf.train import evaluate, metrics, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)


# --- independent reference implementations (numpy, float64) -------------------------------------


def srgb(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def keys_cubic(d, a=-0.75):
    d = np.abs(d)
    return np.where(d <= 1, (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1,
                    np.where(d < 2, a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a, 0.0))


def bicubic_upsample(img, s):
    """(H, W, C) -> (sH, sW, C): Keys cubic (a = -0.75), half-pixel centres, edge pixels repeated."""
    def resample(n_in):
        x = (np.arange(n_in * s) + 0.5) / s - 0.5
        x0 = np.floor(x)
        taps = x0[:, None] + np.arange(-1, 3)[None]
        w = keys_cubic(x[:, None] - taps)
        return np.clip(taps, 0, n_in - 1).astype(int), w

    iy, wy = resample(img.shape[0])
    ix, wx = resample(img.shape[1])
    rows = (img[iy] * wy[..., None, None]).sum(1)  # (sH, W, C)
    return (rows[:, ix] * wx[None, ..., None]).sum(2)


def psnr_8bit(a, b):
    a8, b8 = np.round(np.clip(a, 0, 1) * 255), np.round(np.clip(b, 0, 1) * 255)
    mse = np.mean((a8 - b8) ** 2)
    return 10 * math.log10(255 ** 2 / mse)


# --- metrics ------------------------------------------------------------------------------------


def test_psnr_ssim_known_values():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 250, (3, 32, 40), generator=g).double() / 255
    b = a + 5 / 255  # every pixel off by 5 levels: MSE 25
    assert metrics.psnr(b, a) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-9)
    assert metrics.psnr(a, a) == math.inf
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert 0 < metrics.ssim(a, torch.rand(3, 32, 40, generator=g)) < 0.1
    # Y channel: BT.601 luma of a grey image of level v is 16 + 219 v / 255
    grey = torch.full((3, 16, 16), 100 / 255, dtype=torch.float64)
    darker = torch.full((3, 16, 16), 90 / 255, dtype=torch.float64)
    diff = 219 * 10 / 255
    assert metrics.psnr(grey, darker, y_channel=True) == pytest.approx(10 * math.log10(255 ** 2 / diff ** 2))
    # crop: a border-only difference disappears
    framed = a.clone()
    framed[:, :2] = 0
    assert metrics.psnr(framed, a, crop=2) == math.inf


def test_occlusion_mask_and_warping_error():
    # frame t: a square moved 5 px right over a static background
    h, w = 32, 40
    motion = torch.zeros(2, h, w)
    depth = torch.full((h, w), 10.0)
    motion[0, 10:20, 15:25] = -5.0
    depth[10:20, 15:25] = 1.0
    mask = metrics.occlusion_mask(motion, depth)
    hidden = ~mask
    # exactly the background the square uncovered (it sat on x 10..19 in frame t-1)
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[10:20, 10:15] = True
    assert torch.equal(hidden, expected)
    # motion leaving the image is masked too
    out = torch.zeros(2, h, w)
    out[0] = 3.0
    assert (~metrics.occlusion_mask(out, None))[:, -3:].all() and metrics.occlusion_mask(out, None)[:, :-3].all()

    # a pure 2 px translation: E_warp 0 where visible; a brightness flicker of 10 levels adds 3 * (10/255)^2
    g = torch.Generator().manual_seed(1)
    previous = torch.randint(20, 200, (3, h, w + 2), generator=g).double() / 255
    current = previous[:, :, :-2].clone()  # content moved 2 px right: current[x] = previous[x - 2]
    current = torch.cat([previous[:, :, :2], current], dim=2)[:, :, :w]
    previous = previous[:, :, :w]
    m = torch.zeros(2, h, w)
    m[0] = -2.0
    err, visible = metrics.warping_error(previous, current, m, None)
    assert err == pytest.approx(0.0, abs=1e-12) and visible == pytest.approx((w - 2) / w)
    err, _ = metrics.warping_error(previous, current + 10 / 255, m, None)
    assert err == pytest.approx(3 * (10 / 255) ** 2, rel=1e-9)


@pytest.mark.skipif(not metrics.vmaf_available(), reason="the ffmpeg of imageio-ffmpeg has no libvmaf here")
def test_vmaf_streams_frames_through_libvmaf():
    rng = np.random.default_rng(0)
    ref = [np.clip(rng.normal(128, 40, (72, 128, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    same, noisy = metrics.VmafSession(128, 72), metrics.VmafSession(128, 72)
    for frame in ref:
        same.add(frame, frame)
        noisy.add(np.clip(frame + rng.normal(0, 25, frame.shape), 0, 255).astype(np.uint8), frame)
    a, b = same.close(), noisy.close()
    assert len(a["frames"]) == 4 and a["mean"] > 90
    assert b["mean"] < a["mean"] - 10


# --- gbuf eval ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bicubic_store(tmp_path_factory):
    """HR frames and an LR group that is their bicubic downscale (linear HDR values in [0, 1])."""
    path = tmp_path_factory.mktemp("bicubic") / "b.zarr"
    rng = np.random.default_rng(0)
    frames = {}
    for name in ("seq_a", "seq_b"):
        hrs, lrs = [], []
        with SequenceWriter(path, name, 3, {"hr": (48, 64, ["image"]), "lr": (12, 16, ["image"])},
                            sequence_attrs={"fps": 24}) as w:
            for _ in range(3):
                coarse = rng.uniform(0, 1, (1, 3, 12, 16)).astype(np.float32)
                hr = torch.nn.functional.interpolate(torch.from_numpy(coarse), scale_factor=4, mode="bilinear")
                hr = (hr + 0.05 * torch.rand(hr.shape, generator=torch.Generator().manual_seed(len(hrs))))
                hr = hr.clamp(0, 1)
                lr = torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True)
                hr16 = hr[0].permute(1, 2, 0).numpy().astype(np.float16)
                lr16 = lr[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float16)
                w.append({"hr": {"image": hr16}, "lr": {"image": lr16}})
                hrs.append(hr16.astype(np.float64))
                lrs.append(lr16.astype(np.float64))
        frames[name] = (hrs, lrs)
    return path, frames


def test_bicubic_psnr_equals_an_independent_computation(bicubic_store):
    path, frames = bicubic_store
    report = evaluate.evaluate([("bicubic", None)], str(path), vmaf="off", device="cpu")
    assert report.sequences == ["seq_a", "seq_b"]
    expected = {}
    for name, (hrs, lrs) in frames.items():
        per_frame = [psnr_8bit(bicubic_upsample(srgb(lr), 4), srgb(hr)) for hr, lr in zip(hrs, lrs)]
        assert report.per_frame["bicubic"][name] == pytest.approx(per_frame, abs=0.02)
        expected[name] = np.mean(per_frame)
        assert report.scores["bicubic"]["psnr"][name] == pytest.approx(expected[name], abs=0.02)
    assert report.average("bicubic", "psnr") == pytest.approx(np.mean(list(expected.values())), abs=0.02)
    assert 20 < report.average("bicubic", "psnr") < 60
    # no motion in this store, no LPIPS weights, VMAF off: said so, never faked
    assert report.scores["bicubic"]["ewarp"]["seq_a"] is None
    table = evaluate.table_markdown(report)
    assert "| bicubic | n/a | n/a | n/a |" in table and "LPIPS: not available" in table
    assert "E_warp: not available" in table


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_run")
    store = synthetic_store(root, sequences=2, frames=5)
    c = tiny_config(store, root / "run", iters=2, frames=2, batch=1)
    c.run.val_every = 2  # one validation, at the end (the last sequence is held out either way)
    result = trainer.train(c)
    return store, result.checkpoint


def test_validation_scores_as_gbuf_eval_does(trained):
    """The trainer's validation is evaluate's scoring: same PSNR / SSIM on the same frames."""
    import json

    store, ckpt = trained
    log = [json.loads(line) for line in (ckpt.parent.parent / "log.jsonl").read_text().splitlines()]
    (val,) = [r for r in log if "val_psnr" in r]
    report = evaluate.evaluate([("rdg-s", ckpt)], str(store), sequences=["synthetic_001"], segment_frames=3,
                               vmaf="off", device="cpu")
    first = report.per_frame["rdg-s"]["synthetic_001"][:3]  # data.val_frames = 3
    assert val["val_psnr"] == pytest.approx(float(np.mean(first)), abs=1e-9)


def test_eval_cli_table_plot_and_segments(trained, tmp_path, gbuf_cli):
    store, ckpt = trained
    table, plot = tmp_path / "t.csv", tmp_path / "p.png"
    proc = gbuf_cli("eval", "bicubic", "rdg-s", "--ckpt", ckpt, "--data", store, "--table", table, "--plot", plot,
                    "--segment-frames", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(table.open()))
    assert rows[0] == ["metric", "model", "synthetic_000", "synthetic_001", "average"]
    body = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert set(m for m, _ in body) == {"psnr", "ssim", "vmaf", "lpips", "ewarp"}
    assert float(body[("psnr", "bicubic")][2]) == pytest.approx(
        (float(body[("psnr", "bicubic")][0]) + float(body[("psnr", "bicubic")][1])) / 2, abs=0.01)
    assert body[("lpips", "rdg-s")] == ["n/a"] * 3
    assert all(float(v) >= 0 for v in body[("ewarp", "bicubic")])  # the synthetic store has rendered motion
    if metrics.vmaf_available():
        assert all(v != "n/a" for v in body[("vmaf", "rdg-s")])
    else:
        assert body[("vmaf", "rdg-s")] == ["n/a"] * 3
    assert "## PSNR (dB)" in proc.stdout  # the Markdown table is printed too
    from PIL import Image

    with Image.open(plot) as im:
        assert im.size[0] > 600 and im.size[1] > 300


def test_recurrent_state_is_reset_per_segment(trained):
    store, ckpt = trained
    whole = evaluate.evaluate([("rdg-s", ckpt)], str(store), sequences=["synthetic_000"], segment_frames=100,
                              vmaf="off", device="cpu")
    split = evaluate.evaluate([("rdg-s", ckpt)], str(store), sequences=["synthetic_000"], segment_frames=2,
                              vmaf="off", device="cpu")
    a, b = whole.per_frame["rdg-s"]["synthetic_000"], split.per_frame["rdg-s"]["synthetic_000"]
    assert len(a) == len(b) == 5
    assert a[:2] == b[:2]  # same start
    assert a[2] != b[2]  # frame 2 starts a new segment: no hidden state from frames 0-1


def test_eval_bad_input(trained, tmp_path, gbuf_cli):
    store, ckpt = trained
    with pytest.raises(GbufError, match=r"checkpoint of model rdg-s, not rdg"):
        evaluate.evaluate([("rdg", ckpt)], str(store), vmaf="off", device="cpu")
    # a weights-only file (as the authors release) of another size names the mismatch
    params = torch.load(ckpt, map_location="cpu", weights_only=True)["params"]
    torch.save({"params": params}, tmp_path / "small.pth")
    with pytest.raises(GbufError, match=r"small.pth: .*(shape|size) mismatch"):
        evaluate.evaluate([("rdg", tmp_path / "small.pth")], str(store), vmaf="off", device="cpu")
    with pytest.raises(GbufError, match=r"needs a checkpoint"):
        evaluate.evaluate([("rdg-s", None)], str(store), vmaf="off", device="cpu")
    with pytest.raises(GbufError, match=r"LPIPS weights file not found"):
        evaluate.evaluate([("bicubic", None)], str(store), vmaf="off", device="cpu", lpips_weights=tmp_path)
    proc = gbuf_cli("eval", "rdg-s", "--data", store)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--ckpt given 0 time(s)" in proc.stderr


def test_the_authors_rdg_s_checkpoint_evaluates(shared_reference, trained):
    """The official RDG_Small.pth (top-level ``params``, with its CycleFC offset constants) loads and
    upscales the synthetic store far better than an untrained network."""
    store, ckpt = trained
    official = shared_reference / "rdg" / "RDG_Small.pth"
    report = evaluate.evaluate([("rdg-s", official), ("rdg-s", ckpt)], str(store), sequences=["synthetic_000"],
                               vmaf="off", device="cpu")
    assert report.models == ["rdg-s", f"rdg-s ({ckpt.name})"]
    assert report.average("rdg-s", "psnr") > 30.0
    assert report.average("rdg-s", "psnr") > report.average(f"rdg-s ({ckpt.name})", "psnr") + 10
