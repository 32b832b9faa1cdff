"""STAR's dynamic-frequency loss (``loss.dynamic_frequency``): the split, the weights over
training progress on targets with known spectra, STAR's formula, and its use by the trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gbuf.errors import GbufError
from gbuf.train import config as cfg
from gbuf.train import losses, trainer
from train_helpers import synthetic_store, tiny_config

H = W = 32


def pattern(kind: str) -> torch.Tensor:
    """(1, 2, 3, H, W) clips with one known spectrum: a cosine of one cycle across the image
    (all low spatial frequency) or a checkerboard (the Nyquist frequency, all high)."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    image = torch.cos(2 * math.pi * xs / W) if kind == "low" else (-1.0) ** (xs + ys)
    return (0.25 * image).expand(1, 2, 3, H, W).clone()


def star_reference(pred, target, progress, alpha=2.0, quantile=0.8, sharpness=10.0):
    """STAR's formula written out independently (torch.quantile, explicit masks) on the
    progress axis: c = (1 - p)^alpha, c * L1(low) + (1 - c) * L1(high)."""
    def split(x):
        spectrum = torch.fft.rfft2(x.flatten(0, 1))  # per frame
        magnitude = spectrum.abs()
        low = torch.sigmoid(sharpness * (torch.quantile(magnitude, quantile) - magnitude))
        return torch.view_as_real(spectrum * low), torch.view_as_real(spectrum * (1 - low))

    (lp, hp), (lt, ht) = split(pred), split(target)
    c = (1 - progress) ** alpha
    return c * torch.nn.functional.l1_loss(lp, lt) + (1 - c) * torch.nn.functional.l1_loss(hp, ht)


def test_exact_quantile_matches_torch():
    x = torch.rand(3, 7, 11, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.25, 0.8, 0.999, 1.0):
        assert torch.allclose(losses.exact_quantile(x, q), torch.quantile(x.flatten(), q), atol=1e-7)


def test_the_parts_add_up_to_the_spectrum_and_the_split_is_by_what_it_says():
    x = torch.rand(1, 2, 3, H, W, generator=torch.Generator().manual_seed(1))
    for split in losses.FREQUENCY_SPLITS:
        low, high = losses.spectral_split(x, split=split)
        assert torch.allclose(low + high, torch.view_as_real(torch.fft.rfft2(x)), atol=1e-5)
    # frequency split: a one-cycle cosine is all low, a checkerboard all high
    for kind, part in (("low", 0), ("high", 1)):
        parts = losses.spectral_split(pattern(kind), split="frequency")
        assert parts[1 - part].abs().max() < 1e-6 * parts[part].abs().max()
    # STAR's split is by magnitude: the few large coefficients of a smooth image (here the DC
    # and the cosine's pair) are its "high" part, however low their spatial frequency
    low, high = losses.spectral_split(pattern("low") + 0.5)
    assert low.abs().max() < 1e-6 * high.abs().max()


@pytest.mark.parametrize("split", losses.FREQUENCY_SPLITS)
def test_known_spectra_move_the_loss_as_the_weights_say(split):
    """Predicting zero: the error is the target's spectrum, all in one part, so the loss is
    that part's L1 times its weight, (1 - p)^2 for low and 1 - (1 - p)^2 for high."""
    zero = torch.zeros(1, 2, 3, H, W)
    # with the magnitude split every sparse spectrum is "high"; a frequency split tells them apart
    targets = {"low": pattern("low"), "high": pattern("high")} if split == "frequency" else {"high": pattern("low")}
    for part, target in targets.items():
        full = losses.dynamic_frequency(zero, target, progress=0.0 if part == "low" else 1.0, split=split)
        assert full > 0.05
        for p in (0.0, 0.25, 0.5, 0.75, 1.0):
            share = (1 - p) ** 2 if part == "low" else 1 - (1 - p) ** 2
            value = losses.dynamic_frequency(zero, target, progress=p, split=split)
            assert value.item() == pytest.approx(share * full.item(), rel=1e-5, abs=1e-6 * full.item()), (part, p)
    if split == "frequency":  # early training weights the low target's error, late the high one's
        early = [losses.dynamic_frequency(zero, targets[k], 0.0, split=split) for k in ("low", "high")]
        late = [losses.dynamic_frequency(zero, targets[k], 1.0, split=split) for k in ("low", "high")]
        assert early[0] > 1e3 * early[1] and late[1] > 1e3 * late[0]


def test_star_formula_gradients_and_ramp():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 3, 16, 20, generator=g)
    pred = (target + 0.1 * torch.randn(2, 3, 3, 16, 20, generator=g)).requires_grad_()
    for p in (0.0, 0.3, 1.0):
        ours = losses.dynamic_frequency(pred, target, p, alpha=1.5, quantile=0.7, sharpness=5.0)
        assert torch.allclose(ours, star_reference(pred, target, p, 1.5, 0.7, 5.0), rtol=1e-5)
    loss = losses.dynamic_frequency(pred, target, 0.5)
    loss.backward()  # STAR's code takes no gradient through this term; gbuf does
    assert pred.grad.abs().sum() > 0
    assert losses.dynamic_frequency(pred, target, 0.0, ramp=True) == 0
    ramped = losses.dynamic_frequency(pred, target, 0.5, ramp=True)
    assert ramped.item() == pytest.approx(0.5 * loss.item(), rel=1e-6)


def test_rdg_loss_adds_the_term_only_when_weighted():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(1, 2, 3, 16, 16, generator=g), torch.rand(1, 2, 3, 16, 16, generator=g)
    _, terms = losses.rdg_loss(pred, target)
    assert set(terms) == {"charbonnier", "temporal", "fft"}  # the recipe logs what it always did
    weights = losses.LossWeights(dynamic_frequency=0.5).at_step(3, 7)
    assert weights.progress == 0.5
    total, terms = losses.rdg_loss(pred, target, weights)
    assert terms["dynamic_frequency"] == pytest.approx(losses.dynamic_frequency(pred, target, 0.5).item())
    assert total.item() == pytest.approx((terms["charbonnier"] + terms["temporal"] + 0.05 * terms["fft"]
                                          + 0.5 * terms["dynamic_frequency"]).item(), rel=1e-6)
    assert losses.LossWeights().at_step(0, 1).progress == 0.0
    assert losses.LossWeights().at_step(9, 10).progress == 1.0
    with pytest.raises(GbufError, match="loss.dynamic_frequency_quantile must be in"):
        losses.LossWeights(dynamic_frequency_quantile=1.5)
    with pytest.raises(GbufError, match="loss.dynamic_frequency_split"):
        losses.LossWeights(dynamic_frequency_split="radius")


def test_config_keys_and_the_trainer_moves_progress(tmp_path, monkeypatch):
    c = cfg.TrainConfig()
    cfg.set_dotted(c, "loss.dynamic_frequency_split", "frequency")
    with pytest.raises(GbufError, match="dynamic_frequency_split"):
        cfg.set_dotted(c, "loss.dynamic_frequency_split", "radius")
    assert "loss.dynamic_frequency" in cfg.TRAJECTORY_KEYS

    store = synthetic_store(tmp_path, sequences=1, frames=3)
    seen = []
    real = trainer.rdg_loss

    def spy(pred, target, weights):
        seen.append(weights.progress)
        return real(pred, target, weights)

    monkeypatch.setattr(trainer, "rdg_loss", spy)
    run = tiny_config(store, tmp_path / "run", iters=3, frames=2, batch=1)
    run.loss.dynamic_frequency = 0.01
    result = trainer.train(run)
    assert result.step == 3 and seen == [0.0, 0.5, 1.0]
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_dynamic_frequency" in r]
    assert len(steps) == 3 and all(math.isfinite(r["loss_dynamic_frequency"]) for r in steps)
