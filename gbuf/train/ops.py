"""Small tensor operations shared by metrics, tests and data tools.

Models keep their own copies of what they need (one self-contained file per
model); this module is for code that is not a model.
"""

from __future__ import annotations


def backward_warp(frame, motion, padding_mode: str = "border"):
    """Warp ``frame`` (the previous frame) onto the current one with gbuf motion.

    ``frame``: (B, C, H, W); ``motion``: (B, 2, H, W) in pixels, the gbuf
    convention: the surface at pixel p of frame t was at p + motion[t, p] in
    frame t-1 (x right, y down). So ``backward_warp(frame[t-1], motion[t])``
    predicts frame t. Bilinear sampling at pixel centres.
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
    return F.grid_sample(frame, grid.to(frame.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)
