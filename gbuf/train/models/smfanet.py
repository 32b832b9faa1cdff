"""SMFANet: spatially-adaptive feature modulation with self-modulation, for single images.

Zheng, Sun, Dong and Pan, ECCV 2024 (official code: github.com/Zheng-MJ/SMFANet). Registered as
``smfanet``: ``dim=36``, 8 blocks, FFN ratio 2, x4 -> 197,328 parameters, as in the RDG paper's
comparison. A single-image model: ``forward`` upscales each frame's ``image`` on its own.

Structure (the skeleton it shares with SAFMN: ``_blocks.SingleImageSR``): conv3x3 to ``dim``
-> ``n_blocks`` FMBs -> (+ the conv3x3 features) -> conv3x3 to ``3 * scale**2`` -> PixelShuffle.
An FMB is two residual steps on channel-L2-normalised input:

- SMFA: a 1x1 conv splits into ``y`` and ``x``. The non-local branch max-pools ``x`` to 1/8 size,
  applies a depth-wise 3x3, mixes in the per-channel spatial variance of ``x`` (``alpha * s +
  belt * var``), a 1x1 conv and GELU, upsamples (nearest) and multiplies ``x``. The local branch
  is a depth-wise 3x3 + 1x1 expansion, GELU, 1x1 projection of ``y`` (``lde``). The sum of
  both goes through a final 1x1 conv.
- PCFN: 1x1 expansion + GELU, a 3x3 conv + GELU on the first quarter of the hidden channels,
  1x1 projection.

Conventions: RGB in [0, 1] in and out (unclamped); the variance is the unbiased one
(``torch.var``'s default), as in the official code. H and W must be at least 8 (the
non-local branch pools to ``H // 8 x W // 8``). Official checkpoint keys are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.train.models._blocks import SingleImageSR


class DMlp(nn.Module):
    """Depth-wise 3x3 + 1x1 expansion, GELU, 1x1 projection (the local detail branch)."""

    def __init__(self, dim: int, growth: float = 2.0):
        super().__init__()
        hidden = int(dim * growth)
        self.conv_0 = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1, groups=dim), nn.Conv2d(hidden, hidden, 1))
        self.act = nn.GELU()
        self.conv_1 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(self.act(self.conv_0(x)))


class PCFN(nn.Module):
    """Partial-convolution feed-forward: only the first ``p_rate`` of the hidden channels see a 3x3."""

    def __init__(self, dim: int, growth: float = 2.0, p_rate: float = 0.25):
        super().__init__()
        hidden = int(dim * growth)
        self.partial = int(hidden * p_rate)
        self.conv_0 = nn.Conv2d(dim, hidden, 1)
        self.conv_1 = nn.Conv2d(self.partial, self.partial, 3, 1, 1)
        self.act = nn.GELU()
        self.conv_2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv_0(x))
        spatial, passthrough = x[:, :self.partial], x[:, self.partial:]
        return self.conv_2(torch.cat([self.act(self.conv_1(spatial)), passthrough], dim=1))


class SMFA(nn.Module):
    """Self-modulation feature aggregation (see the module docstring)."""

    def __init__(self, dim: int = 36, down_scale: int = 8):
        super().__init__()
        self.down_scale = down_scale
        self.linear_0 = nn.Conv2d(dim, 2 * dim, 1)
        self.linear_1 = nn.Conv2d(dim, dim, 1)
        self.linear_2 = nn.Conv2d(dim, dim, 1)
        self.lde = DMlp(dim, 2)
        self.dw_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.gelu = nn.GELU()
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.belt = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h, w = f.shape[-2:]
        y, x = self.linear_0(f).chunk(2, dim=1)
        pooled = self.dw_conv(F.adaptive_max_pool2d(x, (h // self.down_scale, w // self.down_scale)))
        variance = torch.var(x, dim=(-2, -1), keepdim=True)
        modulation = self.gelu(self.linear_1(pooled * self.alpha + variance * self.belt))
        non_local = x * F.interpolate(modulation, size=(h, w), mode="nearest")
        return self.linear_2(non_local + self.lde(y))


class FMB(nn.Module):
    def __init__(self, dim: int, ffn_scale: float = 2.0):
        super().__init__()
        self.smfa = SMFA(dim)
        self.pcfn = PCFN(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smfa(F.normalize(x, dim=1)) + x
        return self.pcfn(F.normalize(x, dim=1)) + x


class SMFANet(SingleImageSR):
    """SMFANet x``scale`` applied frame by frame to ``batch["image"]``."""

    name = "smfanet"

    def __init__(self, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0, scale: int = 4):
        super().__init__(dim, lambda: nn.Sequential(*[FMB(dim, ffn_scale) for _ in range(n_blocks)]), scale)
