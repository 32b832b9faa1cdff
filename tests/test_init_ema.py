"""``gbuf train --init CKPT`` (fine-tuning) and an EMA that is right for short runs."""

from __future__ import annotations

import shutil
import tomllib

import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import evaluate, models, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(1)

ONE_THREAD = {"GBUF_THREADS": "1"}
#: A short CPU run from the command line: clips of 2 frames, HR patch 64, batch 1, no validation.
SMALL_RUN = ("--frames", "2", "--patch", "64", "--batch-size", "1", "--workers", "0", "--val-every", "0",
             "--ckpt-every", "0", "--log-every", "1", "--set", "run.tensorboard=false", "--set", "run.progress=false")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("init_store"), sequences=2, frames=5)


def _flat(module_or_state) -> torch.Tensor:
    if isinstance(module_or_state, torch.nn.Module):
        return torch.cat([p.detach().reshape(-1).double() for p in module_or_state.parameters()])
    return torch.cat([v.reshape(-1).double() for v in module_or_state.values()])


def test_init_from_another_models_checkpoint_is_one_line(store, tmp_path, gbuf_cli):
    # SAFMN's keys are not RDG's: the first key rdg-s has that the file lacks is named
    other = tmp_path / "safmn.pth"
    torch.save({"params": models.create("safmn").state_dict()}, other)
    first_key = next(iter(models.create("rdg-s").state_dict()))
    proc = gbuf_cli("train", "rdg-s", "--data", store, "--out", tmp_path / "run", "--iters", "1", *SMALL_RUN,
                    "--init", other, env=ONE_THREAD)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--init {other}: checkpoint does not fit" in proc.stderr and first_key in proc.stderr
    assert not (tmp_path / "run" / "ckpt").exists()  # nothing was trained or written

    # the same architecture at another width: the first mismatching shape is named
    wide = tmp_path / "rdg.pth"
    torch.save({"params": models.create("rdg").state_dict()}, wide)
    c = tiny_config(store, tmp_path / "run2", iters=1, frames=2, batch=1)
    c.init = str(wide)
    with pytest.raises(GbufError, match=rf"--init {wide}: checkpoint does not fit RDG \(\d+ shape mismatches: "
                                        rf"{first_key} "):
        trainer.train(c)
    # a file without the asked-for entry
    c.init, c.init_weights = str(tmp_path / "bare.pth"), "params"
    torch.save({"params_ema": models.create("rdg-s").state_dict()}, c.init)
    with pytest.raises(GbufError, match=r"bare.pth: no entry 'params'"):
        trainer.train(c)


def test_a_short_fine_tune_of_the_authors_rdg_s_keeps_its_quality(shared_reference, store, tmp_path, gbuf_cli):
    """5 steps at lr 1e-5 from RDG_Small.pth, scored with gbuf eval's defaults (the EMA weights),
    lose less than 0.5 dB against RDG_Small.pth itself: the run starts from those weights, and so
    does its EMA (an EMA started anywhere else, or one at 0.999 from random weights, scores far
    lower). The bound is one-sided: on this synthetic store the 5 steps gain about 0.4 dB
    (34.82 -> 35.24 dB measured)."""
    official = shared_reference / "rdg" / "RDG_Small.pth"
    if not official.is_file():
        pytest.skip(f"{official} not found")
    init = tmp_path / "RDG_Small.pth"
    shutil.copyfile(official, init)
    run = tmp_path / "run"
    proc = gbuf_cli("train", "rdg-s", "--data", store, "--out", run, "--iters", "5", "--lr", "1e-5", *SMALL_RUN,
                    "--init", init, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert f"initialised from {init} (params)" in proc.stderr
    saved = tomllib.loads((run / "config.toml").read_text())
    assert (saved["init"], saved["init_weights"]) == (str(init), "ema")  # recorded in the run's config
    ckpt = run / "ckpt" / "step_5.pt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["config"]["init"] == str(init)

    report = evaluate.evaluate([("rdg-s", official), ("rdg-s", ckpt)], str(store), vmaf="off", device="cpu",
                               threads=1)
    before, after = report.average("rdg-s", "psnr"), report.average("rdg-s (step_5.pt)", "psnr")
    assert before > 30.0, before
    assert after > before - 0.5, (before, after)
    assert any("rdg-s (step_5.pt): params_ema of step_5.pt" in note for note in report.notes), report.notes

    # a resumed run takes its weights from its checkpoint, not from --init (which may be gone)
    init.unlink()
    resumed = trainer.train(trainer.resolve_config(out=str(run), resume=True), resume=True)
    assert resumed.step == 5


def test_the_ema_follows_a_short_run(store, tmp_path):
    """After 5 steps from random weights with the default decay (0.999), the EMA weights are near the
    trained ones, not near the initial ones (a decay of 0.999 from step 0 keeps 99.5 % of those)."""
    c = tiny_config(store, tmp_path / "run", iters=5, frames=2, batch=1)
    assert c.optim.ema_decay == 0.999
    result = trainer.train(c)
    torch.manual_seed(c.run.seed)
    start = _flat(models.create("rdg-s"))  # the trainer's initial weights (the same seed)
    raw, ema = _flat(result.model), _flat(result.ema_model)
    moved = (raw - start).norm()
    assert moved > 0
    assert (ema - raw).norm() < 0.5 * moved, ((ema - raw).norm() / moved).item()
    assert (ema - start).norm() > 0.5 * moved


def test_the_ema_warm_up_rule():
    ema = trainer.EMA(torch.nn.Linear(2, 2), 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(8) == pytest.approx(0.5)
    assert ema.decay_at(890) == pytest.approx(0.99)
    assert ema.decay_at(8991) == 0.999 and ema.decay_at(10**6) == 0.999
    assert trainer.EMA(torch.nn.Linear(2, 2), 0.999, warmup=False).decay_at(0) == 0.999
    # the update averages with that decay: the first one leaves 10 % of the start
    start = torch.nn.Linear(2, 2)
    ema = trainer.EMA(start, 0.999)
    moved = torch.nn.Linear(2, 2)
    ema.update(moved, 0)
    assert torch.allclose(ema.model.weight, 0.1 * start.weight + 0.9 * moved.weight)
