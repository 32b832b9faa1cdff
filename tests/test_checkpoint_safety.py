"""Nothing lost, nothing silently wrong: corrupt checkpoints are refused, a full disk or a bad file is
one line, and a resumed run logs each step once (checkpoint integrity, write failures, log.jsonl)."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import checkpoints, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(1)

#: The CLI's torch threads (``--threads``' variable: the tests run on small shared machines).
ONE_THREAD = {"GBUF_THREADS": "1"}
#: The entry of a gbuf checkpoint holding the SHA-256 of the rest (``checkpoints.DIGEST_KEY``).
DIGEST = "content_sha256"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("safety_store"), sequences=2, frames=5)


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def _flip_a_byte_of(path, entry: str) -> str:
    """Flip one exponent bit inside a tensor of ``entry`` in the file at ``path`` (as a bad disk or
    copy would); returns the tensor's name."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    raw = path.read_bytes()
    for name, tensor in sorted(data[entry].items(), key=lambda kv: -kv[1].numel()):
        if tensor.dtype != torch.float32 or tensor.numel() < 64 or torch.equal(tensor, data["params"].get(name)):
            continue
        blob = tensor.contiguous().numpy().tobytes()
        at = raw.find(blob)
        if at >= 0 and raw.find(blob, at + 1) < 0:
            where = at + 4 * (tensor.numel() // 2) + 3  # the high byte of a middle float32
            path.write_bytes(raw[:where] + bytes([raw[where] ^ 0x40]) + raw[where + 1:])
            changed = torch.load(path, map_location="cpu", weights_only=True)[entry][name]
            assert not torch.equal(changed, tensor)  # the flip landed in the tensor and loads as a number
            return name
    raise AssertionError(f"no tensor of {entry} found once in {path}")


def test_a_flipped_byte_is_refused_by_eval_and_by_resume(store, tmp_path, gbuf_cli):
    run = tmp_path / "run"
    c = tiny_config(store, run, iters=3, frames=2, batch=1)
    c.run.ckpt_every = 2
    trainer.train(c)
    (run / "ckpt" / "step_3.pt").unlink()
    ckpt = run / "ckpt" / "step_2.pt"
    _flip_a_byte_of(ckpt, "params_ema")

    proc = gbuf_cli("eval", "rdg-s", "--ckpt", ckpt, "--data", store, "--device", "cpu", "--vmaf", "off",
                    env=ONE_THREAD)
    err = _one_line_error(proc)
    assert "step_2.pt: corrupt checkpoint" in err and "SHA-256" in err
    proc = gbuf_cli("train", "rdg-s", "--out", run, "--resume", env=ONE_THREAD)
    assert "step_2.pt: corrupt checkpoint" in _one_line_error(proc)


def test_every_entry_is_covered(store, tmp_path):
    from gbuf.train import models

    run = tmp_path / "run"
    trainer.train(tiny_config(store, run, iters=1, frames=2, batch=1))
    path = run / "ckpt" / "step_1.pt"
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(data.get(DIGEST), str) and len(data[DIGEST]) == 64
    # a changed number anywhere -- a weight, the optimiser state, the step -- no longer matches
    edits = [
        lambda d: d["params"]["first_conv.weight"].view(-1)[0].add_(1e-6),
        lambda d: next(iter(d["train_state"]["optimizer"]["state"].values()))["exp_avg"].view(-1)[3].mul_(2),
        lambda d: d["train_state"].__setitem__("step", 2),
        lambda d: d["config"]["optim"].__setitem__("lr", 0.5),
    ]
    for i, edit in enumerate(edits):
        copy = torch.load(path, map_location="cpu", weights_only=True)
        edit(copy)
        torch.save(copy, tmp_path / f"edited_{i}.pt")
        with pytest.raises(GbufError, match=rf"edited_{i}.pt: corrupt checkpoint"):
            checkpoints.load(models.create("rdg-s"), tmp_path / f"edited_{i}.pt")
    assert checkpoints.load(models.create("rdg-s"), path) == "params_ema"  # the untouched file loads


def test_the_authors_files_have_no_digest_and_load_as_before(shared_reference):
    # (weights_only, as always; tests/test_models_rdg.py checks the weights themselves)
    for official in (shared_reference / "rdg" / "RDG_Small.pth",
                     shared_reference / "smfanet" / "SMFANet_DF2K_100w_x4SR.pth"):
        if official.is_file():
            assert DIGEST not in torch.load(official, map_location="cpu", weights_only=True)
            assert checkpoints.read(official)[1] == "params"


def test_a_full_disk_while_saving_leaves_no_partial_file_and_says_one_line(store, tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return real_save(obj, f, *args, **kwargs)
        with open(f, "wb") as out:  # half a file, then the write fails
            out.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    run = tmp_path / "run"
    c = tiny_config(store, run, iters=3, frames=2, batch=1)
    c.run.ckpt_every = 1
    with pytest.raises(GbufError) as caught:
        trainer.train(c)
    message = str(caught.value)
    assert "\n" not in message
    assert "step_2.pt: cannot write the checkpoint (No space left on device)" in message
    assert "last good checkpoint is" in message and message.endswith("step_1.pt")
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["step_1.pt"]  # no step_2.pt.tmp
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoints.read(run / "ckpt" / "step_1.pt")[1] == "params_ema"  # the last good one is whole


def test_a_config_that_is_not_utf8_is_one_line(store, tmp_path, gbuf_cli):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('model = "rdg-s"\n# r\xe9sum\xe9\n[data]\nframes = 2\n'.encode("latin-1"))
    proc = gbuf_cli("train", "rdg-s", "--config", bad, "--data", store, "--out", tmp_path / "run", env=ONE_THREAD)
    assert "latin1.toml: not UTF-8" in _one_line_error(proc)


@pytest.fixture
def resumable(store, tmp_path):
    """A run of 2 steps whose newest checkpoint is step_1.pt; yields (run dir, that checkpoint)."""
    run = tmp_path / "run"
    c = tiny_config(store, run, iters=2, frames=2, batch=1)
    c.run.ckpt_every = 1
    trainer.train(c)
    (run / "ckpt" / "step_2.pt").unlink()
    return run, run / "ckpt" / "step_1.pt"


def _rewrite(path, edit) -> None:
    data = torch.load(path, map_location="cpu", weights_only=True)
    data.pop(DIGEST, None)  # written as a file without a digest, as older ones are
    edit(data)
    torch.save(data, path)


MALFORMED = {
    "not a table": lambda d: d.__setitem__("train_state", "step=1"),
    "no data order": lambda d: d["train_state"].pop("data_order"),
    "step as text": lambda d: d["train_state"].__setitem__("step", "1"),
    "optimizer of another model": lambda d: d["train_state"].__setitem__(
        "optimizer", {"state": {}, "param_groups": [{"params": [0], "lr": 1e-3}]}),
    "rng without its parts": lambda d: d["train_state"].__setitem__("rng", [{"python": 5}]),
    "data order without world": lambda d: d["train_state"]["data_order"].pop("world"),
    "scheduler of garbage": lambda d: d["train_state"].__setitem__("scheduler", {"last_epoch": "x", "_step_count": []}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_train_state_on_resume_is_one_line(resumable, case):
    run, ckpt = resumable
    _rewrite(ckpt, MALFORMED[case])
    config = trainer.resolve_config(out=str(run), resume=True)
    with pytest.raises(GbufError, match=r"step_1\.pt: malformed train_state") as caught:
        trainer.train(config, resume=True)
    assert "\n" not in str(caught.value)


def test_a_malformed_train_state_through_the_cli(resumable, gbuf_cli):
    run, ckpt = resumable
    _rewrite(ckpt, MALFORMED["no data order"])
    proc = gbuf_cli("train", "rdg-s", "--out", run, "--resume", env=ONE_THREAD)
    assert "step_1.pt: malformed train_state (data_order is missing" in _one_line_error(proc)


def test_a_resumed_run_logs_each_step_once(store, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def config():
        c = tiny_config(store, run, iters=6, frames=2, batch=1)
        c.run.ckpt_every, c.run.val_every = 3, 3  # (a validation that improves saves too)
        return c

    # The process dies during step 5: steps 1-4 (and the validation at 3) are logged, the newest
    # checkpoint is step 3, and a half-written line and checkpoint are left behind.
    real_loss = trainer.rdg_loss
    calls = {"n": 0}

    def dies_at_step_5(pred, target, weights):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("killed")
        return real_loss(pred, target, weights)

    monkeypatch.setattr(trainer, "rdg_loss", dies_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train(config())
    monkeypatch.setattr(trainer, "rdg_loss", real_loss)
    with open(run / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')
    (run / "ckpt" / "step_6.pt.tmp").write_bytes(b"PK\x03\x04")
    assert sorted(p.name for p in (run / "ckpt").glob("step_*.pt")) == ["step_3.pt"]

    trainer.train(trainer.resolve_config(out=str(run), resume=True), resume=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_psnr" in r] == [3, 6]
    assert not list((run / "ckpt").glob("*.tmp"))


SAVED_SETTINGS = {
    "config of the wrong kind": (lambda d: d.__setitem__("config", 3), "saved config is not a table"),
    "config.data of the wrong kind": (lambda d: d["config"].__setitem__("data", [1]), "saved config is not a table"),
    "model_options as text": (lambda d: d.__setitem__("model_options", "x"), "model_options is a str"),
    "an option the model lacks": (lambda d: d.__setitem__("model_options", {"colour": 1}),
                                  "model_options do not build rdg-s"),
    "an unknown normalisation": (lambda d: d["config"]["data"].__setitem__("normalize", 7),
                                 "config.data.normalize 7 is not one of"),
}


@pytest.mark.parametrize("case", list(SAVED_SETTINGS))
def test_saved_model_settings_of_the_wrong_kind_are_one_line(resumable, case):
    """Found by the fuzz (benchmarks/fuzz_store.py): fields beside the weights, with a matching hash."""
    from gbuf.train import inference

    edit, message = SAVED_SETTINGS[case]
    _run, ckpt = resumable
    _rewrite(ckpt, edit)
    for weights in ("ema", "params"):
        with pytest.raises(GbufError, match=message):
            inference.load_model("rdg-s", ckpt, weights=weights)
