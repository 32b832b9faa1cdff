"""FuseSR-Direct: super-resolution for real-time rendering with HR G-buffer fusion.

Zhong, Zhu, Dai, Wang, Zhang, Chen, Huo, "FuseSR: Super Resolution for Real-time
Rendering through Efficient Multi-resolution Fusion", SIGGRAPH Asia 2023
(official code: github.com/Isaac-Paradox/FuseSR). This is the *Direct* variant the
RDG paper compares with (no demodulation, HR G-buffers fused directly):
2,247,014 parameters, the official count to the digit (BatchNorm's affine
weights included).

Per frame t it reads the LR colour, depth, normal and motion (``image``, ``depth``,
``normal``, ``motion``; motion in the gbuf convention: pixels, displacement from
frame t to t-1, x right, y down), the same of the 2 previous frames, and the HR
G-buffers ``hr_brdf`` (the albedo), ``hr_depth``, ``hr_normal``:

1. Encoder (shared by all three frames): colour + depth + normal (7) -> 3x3 conv
   (64, ReLU) = "shallow" features, then six conv-BN-ReLU layers (64, 32, 24, 24,
   32, 32). The current frame's 32 channels are expanded to 64 (conv + ReLU).
2. Each previous frame's encoder features are warped to t with its accumulated
   motion (nearest-neighbour sampling, zeros outside) and multiplied by a
   motion-vector attention map: from (motion, that frame's depth, current depth),
   sum(ReLU(conv) + ReLU(conv)) over channels -> tanh -> 1-channel conv + ReLU.
3. HR fusion: albedo, depth, normal at HR (7 channels) pixel-unshuffled x4 to LR
   (112) -> 3x3 conv (64, ReLU).
4. Backbone over current (64) + 2 previous (32 each) + HR (64) = 192 channels:
   conv to 128 + ReLU and 6 residual blocks.
5. Upsampling: backbone + shallow features (192) -> conv to 3 * 16, pixel shuffle
   x4, then a 3x3 conv + ReLU refinement.

Deviations and choices (gbuf):

- Albedo: the ``hr_brdf`` buffer (diffuse colour + glossy colour) by default;
  ``albedo="diffuse_color"`` reads ``hr_diffuse_color`` instead.
- Motion for the attention input is in the official units (fraction of the crop
  size times 2, as grid_sample coordinates); warping uses gbuf pixels and pixel
  centres. The official code builds its grid from linspace(-1, 1) but samples with
  ``align_corners=False``, a sub-pixel offset not reproduced here.
- The motion to frame t-2 is the composition ``m_t + m_{t-1}(p + m_t)`` (bilinear);
  the official code adds ``m_t`` warped by ``m_{t-1}`` to ``m_{t-1}``.
- Previous frames' encoder features are computed once, when the frame is current,
  and carried in the state; the official code re-encodes the history every frame
  (same values in eval mode; in training, BatchNorm running statistics are updated
  once per frame instead of three times).
- The first frames of a sequence lack predecessors: the missing ones are the first
  frame itself with zero motion.
- Depth that is not finite (background, +inf) enters as 0.

Streaming: ``recurrent`` is True; ``step(frame, state)`` takes one frame (LR keys
(B, C, h, w), HR keys (B, C, 4h, 4w)) and the state (None to start) and returns the
(B, 3, 4h, 4w) output and the new state. ``forward`` equals stepping through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train.models._blocks import (ResidualBlock, check_inputs, compose_motion, conv3x3, finite_depth,
                                       push_history, stream)
from gbuf.train.ops import backward_warp

ALBEDO_BUFFERS = ("brdf", "diffuse_color")


class Encoder(nn.Module):
    """colour + depth + normal -> (shallow 64-channel features, 32-channel features)."""

    def __init__(self):
        super().__init__()
        self.shallow = nn.Sequential(conv3x3(7, 64), nn.ReLU(inplace=True))
        widths = (64, 64, 32, 24, 24, 32, 32)
        layers = []
        for i in range(len(widths) - 1):
            layers += [conv3x3(widths[i], widths[i + 1]), nn.BatchNorm2d(widths[i + 1]), nn.ReLU(inplace=True)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        shallow = self.shallow(x)
        return shallow, self.main(shallow)


class MotionVectorAttention(nn.Module):
    """(motion, previous depth, current depth) -> one non-negative weight per pixel."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.key = conv3x3(channels, channels)
        self.query = conv3x3(channels, channels)
        self.value = conv3x3(1, 1)

    def forward(self, x):
        energy = (F.relu(self.key(x)) + F.relu(self.query(x))).sum(dim=1, keepdim=True)
        return F.relu(self.value(torch.tanh(energy)))


class FuseSR(nn.Module):
    """FuseSR-Direct, x4, with HR albedo/depth/normal."""

    scale = 4
    recurrent = True
    num_previous = 2

    def __init__(self, channels: int = 128, num_blocks: int = 6, albedo: str = "brdf"):
        super().__init__()
        if albedo not in ALBEDO_BUFFERS:
            raise GbufError(f"fusesr: unknown albedo buffer {albedo!r}; use one of {', '.join(ALBEDO_BUFFERS)}")
        self.albedo_key = fmt.hr_key(albedo)
        self.inputs = ("image", "depth", "normal", "motion", self.albedo_key, fmt.hr_key("depth"),
                       fmt.hr_key("normal"))
        s = self.scale
        self.encoder = Encoder()
        self.current_expand = nn.Sequential(conv3x3(32, 64), nn.ReLU(inplace=True))
        self.attention = MotionVectorAttention()
        self.hr_compact = nn.Sequential(conv3x3(7 * s * s, 64), nn.ReLU(inplace=True))
        self.backbone = nn.Sequential(
            conv3x3(64 + 32 * self.num_previous + 64, channels), nn.ReLU(inplace=True),
            # PyTorch's default initialisation, as the official ResBlock (no 0.1 scaling)
            *[ResidualBlock(channels, init_scale=None) for _ in range(num_blocks)],
        )
        self.upsample = conv3x3(channels + 64, 3 * s * s)
        self.refine = nn.Sequential(conv3x3(3, 3), nn.ReLU(inplace=True))

    def step(self, frame: dict, state=None):
        """One frame. ``state``: None, or ``(features (B, 2, 32, h, w), depth (B, 2, 1, h, w),
        motion (B, 2, 2, h, w))`` of the 2 previous frames (motion accumulated from the last one)."""
        check_inputs("fusesr", frame, self.inputs, self.scale, ndim=4)
        image = frame["image"]
        dtype = image.dtype
        depth = finite_depth(frame["depth"], dtype)
        shallow, features = self.encoder(torch.cat((image, depth, frame["normal"].to(dtype)), dim=1))
        b, _, h, w = features.shape
        n = self.num_previous

        if state is None:
            history = features.unsqueeze(1).expand(b, n, *features.shape[1:])
            history_depth = depth.unsqueeze(1).expand(b, n, *depth.shape[1:])
            accumulated = features.new_zeros(b, n, 2, h, w)
        else:
            history, history_depth, previous_accumulated = state
            motion = frame["motion"].to(dtype)
            accumulated = compose_motion(previous_accumulated, motion)

        # the attention sees motion as grid_sample offsets (2 = the crop's size)
        to_grid = features.new_tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
        aligned = []
        for k in range(n):
            flow = accumulated[:, k]
            warped = backward_warp(history[:, k], flow, padding_mode="zeros", mode="nearest")
            weight = self.attention(torch.cat((flow * to_grid, history_depth[:, k], depth), dim=1))
            aligned.append(warped * weight)

        hr_gbuffer = torch.cat((frame[self.albedo_key].to(dtype),
                                finite_depth(frame["hr_depth"], dtype),
                                frame["hr_normal"].to(dtype)), dim=1)
        hr_features = self.hr_compact(F.pixel_unshuffle(hr_gbuffer, self.scale))
        x = self.backbone(torch.cat([self.current_expand(features)] + aligned + [hr_features], dim=1))
        output = self.refine(F.pixel_shuffle(self.upsample(torch.cat((x, shallow), dim=1)), self.scale))

        new_state = (push_history(history, features), push_history(history_depth, depth),
                     push_history(accumulated, accumulated.new_zeros(b, 2, h, w)))
        return output, new_state

    def forward(self, batch: dict):
        check_inputs("fusesr", batch, self.inputs, self.scale, ndim=5)
        return stream(self.step, batch, self.inputs)
