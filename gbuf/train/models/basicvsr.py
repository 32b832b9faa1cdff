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

Streaming: the backward branch needs every future frame, so BasicVSR cannot run
frame by frame. ``recurrent`` is False and there is no ``step``; ``forward`` takes a
whole clip (any T >= 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

FLOW_SOURCES = ("spynet", "motion")


def flow_warp(x, flow, padding_mode: str = "zeros"):
    """Sample ``x`` (B, C, H, W) at ``p + flow(p)`` (flow (B, 2, H, W) in pixels, x then y).

    Bilinear, pixel centres at integer coordinates (``align_corners=True``).
    """
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=flow.dtype),
        torch.arange(w, device=x.device, dtype=flow.dtype),
        indexing="ij",
    )
    gx = 2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def invert_motion(motion, iterations: int = 4):
    """The forward flow (frame t-1 -> t) from gbuf motion (frame t -> t-1).

    Solves ``f(p) = -motion(p + f(p))`` by fixed-point iteration: the surface at p
    in frame t-1 lands at q = p + f(p) in frame t, where motion points back to p.
    """
    inverse = -motion
    for _ in range(iterations):
        inverse = -flow_warp(motion, inverse, padding_mode="border")
    return inverse


def check_inputs(model_name: str, tensors: dict, inputs, scale: int, ndim: int):
    """Validate a batch (ndim 5: (B, T, C, H, W)) or one frame (ndim 4: (B, C, H, W)).

    Returns the leading dims and the LR (H, W). Raises GbufError naming the first
    missing or misshapen buffer.
    """
    layout = "(B, T, C, H, W)" if ndim == 5 else "(B, C, H, W)"
    lead = lr_hw = None
    # LR buffers first so HR sizes can be checked against them.
    for key in sorted(inputs, key=lambda k: k.startswith(fmt.HR_PREFIX)):
        if key not in tensors:
            raise GbufError(f"{model_name} input: missing buffer {key!r} (the model reads {', '.join(inputs)})")
        x = tensors[key]
        is_hr = key.startswith(fmt.HR_PREFIX)
        channels = fmt.BUFFERS[key[len(fmt.HR_PREFIX):] if is_hr else key].channels
        if not torch.is_tensor(x) or x.ndim != ndim or x.shape[-3] != channels:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise GbufError(f"{model_name} input: buffer {key!r} has shape {shape}, expected {layout} with C={channels}")
        if lead is None:
            lead = tuple(x.shape[:-3])
        elif tuple(x.shape[:-3]) != lead:
            raise GbufError(f"{model_name} input: buffer {key!r} has leading dims {tuple(x.shape[:-3])}, others {lead}")
        hw = tuple(x.shape[-2:])
        if not is_hr:
            if lr_hw is None:
                lr_hw = hw
            elif hw != lr_hw:
                raise GbufError(f"{model_name} input: buffer {key!r} is {hw[0]}x{hw[1]}, others {lr_hw[0]}x{lr_hw[1]}")
        elif lr_hw is not None and hw != (lr_hw[0] * scale, lr_hw[1] * scale):
            raise GbufError(f"{model_name} input: HR buffer {key!r} is {hw[0]}x{hw[1]}, expected "
                            f"{lr_hw[0] * scale}x{lr_hw[1] * scale} ({scale}x the LR buffers)")
    return lead, lr_hw


class SPyNet(nn.Module):
    """Spatial pyramid optical flow network, 6 levels; trained from scratch here."""

    num_levels = 6

    def __init__(self):
        super().__init__()

        def level():
            # in: reference (3) + warped support (3) + upsampled flow (2)
            widths = (8, 32, 64, 32, 16, 2)
            layers = []
            for i in range(len(widths) - 1):
                layers.append(nn.Conv2d(widths[i], widths[i + 1], 7, padding=3))
                if i < len(widths) - 2:
                    layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.levels = nn.ModuleList(level() for _ in range(self.num_levels))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, ref, supp):
        """Flow (B, 2, H, W) in pixels such that ``flow_warp(supp, flow)`` matches ``ref``."""
        _, _, h, w = ref.shape
        # The pyramid halves 5 times: work at the next multiple of 32.
        h32, w32 = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        ref = F.interpolate(ref, size=(h32, w32), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h32, w32), mode="bilinear", align_corners=False)
        ref_pyramid = [(ref - self.mean) / self.std]
        supp_pyramid = [(supp - self.mean) / self.std]
        for _ in range(self.num_levels - 1):
            ref_pyramid.insert(0, F.avg_pool2d(ref_pyramid[0], 2, 2, count_include_pad=False))
            supp_pyramid.insert(0, F.avg_pool2d(supp_pyramid[0], 2, 2, count_include_pad=False))
        flow = None
        for level, net in enumerate(self.levels):
            r, s = ref_pyramid[level], supp_pyramid[level]
            if flow is None:
                up = r.new_zeros(r.shape[0], 2, r.shape[2], r.shape[3])
            else:
                up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            flow = net(torch.cat((r, flow_warp(s, up, padding_mode="border"), up), dim=1)) + up
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return torch.stack((flow[:, 0] * (w / w32), flow[:, 1] * (h / h32)), dim=1)


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with identity shortcut, no normalisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # Small initial residuals keep the deep recurrence stable early in training.
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def conv_residual_blocks(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
        *[ResidualBlock(out_channels) for _ in range(num_blocks)],
    )


class BasicVSR(nn.Module):
    """BasicVSR, x4. ``forward({"image": (B, T, 3, h, w)[, "motion": ...]}) -> (B, T, 3, 4h, 4w)``."""

    scale = 4
    recurrent = False  # bidirectional: needs the whole clip, no one-frame step

    def __init__(self, num_feat: int = 32, num_block: int = 4, flow: str = "spynet"):
        super().__init__()
        if flow not in FLOW_SOURCES:
            raise GbufError(f"basicvsr: unknown flow source {flow!r}; use one of {', '.join(FLOW_SOURCES)}")
        self.flow = flow
        self.num_feat = num_feat
        self.inputs = ("image",) if flow == "spynet" else ("image", "motion")
        self.spynet = SPyNet() if flow == "spynet" else None
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
        lrs = batch["image"]
        b, t, c, h, w = lrs.shape
        if self.flow == "spynet":
            earlier = lrs[:, :-1].reshape(-1, c, h, w)
            later = lrs[:, 1:].reshape(-1, c, h, w)
            backward = self.spynet(earlier, later).view(b, t - 1, 2, h, w)
            forward = self.spynet(later, earlier).view(b, t - 1, 2, h, w)
            return forward, backward
        motion = batch["motion"][:, 1:].to(lrs.dtype)
        forward = motion
        backward = invert_motion(motion.reshape(-1, 2, h, w)).view(b, t - 1, 2, h, w)
        return forward, backward

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
                prop = flow_warp(prop, flows_backward[:, i])
            prop = self.backward_trunk(torch.cat((lrs[:, i], prop), dim=1))
            backward_features[i] = prop

        outputs = []
        prop = lrs.new_zeros(b, self.num_feat, h, w)
        for i in range(t):
            if i > 0:
                prop = flow_warp(prop, flows_forward[:, i - 1])
            prop = self.forward_trunk(torch.cat((lrs[:, i], prop), dim=1))
            outputs.append(self.upsample(torch.cat((backward_features[i], prop), dim=1), lrs[:, i]))
        return torch.stack(outputs, dim=1)
