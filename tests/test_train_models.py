"""Every registered model trains for 2 iterations on CPU through the real trainer (tiny clips)."""

from __future__ import annotations

import pytest
import torch

from gbuf.train import models, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # every buffer any model reads (LR and HR G-buffers), one sequence
    return synthetic_store(tmp_path_factory.mktemp("models_store"), sequences=1, frames=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_model_trains_two_iterations(name, store, tmp_path):
    c = tiny_config(store, tmp_path / "run", model=name, iters=2, frames=2, patch=64, batch=1)
    result = trainer.train(c)
    assert result.step == 2 and not result.interrupted
    saved = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert saved["model"] == name and saved["train_state"]["step"] == 2
    # the weights moved, and stayed finite
    torch.manual_seed(0)
    initial = models.create(name).state_dict()
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, saved["params"][k])]
    assert changed, f"{name}: no parameter changed in 2 iterations"
    assert all(torch.isfinite(v).all() for v in saved["params"].values() if v.is_floating_point())
