"""NSRD: neural super-resolution for real-time rendering with radiance demodulation.

Li, Chen, Wang, Ji, Xu, Wang, "Neural Super-Resolution for Real-time Rendering with
Radiance Demodulation", CVPR 2024 (official code: github.com/Riga2/NSRD). The
configuration of the paper and of the RDG paper's table (``n_feats=32``, 2 previous
frames, x4): 1,610,852 parameters, the official count to the digit (BatchNorm's
affine weights included, its running statistics are buffers).

Idea: super-resolve the *lighting* (irradiance = colour / BRDF), which is smooth,
and multiply the HR BRDF back in (remodulation), so texture detail comes from the
HR G-buffer instead of being hallucinated.

Per frame t (batch keys ``image``, ``brdf``, ``normal``, ``depth``, ``motion`` at LR
and ``hr_brdf`` at HR):

1. Demodulation: irradiance = image / brdf (LR).
2. Current frame: irradiance + normal + depth (7 channels) -> 3x3 conv (32).
3. The 2 previous frames (same 7 channels), backward-warped to t with the
   accumulated motion, each with a 1-channel invalid-history mask -> one shared
   gated conv (conv * sigmoid(mask conv), LeakyReLU 0.2, BatchNorm; 32 each).
4. The previous output irradiance (HR), warped to t, pixel-unshuffled x4 (48
   channels) -> 3x3 conv (32).
5. ConvLSTM (hidden 64, one 3x3 gate conv) over the 128 concatenated channels.
6. U-shaped reconstruction of residual channel-attention blocks (RCAB, reduction
   16): 3 | 2 | 3 (centre) | conv + 2 | conv + 3, max pooling down, bilinear
   (corner-aligned) up, concatenated skips; 3x3 conv to 32 channels; 3x3 conv to
   3 * 16 and pixel shuffle x4 -> HR irradiance.
7. Remodulation: output = HR irradiance * ``hr_brdf``.

Deviations and choices (gbuf):

- Demodulation divides by the BRDF only where it is at least ``brdf_epsilon``
  (per channel); elsewhere (background, emitters: BRDF 0) the colour passes
  through unchanged, and remodulation treats the HR BRDF the same way. The
  official pipeline renders irradiance separately and pastes sky/emission back.
- The official invalid-history mask compares Unity's motion vectors with its
  "occlusion motion vectors", which Blender does not render. Here a history pixel
  is invalid where its sample falls outside the frame or its warped depth differs
  from the current depth by more than ``disocclusion_threshold`` (relative).
  Off-frame history pixels take the current frame's values, as in the official code.
- Motion is composed by warping (``acc_k = m_t + acc_{k-1}(p + m_t)``); the official
  code adds the per-frame motion vectors pixel-wise.
- The previous output is warped with the motion upsampled to HR and scaled x4 to
  HR pixels; the official code upsamples the LR motion without rescaling it.
- The model returns the remodulated colour, so a colour loss trains it; the
  official training applies its losses to the irradiance.
- ``detach_state=True`` (default) cuts the gradient through the previous output
  and the ConvLSTM state at every frame, as the official training does
  (``repackage_hidden``/``detach``); False backpropagates through the whole clip.
- The first frame's missing predecessors are the first frame itself with zero
  motion; its previous output and ConvLSTM state are zero (as official).
- Depth that is not finite (background, +inf) enters as 0.
- Inputs are expected linear (``normalize=None`` in the loader): demodulation and
  remodulation assume colour = irradiance * BRDF.

Streaming: ``recurrent`` is True; ``step(frame, state)`` takes one frame (dict of
(B, C, h, w), ``hr_brdf`` (B, 3, 4h, 4w)) and the state (None to start) and returns
the (B, 3, 4h, 4w) output and the new state. ``forward`` equals stepping through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.errors import GbufError
from gbuf.train.models._blocks import check_inputs, compose_motion, conv3x3, finite_depth, push_history, stream
from gbuf.train.ops import backward_warp


def outside_frame(flow):
    """(B, 1, H, W) bool: where ``p + flow(p)`` falls outside the frame."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    sx, sy = xs + flow[:, 0], ys + flow[:, 1]
    return ((sx < 0) | (sx > w - 1) | (sy < 0) | (sy > h - 1)).unsqueeze(1)


class GatedConv(nn.Module):
    """LeakyReLU(conv(x)) * sigmoid(gate conv(x)), then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.gate = conv3x3(in_channels, out_channels)
        self.norm = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.kaiming_normal_(self.gate.weight)

    def forward(self, x):
        return self.norm(F.leaky_relu(self.conv(x), 0.2) * torch.sigmoid(self.gate(x)))


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(y))))


class RCAB(nn.Module):
    """Residual channel-attention block: conv-ReLU-conv-CA plus identity."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.attention = ChannelAttention(channels, reduction)

    def forward(self, x):
        return x + self.attention(self.conv2(F.relu(self.conv1(x))))


class ConvLSTM(nn.Module):
    """Convolutional LSTM cell: one 3x3 conv yields the input, forget, output and cell gates."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = conv3x3(in_channels + hidden_channels, 4 * hidden_channels)

    def forward(self, x, hidden, cell):
        i, f, o, g = torch.chunk(self.gates(torch.cat((x, hidden), dim=1)), 4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell


class NSRD(nn.Module):
    """NSRD, x4: demodulated recurrent SR remodulated with the HR BRDF."""

    scale = 4
    recurrent = True
    inputs = ("image", "brdf", "normal", "depth", "motion", "hr_brdf")

    def __init__(self, n_feats: int = 32, num_previous: int = 2, hidden: int = 64,
                 brdf_epsilon: float = 1e-3, disocclusion_threshold: float = 0.1, detach_state: bool = True):
        super().__init__()
        if num_previous < 1:
            raise GbufError(f"nsrd: num_previous must be at least 1, got {num_previous}")
        self.num_previous = num_previous
        self.brdf_epsilon = brdf_epsilon
        self.disocclusion_threshold = disocclusion_threshold
        self.detach_state = detach_state
        frame_channels = 3 + 3 + 1  # irradiance, normal, depth
        s = self.scale
        self.current_conv = conv3x3(frame_channels, n_feats)
        self.previous_conv = GatedConv(frame_channels + 1, n_feats)  # + invalid-history mask
        self.last_output_conv = conv3x3(3 * s * s, n_feats)
        self.lstm = ConvLSTM(n_feats * (num_previous + 1) + n_feats, hidden)
        self.encoder_1 = nn.Sequential(*[RCAB(hidden) for _ in range(3)])
        self.encoder_2 = nn.Sequential(*[RCAB(hidden) for _ in range(2)])
        self.center = nn.Sequential(*[RCAB(hidden) for _ in range(3)])
        self.decoder_2 = nn.Sequential(conv3x3(2 * hidden, hidden), *[RCAB(hidden) for _ in range(2)])
        self.decoder_1 = nn.Sequential(conv3x3(2 * hidden, hidden), *[RCAB(hidden) for _ in range(3)])
        self.tail = conv3x3(hidden, n_feats)
        self.upsample = conv3x3(n_feats, 3 * s * s)

    def safe_brdf(self, brdf):
        """The BRDF to divide/multiply by: 1 where a channel is below epsilon (no surface)."""
        return torch.where(brdf >= self.brdf_epsilon, brdf, torch.ones_like(brdf))

    @staticmethod
    def up_to(x, like):
        """x2 bilinear (corner-aligned), zero-padded to ``like``'s size when pooling floored it."""
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
        return F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])

    def reconstruct(self, x):
        skip_1 = self.encoder_1(x)
        skip_2 = self.encoder_2(F.max_pool2d(skip_1, 2))
        x = self.center(F.max_pool2d(skip_2, 2))
        x = self.decoder_2(torch.cat((self.up_to(x, skip_2), skip_2), dim=1))
        x = self.decoder_1(torch.cat((self.up_to(x, skip_1), skip_1), dim=1))
        return F.pixel_shuffle(self.upsample(self.tail(x)), self.scale)

    def step(self, frame: dict, state=None):
        """One frame. ``state``: None, or ``(history (B, N, 7, h, w), motion (B, N, 2, h, w),
        previous irradiance (B, 3, 4h, 4w), LSTM hidden, LSTM cell)`` from the last call."""
        check_inputs("nsrd", frame, self.inputs, self.scale, ndim=4)
        image = frame["image"]
        dtype = image.dtype
        depth = finite_depth(frame["depth"], dtype)
        irradiance = image / self.safe_brdf(frame["brdf"].to(dtype))
        current = torch.cat((irradiance, frame["normal"].to(dtype), depth), dim=1)
        b, _, h, w = current.shape
        n, s = self.num_previous, self.scale

        if state is None:
            history = current.unsqueeze(1).expand(b, n, *current.shape[1:])
            accumulated = current.new_zeros(b, n, 2, h, w)
            last_output = current.new_zeros(b, 3, h * s, w * s)
            hidden = current.new_zeros(b, self.lstm.hidden_channels, h, w)
            cell = torch.zeros_like(hidden)
        else:
            history, previous_accumulated, last_output, hidden, cell = state
            motion = frame["motion"].to(dtype)
            accumulated = compose_motion(previous_accumulated, motion)
            motion_hr = F.interpolate(motion, scale_factor=s, mode="bilinear", align_corners=False) * s
            last_output = backward_warp(last_output, motion_hr, padding_mode="border")

        previous_features = []
        for k in range(n):
            flow = accumulated[:, k]
            warped = backward_warp(history[:, k], flow, padding_mode="zeros")
            off_frame = outside_frame(flow)
            warped = torch.where(off_frame, current, warped)
            warped_depth = warped[:, 6:7]
            tolerance = self.disocclusion_threshold * torch.maximum(depth.abs(), warped_depth.abs()).clamp_min(1e-6)
            invalid = off_frame | ((warped_depth - depth).abs() > tolerance)
            previous_features.append(self.previous_conv(torch.cat((warped, invalid.to(dtype)), dim=1)))

        features = torch.cat(
            [self.current_conv(current)] + previous_features
            + [self.last_output_conv(F.pixel_unshuffle(last_output, s))], dim=1)
        hidden, cell = self.lstm(features, hidden, cell)
        output_irradiance = self.reconstruct(hidden)
        output = output_irradiance * self.safe_brdf(frame["hr_brdf"].to(dtype))

        carried = (output_irradiance, hidden, cell)
        if self.detach_state:
            carried = tuple(x.detach() for x in carried)
        new_state = (push_history(history, current), push_history(accumulated, accumulated.new_zeros(b, 2, h, w)),
                     *carried)
        return output, new_state

    def forward(self, batch: dict):
        check_inputs("nsrd", batch, self.inputs, self.scale, ndim=5)
        return stream(self.step, batch, self.inputs)
