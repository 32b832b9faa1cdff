"""gbuf train: losses, configuration, a short rdg-s run that lowers the loss, checkpoints, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import config as cfg
from gbuf.train import checkpoints, losses, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("train_store"))


# --- losses -------------------------------------------------------------------------------------


def test_losses_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 4, 3, 8, 10, generator=g)
    target = torch.rand(2, 4, 3, 8, 10, generator=g)
    d = (pred - target).double()
    assert losses.charbonnier(pred, target).item() == pytest.approx(torch.sqrt(d * d + 1e-12).mean().item(), rel=1e-6)
    dp, dt = pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1]
    assert losses.temporal_consistency(pred, target).item() == pytest.approx(((dp - dt) ** 2).mean().item(), rel=1e-6)
    # FFT term: mean |Re| and |Im| of the rfft2 difference, written out with numpy
    spec = np.fft.rfft2(pred.numpy().astype(np.float64)) - np.fft.rfft2(target.numpy().astype(np.float64))
    expected = np.concatenate([np.abs(spec.real).ravel(), np.abs(spec.imag).ravel()]).mean()
    assert losses.fft_l1(pred, target).item() == pytest.approx(expected, rel=1e-5)
    total, terms = losses.rdg_loss(pred, target)
    assert total.item() == pytest.approx((terms["charbonnier"] + 1.0 * terms["temporal"] + 0.05 * terms["fft"]).item(),
                                         rel=1e-6)
    # identical clips: only the Charbonnier floor sqrt(eps) = 1e-6 remains
    total, _ = losses.rdg_loss(target, target)
    assert total.item() == pytest.approx(1e-6, rel=1e-3)


# --- configuration ------------------------------------------------------------------------------


def test_defaults_are_the_rdg_recipe():
    c = cfg.TrainConfig()
    assert (c.data.frames, c.data.patch, c.data.batch_size) == (15, 384, 16)
    assert (c.optim.lr, c.optim.betas, c.optim.ema_decay) == (1e-3, [0.9, 0.99], 0.999)
    assert (c.schedule.iters, c.schedule.eta_min) == (300_000, 1e-7)
    assert (c.loss.charbonnier, c.loss.charbonnier_eps, c.loss.temporal, c.loss.fft) == (1.0, 1e-12, 1.0, 0.05)
    # cosine from lr to eta_min
    assert trainer.cosine_factor(0, 100, 1e-3, 1e-7) == 1.0
    assert trainer.cosine_factor(100, 100, 1e-3, 1e-7) * 1e-3 == pytest.approx(1e-7)
    assert trainer.cosine_factor(50, 100, 1e-3, 1e-7) * 1e-3 == pytest.approx((1e-3 + 1e-7) / 2)


def test_config_files_flags_and_saved_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('model = "rdg-s"\n[data]\nframes = 7\npatch = 128\n[optim]\nlr = 5e-4\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("data:\n  frames: 7\n  patch: 128\noptim:\n  lr: 0.0005\nmodel: rdg-s\n")
    a = trainer.resolve_config(config_file=toml, overrides={"data.patch": 64, "run.out": str(tmp_path / "r")})
    b = trainer.resolve_config(config_file=yaml, overrides={"data.patch": 64, "run.out": str(tmp_path / "r")})
    assert a == b
    assert (a.model, a.data.frames, a.data.patch, a.optim.lr, a.data.batch_size) == ("rdg-s", 7, 64, 5e-4, 16)
    # the saved form is itself a config file that gives back the same configuration
    cfg.save(a, tmp_path / "saved.toml")
    assert cfg.load_file(tmp_path / "saved.toml") == a

    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\npach = 3\n")
    with pytest.raises(GbufError, match=r"bad.toml: unknown option data.pach"):
        cfg.load_file(bad)
    bad.write_text('[data]\nframes = "many"\n')
    with pytest.raises(GbufError, match=r"data.frames must be an integer"):
        cfg.load_file(bad)
    bad.write_text("[data\n")
    with pytest.raises(GbufError, match=r"cannot parse config"):
        cfg.load_file(bad)


# --- training -----------------------------------------------------------------------------------


def _fixed_batch(store, frames=3, patch=64):
    import gbuf.datasets as gd

    ds = gd.CropDataset(store, frames=frames, patch=patch, lr_buffers=["image", "depth", "normal", "motion", "brdf"],
                        hr_buffers=["image"], normalize="rdg", length=4, seed=123)
    return {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}


def _loss_of(model, batch):
    with torch.no_grad():
        out = model({k: batch[k] for k in model.inputs})
    return losses.rdg_loss(out, batch["hr_image"])[0].item()


def test_a_few_rdg_s_iterations_lower_the_loss(store, tmp_path):
    from gbuf.train import models

    c = tiny_config(store, tmp_path / "run", iters=12, batch=2)
    c.optim.ema_decay = 0.5  # so the EMA weights follow within 12 steps
    c.run.tensorboard = True
    c.run.val_every = 6
    c.run.ckpt_every = 6
    result = trainer.train(c)
    assert result.step == 12 and not result.interrupted

    batch = _fixed_batch(store)
    torch.manual_seed(0)
    initial = models.create("rdg-s").eval()
    before, after = _loss_of(initial, batch), _loss_of(result.model.eval(), batch)
    assert after < 0.8 * before, (before, after)
    assert _loss_of(result.ema_model, batch) < before

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert all(math.isfinite(r["loss"]) and {"loss_charbonnier", "loss_temporal", "loss_fft"} <= r.keys()
               for r in steps)
    vals = [r for r in log if "val_psnr" in r]
    assert [r["step"] for r in vals] == [6, 12]
    assert any((run / "tb").glob("events.out.tfevents.*"))
    # checkpoints: params / params_ema (official key names) + training state; best by validation PSNR
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["best.pt", "step_12.pt", "step_6.pt"]
    saved = torch.load(run / "ckpt" / "step_12.pt", map_location="cpu", weights_only=True)
    assert {"params", "params_ema", "train_state"} <= saved.keys()
    assert saved["train_state"]["step"] == 12
    # the models' loader reads the weights back exactly (tests/test_train.py::test_checkpoint_keys_...
    # checks the key names against the authors' own file)
    fresh = models.create("rdg-s")
    assert checkpoints.load(fresh, run / "ckpt" / "step_12.pt", key="params") == "params"
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), result.model.state_dict().values()))
    assert "first_conv.weight" in saved["params"]
    assert (run / "config.toml").is_file()
    assert cfg.load_file(run / "config.toml") == c


def test_checkpoint_keys_are_the_official_ones(shared_reference, store, tmp_path):
    """``params`` / ``params_ema`` hold exactly the keys and shapes of the authors' RDG_Small.pth,
    so the official code, which loads strictly, reads gbuf's checkpoints."""
    trainer.train(tiny_config(store, tmp_path / "run", iters=1, frames=2, batch=1))
    ours = torch.load(tmp_path / "run" / "ckpt" / "step_1.pt", map_location="cpu", weights_only=True)
    official = torch.load(shared_reference / "rdg" / "RDG_Small.pth", map_location="cpu", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in official["params"].items()}
    for key in ("params", "params_ema"):
        assert {k: tuple(v.shape) for k, v in ours[key].items()} == shapes
    for k, v in official["params"].items():
        if k.endswith(".offset"):  # the constants are the same too
            assert torch.equal(ours["params"][k].float(), v.float()), k


def test_keep_last_k_checkpoints(store, tmp_path):
    c = tiny_config(store, tmp_path / "run", model="rdg-s", iters=4, frames=2, batch=1)
    c.run.ckpt_every, c.run.keep_last = 1, 2
    trainer.train(c)
    assert sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir()) == ["step_3.pt", "step_4.pt"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(store, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = trainer.rdg_loss

    def poisoned(pred, target, weights):
        calls["n"] += 1
        total, terms = real(pred, target, weights)
        return (total * float("nan"), terms) if calls["n"] == 3 else (total, terms)

    monkeypatch.setattr(trainer, "rdg_loss", poisoned)
    c = tiny_config(store, tmp_path / "run", iters=5, frames=2, batch=1)
    c.run.ckpt_every = 1
    with pytest.raises(GbufError, match=r"loss became nan at step 3.*last good checkpoint is .*step_2\.pt"):
        trainer.train(c)
    names = sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir())
    assert names == ["step_1.pt", "step_2.pt"]
    good = torch.load(tmp_path / "run" / "ckpt" / "step_2.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in good["params"].values())


def test_train_runs_with_its_thread_count_and_without_dataloader_noise(store, tmp_path, monkeypatch):
    import os
    import warnings

    seen = []
    real = trainer.rdg_loss

    def recording(pred, target, weights):
        seen.append(torch.get_num_threads())
        return real(pred, target, weights)

    monkeypatch.setattr(trainer, "rdg_loss", recording)
    c = tiny_config(store, tmp_path / "run", iters=1, frames=2, batch=1)
    c.data.workers = len(os.sched_getaffinity(0)) + 1  # more workers than cores: torch's DataLoader warns
    c.run.progress = True
    calls = []
    torch.set_num_threads(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer.train(c, threads=2, progress=lambda label, done, total: calls.append((label, done, total)))
    assert seen == [2] and result.threads == 2  # torch.get_num_threads() inside the step
    # the one progress callback: before the first step, then after each (the label has the loss)
    assert [(d, t) for _, d, t in calls] == [(0, 1), (1, 1)] and "loss" in calls[-1][0]
    assert torch.get_num_threads() == 1  # restored after the call
    assert not [w for w in caught if "DataLoader will create" in str(w.message)], [str(w.message) for w in caught]
    torch.set_num_threads(2)


def test_bad_input_is_named(store, tmp_path):
    # a store without the G-buffers RDG reads
    plain = synthetic_store(tmp_path / "plain", sequences=1, buffers=("image", "motion"))
    with pytest.raises(GbufError, match=r"model rdg-s needs buffer\(s\) depth, normal, brdf"):
        trainer.train(tiny_config(plain, tmp_path / "r1"))
    # clips longer than the sequences
    c = tiny_config(store, tmp_path / "r2", frames=20)
    with pytest.raises(GbufError, match=r"no sequence has 20 frames"):
        trainer.train(c)
    # an LR group that is not there
    c = tiny_config(store, tmp_path / "r3")
    c.data.lr_group = "lr_bicubic_x4"
    with pytest.raises(GbufError, match=r"no resolution group 'lr_bicubic_x4'"):
        trainer.train(c)
    # resuming with nothing to resume
    with pytest.raises(GbufError, match=r"no saved configuration to resume"):
        trainer.resolve_config(overrides={"data.path": str(store)}, out=str(tmp_path / "none"), resume=True)
