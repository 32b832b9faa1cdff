"""Exact resumption: a run interrupted with Ctrl-C (SIGINT) and resumed ends bit-identical to an
uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)

ITERS = 6


def _final(run_dir):
    return torch.load(run_dir / "ckpt" / f"step_{ITERS}.pt", map_location="cpu", weights_only=True)


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    store = synthetic_store(tmp_path / "store", sequences=2, frames=6)

    def config(out):
        c = tiny_config(store, out, iters=ITERS, frames=3, batch=2, seed=5)
        c.optim.ema_decay = 0.9
        c.run.val_every = 3  # validation (and best.pt) in the middle must not disturb anything
        return c

    whole = trainer.train(config(tmp_path / "whole"))
    assert whole.step == ITERS and not whole.interrupted

    # Press Ctrl-C during step 4: the step finishes, a checkpoint is saved, the run stops.
    real_loss = trainer.rdg_loss
    calls = {"n": 0}

    def loss_with_ctrl_c(pred, target, weights):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(pred, target, weights)

    monkeypatch.setattr(trainer, "rdg_loss", loss_with_ctrl_c)
    first = trainer.train(config(tmp_path / "split"))
    monkeypatch.setattr(trainer, "rdg_loss", real_loss)
    assert first.interrupted and first.step == 4
    assert first.checkpoint.name == "step_4.pt" and first.checkpoint.is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    # Resume the way the CLI does: the run's saved config, then the newest checkpoint.
    resumed_config = trainer.resolve_config(out=str(tmp_path / "split"), resume=True)
    assert resumed_config == config(tmp_path / "split")
    second = trainer.train(resumed_config, resume=True)
    assert second.step == ITERS and not second.interrupted

    a, b = _final(tmp_path / "whole"), _final(tmp_path / "split")
    for key in ("params", "params_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    sa, sb = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert a["train_state"]["scheduler"] == b["train_state"]["scheduler"]
    assert a["train_state"]["best_psnr"] == b["train_state"]["best_psnr"]
    # and the interruption really changed the path taken: the run was split in two processes of work
    assert calls["n"] == 4


def test_resume_refuses_to_change_the_trajectory(tmp_path):
    store = synthetic_store(tmp_path / "store", sequences=1, frames=4)
    c = tiny_config(store, tmp_path / "run", iters=1, frames=2, batch=1)
    trainer.train(c)
    with pytest.raises(GbufError, match=r"--resume cannot change data.batch_size: 1 -> 3"):
        trainer.resolve_config(overrides={"data.batch_size": 3}, out=str(tmp_path / "run"), resume=True)
    # options that do not change the run's path may differ
    ok = trainer.resolve_config(overrides={"run.device": "cpu", "data.workers": 0}, out=str(tmp_path / "run"),
                                resume=True)
    assert ok.data.batch_size == 1
