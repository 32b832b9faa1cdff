"""BasicVSR++: second-order grid propagation with flow-guided deformable alignment.

Chan, Zhou, Xu, Loy, "BasicVSR++: Improving Video Super-Resolution with Enhanced
Propagation and Alignment", CVPR 2022. The configuration of the RDG paper's
comparison is ``mid_channels=24, num_blocks=3``: 2,407,751 parameters, of which
1,440,300 are SPyNet's.

Architecture (as in the paper and its reference implementation, re-written here):

- Feature extraction: conv + LeakyReLU + 5 residual blocks per LR frame.
- Flow: SPyNet between neighbouring LR frames (shared with BasicVSR: ``_blocks.py``).
- Grid propagation: four branches in turn, backward_1, forward_1, backward_2,
  forward_2. Each branch sees the extracted features plus the outputs of every
  earlier branch for the same frame. Second-order: the propagated features of
  frames t-1 and t-2 (in the branch's direction) are both aligned to frame t; the
  flow to t-2 is the composition of the two one-step flows.
- Flow-guided deformable alignment: a 4-layer CNN looks at both flow-warped
  features, the current feature and the two flows, and predicts offset residuals
  (bounded by ``max_residue_magnitude`` * tanh) and modulation masks for a 3x3
  modulated deformable convolution with 16 deformable groups over the concatenated
  t-1 and t-2 features; the offsets are the residuals plus the flows. Here it is
  ``torchvision.ops.deform_conv2d``, which runs on CPU and CUDA.
- Reconstruction: 5 residual blocks over all branches, two x2 pixel shuffles
  (-> 64 channels), two convs, plus the bilinear x4 of the LR frame.

Deviations and choices (gbuf):

- No pretrained SPyNet (cannot be downloaded here): it trains from scratch.
  ``flow="motion"`` uses the rendered motion vectors instead (batch key ``motion``,
  gbuf convention: pixels, displacement from frame t to t-1, x right, y down):
  forward branches use ``motion[t]`` to bring frame t-1 to t; backward branches need
  the flow from t to t+1, taken as the fixed-point inverse of ``motion[t+1]``. With
  ``flow="motion"`` the model holds no SPyNet: 967,451 parameters.
- The reference refuses LR inputs under 64x64 (SPyNet's pyramid); here SPyNet
  starts its coarsest level from a zero flow of its own size, so small crops work.
- LR inputs only (``is_low_res_input``); no CPU feature cache.

Streaming: backward branches need every future frame, so BasicVSR++ cannot run
frame by frame. ``recurrent`` is False and there is no ``step``; ``forward`` takes a
whole clip (any T >= 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.train.models._blocks import check_inputs, conv_residual_blocks, flow_source, spynet_or_motion_flows
from gbuf.train.ops import backward_warp

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


class SecondOrderDeformableAlignment(nn.Module):
    """Flow-guided modulated deformable 3x3 conv aligning the t-1 and t-2 features to t."""

    def __init__(self, channels: int, deform_groups: int = 16, max_residue_magnitude: float = 10.0):
        super().__init__()
        self.deform_groups = deform_groups
        self.max_residue_magnitude = max_residue_magnitude
        in_channels = 2 * channels  # features of t-1 and t-2, concatenated
        self.weight = nn.Parameter(torch.empty(channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.uniform_(self.weight, -1.0 / math.sqrt(in_channels * 9), 1.0 / math.sqrt(in_channels * 9))
        # condition: warped t-1, current, warped t-2 features and the two flows
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            # per group and kernel tap: (dy, dx) for t-1 and for t-2 halves, and a mask
            nn.Conv2d(channels, 27 * deform_groups, 3, padding=1),
        )
        # Start as pure flow warping: zero residual offsets, masks 0.5.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, features, condition, flow_1, flow_2):
        from torchvision.ops import deform_conv2d

        out = self.conv_offset(torch.cat((condition, flow_1, flow_2), dim=1))
        offset_a, offset_b, mask = torch.chunk(out, 3, dim=1)
        residue = self.max_residue_magnitude * torch.tanh(torch.cat((offset_a, offset_b), dim=1))
        residue_1, residue_2 = torch.chunk(residue, 2, dim=1)
        # deform_conv2d offsets are (dy, dx) pairs per group and tap; flows are (dx, dy).
        taps = residue_1.shape[1] // 2
        offset_1 = residue_1 + flow_1.flip(1).repeat(1, taps, 1, 1)
        offset_2 = residue_2 + flow_2.flip(1).repeat(1, taps, 1, 1)
        return deform_conv2d(features, torch.cat((offset_1, offset_2), dim=1), self.weight, self.bias,
                             padding=(1, 1), mask=torch.sigmoid(mask))


class BasicVSRPlusPlus(nn.Module):
    """BasicVSR++, x4. ``forward({"image": (B, T, 3, h, w)[, "motion": ...]}) -> (B, T, 3, 4h, 4w)``."""

    scale = 4
    recurrent = False  # bidirectional: needs the whole clip, no one-frame step

    def __init__(self, mid_channels: int = 24, num_blocks: int = 3, flow: str = "spynet",
                 max_residue_magnitude: float = 10.0):
        super().__init__()
        self.flow = flow
        self.mid_channels = mid_channels
        self.inputs, self.spynet = flow_source("basicvsrpp", flow)
        self.feat_extract = conv_residual_blocks(3, mid_channels, 5)
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, branch in enumerate(BRANCHES):
            self.deform_align[branch] = SecondOrderDeformableAlignment(
                mid_channels, deform_groups=16, max_residue_magnitude=max_residue_magnitude)
            # input: extracted features, every earlier branch, the propagated feature
            self.backbone[branch] = conv_residual_blocks((2 + i) * mid_channels, mid_channels, num_blocks)
        self.reconstruction = conv_residual_blocks(5 * mid_channels, mid_channels, 5)
        self.upconv1 = nn.Conv2d(mid_channels, mid_channels * 4, 3, padding=1)
        self.upconv2 = nn.Conv2d(mid_channels, 64 * 4, 3, padding=1)
        self.conv_hr = nn.Conv2d(64, 64, 3, padding=1)
        self.conv_last = nn.Conv2d(64, 3, 3, padding=1)

    def compute_flows(self, batch):
        """(flows_forward, flows_backward), each (B, T-1, 2, h, w).

        ``flows_forward[:, t-1]`` warps frame t-1 onto t; ``flows_backward[:, t]`` warps t+1 onto t.
        """
        return spynet_or_motion_flows(self.spynet, batch)

    def propagate(self, feats: dict, flows, branch: str):
        """Run one branch over all frames; ``flows[:, k]`` aligns the previous frame of the
        branch's order to frame k (forward) or k (backward, from k+1)."""
        t = len(feats["spatial"])
        backward = branch.startswith("backward")
        order = range(t - 1, -1, -1) if backward else range(t)
        earlier = [k for k in feats if k not in ("spatial", branch)]
        outputs = []
        prop = feats["spatial"][0].new_zeros(feats["spatial"][0].shape)
        for i, idx in enumerate(order):
            current = feats["spatial"][idx]
            if i > 0:
                # flow bringing the frame processed just before (idx+1 or idx-1) to idx
                flow_1 = flows[:, idx] if backward else flows[:, idx - 1]
                cond_1 = backward_warp(prop, flow_1, padding_mode="zeros")
                feat_2 = torch.zeros_like(prop)
                flow_2 = torch.zeros_like(flow_1)
                cond_2 = torch.zeros_like(cond_1)
                if i > 1:
                    feat_2 = outputs[-2]
                    step_2 = flows[:, idx + 1] if backward else flows[:, idx - 2]
                    flow_2 = flow_1 + backward_warp(step_2, flow_1, padding_mode="zeros")  # compose the two one-step flows
                    cond_2 = backward_warp(feat_2, flow_2, padding_mode="zeros")
                condition = torch.cat((cond_1, current, cond_2), dim=1)
                prop = self.deform_align[branch](torch.cat((prop, feat_2), dim=1), condition, flow_1, flow_2)
            x = torch.cat([current] + [feats[k][idx] for k in earlier] + [prop], dim=1)
            prop = prop + self.backbone[branch](x)
            outputs.append(prop)
        feats[branch] = outputs[::-1] if backward else outputs
        return feats

    def reconstruct(self, feats: dict, lrs):
        outputs = []
        for i in range(lrs.shape[1]):
            x = torch.cat([feats[k][i] for k in ("spatial",) + BRANCHES], dim=1)
            x = self.reconstruction(x)
            x = F.leaky_relu(F.pixel_shuffle(self.upconv1(x), 2), 0.1)
            x = F.leaky_relu(F.pixel_shuffle(self.upconv2(x), 2), 0.1)
            x = F.leaky_relu(self.conv_hr(x), 0.1)
            x = self.conv_last(x)
            outputs.append(x + F.interpolate(lrs[:, i], scale_factor=self.scale, mode="bilinear",
                                             align_corners=False))
        return torch.stack(outputs, dim=1)

    def forward(self, batch):
        check_inputs("basicvsrpp", batch, self.inputs, self.scale, ndim=5)
        lrs = batch["image"]
        b, t, c, h, w = lrs.shape
        spatial = self.feat_extract(lrs.reshape(-1, c, h, w)).view(b, t, -1, h, w)
        feats = {"spatial": [spatial[:, i] for i in range(t)]}
        if t > 1:
            flows_forward, flows_backward = self.compute_flows(batch)
        else:  # one frame: nothing to align, the loops never read a flow
            flows_forward = flows_backward = None
        for branch in BRANCHES:
            flows = flows_backward if branch.startswith("backward") else flows_forward
            feats = self.propagate(feats, flows, branch)
        return self.reconstruct(feats, lrs)
