"""RDG: efficient video super-resolution for real-time rendering with decoupled G-buffer guidance.

Zheng, Sun, Dong and Pan, CVPR 2025 (official code: github.com/sunny2109/RDG). Registered as
``rdg`` (``num_feat=36``, 1,473,600 parameters) and ``rdg-s`` (``num_feat=16``, 303,680).

Architecture (an asymmetric U-Net over three levels, LR resolution ``1, 1/2, 1/4``)::

    image ─ conv3x3 ─┬─ Enc(dfm+ccm) ─ down ─ Enc ─ down ─ Enc ─ Dec(hfb+ctr+ccm) ─ up ─ Dec ─ up ─ Dec ─(+)─ conv ─ PixelShuffle x4
                     │        └──── skip x alpha ──────────────────────────────────┘        │            │
                     │                 └──────────────── skip x alpha ─────────────────────-┘            │
                     └──────────────────────────────── global residual ──────────────────────────────────┘

- encoder layer: DFM (dynamic feature modulator: depth-wise 3x3 + 1x1 projection split into a
  gate and a context branch; the context runs through two CycleFC layers, a 1x7 and a 7x1
  "staircase" fully-connected layer; ``proj_out(gelu(gate) * merge([x, context]))``) then CCM
  (conv3x3 -> GELU -> conv1x1), each residual.
- decoder layer: HFB (fuses the G-buffers ``[normal, brdf]`` resized to the level:
  ``proj_out([conv_x(x) * gelu(conv_g(g)), conv_g(g) * gelu(conv_x(x))])``), CTR (channel
  attention between the current features and the previous frame's hidden state of the same
  level, warped with the motion vectors; depth is concatenated before the output projection),
  CCM; each residual.
- skips are scaled by learned per-channel ``skip_alphas`` (initialised to zero); the upsampler
  is bilinear x2 + conv3x3; the head is conv3x3 to ``3 * scale**2`` channels + PixelShuffle.
- the hidden state of a level is the output of that level's decoder layer.

Official behaviours kept on purpose (the released weights were trained with them):

- frame t warps the previous hidden state with the motion of frame t-1 (``motions[:, t-1]``),
  not its own; the first frame "warps" its own features with zero motion. ``motion_frame=
  "current"`` uses frame t's own motion instead (not what the checkpoint was trained with).
- the motion field is resized bilinearly to each level's size without scaling its magnitude
  (so at 1/4 resolution a 4-pixel LR motion moves 4 pixels of the 1/4 level).
  ``scale_motion=True`` scales it with the level instead.
- every CTR has an ``alpha`` parameter that its forward never uses; it is kept (and counted in
  the parameter totals) so the official checkpoints load unchanged.
- inputs are zero-padded at the bottom/right to a multiple of 4 and the output is cropped back;
  the hidden state lives at the padded size.
- the state-dict keys are the official ones (``first_conv``, ``UpSample.0`` ...), so
  ``gbuf.train.checkpoints`` loads and writes checkpoints the official code reads.

CycleFC (a 1x1 deformable convolution whose offsets are constants: channel ``c`` samples at a
shift of ``(c + 3) % 7 - 3`` pixels along one axis, zero outside) has two forms:
``cyclefc="fast"`` (default) shifts each channel by its integer offset and applies a 1x1
convolution; ``cyclefc="deform"`` calls ``torchvision.ops.deform_conv2d`` like the official
code. With integer offsets bilinear sampling is exact, so the two agree to float rounding; the
constant offsets are not part of the state dict (``CycleFC.official_offset()`` rebuilds the
official buffer for checking and saving).

``cyclefc="deform"`` is the reference computation throughout (every layer as the official code
runs it). ``cyclefc="fast"`` is gbuf's fast path, exact rewrites that change only float
rounding (outputs within ~1e-6, gradients alike, same parameters and state dict): on CPU the
step runs in channels-last memory (oneDNN convs are 1.3-10x faster there, depth-wise most) with
1x1 convs as matrix products over pixel rows; DFM runs its two-per-channel depth-wise conv as a
plain one and folds the second CycleFC's 1x1 conv into ``merge``; CTR folds the channel
attention into its output projection (``DFM.forward_fast``, ``CTR.forward_fast``). Training
runs this form. Without autograd on CPU (inference: ``gbuf upscale``, ``eval``, ``bench``) the
encoder and decoder layers and the skip upsamplers hand the same rewrites to oneDNN's fused
kernels (``rdg_onednn.py`` beside this file says why it exists, why it pins torch, and how it
falls back to this autograd fast form when the private ops it calls are missing). CUDA and
graph capture (ONNX export, tracing) use the autograd form.

Motion convention: gbuf's ``motion`` buffer (pixels of the LR frame, displacement from frame t
to frame t-1, x right, y down; the surface at pixel p of frame t was at p + motion in frame
t-1) is exactly the official one: the official loader reads Blender's Vector pass XY and
negates Y, and its ``motion_warp`` samples the previous frame at ``p + motion`` (bilinear,
``align_corners=True``, zeros outside): ``gbuf.train.ops.backward_warp`` with zero padding. So
gbuf motion goes in unchanged.

Input normalisation (what the official loader feeds, and what ``rdg-s``'s checkpoint expects):
``image`` display-referred in [0, 1] (the official data are 8-bit sRGB PNGs / 255), ``normal``
as ``(n + 1) / 2``, ``brdf`` and ``depth`` min-max normalised to [0, 1] per frame (over all
pixels and channels), ``motion`` in pixels, unnormalised. The gbuf loader's
``normalize="rdg"`` (``gbuf.datasets.loader``) produces exactly this on frames without sky, and
``"rdg-official"`` on every frame (where sky is visible the official depth range ends at
Blender's 1e10 background; docs/format.md, "Loading").
Output: RGB in the image's range (unclamped), ``(B, T, 3, 4H, 4W)``.

State for streaming (``step``): a tuple of tensors ``(hidden_1/4, hidden_1/2, hidden_1,
motion, started)`` at the padded size; ``started`` is ``(B, 1, 1, 1)``, 0 before the first
frame. ``initial_state(frame)`` makes the all-zero state, and ``step(frame, None)`` equals
``step(frame, initial_state(frame))`` exactly, so an exported one-frame graph also handles the
first frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train.models import rdg_onednn
from gbuf.train.models._blocks import check_inputs, is_pixel_major, pixel_rows, stream
from gbuf.train.ops import backward_warp

#: Batch keys RDG reads.
INPUTS = ("image", "depth", "normal", "motion", "brdf")

CYCLE_SPAN = 7  # the staircase of CycleFC covers 7 pixels
LEVELS = 3  # full, 1/2 and 1/4 LR resolution
PAD_MULTIPLE = 2 ** (LEVELS - 1)


def cycle_shifts(channels: int, span: int = CYCLE_SPAN) -> list[int]:
    """The constant sampling shift of each channel of a CycleFC layer (0, 1, 2, 3, -3, -2, -1, 0, ...)."""
    half = span // 2
    return [(c + half) % span - half for c in range(channels)]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Same-size bilinear resampling (align_corners=False) is the identity; skip the copy.
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution. On channels-last input it is one matrix product over pixel rows:
    PyTorch's CPU 1x1 conv takes a slow im2col path there and copies channel slices."""
    if not is_pixel_major(x):
        return F.conv2d(x, weight, bias)
    b, _, h, w = x.shape
    out = F.linear(pixel_rows(x), weight.flatten(1), bias)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def _same_layout(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory if ``like`` is, else as it is."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _gram_diagonal(rows: torch.Tensor) -> torch.Tensor:
    """``sum over pixels of rows**2`` per channel, ``(B, C)``."""
    return (rows.transpose(1, 2) @ rows).diagonal(dim1=1, dim2=2)


def _evens_then_odds(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``t`` with the even indices of ``dim`` first, then the odd ones."""
    return torch.cat([t[(slice(None),) * dim + (slice(0, None, 2),)], t[(slice(None),) * dim + (slice(1, None, 2),)]], dim=dim)


def _matmul_1x1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The 1x1 conv weight of ``conv(conv(x, b), a)`` (biases aside)."""
    return (a.flatten(1) @ b.flatten(1))[:, :, None, None]


class CycleFC(nn.Module):
    """A 1x1 convolution over channels that each look ``shift[c]`` pixels along one axis.

    ``axis="x"`` is the official ``CycleFC(kernel_size=(1, 7))`` (``mlp_h``), ``axis="y"`` the
    ``(7, 1)`` one (``mlp_w``). ``form`` picks the implementation (see the module docstring).
    """

    def __init__(self, channels: int, axis: str, form: str = "fast", span: int = CYCLE_SPAN):
        super().__init__()
        if axis not in ("x", "y"):
            raise ValueError(f"axis must be 'x' or 'y', not {axis!r}")
        if form not in ("fast", "deform"):
            raise GbufError(f"cyclefc: unknown form {form!r}; choose 'fast' or 'deform'")
        self.channels, self.axis, self.form, self.span = channels, axis, form, span
        self.weight = nn.Parameter(torch.empty(channels, channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(channels))
        # PyTorch's default convolution initialisation (fan-in uniform).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(channels)
        nn.init.uniform_(self.bias, -bound, bound)
        shifts = cycle_shifts(channels, span)
        # Channels c, c + span, c + 2*span ... share a shift, so each group is one strided slice.
        self._groups = [(first, shifts[first]) for first in range(min(span, channels))]
        # Not saved in the state dict: these are constants of the layer, not weights.
        self.register_buffer("offset", self.official_offset(), persistent=False)

    def official_offset(self) -> torch.Tensor:
        """The official ``offset`` buffer: ``(1, 2C, 1, 1)``, ``(dy, dx)`` per channel."""
        offset = torch.zeros(1, 2 * self.channels, 1, 1)
        for c, shift in enumerate(cycle_shifts(self.channels, self.span)):
            offset[0, 2 * c + (1 if self.axis == "x" else 0), 0, 0] = float(shift)
        return offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "deform":
            from torchvision.ops import deform_conv2d

            b, _, h, w = x.shape
            return deform_conv2d(x, self.offset.to(x.dtype).expand(b, -1, h, w), self.weight, self.bias)
        return _pointwise(self.shift(x), self.weight, self.bias)

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """Channel c moved so that ``out[p] = x[p + shift[c]]`` along the axis, zeros entering."""
        dim = 3 if self.axis == "x" else 2
        size = x.shape[dim]
        out = torch.zeros_like(x)
        for first, shift in self._groups:
            lo, hi = max(shift, 0), size + min(shift, 0)
            if hi <= lo:  # the shift moves everything out (tiny inputs)
                continue
            # One strided slice per group: a few large copies instead of one per channel.
            source = x[:, first::self.span].narrow(dim, lo, hi - lo)
            if dim == 3:
                out[:, first::self.span, :, lo - shift:hi - shift] = source
            else:
                out[:, first::self.span, lo - shift:hi - shift] = source
        return out

    def extra_repr(self) -> str:
        return f"{self.channels}, axis={self.axis}, span={self.span}, form={self.form}"


class DFM(nn.Module):
    """Dynamic feature modulator: a GELU gate times a CycleFC context, projected back."""

    def __init__(self, dim: int, cyclefc: str = "fast"):
        super().__init__()
        hidden = 2 * dim
        self.proj_in = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1, groups=dim), nn.Conv2d(hidden, hidden, 1))
        self.mlp_h = CycleFC(dim, "x", cyclefc)
        self.mlp_w = CycleFC(dim, "y", cyclefc)
        self.merge = nn.Conv2d(2 * dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp_h.form == "fast":
            return self.forward_fast(x)
        gate, context = self.proj_in(x).chunk(2, dim=1)
        context = self.mlp_w(self.mlp_h(context))
        return self.proj_out(self.act(gate) * self.merge(torch.cat([x, context], dim=1)))

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with fewer passes over the image (the weights are re-arranged on the
        fly, so training sees the same parameters and gradients)."""
        dim = x.shape[1]
        depthwise, pointwise = self.proj_in
        # The depth-wise conv has two outputs per input channel (groups=dim, 2*dim outputs),
        # which oneDNN runs several times slower than a plain depth-wise conv. Run it as a
        # plain depth-wise conv over [x, x]: first every even output channel, then every odd
        # one, and permute the following 1x1 conv's input columns to match.
        hidden = F.conv2d(torch.cat([x, x], dim=1), _evens_then_odds(depthwise.weight),
                          _evens_then_odds(depthwise.bias), padding=1, groups=2 * dim)
        gate, context = _pointwise(hidden, _evens_then_odds(pointwise.weight, dim=1), pointwise.bias).chunk(2, dim=1)
        context = self.mlp_h(context)
        w_x, w_context, bias = self.folded_merge()
        merged = _pointwise(torch.cat([x, self.mlp_w.shift(context)], dim=1), torch.cat([w_x, w_context], dim=1),
                            bias)
        return _pointwise(self.act(gate) * merged, self.proj_out.weight, self.proj_out.bias)

    def folded_merge(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``merge``'s weights for ``x`` and for the shifted context, and its bias, with
        ``mlp_w``'s 1x1 conv folded in: ``merge([x, mlp_w(c)])`` is linear in that conv, so the
        second CycleFC becomes its shift alone."""
        merge_x, merge_context = self.merge.weight.split(self.merge.weight.shape[1] // 2, dim=1)
        bias = self.merge.bias + merge_context.flatten(1) @ self.mlp_w.bias
        return merge_x, _matmul_1x1(merge_context, self.mlp_w.weight), bias


class CCM(nn.Module):
    """Convolutional channel mixer: conv3x3 (x2 channels) -> GELU -> conv1x1."""

    def __init__(self, dim: int):
        super().__init__()
        self.fn = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 1, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_pixel_major(x):
            return self.fn(x)
        expand, act, project = self.fn
        return _pointwise(act(expand(x)), project.weight, project.bias)


class HFB(nn.Module):
    """Fuses features with the G-buffers ``[normal, brdf]`` by mutual GELU gating."""

    def __init__(self, dim: int, gbuffer_channels: int = 6):
        super().__init__()
        self.conv_g = nn.Conv2d(gbuffer_channels, dim, 3, 1, 1)
        self.conv_x = nn.Conv2d(dim, dim, 3, 1, 1)
        self.gelu = nn.GELU()
        self.proj_out = nn.Conv2d(2 * dim, dim, 1)

    def guide(self, x: torch.Tensor, gbuffers: torch.Tensor) -> torch.Tensor:
        """The G-buffer branch: ``conv_g`` of the G-buffers resized to ``x``'s level."""
        return self.conv_g(_resize(gbuffers, tuple(x.shape[-2:])))

    def forward(self, x: torch.Tensor, gbuffers: torch.Tensor) -> torch.Tensor:
        fx = self.conv_x(x)
        fg = self.guide(x, gbuffers)
        fused = torch.cat([fx * self.gelu(fg), fg * self.gelu(fx)], dim=1)
        # (channels-last input: the fast layout, see RDG.step)
        return _pointwise(fused, self.proj_out.weight, self.proj_out.bias) if is_pixel_major(x) else self.proj_out(fused)


class CTR(nn.Module):
    """Temporal channel attention: queries from the current features, keys and values from the
    previous hidden state warped by the motion; depth joins before the output projection."""

    def __init__(self, dim: int, heads: int = 4, scale_motion: bool = False, fast: bool = False):
        super().__init__()
        hidden = 2 * dim
        self.heads, self.scale_motion, self.fast = heads, scale_motion, fast
        self.to_q = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden))
        self.to_kv = nn.Sequential(nn.Conv2d(dim, 2 * hidden, 1),
                                   nn.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=2 * hidden))
        self.proj_out = nn.Conv2d(hidden + 1, dim, 1)
        # Unused by the forward pass, as in the official code; kept so the weights load and the
        # parameter count matches the paper.
        self.alpha = nn.Parameter(torch.zeros(1, 1, hidden // (2 * heads), hidden // heads))

    def _level_guides(self, x, depth, motion):
        """Depth and motion resized to this level."""
        h, w = x.shape[-2:]
        full_h, full_w = motion.shape[-2:]
        depth, motion = _resize(depth, (h, w)), _resize(motion, (h, w))
        if self.scale_motion and (h, w) != (full_h, full_w):
            motion = motion * motion.new_tensor([w / full_w, h / full_h]).view(1, 2, 1, 1)
        return depth, motion

    def forward(self, x, depth, previous, motion, started):
        if self.fast:
            return self.forward_fast(x, depth, previous, motion, started)
        b, _, h, w = x.shape
        depth, motion = self._level_guides(x, depth, motion)
        # Before the first frame there is no hidden state: use the current features, unmoved.
        started = started > 0.5
        previous = torch.where(started, previous, x)
        motion = torch.where(started, motion, torch.zeros_like(motion))
        query, query_skip = self.to_q(x).chunk(2, dim=1)
        key, value = self.to_kv(backward_warp(previous, motion, padding_mode="zeros")).chunk(2, dim=1)
        # Attention across channels (per head), over the whole frame: (c_q x hw) @ (hw x c_k).
        query = F.normalize(query.reshape(b, self.heads, -1, h * w), dim=-1)
        key = F.normalize(key.reshape(b, self.heads, -1, h * w), dim=-1)
        value = value.reshape(b, self.heads, -1, h * w)
        # (The official code adds 1e-7 inside the softmax; softmax ignores a constant shift.)
        attention = torch.softmax(query @ key.transpose(-2, -1), dim=-1)
        out = (attention @ value).reshape(b, -1, h, w)
        return self.proj_out(torch.cat([out, query_skip, depth], dim=1))

    def _value_weight(self, q_rows: torch.Tensor, k_parts: list[torch.Tensor]) -> torch.Tensor:
        """``W_out`` times the block-diagonal channel attention: ``(B, dim, heads * c_k)``, the
        output projection's weight for the value channels (``forward_fast`` explains the fold).

        ``q_rows``: queries as pixel rows ``(B, HW, C_q)``; ``k_parts``: the keys as pixel rows,
        whole or split along channels (their concatenation is the key)."""
        b, dim = q_rows.shape[0], self.proj_out.weight.shape[0]
        cq = q_rows.shape[-1] // self.heads
        ck = sum(k.shape[-1] for k in k_parts) // self.heads
        # One (C_q x HW) @ (HW x C_k) product, then its per-head diagonal blocks: the full
        # product costs more flops but runs several times faster than one strided bmm per head.
        full = torch.cat([q_rows.transpose(1, 2) @ k for k in k_parts], dim=2)
        gram = torch.stack([full[:, i * cq:(i + 1) * cq, i * ck:(i + 1) * ck] for i in range(self.heads)], dim=1)
        eps = 1e-12  # F.normalize's
        # Squared norms over the pixels as Gram diagonals: a strided norm reduction is slower.
        q_norm = _gram_diagonal(q_rows).sqrt().clamp_min(eps).view(b, self.heads, cq, 1)
        k_norm = torch.cat([_gram_diagonal(k) for k in k_parts], dim=1).sqrt().clamp_min(eps)
        attention = torch.softmax(gram / (q_norm * k_norm.view(b, self.heads, 1, ck)), dim=-1)  # (B, heads, cq, ck)
        w_out = self.proj_out.weight.flatten(1)[:, :dim]
        return torch.einsum("ohc,bhck->bohk", w_out.view(dim, self.heads, cq), attention).flatten(2)

    def forward_fast(self, x, depth, previous, motion, started):
        """The same function with fewer passes over the image.

        Channel attention is a per-frame (c x c) matrix, so it folds into the output
        projection: ``proj_out([A @ value, skip, depth]) = [W_out A, W_skip, W_depth] @ [value,
        skip, depth]``. The normalisation of queries and keys over the pixels is applied to the
        small Gram matrix instead of to the images. In channels-last memory every pixel row
        ``(B, HW, C)`` is a view, so the whole tail is one concatenation and one matrix product.
        """
        b, dim, h, w = x.shape
        depth, motion = self._level_guides(x, depth, motion)
        started = started > 0.5
        previous = torch.where(started, previous, x)
        motion = torch.where(started, motion, torch.zeros_like(motion))
        query, query_skip = self.to_q[1](_pointwise(x, self.to_q[0].weight, self.to_q[0].bias)).chunk(2, dim=1)
        # grid_sample returns NCHW whatever its input; keep the convs that follow channels-last.
        warped = _same_layout(backward_warp(previous, motion, padding_mode="zeros"), x)
        key, value = self.to_kv[1](_pointwise(warped, self.to_kv[0].weight, self.to_kv[0].bias)).chunk(2, dim=1)
        w_value = self._value_weight(pixel_rows(query), [pixel_rows(key)])
        w_rest = self.proj_out.weight.flatten(1)[:, dim:]
        weight = torch.cat([w_value, w_rest.expand(b, -1, -1)], dim=2)  # (B, dim, 2dim + dim + 1)
        inputs = pixel_rows(torch.cat([value, query_skip, depth], dim=1))
        out = torch.baddbmm(self.proj_out.bias.view(1, 1, dim), inputs, weight.transpose(1, 2))
        return out.view(b, h, w, dim).permute(0, 3, 1, 2)


class EncodeLayer(nn.Module):
    def __init__(self, dim: int, cyclefc: str = "fast"):
        super().__init__()
        self.dfm = DFM(dim, cyclefc)
        self.ffn = CCM(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dfm.mlp_h.form == "fast" and rdg_onednn.applies(x):
            return rdg_onednn.encode_layer(self, x)
        x = self.dfm(x) + x
        return self.ffn(x) + x


class DecodeLayer(nn.Module):
    def __init__(self, dim: int, gbuffer_channels: int = 6, scale_motion: bool = False, fast: bool = False):
        super().__init__()
        self.hfb = HFB(dim, gbuffer_channels)
        self.ctr = CTR(dim, scale_motion=scale_motion, fast=fast)
        self.ffn = CCM(dim)

    def forward(self, x, gbuffers, depth, previous, motion, started):
        if self.ctr.fast and rdg_onednn.applies(x):
            return rdg_onednn.decode_layer(self, x, gbuffers, depth, previous, motion, started)
        x = self.hfb(x, gbuffers) + x
        x = self.ctr(x, depth, previous, motion, started) + x
        return self.ffn(x) + x


class Upsample2x(nn.Module):
    """Bilinear x2 then conv3x3 (changes the channel count)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))

    def with_skip(self, x: torch.Tensor, skip: torch.Tensor, alpha: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """``forward(x) + alpha * skip`` (the U-Net's scaled skip connection)."""
        if fused and rdg_onednn.applies(skip):
            return rdg_onednn.upsample_with_skip(self, x, skip, alpha)
        return self.forward(x) + alpha * skip


class RDG(nn.Module):
    """RDG with ``num_feat`` channels at full LR resolution (16: RDG-s, 36: RDG).

    ``cyclefc``: ``"fast"`` (shift + 1x1 conv, and the fast path of the other layers) or
    ``"deform"`` (torchvision deform_conv2d, every layer as the official code computes it).
    ``motion_frame``: ``"previous"`` (official) or ``"current"``; ``scale_motion``: scale the
    motion magnitude with each level (default False, official). See the module docstring.
    ``inputs``: the buffers the model reads, ``image`` and any of the G-buffers (default all);
    the ones left out are neither loaded nor fed: the model sees zeros in their place (the
    G-buffer ablation, e.g. ``inputs=["image"]``). Parameters and state dict are unchanged.
    """

    inputs = INPUTS
    recurrent = True
    #: Names of the state tensors (ONNX input names of the exported step).
    state_names = ("hidden_quarter", "hidden_half", "hidden_full", "previous_motion", "started")

    def __init__(self, num_feat: int = 16, scale: int = 4, cyclefc: str = "fast",
                 motion_frame: str = "previous", scale_motion: bool = False, inputs=INPUTS):
        super().__init__()
        if motion_frame not in ("previous", "current"):
            raise GbufError(f"rdg: motion_frame must be 'previous' or 'current', not {motion_frame!r}")
        if "image" not in inputs or any(k not in INPUTS for k in inputs):
            raise GbufError(f"rdg: inputs must hold image and any of {', '.join(INPUTS[1:])}, not {list(inputs)}")
        self.inputs = tuple(k for k in INPUTS if k in inputs)
        d = num_feat
        self.num_feat, self.scale, self.cyclefc, self.motion_frame = d, scale, cyclefc, motion_frame
        self.first_conv = nn.Conv2d(3, d, 3, 1, 1)
        # Level widths d, 2d, 3d; skips enter the decoders at 2d and d.
        self.encoders = nn.ModuleList([nn.Sequential(EncodeLayer(d, cyclefc)), nn.Sequential(EncodeLayer(2 * d, cyclefc))])
        self.downs = nn.ModuleList([nn.Conv2d(d, 2 * d, 3, 2, 1), nn.Conv2d(2 * d, 3 * d, 3, 2, 1)])
        self.middle_encoders = nn.Sequential(EncodeLayer(3 * d, cyclefc))
        fast = cyclefc == "fast"
        self.middle_decoders = DecodeLayer(3 * d, scale_motion=scale_motion, fast=fast)
        self.ups = nn.ModuleList([Upsample2x(3 * d, 2 * d), Upsample2x(2 * d, d)])
        self.decoders = nn.ModuleList([DecodeLayer(2 * d, scale_motion=scale_motion, fast=fast),
                                       DecodeLayer(d, scale_motion=scale_motion, fast=fast)])
        self.skip_alphas = nn.ParameterList([nn.Parameter(torch.zeros(1, d, 1, 1)),
                                             nn.Parameter(torch.zeros(1, 2 * d, 1, 1))])
        self.UpSample = nn.Sequential(nn.Conv2d(d, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    # -- streaming -------------------------------------------------------------------------

    def initial_state(self, frame: dict) -> tuple[torch.Tensor, ...]:
        """The state before the first frame: zeros, with ``started`` = 0."""
        image = frame["image"]
        b = image.shape[0]
        hp, wp = (_padded(n) for n in image.shape[-2:])
        zeros = lambda c, f: image.new_zeros(b, c, hp // f, wp // f)  # noqa: E731
        d = self.num_feat
        return (zeros(3 * d, 4), zeros(2 * d, 2), zeros(d, 1), zeros(2, 1), image.new_zeros(b, 1, 1, 1))

    def step(self, frame: dict, state=None):
        """One frame: ``frame`` maps each of ``inputs`` to ``(B, C, H, W)``.

        Returns ``(output (B, 3, sH, sW), new_state)``; ``state=None`` starts a sequence.
        """
        check_inputs("rdg", frame, self.inputs, self.scale, ndim=4)
        if len(self.inputs) < len(INPUTS):  # the ablation: left-out buffers read as zeros
            b, _, h, w = frame["image"].shape
            frame = {k: frame[k] if k in self.inputs else frame["image"].new_zeros(b, fmt.BUFFERS[k].channels, h, w)
                     for k in INPUTS}
        image = frame["image"]
        h, w = image.shape[-2:]
        if state is None:
            state = self.initial_state(frame)
        hidden_quarter, hidden_half, hidden_full, previous_motion, started = state
        image, depth, motion = (_pad(frame[k]) for k in ("image", "depth", "motion"))
        gbuffers = _pad(torch.cat([frame["normal"], frame["brdf"]], dim=1))
        if self.cyclefc == "fast" and image.device.type == "cpu":
            # Channels-last memory: oneDNN's CPU convolutions run 1.3-10x faster on it than on
            # NCHW (depth-wise ones most), and 1x1 convs and the attention become plain matrix
            # products over pixel rows. Values are unchanged; the state stays channels-last.
            image, depth, motion, gbuffers, hidden_quarter, hidden_half, hidden_full = (
                t.contiguous(memory_format=torch.channels_last)
                for t in (image, depth, motion, gbuffers, hidden_quarter, hidden_half, hidden_full))
        warp_motion = previous_motion if self.motion_frame == "previous" else motion

        x = self.first_conv(image)
        residual = x
        skip_full = self.encoders[0](x)
        skip_half = self.encoders[1](self.downs[0](skip_full))
        x = self.middle_encoders(self.downs[1](skip_half))
        guide = (gbuffers, depth)
        new_quarter = self.middle_decoders(x, *guide, hidden_quarter, warp_motion, started)
        fused = self.cyclefc == "fast"
        x = self.ups[0].with_skip(new_quarter, skip_half, self.skip_alphas[1], fused)
        new_half = self.decoders[0](x, *guide, hidden_half, warp_motion, started)
        x = self.ups[1].with_skip(new_half, skip_full, self.skip_alphas[0], fused)
        new_full = self.decoders[1](x, *guide, hidden_full, warp_motion, started)
        out = self._upsample((new_full + residual)[:, :, :h, :w])
        return out, (new_quarter, new_half, new_full, motion, torch.ones_like(started))

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        conv, shuffle = self.UpSample
        if self.cyclefc != "fast" or not x.is_contiguous(memory_format=torch.channels_last):
            return shuffle(conv(x))
        # PixelShuffle by hand: on a channels-last input this one reshape copy is ~2x faster
        # than nn.PixelShuffle and gives an ordinary contiguous NCHW output.
        y = conv(x)
        b, c, h, w = y.shape
        r = shuffle.upscale_factor
        return y.view(b, c // (r * r), r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (r * r), h * r, w * r)

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch``: ``(B, T, C, H, W)`` per key of ``inputs`` -> ``(B, T, 3, sH, sW)``."""
        check_inputs("rdg", batch, self.inputs, self.scale, ndim=5)
        return stream(self.step, batch, self.inputs)


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def _pad(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (_padded(h), _padded(w)):
        return x
    return F.pad(x, (0, _padded(w) - w, 0, _padded(h) - h))
