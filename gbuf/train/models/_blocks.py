"""Layers and helpers that more than one model file uses, each written once.

Every model stays one file that reads like its paper; what several of them share lives here,
so the copies cannot drift apart: the input checks, SPyNet, the plain residual block, the
inverse of gbuf motion, the history bookkeeping of the recurrent rendering baselines, and the
clip-to-frames loop. Flow warping itself is ``gbuf.train.ops.backward_warp`` (one warp for
models, metrics and data tools; docs/format.md gives the motion convention it follows).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train.ops import backward_warp

# -- inputs --------------------------------------------------------------------------------


def check_inputs(model_name: str, tensors: dict, inputs, scale: int, ndim: int):
    """Validate a batch (ndim 5: ``(B, T, C, H, W)``) or one frame (ndim 4: ``(B, C, H, W)``).

    Returns the leading dims and the LR (H, W). Raises GbufError naming the first missing or
    misshapen buffer; channel counts come from the format (``gbuf.datasets.format.BUFFERS``).
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


def finite_depth(depth: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``depth`` in ``dtype`` with the background (+inf, and any NaN) as 0."""
    return torch.nan_to_num(depth.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)


# -- clips and streaming -------------------------------------------------------------------


def stream(step, batch: dict, inputs) -> torch.Tensor:
    """A clip ``(B, T, C, H, W)`` through ``step(frame, state)`` frame by frame, the state
    carried: what ``forward`` of every recurrent model is, so forward equals streaming."""
    state = None
    outputs = []
    for t in range(batch["image"].shape[1]):
        out, state = step({k: batch[k][:, t] for k in inputs}, state)
        outputs.append(out)
    return torch.stack(outputs, dim=1)


def push_history(history: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """``(B, N, ...)`` history with ``newest`` ``(B, ...)`` in front and the oldest dropped."""
    return torch.cat((newest.unsqueeze(1), history[:, :history.shape[1] - 1]), dim=1)


def compose_motion(accumulated: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Motion from frame t back to each earlier frame, from frame t's own ``motion`` (B, 2, H, W).

    ``accumulated`` (B, N, 2, H, W) holds the motion from frame t-1 back to each of its N
    predecessors (entry 0: zero, t-1 to itself). Frame t reaches them through frame t-1:
    ``m_t(p) + acc(p + m_t(p))``; sampled with border padding, since a motion field extends
    past the frame edge better than a zero field.
    """
    return torch.stack([motion + backward_warp(accumulated[:, k], motion, padding_mode="border")
                        for k in range(accumulated.shape[1])], dim=1)


def invert_motion(motion: torch.Tensor, iterations: int = 4) -> torch.Tensor:
    """The forward flow (frame t-1 -> t) from gbuf motion (frame t -> t-1).

    Solves ``f(p) = -motion(p + f(p))`` by fixed-point iteration: the surface at p in frame
    t-1 lands at q = p + f(p) in frame t, where motion points back to p. Exact where the motion
    is locally constant.
    """
    inverse = -motion
    for _ in range(iterations):
        inverse = -backward_warp(motion, inverse, padding_mode="border")
    return inverse


# -- channels-last layout (RDG's fast form and its fused oneDNN path) ----------------------


def is_pixel_major(x: torch.Tensor) -> bool:
    """Whether ``x`` keeps its channels innermost (channels-last, or a channel slice of it)."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and x.stride(2) == x.shape[3] * x.stride(3)


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as pixel rows ``(B, HW, C)``: a view when ``x`` is channels-last."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


# -- layers --------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ResidualBlock(nn.Module):
    """conv3x3-ReLU-conv3x3 with identity shortcut, no normalisation.

    ``init_scale``: BasicVSR's reference initialises both convs Kaiming-normal scaled by 0.1
    with zero bias (small initial residuals keep the deep recurrence stable early in
    training); ``None`` keeps PyTorch's default initialisation, as FuseSR's official code does.
    """

    def __init__(self, channels: int, init_scale: float | None = 0.1):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        if init_scale is not None:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)
                conv.weight.data.mul_(init_scale)
                nn.init.zeros_(conv.bias)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def conv_residual_blocks(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    """conv3x3 + LeakyReLU(0.1) + ``num_blocks`` residual blocks (BasicVSR's and BasicVSR++'s trunk)."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        *[ResidualBlock(out_channels) for _ in range(num_blocks)],
    )


class SPyNet(nn.Module):
    """Spatial pyramid optical flow network (Ranjan & Black 2017), 6 levels.

    Each level is a 5-layer 7x7 CNN that refines the upsampled flow of the level below. Inputs
    are resized to a multiple of 32 and the flow scaled back. The coarsest level starts from a
    zero flow of its own size instead of upsampling an empty one, so inputs under 64 px (tiny
    test crops) work; from 64 px up the computation is the reference one. Images are
    normalised with the ImageNet mean/std, as in the reference (it matters only for
    pretrained weights, which cannot be downloaded here: gbuf trains SPyNet from scratch).
    """

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
        """Flow (B, 2, H, W) in pixels such that ``backward_warp(supp, flow)`` matches ``ref``."""
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
            flow = net(torch.cat((r, backward_warp(s, up, padding_mode="border"), up), dim=1)) + up
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return torch.stack((flow[:, 0] * (w / w32), flow[:, 1] * (h / h32)), dim=1)


#: Where a flow-aligned model (BasicVSR, BasicVSR++) takes its flow from.
FLOW_SOURCES = ("spynet", "motion")


def flow_source(model_name: str, flow: str) -> tuple[tuple[str, ...], SPyNet | None]:
    """``(inputs, spynet)`` of a model whose flow comes from ``flow``: SPyNet on the LR images
    (it reads ``image``) or the rendered motion (``image`` and ``motion``, no SPyNet)."""
    if flow not in FLOW_SOURCES:
        raise GbufError(f"{model_name}: unknown flow source {flow!r}; use one of {', '.join(FLOW_SOURCES)}")
    if flow == "spynet":
        return ("image",), SPyNet()
    return ("image", "motion"), None


def spynet_or_motion_flows(spynet: SPyNet | None, batch: dict):
    """``(flows_forward, flows_backward)``, each (B, T-1, 2, h, w), for a bidirectional model.

    ``flows_forward[:, t-1]`` warps frame t-1 onto frame t; ``flows_backward[:, t]`` warps frame
    t+1 onto frame t. From SPyNet on the LR images, or (``spynet`` None) from the rendered
    motion: forward is ``motion[t]`` itself, backward its fixed-point inverse
    (``invert_motion``), since rendered motion only points back in time.
    """
    lrs = batch["image"]
    b, t, c, h, w = lrs.shape
    if spynet is not None:
        earlier = lrs[:, :-1].reshape(-1, c, h, w)
        later = lrs[:, 1:].reshape(-1, c, h, w)
        backward = spynet(earlier, later).view(b, t - 1, 2, h, w)
        forward = spynet(later, earlier).view(b, t - 1, 2, h, w)
        return forward, backward
    motion = batch["motion"][:, 1:].to(lrs.dtype)
    backward = invert_motion(motion.reshape(-1, 2, h, w)).view(b, t - 1, 2, h, w)
    return motion, backward


class SingleImageSR(nn.Module):
    """The skeleton SAFMN and SMFANet share: conv3x3 to ``dim`` -> ``body`` -> + the conv3x3
    features -> conv3x3 to ``3 * scale**2`` -> PixelShuffle, run on each frame of a clip.

    The attribute names (``to_feat``, ``feats``, ``to_img``) are the official checkpoints' keys.
    ``make_body()`` builds the body between the first conv and the head, so a seeded model
    draws its initial weights in the official order.
    """

    inputs = ("image",)
    recurrent = False
    #: the model's name in error messages; H and W must be at least ``min_size``
    name = "model"
    min_size = 8

    def __init__(self, dim: int, make_body: Callable[[], nn.Module], scale: int):
        super().__init__()
        self.scale = scale
        self.to_feat = nn.Conv2d(3, dim, 3, 1, 1)
        self.feats = make_body()
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def upscale(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 3, sH, sW)``."""
        if image.shape[-2] < self.min_size or image.shape[-1] < self.min_size:
            raise GbufError(f"{self.name} input: image is {image.shape[-2]}x{image.shape[-1]}; "
                            f"{type(self).__name__} needs at least {self.min_size}x{self.min_size}")
        x = self.to_feat(image)
        return self.to_img(self.feats(x) + x)

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch["image"]``: ``(B, T, 3, H, W)`` -> ``(B, T, 3, sH, sW)``, frame by frame."""
        if "image" not in batch:
            raise GbufError(f"{self.name} input: missing buffer 'image' ({self.name} needs image)")
        image = batch["image"]
        if image.dim() != 5 or image.shape[2] != 3:
            raise GbufError(f"{self.name} input: 'image' has shape {tuple(image.shape)}, expected (B, T, 3, H, W)")
        b, t = image.shape[:2]
        return self.upscale(image.flatten(0, 1)).unflatten(0, (b, t))
