"""torchrun: 2 CPU processes (gloo) train with DistributedDataParallel; rank 0 writes the checkpoint.

Two ranks with batch 1 read the same crops as one process with batch 2 (the step-indexed sampler
splits each step's samples between ranks), and DDP averages the gradients, so both runs must reach
the same weights up to floating-point summation order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from train_helpers import synthetic_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process(tmp_path, gbuf_cli):
    store = synthetic_store(tmp_path / "store", sequences=1, frames=4)
    common = ["--data", str(store), "--iters", "2", "--frames", "2", "--patch", "64", "--workers", "0",
              "--device", "cpu", "--val-every", "0", "--set", "run.tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "gbuf", "train", "rdg-s", "--out", str(tmp_path / "ddp"),
         "--batch-size", "1", *common],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained rdg-s to step 2") == 1  # rank 0 alone reports and writes
    assert "Grad strides do not match bucket view strides" not in proc.stderr, proc.stderr[-3000:]
    single = gbuf_cli("train", "rdg-s", "--out", tmp_path / "one", "--batch-size", "2", *common)
    assert single.returncode == 0, single.stderr

    ddp = torch.load(tmp_path / "ddp" / "ckpt" / "step_2.pt", map_location="cpu", weights_only=True)
    one = torch.load(tmp_path / "one" / "ckpt" / "step_2.pt", map_location="cpu", weights_only=True)
    assert ddp["train_state"]["data_order"]["world"] == 2 and len(ddp["train_state"]["rng"]) == 2
    assert not any(k.startswith("module.") for k in ddp["params"])  # unwrapped key names
    for key in one["params"]:
        torch.testing.assert_close(ddp["params"][key], one["params"][key], atol=1e-5, rtol=1e-4)
    torch.manual_seed(0)
    from gbuf.train import models

    initial = models.create("rdg-s").state_dict()
    assert any(not torch.equal(initial[k], ddp["params"][k]) for k in initial)  # it did train


def test_ddp_searches_for_unused_parameters_only_when_a_model_has_some():
    """RDG's CTR alpha gets no gradient (DDP must look for it); SAFMN uses every parameter, so DDP's
    per-step search, and torch's complaint about it, are avoided."""
    from gbuf.train import models
    from gbuf.train.trainer import unused_parameters

    torch.manual_seed(0)
    rdg = models.create("rdg-s")
    before = torch.get_rng_state()
    unused = unused_parameters(rdg, (16, 16), 2, torch.device("cpu"))
    assert unused and all(name.endswith("alpha") for name in unused), unused
    assert torch.equal(torch.get_rng_state(), before)  # the run's random stream is untouched
    assert all(p.grad is None for p in rdg.parameters())  # tried on a copy
    assert unused_parameters(models.create("safmn"), (16, 16), 2, torch.device("cpu")) == []
