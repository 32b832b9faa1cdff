"""NSRR: neural supersampling for real-time rendering.

Xiao, Nouri, Chapman, Fix, Lanman, Kaplanyan, "Neural Supersampling for Real-time
Rendering", ACM TOG (SIGGRAPH) 2020. No official code was released; this follows
the paper's text and figures. The paper (and the RDG paper's table) gives
0.535M parameters. This implementation has **547,767** with the paper's text
(a separate feature extractor for the current frame) and **535,023** with
``shared_extractor=True`` (one extractor for all five frames), which is the
paper's 0.535M to the digit: the published count seems to include one
extractor only. Default: the text's design.

Per output frame t it reads the current and the 4 previous LR frames
(colour + depth, batch keys ``image``, ``depth``) and the motion vectors
(``motion``, gbuf convention: pixels, displacement from frame t to t-1, x right,
y down):

1. Feature extraction: a 3-layer CNN (32, 32, 8 channels, 3x3, ReLU) per frame;
   its 8 channels are concatenated with the RGB-D input: 12 channels. The current
   frame has its own weights; the previous frames share another set.
2. Zero-upsampling to the target resolution: each LR sample goes to one HR pixel
   of its 4x4 block, the others are zero.
3. Backward warping of each previous frame's zero-upsampled features to frame t
   with the motion upsampled to HR (bilinear, magnitude x4), accumulated over the
   frames between (frame t-k is reached by composing the k one-frame motions).
4. Feature reweighting: a 3-layer CNN (32, 32, 4) over the zero-upsampled RGB-D of
   the current frame and the warped RGB-D of the 4 previous ones; tanh scaled to
   [0, 10] gives one weight map per previous frame, multiplied into its features.
5. Reconstruction: a 3-scale, 10-layer U-Net (64-32 | 64-64 | 128-128 | 64-64 |
   32-3, 2x2 max pooling, skip connections by concatenation) over the current
   features and the 4 reweighted previous ones (60 channels) at HR.

Choices where the paper is not explicit (gbuf):

- Zero-upsampling puts the LR sample at offset (2, 2) of its 4x4 block (the HR
  pixel nearest the LR pixel centre; the renders are not jittered).
- Warping samples bilinearly with zero padding; the accumulated motion is
  composed by warping (``acc_k = m_t + acc_{k-1}(p + m_t)``) instead of warping the
  features k times, so features are resampled once.
- Decoder upsampling is bilinear x2; the last layer is linear (no activation).
- The first frames of a sequence lack 4 predecessors: the missing ones are the
  first frame itself with zero motion.
- Depth that is not finite (background, +inf) enters as 0.

Streaming: ``recurrent`` is True; ``step(frame, state)`` takes one frame (dict of
(B, C, h, w)) and the state (previous frames' features and accumulated motion;
None to start) and returns the (B, 3, 4h, 4w) output and the new state.
``forward`` on a clip equals stepping through it frame by frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.errors import GbufError
from gbuf.train.models._blocks import check_inputs, compose_motion, finite_depth, push_history, stream
from gbuf.train.ops import backward_warp


def conv_stack(widths, final_activation: bool) -> nn.Sequential:
    """3x3 convs through ``widths`` with ReLU between (and after the last if asked)."""
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1))
        if i < len(widths) - 2 or final_activation:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FeatureExtractor(nn.Module):
    """RGB-D (4) -> RGB-D + 8 learned channels (12)."""

    def __init__(self):
        super().__init__()
        self.net = conv_stack((4, 32, 32, 8), final_activation=True)

    def forward(self, rgbd):
        return torch.cat((rgbd, self.net(rgbd)), dim=1)


class ReconstructionUNet(nn.Module):
    """3 scales, 10 conv layers, max pooling down, bilinear up, concatenated skips."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.encoder_1 = conv_stack((in_channels, 64, 32), final_activation=True)
        self.encoder_2 = conv_stack((32, 64, 64), final_activation=True)
        self.center = conv_stack((64, 128, 128), final_activation=True)
        self.decoder_2 = conv_stack((128 + 64, 64, 64), final_activation=True)
        self.decoder_1 = conv_stack((64 + 32, 32, 3), final_activation=False)

    @staticmethod
    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        skip_1 = self.encoder_1(x)
        skip_2 = self.encoder_2(F.max_pool2d(skip_1, 2))
        x = self.center(F.max_pool2d(skip_2, 2))
        x = self.decoder_2(torch.cat((self.up(x, skip_2), skip_2), dim=1))
        return self.decoder_1(torch.cat((self.up(x, skip_1), skip_1), dim=1))


class NSRR(nn.Module):
    """NSRR, x4. ``forward({"image", "depth", "motion": (B, T, C, h, w)}) -> (B, T, 3, 4h, 4w)``."""

    scale = 4
    recurrent = True
    inputs = ("image", "depth", "motion")

    def __init__(self, num_previous: int = 4, max_weight: float = 10.0, shared_extractor: bool = False):
        super().__init__()
        if num_previous < 1:
            raise GbufError(f"nsrr: num_previous must be at least 1, got {num_previous}")
        self.num_previous = num_previous
        self.max_weight = max_weight
        self.current_extractor = FeatureExtractor()
        self.previous_extractor = self.current_extractor if shared_extractor else FeatureExtractor()
        frames = num_previous + 1
        self.reweighting = conv_stack((4 * frames, 32, 32, num_previous), final_activation=False)
        self.reconstruction = ReconstructionUNet(12 * frames)

    def zero_upsample(self, x):
        b, c, h, w = x.shape
        s, o = self.scale, self.scale // 2
        out = x.new_zeros(b, c, h, s, w, s)
        out[:, :, :, o, :, o] = x
        return out.view(b, c, h * s, w * s)

    def step(self, frame: dict, state=None):
        """One frame: ``frame`` maps ``image``/``depth``/``motion`` to (B, C, h, w).

        ``state`` is None for the first frame, else the previous call's state:
        ``(features (B, N, 12, h, w), motion (B, N, 2, 4h, 4w))`` of the N previous
        frames, the motion accumulated from the last frame back to each.
        """
        check_inputs("nsrr", frame, self.inputs, self.scale, ndim=4)
        image = frame["image"]
        depth = finite_depth(frame["depth"], image.dtype)
        rgbd = torch.cat((image, depth), dim=1)
        b, _, h, w = rgbd.shape
        n, s = self.num_previous, self.scale

        current = self.current_extractor(rgbd)
        as_history = self.previous_extractor(rgbd)  # what this frame contributes to later frames
        if state is None:
            history = as_history.unsqueeze(1).expand(b, n, *as_history.shape[1:])
            accumulated = rgbd.new_zeros(b, n, 2, h * s, w * s)
        else:
            history, previous_accumulated = state
            motion = frame["motion"].to(image.dtype)
            motion = F.interpolate(motion, scale_factor=s, mode="bilinear", align_corners=False) * s
            accumulated = compose_motion(previous_accumulated, motion)

        warped = [backward_warp(self.zero_upsample(history[:, k]), accumulated[:, k], padding_mode="zeros")
                  for k in range(n)]
        weights_in = torch.cat([self.zero_upsample(rgbd)] + [f[:, :4] for f in warped], dim=1)
        weights = (torch.tanh(self.reweighting(weights_in)) + 1.0) * (self.max_weight / 2.0)
        reweighted = [f * weights[:, k:k + 1] for k, f in enumerate(warped)]
        output = self.reconstruction(torch.cat([self.zero_upsample(current)] + reweighted, dim=1))

        new_state = (push_history(history, as_history),
                     push_history(accumulated, accumulated.new_zeros(b, 2, h * s, w * s)))
        return output, new_state

    def forward(self, batch: dict):
        check_inputs("nsrr", batch, self.inputs, self.scale, ndim=5)
        return stream(self.step, batch, self.inputs)
