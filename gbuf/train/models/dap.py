"""DAP: fast online video super-resolution with a deformable attention pyramid.

Fuoli, Danelljan, Timofte, Van Gool, "Fast Online Video Super-Resolution with Deformable
Attention Pyramid", WACV 2023 (arXiv 2202.01731). The paper reports DAP-128 at 38 ms per frame
on UDM10 and a speed-up of over 3x against EDVR-M at higher PSNR. No official code is public.

What the paper states, and this file does:

- **Strictly causal, recurrent.** Frame t is super-resolved from LR frame t and a recurrent
  state carried from frame t-1; no future frame is read. ``step(frame, state)`` is the whole
  model, ``forward`` streams a clip through it.
- **Alignment by a deformable attention pyramid.** The recurrent state is aligned to the current
  frame and integrated into its prediction by attention in which each query pixel attends to a
  few spatial locations only, predicted dynamically (from the content), over a pyramid.
- **Image only**, and ``num_feat=128`` is DAP-128, the configuration the paper times.

The layers below are gbuf's: the paper's method section (layer counts, widths, how the pyramid
and the offsets are formed) was not available while this was written, so every one of these is
a choice, made for the stated design (causal, few attended locations, coarse to fine, fast):

1. Features: 3x3 conv (3 -> C) + LeakyReLU(0.1) + one residual block on LR frame t
   (``C = num_feat``).
2. Queries from the current features, keys and values from the state (the previous frame's
   hidden features, in frame t-1's pixel grid): 1x1 convs (C -> C and C -> 2C). Their pyramid of
   ``num_levels`` levels: level l+1 is a 3x3, stride-2 average pool of level l. Pooling the
   projections needs no weights, is cheap (like the image pyramids of coarse-to-fine flow
   networks, SPyNet) and keeps each level's keys in its queries' feature space.
3. Deformable attention, coarsest level first, ``num_heads`` M = 4 heads with ``num_points``
   K = 4 points each (per head, as Deformable DETR). At each level an offset network (3x3 conv
   to C/2, LeakyReLU, 3x3 conv to M*K*2) reads the queries, the keys sampled where the current
   offsets point (their mean over the points) and, below the coarsest level, the upsampled
   aligned features of the level beneath; it adds residual offsets to the upsampled offsets of
   that level (doubled: the pixels halve). Keys and values are sampled bilinearly at the K
   locations (``gbuf.train.ops.backward_warp``, zeros outside the frame); the attention weights
   are the softmax over the K points of the scaled query-key dot products; the aligned feature
   is the weighted sum of the values, projected by a 1x1 conv. Three levels: a coarsest pixel is
   4 LR pixels wide, so the search reaches several LR pixels before the finer levels refine it.
4. Fusion and reconstruction: concat(current features, aligned state at full LR resolution) ->
   3x3 conv (2C -> C) + LeakyReLU(0.1) + ``num_blocks`` = 5 residual blocks = the new state; 3x3
   conv to 3 * scale^2 and one pixel shuffle, plus the bilinear upsampling of the LR frame. One
   x4 shuffle from LR-size features (not two x2 stages) keeps the HR-size work minimal.

- Initialisation: the last conv of every offset network starts at zero, so the network starts
  from the upsampled offsets; the coarsest level's bias places the K points of head m on a ring
  of radius 1 (coarsest pixels), rotated per head, so the points start apart (K coincident
  points would get identical gradients and never separate). At full resolution the ring has
  radius 2^(L-1) LR pixels around the start.
- State: the hidden features only (one ``(B, C, h, w)`` tensor, ``state_names = ("hidden",)``),
  zeros before the first frame (``initial_state``); gradients flow through the whole training
  clip (no truncation).
- The parameter count (2,869,456 for DAP-128) is this file's, not a figure from the paper;
  ``docs/training.md`` lists it with the measured latency.

New to gbuf: ``use_motion=True`` (registered as ``dap-motion``) seeds the pyramid's offsets with
the rendered motion (batch key ``motion``: LR pixels, displacement from frame t to t-1, x right,
y down; docs/format.md). The state lives in frame t-1's grid, so ``p + motion(p)`` is where
pixel p's surface was: at every level the offsets are that motion (pooled like the features and
halved per level) plus what the network predicts, which is then only the residual the rendered
motion leaves (disocclusions, shading that moves unlike the geometry). With zero residual
offsets the aligned state is the state warped by the motion (``tests/test_dap.py`` checks it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.errors import GbufError
from gbuf.train.models._blocks import ResidualBlock, check_inputs, conv3x3, stream
from gbuf.train.ops import backward_warp


def pyramid_pool(x: torch.Tensor) -> torch.Tensor:
    """One pyramid level down: 3x3 average, stride 2 (level-l+1 pixel i sits on level-l pixel 2i)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def upsample_offsets(offsets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Offsets ``(B, N*2, h, w)`` (x, y pairs, in pixels of their level) to the finer ``size``,
    in that level's pixels (scaled by the size ratio per axis)."""
    b, c, h, w = offsets.shape
    up = F.interpolate(offsets, size=size, mode="bilinear", align_corners=False)
    ratio = offsets.new_tensor([size[1] / w, size[0] / h]).view(1, 1, 2, 1, 1)
    return (up.view(b, c // 2, 2, *size) * ratio).view(b, c, *size)


class DeformableAttentionLevel(nn.Module):
    """One pyramid level: refine the offsets, sample K points per head, attend."""

    def __init__(self, channels: int, heads: int, points: int, coarsest: bool):
        super().__init__()
        self.heads, self.points, self.coarsest = heads, points, coarsest
        inputs = channels * (2 if coarsest else 3)  # queries, sampled keys (, aligned level below)
        self.offset_net = nn.Sequential(conv3x3(inputs, channels // 2), nn.LeakyReLU(0.1, inplace=True),
                                        conv3x3(channels // 2, heads * points * 2))
        self.project = nn.Conv2d(channels, channels, 1)
        head = self.offset_net[-1]
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        if coarsest:
            angles = [2 * math.pi * (k / points + m / (heads * points)) for m in range(heads) for k in range(points)]
            with torch.no_grad():
                head.bias.copy_(torch.tensor([[math.cos(a), math.sin(a)] for a in angles]).flatten())

    def forward(self, query, key_value, seed, offsets, below):
        """``query`` (B, C, h, w), ``key_value`` (B, 2C, h, w) from the state; ``seed`` (B, 2, h, w)
        motion or None; ``offsets`` (B, M*K*2, h, w) from the level below (upsampled) or None;
        ``below`` its aligned features (upsampled) or None. Returns (aligned, offsets), the
        offsets without the seed."""
        b, c, h, w = query.shape
        m, k = self.heads, self.points
        centre = seed
        if offsets is not None:
            mean = offsets.view(b, m * k, 2, h, w).mean(dim=1)
            centre = mean if centre is None else centre + mean
        keys = key_value[:, :c]
        looked_at = keys if centre is None else backward_warp(keys, centre, padding_mode="zeros")
        guide = [query, looked_at] + ([] if below is None else [below])
        delta = self.offset_net(torch.cat(guide, dim=1))
        offsets = delta if offsets is None else offsets + delta

        points = offsets.view(b, m, k, 2, h, w)
        if seed is not None:
            points = points + seed.view(b, 1, 1, 2, h, w)
        d = c // m
        # (B, 2C) -> per head (B*M, 2d): the head's key and value channels side by side.
        per_head = key_value.view(b, 2, m, d, h, w).transpose(1, 2).reshape(b * m, 2 * d, h, w)
        repeated = per_head.unsqueeze(1).expand(b * m, k, 2 * d, h, w).reshape(b * m * k, 2 * d, h, w)
        sampled = backward_warp(repeated, points.reshape(b * m * k, 2, h, w), padding_mode="zeros")
        sampled = sampled.view(b * m, k, 2 * d, h, w)
        q = query.reshape(b * m, 1, d, h, w)
        weights = torch.softmax((sampled[:, :, :d] * q).sum(dim=2) * d ** -0.5, dim=1)  # (B*M, K, h, w)
        aligned = (sampled[:, :, d:] * weights.unsqueeze(2)).sum(dim=1).view(b, c, h, w)
        return self.project(aligned), offsets


class DAP(nn.Module):
    """DAP, x4: ``forward({"image": (B, T, 3, h, w)[, "motion": ...]}) -> (B, T, 3, 4h, 4w)``."""

    recurrent = True
    #: Names of the state tensors (ONNX input names of the exported step).
    state_names = ("hidden",)

    def __init__(self, num_feat: int = 128, num_levels: int = 3, num_heads: int = 4, num_points: int = 4,
                 num_blocks: int = 5, use_motion: bool = False, scale: int = 4):
        super().__init__()
        if num_feat < 2 or num_feat % (2 * num_heads):
            raise GbufError(f"dap: num_feat ({num_feat}) must be a multiple of 2 x num_heads ({num_heads})")
        if num_levels < 1 or num_points < 1 or num_heads < 1 or num_blocks < 0:
            raise GbufError("dap: num_levels, num_heads and num_points must be >= 1, num_blocks >= 0")
        c = num_feat
        self.num_feat, self.num_levels, self.scale, self.use_motion = c, num_levels, scale, use_motion
        self.inputs = ("image", "motion") if use_motion else ("image",)
        self.extract = nn.Sequential(conv3x3(3, c), nn.LeakyReLU(0.1, inplace=True), ResidualBlock(c))
        self.to_query = nn.Conv2d(c, c, 1)
        self.to_key_value = nn.Conv2d(c, 2 * c, 1)
        # levels[0] is full LR resolution, levels[-1] the coarsest
        self.levels = nn.ModuleList(DeformableAttentionLevel(c, num_heads, num_points, coarsest=i == num_levels - 1)
                                    for i in range(num_levels))
        self.fuse = conv3x3(2 * c, c)
        self.body = nn.Sequential(*[ResidualBlock(c) for _ in range(num_blocks)])
        self.to_image = conv3x3(c, 3 * scale * scale)

    def align(self, features: torch.Tensor, hidden: torch.Tensor, motion: torch.Tensor | None = None):
        """The state ``hidden`` (frame t-1's grid) aligned to frame t's ``features``; ``motion``
        (B, 2, h, w) seeds the offsets (None: no seed)."""
        queries, key_values, seeds = [self.to_query(features)], [self.to_key_value(hidden)], [motion]
        for _ in range(self.num_levels - 1):
            queries.append(pyramid_pool(queries[-1]))
            key_values.append(pyramid_pool(key_values[-1]))
            seeds.append(None if motion is None else pyramid_pool(seeds[-1]) * 0.5)
        aligned = offsets = None
        for level in reversed(range(self.num_levels)):
            size = tuple(queries[level].shape[-2:])
            if offsets is not None:
                offsets = upsample_offsets(offsets, size)
                aligned = F.interpolate(aligned, size=size, mode="bilinear", align_corners=False)
            aligned, offsets = self.levels[level](queries[level], key_values[level], seeds[level], offsets, aligned)
        return aligned

    def initial_state(self, frame: dict) -> tuple[torch.Tensor]:
        """The state before the first frame: zero hidden features."""
        image = frame["image"]
        return (image.new_zeros(image.shape[0], self.num_feat, *image.shape[-2:]),)

    def step(self, frame: dict, state=None):
        """One frame (``(B, C, h, w)`` per key of ``inputs``); ``state`` None starts a sequence.
        Returns ``(output (B, 3, sh, sw), (hidden,))``."""
        check_inputs("dap", frame, self.inputs, self.scale, ndim=4)
        image = frame["image"]
        if state is None:
            state = self.initial_state(frame)
        (hidden,) = state
        motion = frame["motion"].to(image.dtype) if self.use_motion else None
        features = self.extract(image)
        aligned = self.align(features, hidden, motion)
        hidden = self.body(F.leaky_relu(self.fuse(torch.cat((features, aligned), dim=1)), 0.1))
        out = F.pixel_shuffle(self.to_image(hidden), self.scale)
        out = out + F.interpolate(image, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out, (hidden,)

    def forward(self, batch: dict) -> torch.Tensor:
        check_inputs("dap", batch, self.inputs, self.scale, ndim=5)
        return stream(self.step, batch, self.inputs)
