"""Every registered model: it builds (an import error fails, never skips), it trains for 2
iterations on CPU through the real trainer (tiny clips), and the model files keep one copy of
each shared helper."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from gbuf.train import models, trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)

MODELS_DIR = Path(models.__file__).parent
OPS = MODELS_DIR.parent / "ops.py"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # every buffer any model reads (LR and HR G-buffers), one sequence
    return synthetic_store(tmp_path_factory.mktemp("models_store"), sequences=1, frames=4)


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_builds(name):
    """A model file that fails to import (or a constructor that fails) is a failure here."""
    model = models.create(name)
    assert isinstance(model, torch.nn.Module)
    assert model.inputs and model.scale == 4 and isinstance(model.recurrent, bool)


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


# Same name, different layers on purpose: SAFMN's and RDG's convolutional channel mixers are
# one idea, but each official checkpoint names its inner layers differently (ccm.* vs fn.*).
ALLOWED_TWICE = {"CCM"}


def test_model_files_define_each_helper_once():
    """The model files once held drifting copies of flow_warp, check_inputs, SPyNet and the
    residual block. A top-level function or class defined in two of them (or again beside
    ``gbuf.train.ops``) is such a copy; shared code belongs in ``_blocks.py`` or ops.py."""
    homes = defaultdict(list)
    for path in sorted(MODELS_DIR.glob("*.py")) + [OPS]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                homes[node.name].append(path.name)
    copies = {name: files for name, files in homes.items() if len(files) > 1 and name not in ALLOWED_TWICE}
    assert not copies, f"defined in more than one file: {copies}"
    assert {"check_inputs", "SPyNet", "ResidualBlock", "invert_motion"} <= set(homes)  # the test sees them


def test_models_warp_only_through_the_shared_warp():
    """Every warp reads docs/format.md's motion convention through ``ops.backward_warp``: no
    model file calls grid_sample itself (RDG's fused path warps by embedding_bag, and its test
    holds it bit-identical to backward_warp)."""
    callers = []
    for path in sorted(MODELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name == "grid_sample":
                    callers.append(f"{path.name}:{node.lineno}")
    assert not callers, f"grid_sample called outside gbuf.train.ops: {callers}"
