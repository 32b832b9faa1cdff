"""SAFMN: spatially-adaptive feature modulation network, for single images.

Sun, Dong, Tang and Pan, ICCV 2023 (official code: github.com/sunny2109/SAFMN). Registered as
``safmn``: ``dim=36``, 8 blocks, FFN ratio 2, x4 -> 239,520 parameters, as in the RDG paper's
comparison. A single-image model: ``forward`` upscales each frame's ``image`` on its own.

Structure (the skeleton it shares with SMFANet: ``_blocks.SingleImageSR``): conv3x3 to ``dim``
-> ``n_blocks`` attention blocks -> (+ the conv3x3 features) -> conv3x3 to ``3 * scale**2`` ->
PixelShuffle. A block is ``x + SAFM(LN(x))`` then
``x + CCM(LN(x))`` with a channel LayerNorm (eps 1e-6):

- SAFM splits the channels into 4 groups; group 0 gets a depth-wise 3x3, group i > 0 is
  max-pooled to ``1/2**i`` size, depth-wise 3x3, nearest-upsampled back. A 1x1 conv aggregates
  the groups and ``GELU(aggregate) * x`` modulates the input.
- CCM: conv3x3 (x2 channels), GELU, conv1x1.

Conventions: RGB in [0, 1] in and out (unclamped). H and W must be at least 8 (the coarsest
group pools to 1/8). Official checkpoint keys are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.train.models._blocks import SingleImageSR


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(N, C, H, W)``."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation over ``levels`` scales."""

    def __init__(self, dim: int, levels: int = 4):
        super().__init__()
        self.levels = levels
        group = dim // levels
        self.mfr = nn.ModuleList([nn.Conv2d(group, group, 3, 1, 1, groups=group) for _ in range(levels)])
        self.aggr = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for level, (part, conv) in enumerate(zip(x.chunk(self.levels, dim=1), self.mfr)):
            if level == 0:
                out.append(conv(part))
            else:
                pooled = F.adaptive_max_pool2d(part, (h // 2**level, w // 2**level))
                out.append(F.interpolate(conv(pooled), size=(h, w), mode="nearest"))
        return self.act(self.aggr(torch.cat(out, dim=1))) * x


class CCM(nn.Module):
    def __init__(self, dim: int, growth: float = 2.0):
        super().__init__()
        hidden = int(dim * growth)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    def __init__(self, dim: int, ffn_scale: float = 2.0):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.norm2 = ChannelLayerNorm(dim)
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(SingleImageSR):
    """SAFMN x``scale`` applied frame by frame to ``batch["image"]``."""

    name = "safmn"

    def __init__(self, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0, scale: int = 4):
        super().__init__(dim, lambda: nn.Sequential(*[AttBlock(dim, ffn_scale) for _ in range(n_blocks)]), scale)
