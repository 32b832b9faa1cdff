"""The RDG training loss: Charbonnier + temporal consistency + FFT.

All three take video tensors ``(B, T, C, H, W)`` (prediction and target in the
network's image domain) and return a scalar. They are computed in float32 even
under autocast, because the square root near zero (Charbonnier with eps^2 =
1e-12) and the FFT lose too much in half precision.

The weights of the recipe (RDG, CVPR 2025, official training options): 1.0 x
Charbonnier + 1.0 x temporal consistency + 0.05 x FFT.

Optional, off in the recipe: STAR's dynamic-frequency loss (``dynamic_frequency``, below), whose
weight moves from the low- to the high-frequency part of the spectrum as training progresses.
"""

from __future__ import annotations

import dataclasses
import math

from gbuf.errors import GbufError


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


# -- STAR's dynamic-frequency loss ----------------------------------------------------------
#
# Xie et al., "STAR: Spatial-Temporal Augmentation with Text-to-Video Models for Real-World Video
# Super-Resolution" (2025), DF loss, as the official training code computes it (NJU-PCALab/STAR,
# video_super_resolution/scripts/train_sr.py and the CogVideoX variant's loss.py, read for the
# facts; not copied):
#
# - every frame's rfft2 (the clip reshaped to frames), its magnitude |F|;
# - a cutoff at the 80th percentile of |F| over the whole tensor (all frames, channels and
#   samples of the batch; prediction and target each get their own), and a soft mask
#   ``low = sigmoid(10 (cutoff - |F|))``, ``high = 1 - low``;
# - L1 between the masked spectra (real and imaginary parts), low and high apart;
# - ``c = (t / 999)^2`` over the diffusion timestep t, ``loss = c low + (1 - c) high``, times
#   0.01 and times ``1 - t / 999``.
#
# gbuf's feed-forward models have no timesteps: the weight moves with training progress p (0 at
# the first step, 1 at the last), ``t / 999 -> 1 - p``, so ``c = (1 - p)^alpha``: early training
# weights the low part, late training the high part, as STAR's early (noisy) and late (clean)
# timesteps do. STAR's outer ``1 - t / 999`` factor is there because the x0 estimate of a
# very noisy step is unreliable; a feed-forward prediction has no such step, so that factor
# (``p``) applies only with ``ramp=True``. The 0.01 is the term's weight, ``dynamic_frequency``.
#
# Differences from STAR's code, each on purpose:
# - the percentile is exact (``kthvalue``); STAR estimates it from 10,000 random coefficients
#   when there are more, which would draw from the global RNG and break bit-exact resumption;
# - gradients flow: STAR decodes its prediction under ``torch.no_grad()``, so there the term
#   carries no gradient at all (it only shifts the reported loss);
# - ``split="frequency"`` (not STAR's) splits by spatial frequency instead of magnitude: STAR's
#   split is by *magnitude*, so its "low" part is the 80% of coefficients with the smallest
#   magnitudes, which in natural and rendered images (spectra falling with frequency) are mostly
#   the high spatial frequencies, the reverse of what the paper describes. ``"frequency"``
#   thresholds the radius of each coefficient (cycles per image along the longer side) at the
#   same percentile with the same sigmoid, so "low" means low spatial frequency.

FREQUENCY_SPLITS = ("magnitude", "frequency")


def exact_quantile(values, q: float):
    """The ``q`` quantile of all elements of ``values`` (linear interpolation, as
    ``torch.quantile``, which refuses inputs over 2^24 elements)."""
    import torch

    flat = values.reshape(-1)
    position = q * (flat.numel() - 1)
    below = int(math.floor(position))
    above = min(below + 1, flat.numel() - 1)
    low = torch.kthvalue(flat, below + 1).values
    if above == below:
        return low
    return low + (torch.kthvalue(flat, above + 1).values - low) * (position - below)


def frequency_radius(height: int, width: int, device=None):
    """(H, W//2+1): each rfft2 coefficient's spatial frequency, in cycles per image along the
    longer side (the distance from DC in frequency bins, with both axes in the same units)."""
    import torch

    longer = max(height, width)
    fy = torch.fft.fftfreq(height, device=device) * longer
    fx = torch.fft.rfftfreq(width, device=device) * longer
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def spectral_split(x, quantile: float = 0.8, sharpness: float = 10.0, split: str = "magnitude"):
    """``(low, high)``: the rfft2 of every frame of ``x`` (last two axes) with STAR's soft mask
    around the ``quantile`` of ``|F|`` (``split="magnitude"``) or of the spatial frequency
    (``"frequency"``), each as a real view ``(..., H, W//2+1, 2)``; ``low + high`` is the spectrum."""
    import torch

    spectrum = torch.fft.rfft2(x.float())
    if split == "magnitude":
        size = spectrum.abs()
    elif split == "frequency":
        size = frequency_radius(*x.shape[-2:], device=x.device)
    else:
        raise ValueError(f"split must be one of {FREQUENCY_SPLITS}, not {split!r}")
    low_mask = torch.sigmoid(sharpness * (exact_quantile(size, quantile) - size))
    return torch.view_as_real(spectrum * low_mask), torch.view_as_real(spectrum * (1.0 - low_mask))


def low_frequency_share(progress: float, alpha: float = 2.0) -> float:
    """The weight of the low part at training ``progress`` in [0, 1]: ``(1 - p)^alpha`` (STAR's
    ``(t / 999)^alpha`` with ``t / 999 = 1 - p``); the high part gets the rest."""
    return (1.0 - min(max(float(progress), 0.0), 1.0)) ** alpha


def dynamic_frequency(pred, target, progress: float, alpha: float = 2.0, quantile: float = 0.8,
                      sharpness: float = 10.0, split: str = "magnitude", ramp: bool = False):
    """STAR's dynamic-frequency loss at training ``progress`` (0 first step, 1 last); see above."""
    share = low_frequency_share(progress, alpha)
    low_p, high_p = spectral_split(pred, quantile, sharpness, split)
    low_t, high_t = spectral_split(target, quantile, sharpness, split)
    loss = share * (low_p - low_t).abs().mean() + (1.0 - share) * (high_p - high_t).abs().mean()
    return loss * min(max(float(progress), 0.0), 1.0) if ramp else loss


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The loss terms' weights and parameters (the fields of ``TrainConfig.loss``), and where
    training is (``progress``: 0 at the first step, 1 at the last; see ``at_step``)."""

    charbonnier: float = 1.0
    charbonnier_eps: float = 1e-12
    temporal: float = 1.0
    fft: float = 0.05
    dynamic_frequency: float = 0.0
    dynamic_frequency_alpha: float = 2.0
    dynamic_frequency_quantile: float = 0.8
    dynamic_frequency_sharpness: float = 10.0
    dynamic_frequency_split: str = "magnitude"
    dynamic_frequency_ramp: bool = False
    progress: float = 0.0

    def __post_init__(self):
        checks = [
            ("split", self.dynamic_frequency_split in FREQUENCY_SPLITS, f"one of {', '.join(FREQUENCY_SPLITS)}"),
            ("quantile", 0.0 <= self.dynamic_frequency_quantile <= 1.0, "in [0, 1]"),
            ("alpha", self.dynamic_frequency_alpha >= 0.0, ">= 0"),
            ("sharpness", self.dynamic_frequency_sharpness > 0.0, "> 0"),
        ]
        for name, ok, wanted in checks:
            if not ok:
                value = getattr(self, f"dynamic_frequency_{name}")
                raise GbufError(f"loss.dynamic_frequency_{name} must be {wanted}, got {value!r}")

    def at_step(self, step: int, total: int) -> "LossWeights":
        """These weights at 0-based ``step`` of ``total``: progress ``step / (total - 1)``."""
        return dataclasses.replace(self, progress=min(step / max(total - 1, 1), 1.0))


def rdg_loss(pred, target, weights: LossWeights = LossWeights()):
    """The weighted sum and its terms: ``(total, {"charbonnier": .., "temporal": .., "fft": ..})``.

    Terms with weight 0 are not computed (reported as 0); the dynamic-frequency term is reported
    (as ``"dynamic_frequency"``) only when its weight is not 0, so the recipe logs what it did.
    """
    w = weights
    dynamic = ()
    if w.dynamic_frequency != 0:
        dynamic = (("dynamic_frequency", w.dynamic_frequency, lambda: dynamic_frequency(
            pred, target, w.progress, w.dynamic_frequency_alpha, w.dynamic_frequency_quantile,
            w.dynamic_frequency_sharpness, w.dynamic_frequency_split, w.dynamic_frequency_ramp)),)
    terms = {}
    total = None
    for name, weight, fn in (
        ("charbonnier", weights.charbonnier, lambda: charbonnier(pred, target, weights.charbonnier_eps)),
        ("temporal", weights.temporal, lambda: temporal_consistency(pred, target)),
        ("fft", weights.fft, lambda: fft_l1(pred, target)),
        *dynamic,
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
