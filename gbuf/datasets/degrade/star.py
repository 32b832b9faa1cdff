"""STAR's real-world video degradation, the ``star`` preset of ``--realworld``.

Xie et al., "STAR: Spatial-Temporal Augmentation with Text-to-Video Models for Real-World Video
Super-Resolution" (2025) make their training pairs with a Real-ESRGAN-style pipeline plus video
compression (official code: NJU-PCALab/STAR, ``utils_data/opensora/datasets/high_order/
degrade_video.py``, read for the facts below; nothing is copied). Its order, per frame::

    stage 1: blur (always) -> resize (up/down/keep) -> noise -> JPEG -> video codec
    stage 2: blur (prob 0.8) -> resize (relative to the LR size) -> noise ->
             in random order (1/2 each) {resize to LR + final sinc (prob 0.8)} and {JPEG}
             -> video codec (its own codec and bitrate draw), at the LR size
    final:   clip and round to 8 bits

with Real-ESRGAN's numbers throughout (kernel list and probabilities, sigma [0.2, 3] / [0.2, 1.5],
resize [0.15, 1.5] / [0.3, 1.2], noise [1, 30] / [1, 25], Poisson [0.05, 3] / [0.05, 2.5], JPEG
[30, 95], final sinc 0.8), and the codec step of RealBasicVSR: libx264 / h264 / mpeg4 (1/3 each),
a bitrate drawn from [1e4, 1e5] at a 1 frame/s time base (so bits per frame: low bitrates), in
``yuv420p``, through PyAV. Those are the numbers of gbuf's ``realworld`` defaults, so the preset
changes only what differs from the RealBasicVSR-style default:

- **The codec comes last.** Stage 2 ends with Real-ESRGAN's image tail (the drawn order of
  {resize + sinc} and JPEG) and then the second codec pass on the LR frames; RealBasicVSR (the
  default preset) puts its codec pass in random order with {resize + sinc}, after JPEG.
- **One draw per clip.** STAR has no per-frame random walk: with ``preset = "star"`` every
  parameter of a clip (kernels, sigmas, resize factors, noise levels, JPEG qualities, codecs,
  bitrates, orders) is drawn once and holds for every frame; ``[realworld.walk]`` is not used.

Where gbuf departs from STAR's code, on purpose:

- STAR degrades every frame on its own: each frame gets fresh random draws, and its "video"
  compression encodes a one-frame video (an intra frame). gbuf draws once per clip and encodes the
  whole clip through the codec, so the LR clip has the temporal artefacts of a real low-bitrate
  stream and is consistent over time, as the preset is meant to be (and as the default is).
- STAR (like Real-ESRGAN) degrades an unsharp-masked copy of the HR frame and trains towards that
  sharpened target. gbuf's degradation writes LR groups and leaves ``hr`` as rendered; an LR made
  from a sharpened HR paired with the unsharpened HR would teach a network to blur, so no
  sharpening is applied (sharpening the target is the trainer's business, as for the default).
- STAR's stage-2 resize computes the width as ``int(W / scale * scale)`` with the *random* scale,
  i.e. the full HR width (a slip: only the height is reduced, and the final resize repairs the
  aspect); gbuf resizes both axes to ``(H / s, W / s) * factor``.
- JPEG is libjpeg through Pillow (STAR uses Real-ESRGAN's DiffJPEG, a differentiable model of the
  same codec); odd frame sizes are padded for ``yuv420p`` rather than cropped by one row/column.

Determinism is the default's: the clip's parameters come from a generator seeded by ``(seed,
clip key)`` before any frame is processed, the noise of frame t from one seeded by ``(seed, clip
key, t, stage)``, and the codec runs single-threaded, so one seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses

from gbuf.datasets.degrade.config import RealworldConfig, WalkConfig

#: The preset's name (``realworld.preset``, ``gbuf degrade --realworld --preset star``).
NAME = "star"


def clip_walk(cfg: RealworldConfig) -> WalkConfig:
    """The per-frame random-walk steps of ``cfg``'s preset: its own for the default, none for STAR."""
    if cfg.preset != NAME:
        return cfg.walk
    return WalkConfig(**{field.name: 0.0 for field in dataclasses.fields(WalkConfig)})


def codec_last(plan: dict) -> bool:
    """Whether a clip's second codec pass comes after stage 2's image tail (STAR's order)."""
    return bool(plan.get("video")) and plan.get("preset") == NAME
