"""BasicVSR: bidirectional recurrent video super-resolution with flow alignment.

Chan, Wang, Yu, Dong, Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021. The configuration of the RDG paper's
comparison is ``num_feat=32, num_block=4``: 1,760,207 parameters, of which
1,440,300 are SPyNet's.

Architecture (as in the paper and its reference implementation, re-written here):

- Flow: SPyNet (Ranjan & Black 2017), a 6-level coarse-to-fine pyramid, each
  level a 5-layer 7x7 CNN that refines the upsampled flow of the level below.
  Inputs are resized to a multiple of 32 and the flow scaled back.
- Backward branch (frame T-1 down to 0) and forward branch (0 up to T-1): the
  propagated feature of the neighbouring frame is warped onto frame t, concatenated
  with the LR frame and refined by conv + LeakyReLU + ``num_block`` residual blocks.
- Upsampler per frame: 1x1 fusion of the two branches, two x2 pixel shuffles
  (``num_feat`` -> 64 channels), two 3x3 convs, plus the bilinear x4 of the LR frame.

Deviations and choices (gbuf):

- No pretrained SPyNet: the weights cannot be downloaded here, so SPyNet starts
  from random weights and trains with the rest (the paper's recipe starts from
  pretrained SPyNet and freezes it for the first iterations; a trainer may lower
  its learning rate). ``flow="motion"`` replaces SPyNet with the rendered motion
  vectors (batch key ``motion``, gbuf convention: pixels, displacement from frame t
  to t-1, x right, y down). Forward propagation warps frame t-1 onto t with
  ``motion[t]`` directly; backward propagation needs the flow from frame t to t+1,
  which rendered motion does not give, so it is the fixed-point inverse of
  ``motion[t+1]`` (exact where motion is locally constant, a few iterations of
  ``f(p) = -motion(p + f(p))``). With ``flow="motion"`` the model holds no SPyNet:
  319,907 parameters.
- SPyNet's coarsest level starts from a zero flow of its own size instead of
  upsampling an empty one, so inputs smaller than 64 px (tiny test crops) work;
  for inputs of 64 px and more the computation is the reference one.
- Images are normalised with the ImageNet mean/std before SPyNet, as in the
  reference; gbuf images are linear, which matters only for pretrained weights.
- SPyNet, the residual blocks and the rendered-motion flows are shared with
  BasicVSR++ (``_blocks.py``); features are warped with ``gbuf.train.ops.backward_warp``
  (bilinear at pixel centres, zeros outside, as the reference's ``flow_warp``).

Streaming: the backward branch needs every future frame, so BasicVSR cannot run
frame by frame. ``recurrent`` is False and there is no ``step``; ``forward`` takes a
whole clip (any T >= 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.train.models._blocks import check_inputs, conv_residual_blocks, flow_source, spynet_or_motion_flows
from gbuf.train.ops import backward_warp



class BasicVSR(nn.Module):
    """BasicVSR, x4. ``forward({"image": (B, T, 3, h, w)[, "motion": ...]}) -> (B, T, 3, 4h, 4w)``."""

    scale = 4
    recurrent = False  # bidirectional: needs the whole clip, no one-frame step

    def __init__(self, num_feat: int = 32, num_block: int = 4, flow: str = "spynet"):
        super().__init__()
        self.flow = flow
        self.num_feat = num_feat
        self.inputs, self.spynet = flow_source("basicvsr", flow)
        self.backward_trunk = conv_residual_blocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = conv_residual_blocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, padding=1)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, padding=1)
        self.conv_hr = nn.Conv2d(64, 64, 3, padding=1)
        self.conv_last = nn.Conv2d(64, 3, 3, padding=1)

    def compute_flows(self, batch):
        """(flows_forward, flows_backward), each (B, T-1, 2, h, w).

        ``flows_forward[:, t-1]`` warps frame t-1 onto frame t; ``flows_backward[:, t]``
        warps frame t+1 onto frame t.
        """
        return spynet_or_motion_flows(self.spynet, batch)

    def upsample(self, feature, lr):
        x = F.leaky_relu(self.fusion(feature), 0.1)
        x = F.leaky_relu(F.pixel_shuffle(self.upconv1(x), 2), 0.1)
        x = F.leaky_relu(F.pixel_shuffle(self.upconv2(x), 2), 0.1)
        x = F.leaky_relu(self.conv_hr(x), 0.1)
        x = self.conv_last(x)
        return x + F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def forward(self, batch):
        check_inputs("basicvsr", batch, self.inputs, self.scale, ndim=5)
        lrs = batch["image"]
        b, t, _, h, w = lrs.shape
        if t > 1:
            flows_forward, flows_backward = self.compute_flows(batch)

        backward_features = [None] * t
        prop = lrs.new_zeros(b, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                prop = backward_warp(prop, flows_backward[:, i], padding_mode="zeros")
            prop = self.backward_trunk(torch.cat((lrs[:, i], prop), dim=1))
            backward_features[i] = prop

        outputs = []
        prop = lrs.new_zeros(b, self.num_feat, h, w)
        for i in range(t):
            if i > 0:
                prop = backward_warp(prop, flows_forward[:, i - 1], padding_mode="zeros")
            prop = self.forward_trunk(torch.cat((lrs[:, i], prop), dim=1))
            outputs.append(self.upsample(torch.cat((backward_features[i], prop), dim=1), lrs[:, i]))
        return torch.stack(outputs, dim=1)
