"""The RDG training loss: Charbonnier + temporal consistency + FFT.

All three take video tensors ``(B, T, C, H, W)`` (prediction and target in the
network's image domain) and return a scalar. They are computed in float32 even
under autocast, because the square root near zero (Charbonnier with eps^2 =
1e-12) and the FFT lose too much in half precision.

The weights of the recipe (RDG, CVPR 2025, official training options): 1.0 x
Charbonnier + 1.0 x temporal consistency + 0.05 x FFT.
"""

from __future__ import annotations

import dataclasses


def charbonnier(pred, target, eps: float = 1e-12):
    """``mean(sqrt((pred - target)^2 + eps))``; ``eps`` is the squared epsilon (1e-12)."""
    import torch

    diff = pred.float() - target.float()
    return torch.sqrt(diff * diff + eps).mean()


def temporal_consistency(pred, target):
    """MSE between the frame-to-frame differences of prediction and target.

    Penalises flicker the target does not have: ``mean((dp_t - dy_t)^2)`` with
    ``dp_t = pred[:, t] - pred[:, t-1]``. Zero for one-frame clips.
    """
    pred = pred.float()
    target = target.float()
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    dp = pred[:, 1:] - pred[:, :-1]
    dt = target[:, 1:] - target[:, :-1]
    return ((dp - dt) ** 2).mean()


def fft_l1(pred, target):
    """Mean absolute difference of the real and imaginary parts of ``rfft2`` (last two axes)."""
    import torch

    fp = torch.fft.rfft2(pred.float())
    ft = torch.fft.rfft2(target.float())
    # Mean over real and imaginary parts alike, i.e. over a (..., 2) view of the spectrum.
    return torch.view_as_real(fp - ft).abs().mean()


@dataclasses.dataclass(frozen=True)
class LossWeights:
    charbonnier: float = 1.0
    charbonnier_eps: float = 1e-12
    temporal: float = 1.0
    fft: float = 0.05


def rdg_loss(pred, target, weights: LossWeights = LossWeights()):
    """The weighted sum and its terms: ``(total, {"charbonnier": .., "temporal": .., "fft": ..})``.

    Terms with weight 0 are not computed (reported as 0).
    """
    terms = {}
    total = None
    for name, weight, fn in (
        ("charbonnier", weights.charbonnier, lambda: charbonnier(pred, target, weights.charbonnier_eps)),
        ("temporal", weights.temporal, lambda: temporal_consistency(pred, target)),
        ("fft", weights.fft, lambda: fft_l1(pred, target)),
    ):
        if weight == 0:
            terms[name] = pred.new_zeros((), dtype=pred.float().dtype)
            continue
        value = fn()
        terms[name] = value.detach()
        total = weight * value if total is None else total + weight * value
    if total is None:
        total = pred.float().sum() * 0.0
    return total, terms
