"""BasicVSR++: second-order grid propagation with flow-guided deformable alignment.

Chan, Zhou, Xu, Loy, "BasicVSR++: Improving Video Super-Resolution with Enhanced
Propagation and Alignment", CVPR 2022. The configuration of the RDG paper's
comparison is ``mid_channels=24, num_blocks=3``: 2,407,751 parameters, of which
1,440,300 are SPyNet's.

Architecture (as in the paper and its reference implementation, re-written here):

- Feature extraction: conv + LeakyReLU + 5 residual blocks per LR frame.
- Flow: SPyNet between neighbouring LR frames (see ``basicvsr.py`` for SPyNet).
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

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

FLOW_SOURCES = ("spynet", "motion")
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


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

    Solves ``f(p) = -motion(p + f(p))`` by fixed-point iteration.
    """
    inverse = -motion
    for _ in range(iterations):
        inverse = -flow_warp(motion, inverse, padding_mode="border")
    return inverse


def check_inputs(model_name: str, tensors: dict, inputs, scale: int, ndim: int):
    """Validate a batch (ndim 5: (B, T, C, H, W)) or one frame (ndim 4); GbufError names the buffer."""
    layout = "(B, T, C, H, W)" if ndim == 5 else "(B, C, H, W)"
    lead = lr_hw = None
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
            widths = (8, 32, 64, 32, 16, 2)  # in: reference + warped support + flow
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
        if flow not in FLOW_SOURCES:
            raise GbufError(f"basicvsrpp: unknown flow source {flow!r}; use one of {', '.join(FLOW_SOURCES)}")
        self.flow = flow
        self.mid_channels = mid_channels
        self.inputs = ("image",) if flow == "spynet" else ("image", "motion")
        self.spynet = SPyNet() if flow == "spynet" else None
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
        lrs = batch["image"]
        b, t, c, h, w = lrs.shape
        if self.flow == "spynet":
            earlier = lrs[:, :-1].reshape(-1, c, h, w)
            later = lrs[:, 1:].reshape(-1, c, h, w)
            backward = self.spynet(earlier, later).view(b, t - 1, 2, h, w)
            forward = self.spynet(later, earlier).view(b, t - 1, 2, h, w)
            return forward, backward
        motion = batch["motion"][:, 1:].to(lrs.dtype)
        backward = invert_motion(motion.reshape(-1, 2, h, w)).view(b, t - 1, 2, h, w)
        return motion, backward

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
                cond_1 = flow_warp(prop, flow_1)
                feat_2 = torch.zeros_like(prop)
                flow_2 = torch.zeros_like(flow_1)
                cond_2 = torch.zeros_like(cond_1)
                if i > 1:
                    feat_2 = outputs[-2]
                    step_2 = flows[:, idx + 1] if backward else flows[:, idx - 2]
                    flow_2 = flow_1 + flow_warp(step_2, flow_1)  # compose the two one-step flows
                    cond_2 = flow_warp(feat_2, flow_2)
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
