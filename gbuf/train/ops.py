"""Small tensor operations shared by models, metrics, tests and data tools.

``backward_warp`` is the one warp of gbuf: every model that aligns a frame or a feature map
with motion or optical flow calls it (through ``gbuf.train.models._blocks`` or directly), as do
the temporal metrics and the data checks, so they all read docs/format.md's motion convention
the same way.
"""

from __future__ import annotations


def backward_warp(frame, motion, padding_mode: str = "border", mode: str = "bilinear"):
    """Warp ``frame`` (the previous frame) onto the current one with gbuf motion.

    ``frame``: (B, C, H, W); ``motion``: (B, 2, H, W) in pixels, the gbuf
    convention: the surface at pixel p of frame t was at p + motion[t, p] in
    frame t-1 (x right, y down). So ``backward_warp(frame[t-1], motion[t])``
    predicts frame t. In general: ``out[p] = frame[p + motion(p)]``, which is
    also how models apply an optical flow (SPyNet's) or composed motion.
    Sampling at pixel centres (integer coordinates; ``align_corners=True``),
    ``mode`` ``"bilinear"`` or ``"nearest"``; outside the frame ``padding_mode``
    (``"border"``: the edge pixel, ``"zeros"``: 0, what models use for features).
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = frame.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=frame.device, dtype=motion.dtype),
        torch.arange(w, device=frame.device, dtype=motion.dtype),
        indexing="ij",
    )
    sx = xs + motion[:, 0]
    sy = ys + motion[:, 1]
    # align_corners=True maps -1/+1 to the centres of the first/last pixel.
    grid = torch.stack((2.0 * sx / max(w - 1, 1) - 1.0, 2.0 * sy / max(h - 1, 1) - 1.0), dim=-1)
    return F.grid_sample(frame, grid.to(frame.dtype), mode=mode, padding_mode=padding_mode,
                         align_corners=True)
