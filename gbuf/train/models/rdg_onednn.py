"""RDG's fused CPU inference path: the fast form's layers through oneDNN's fused kernels.

``rdg.py`` is the model as the paper describes it, in two forms: the reference computation
(``cyclefc="deform"``) and the autograd fast form (exact rewrites, what training runs). This
module is a third way to compute the fast form, for inference on the CPU only: without
autograd, on float32 channels-last tensors, ``rdg.EncodeLayer``, ``rdg.DecodeLayer`` and
``rdg.Upsample2x`` hand their work to the functions here (``encode_layer``, ``decode_layer``,
``upsample_with_skip``). Outputs match the autograd fast form to float rounding (~1e-6); the
tests compare them.

What it does differently: a conv or matmul with its GELU or residual add applied in the same
kernel, while each output block is still in cache; concatenations replaced by matmuls that
accumulate into one buffer; 2*dim-channel maps made as two dim-channel halves (see
``halves``); the hidden state warped by an ``embedding_bag`` over pixel rows, bit-identical to
``grid_sample``. On a memory-bound CPU every avoided pass over a full-resolution map counts,
and so does every avoided allocation: a tensor over glibc's 32 MB mmap threshold comes from
fresh, page-faulted memory each time. ``benchmarks/models.py`` measures the result.

Why torch is pinned (``torch==2.14.1`` in pyproject.toml): the fused kernels are
``torch.ops.mkldnn._linear_pointwise`` and ``torch.ops.mkldnn._convolution_pointwise`` (and
their ``.binary`` overloads), private ops that PyTorch registers for its own graph compiler
(Inductor). They are not a public API: their names, argument lists and attribute strings may
change in any release, so they are called only as checked on 2.14.1.

Fallback: ``applies(x)`` is False when the ops are missing (a build without oneDNN, or a
release that dropped or renamed them; ``ready()`` checks once), with autograd on (the kernels
have no backward), off the CPU, for other dtypes or layouts, and during graph capture (ONNX
export, tracing, torch.compile get portable aten ops). Then RDG runs the autograd fast form:
the same values, slower. Nothing else changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbuf.train.models._blocks import is_pixel_major, pixel_rows

_READY: bool | None = None


def ready() -> bool:
    """Whether this torch build has the fused oneDNN ops this module calls."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_convolution_pointwise"))
    except (AttributeError, RuntimeError):  # an op namespace that is not registered
        return False


def applies(x: torch.Tensor) -> bool:
    """Whether the fused kernels apply to the layer input ``x`` (see the module docstring)."""
    global _READY
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32 or not is_pixel_major(x):
        return False
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if _READY is None:
        _READY = ready()
    return _READY


# -- kernels -------------------------------------------------------------------------------


def flat_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as ``(B*H*W, C)`` pixel rows (a view when ``x`` is pixel-major)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def as_image(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pixel rows back to a channels-last ``(B, C, H, W)`` view shaped like ``like``."""
    b, _, h, w = like.shape
    return rows.view(b, h, w, -1).permute(0, 3, 1, 2)


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False,
                 add: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 conv of a pixel-major ``x``, then GELU (exact, erf) or ``+ add``, in one oneDNN matmul."""
    # A strided weight (a slice of a layer's) sends oneDNN to its reference kernel, ~1000x slower.
    rows, weight = flat_rows(x), weight.flatten(1).contiguous()
    if add is not None:
        out = torch.ops.mkldnn._linear_pointwise.binary(rows, flat_rows(add), weight, bias, "add")
    elif gelu:
        out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "gelu", [], "none")
    else:
        out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return as_image(out, x)


def fused_conv3x3(x: torch.Tensor, conv: nn.Conv2d, gelu: bool = False,
                  add: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x)`` (3x3, stride 1, padding 1), then GELU or ``+ add``, in one oneDNN convolution."""
    args = ([1, 1], [1, 1], [1, 1], conv.groups)
    weight = conv.weight.contiguous()
    if add is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, weight, conv.bias, *args, "add",
                                                              None, None, [], None)
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._convolution_pointwise(x, weight, conv.bias, *args, attr, [], algorithm)


def warp_channels_last(features: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """``backward_warp(features, motion, padding_mode="zeros")`` for a pixel-major ``features``,
    bit-identical to it, twice as fast on CPU.

    Bilinear sampling is a weighted sum of four whole pixel rows, which ``embedding_bag`` does in
    one pass over channels-last memory (grid_sample walks channel planes and returns NCHW).
    Sample positions and weights are computed exactly as grid_sample computes them (the grid's
    normalisation round trip included), so the result is identical, not merely close; corners
    outside the frame get weight 0 (zero padding)."""
    b, c, h, w = features.shape
    sample_x = torch.arange(w, dtype=motion.dtype, device=motion.device).view(1, 1, w) + motion[:, 0]
    sample_y = torch.arange(h, dtype=motion.dtype, device=motion.device).view(1, h, 1) + motion[:, 1]
    # backward_warp's grid, then grid_sample's unnormalisation for align_corners=True.
    xs = (2.0 * sample_x / max(w - 1, 1) - 1.0 + 1) * ((w - 1) / 2)
    ys = (2.0 * sample_y / max(h - 1, 1) - 1.0 + 1) * ((h - 1) / 2)
    x0, y0 = xs.floor(), ys.floor()
    weights_x = ((x0 + 1) - xs, xs - x0)
    weights_y = ((y0 + 1) - ys, ys - y0)
    x0, y0 = x0.long(), y0.long()
    first = (torch.arange(b, device=motion.device) * (h * w)).view(b, 1, 1)
    index, weight = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            # Outside corners read pixel 0 with weight 0 (zero padding without a padded copy).
            index.append(torch.where(inside, first + yi * w + xi, 0))
            weight.append((weights_y[dy] * weights_x[dx]).masked_fill_(~inside, 0.0))
    rows = F.embedding_bag(torch.stack(index, -1).view(-1, 4), flat_rows(features).contiguous(),
                           per_sample_weights=torch.stack(weight, -1).view(-1, 4).to(features.dtype), mode="sum")
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


def halves(conv: nn.Conv2d) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight, bias)`` of the first and second half of ``conv``'s output channels.

    The fused path makes a 2*dim-channel map as two dim-channel ones: at full resolution a map
    of 72 channels (RDG) is 37.6 MB, over glibc's 32 MB mmap ceiling, so each one would come
    from freshly page-faulted memory; half-width maps are recycled by the heap (a 1x1 conv to
    72 channels was measured 2.6x slower than two to 36)."""
    return [(w, b) for w, b in zip(conv.weight.chunk(2), conv.bias.chunk(2))]


def conv_then_depthwise(x: torch.Tensor, pointwise: nn.Conv2d, depthwise: nn.Conv2d, part: int,
                        parts: int) -> torch.Tensor:
    """Channel group ``part`` of ``parts`` of ``depthwise(pointwise(x))`` (1x1 then depth-wise
    3x3): each output channel of the pair depends on its own channel only, so the groups can be
    made one at a time (and freed one at a time)."""
    w, b, dw, db = (t.chunk(parts)[part] for t in (pointwise.weight, pointwise.bias, depthwise.weight, depthwise.bias))
    return F.conv2d(fused_linear(x, w, b), dw, db, padding=1, groups=dw.shape[0])


# -- layers (each: the layer's forward plus its residual, for an ``rdg`` layer) -------------


def dfm_residual(dfm, x: torch.Tensor) -> torch.Tensor:
    """``dfm(x) + x`` (``rdg.DFM``)."""
    dim = x.shape[1]
    depthwise, pointwise = dfm.proj_in
    # The two-per-channel depth-wise conv as two plain ones (its even and its odd outputs),
    # and the 1x1 conv after it as accumulated matmuls: no concatenated copy of x and no
    # 2*dim-channel depth-wise pass (the slow kind in oneDNN). Gate and context are made
    # as separate dim-channel maps (see ``halves``).
    even = F.conv2d(x, depthwise.weight[0::2], depthwise.bias[0::2], padding=1, groups=dim)
    odd = F.conv2d(x, depthwise.weight[1::2], depthwise.bias[1::2], padding=1, groups=dim)
    gate_and_context = []
    for w, b in halves(pointwise):
        half = fused_linear(even, w[:, 0::2], b)
        flat_rows(half).addmm_(flat_rows(odd), w[:, 1::2].flatten(1).t())
        gate_and_context.append(half)
    gate, context = gate_and_context
    del even, odd
    context = fused_linear(dfm.mlp_h.shift(context), dfm.mlp_h.weight, dfm.mlp_h.bias)
    # merge([x, mlp_w(context)]) with mlp_w's 1x1 conv folded in, as two accumulated matmuls.
    w_x, w_context, bias = dfm.folded_merge()
    merged = fused_linear(x, w_x, bias)
    flat_rows(merged).addmm_(flat_rows(dfm.mlp_w.shift(context)), w_context.flatten(1).t())
    torch.ops.aten.gelu_(gate)
    return fused_linear(merged.mul_(gate), dfm.proj_out.weight, dfm.proj_out.bias, add=x)


def ccm_residual(ccm, x: torch.Tensor) -> torch.Tensor:
    """``ccm(x) + x`` (``rdg.CCM``): conv3x3+GELU and 1x1+residual, each one oneDNN kernel."""
    expand, _, project = ccm.fn
    return fused_linear(fused_conv3x3(x, expand, gelu=True), project.weight, project.bias, add=x)


def hfb_residual(hfb, x: torch.Tensor, gbuffers: torch.Tensor) -> torch.Tensor:
    """``hfb(x, gbuffers) + x`` (``rdg.HFB``) without the concatenation: the output projection
    is two accumulated matmuls over the two gated halves, the residual fused into the first."""
    dim = x.shape[1]
    fx = hfb.conv_x(x)
    fg = hfb.guide(x, gbuffers)
    w_x, w_g = hfb.proj_out.weight.split(dim, dim=1)
    out = fused_linear(F.gelu(fg).mul_(fx), w_x, hfb.proj_out.bias, add=x)  # fx * gelu(fg)
    flat_rows(out).addmm_(flat_rows(F.gelu(fx).mul_(fg)), w_g.flatten(1).t())  # fg * gelu(fx)
    return out


def ctr_residual(ctr, x, depth, previous, motion, started):
    """``ctr(x, ...) + x`` (``rdg.CTR``) as its ``forward_fast`` computes it, with no
    concatenation and no map wider than ``dim`` channels (see ``halves``): query and skip, and
    each half of the keys and of the values, are made separately (1x1 conv then depth-wise 3x3,
    both per-channel separable), and the output projection accumulates its value, skip and
    depth terms in one buffer that starts as ``skip projection + bias + x``."""
    b, dim = x.shape[:2]
    depth, motion = ctr._level_guides(x, depth, motion)
    started = started > 0.5
    if not bool(started.all()):  # (a CPU tensor: no device sync; skips a full-size select)
        previous = torch.where(started, previous, x)
        motion = torch.where(started, motion, torch.zeros_like(motion))
    # Made in the order they are used and freed as soon as possible: at full resolution
    # each map is tens of MB, and a lower peak keeps the heap from growing every frame.
    warped = warp_channels_last(previous, motion)
    keys = [conv_then_depthwise(warped, *ctr.to_kv, part, 4) for part in (0, 1)]
    query = conv_then_depthwise(x, *ctr.to_q, 0, 2)
    w_value = ctr._value_weight(pixel_rows(query), [pixel_rows(k) for k in keys])
    del query, keys
    w_skip, w_depth = ctr.proj_out.weight.flatten(1)[:, dim:].split([dim, 1], dim=1)
    out = fused_linear(conv_then_depthwise(x, *ctr.to_q, 1, 2), w_skip, ctr.proj_out.bias, add=x)
    out_rows = pixel_rows(out)
    for part, w_part in zip((2, 3), w_value.split(dim, dim=2)):
        out_rows.baddbmm_(pixel_rows(conv_then_depthwise(warped, *ctr.to_kv, part, 4)), w_part.transpose(1, 2))
    del warped
    out_rows.baddbmm_(pixel_rows(depth), w_depth.t().expand(b, 1, dim))
    return out


def encode_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """``rdg.EncodeLayer``: DFM then CCM, each residual."""
    return ccm_residual(layer.ffn, dfm_residual(layer.dfm, x))


def decode_layer(layer, x, gbuffers, depth, previous, motion, started):
    """``rdg.DecodeLayer``: HFB, CTR, CCM, each residual."""
    x = hfb_residual(layer.hfb, x, gbuffers)
    x = ctr_residual(layer.ctr, x, depth, previous, motion, started)
    return ccm_residual(layer.ffn, x)


def upsample_with_skip(up, x: torch.Tensor, skip: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``up(x) + alpha * skip`` (``rdg.Upsample2x.with_skip``), the skip added inside the conv."""
    resampled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return fused_conv3x3(resampled.contiguous(memory_format=torch.channels_last), up.conv, add=alpha * skip)
