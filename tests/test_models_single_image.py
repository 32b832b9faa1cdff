"""SMFANet and SAFMN: parameter counts, the official SMFANet checkpoint, per-frame use, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import checkpoints, models


@pytest.mark.parametrize("name, expected", [("smfanet", 197_328), ("safmn", 239_520)])
def test_parameter_counts_match_the_paper(name, expected):
    model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert tuple(model.inputs) == ("image",) and model.scale == 4 and not model.recurrent


@pytest.mark.parametrize("name", ["smfanet", "safmn"])
def test_forward_backward_per_frame(name):
    torch.manual_seed(0)
    model = models.create(name)
    clip = {"image": torch.rand(2, 3, 3, 9, 12)}
    out = model(clip)
    assert out.shape == (2, 3, 3, 36, 48)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Frames are independent: each equals the model run on that frame alone.
    model.eval()
    with torch.no_grad():
        whole = model(clip)
        single = model({"image": clip["image"][:, 1:2]})
    assert torch.allclose(whole[:, 1:2], single, atol=1e-6)


def test_official_smfanet_checkpoint_reproduces_the_reference_output(shared_reference):
    folder = shared_reference / "smfanet"
    data = np.load(folder / "smfanet_io_seed0.npz")
    model = models.create("smfanet").eval()
    assert checkpoints.load(model, folder / "SMFANet_DF2K_100w_x4SR.pth") == "params"
    with torch.no_grad():
        out = model({"image": torch.from_numpy(data["image"])[:, None]})[:, 0]
    assert out.shape == data["output"].shape
    assert np.abs(out.numpy() - data["output"]).max() <= 1e-4


def test_smfanet_checkpoint_does_not_fit_safmn(shared_reference):
    with pytest.raises(GbufError, match="checkpoint does not fit SAFMN"):
        checkpoints.load(models.create("safmn"), shared_reference / "smfanet" / "SMFANet_DF2K_100w_x4SR.pth")


@pytest.mark.parametrize("name", ["smfanet", "safmn"])
def test_bad_input(name):
    model = models.create(name)
    with pytest.raises(GbufError, match="missing buffer 'image'"):
        model({"depth": torch.rand(1, 1, 1, 16, 16)})
    with pytest.raises(GbufError, match="needs at least 8x8"):
        model({"image": torch.rand(1, 1, 3, 4, 16)})
    with pytest.raises(GbufError, match=r"expected \(B, T, 3, H, W\)"):
        model({"image": torch.rand(1, 3, 16, 16)})
