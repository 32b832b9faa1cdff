"""What a render is asked to do, checked before Blender is touched (no bpy here).

``RenderSettings`` holds the options of ``gbuf.render.render`` that decide the
pixels; ``to_attrs()`` is what the store records, and what a resumed render must
match. The fixed light-path settings are the RDG dataset's.
"""

from __future__ import annotations

import dataclasses

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

#: The buffers rendered when none are asked for: what RDG reads.
DEFAULT_BUFFERS = fmt.RDG_BUFFERS

#: Cycles device names gbuf accepts, mapped to Cycles' compute device type.
DEVICES = {"cpu": None, "cuda": "CUDA", "optix": "OPTIX", "hip": "HIP", "metal": "METAL"}

#: How the LR group is made: ``render`` renders it like HR at LR size; ``aliased``
#: renders it as a real-time renderer would (one sample at the pixel centre,
#: sub-pixel camera jitter per frame, no denoising).
LR_MODES = ("render", "aliased")

#: Light paths of the RDG dataset (Cycles): 12 bounces in all, indirect light
#: clamped at 10, glossy filter 1, caustics on.
LIGHT_PATHS = {
    "max_bounces": 12,
    "diffuse_bounces": 4,
    "glossy_bounces": 4,
    "transmission_bounces": 2,
    "volume_bounces": 2,
    "transparent_max_bounces": 0,
    "sample_clamp_direct": 0.0,
    "sample_clamp_indirect": 10.0,
    "blur_glossy": 1.0,
    "caustics_reflective": True,
    "caustics_refractive": True,
}

#: Sampling when no sample count is given: adaptive, as the RDG dataset.
ADAPTIVE_MAX_SAMPLES = 1000
ADAPTIVE_THRESHOLD = 0.01

#: Real-time renderers cycle a short Halton(2, 3) jitter sequence; 16 is common (TAA, DLSS, FSR).
JITTER_PERIOD = 16


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    resolution: tuple[int, int] = (1920, 1080)   # HR (width, height)
    scale: int = 4
    samples: int | None = None                   # None: adaptive, max 1000, threshold 0.01
    denoise: bool = True
    lr_mode: str = "render"
    device: str = "cpu"
    buffers: tuple[str, ...] = DEFAULT_BUFFERS
    seed: int = 0

    @property
    def hr_size(self) -> tuple[int, int]:
        return self.resolution

    @property
    def lr_size(self) -> tuple[int, int]:
        w, h = self.resolution
        return w // self.scale, h // self.scale

    def to_attrs(self) -> dict:
        """The settings as stored in the sequence attrs (JSON types only)."""
        w, h = self.resolution
        lw, lh = self.lr_size
        return {
            "hr_resolution": [w, h],
            "lr_resolution": [lw, lh],
            "scale": self.scale,
            "samples": self.samples if self.samples is not None else "adaptive",
            "adaptive_max_samples": ADAPTIVE_MAX_SAMPLES if self.samples is None else None,
            "adaptive_threshold": ADAPTIVE_THRESHOLD if self.samples is None else None,
            "denoise": self.denoise,
            "denoiser": "OpenImageDenoise (albedo + normal)" if self.denoise else None,
            "pixel_filter": "Blackman-Harris, 1.5 px",
            "lr_mode": self.lr_mode,
            "device": self.device,
            "buffers": list(self.buffers),
            "seed": self.seed,
            "animated_seed": True,
            "motion_blur": False,
            "light_paths": dict(LIGHT_PATHS),
        }


@dataclasses.dataclass(frozen=True)
class ScaleOut:
    """How much of a sequence one render call writes, and its shard length (``gbuf.render.blocks``).

    The default renders the whole sequence. ``plan`` only creates its arrays with their
    final shape; ``block=K`` renders only block K, the K-th run of ``blocks_of`` frames
    (default: one shard). ``frames_per_shard`` sets the shard length of a new sequence.
    """

    frames_per_shard: int | None = None
    plan: bool = False
    block: int | None = None
    blocks_of: int | None = None

    @property
    def partial(self) -> bool:
        """Whether the call writes only part of the sequence (its plan or one block)."""
        return self.plan or self.block is not None


def make_settings(*, resolution=(1920, 1080), scale=4, samples=None, denoise=True, lr_mode="render",
                  device="cpu", passes=None, seed=0) -> RenderSettings:
    """Check every option and return the settings; a bad one raises a one-line ``GbufError``."""
    try:
        w, h = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise GbufError(f"resolution {resolution!r}: expected (width, height)") from None
    if w < 1 or h < 1:
        raise GbufError(f"resolution {w}x{h}: width and height must be positive")
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise GbufError(f"scale {scale!r}: must be a positive integer")
    scale = int(scale)
    if w % scale or h % scale:
        raise GbufError(f"resolution {w}x{h}: not divisible by the scale {scale}")
    if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 1):
        raise GbufError(f"samples {samples!r}: must be a positive integer (or None for adaptive)")
    if lr_mode not in LR_MODES:
        raise GbufError(f"lr mode {lr_mode!r}: unknown; known: {', '.join(LR_MODES)}")
    if device not in DEVICES:
        raise GbufError(f"device {device!r}: unknown; known: {', '.join(DEVICES)}")
    buffers = parse_passes(passes)
    return RenderSettings(resolution=(w, h), scale=scale, samples=None if samples is None else int(samples),
                          denoise=bool(denoise), lr_mode=lr_mode, device=device, buffers=buffers,
                          seed=int(seed))


def parse_passes(passes) -> tuple[str, ...]:
    """Buffer names from a list or a comma-separated string; ``None`` gives the RDG set."""
    if passes is None:
        return tuple(DEFAULT_BUFFERS)
    if isinstance(passes, str):
        names = [p.strip() for p in passes.split(",") if p.strip()]
    else:
        names = [str(p).strip() for p in passes]
    if not names:
        raise GbufError("passes: empty; name at least one buffer")
    unknown = [n for n in names if n not in fmt.BUFFERS]
    if unknown:
        raise GbufError(f"passes: unknown buffer {unknown[0]!r}; known: {', '.join(fmt.BUFFERS)}")
    if len(set(names)) != len(names):
        raise GbufError(f"passes: a buffer is named twice in {','.join(names)}")
    # The image is what super-resolution learns; every sequence has it, first.
    return tuple(["image"] + [n for n in names if n != "image"])


def halton(index: int, base: int) -> float:
    """The radical inverse of ``index`` in ``base`` (index >= 1 gives values in (0, 1))."""
    result, f = 0.0, 1.0
    while index > 0:
        f /= base
        result += f * (index % base)
        index //= base
    return result


def jitter_sequence(num_frames: int) -> list[list[float]]:
    """Per-frame sub-pixel jitter ``[dx, dy]`` in LR pixels (x right, y down), in [-0.5, 0.5).

    Frame ``t`` samples each pixel at its centre moved by ``jitter[t]``: the
    Halton(2, 3) points 1..16, repeated, centred on zero.
    """
    return [[halton(t % JITTER_PERIOD + 1, 2) - 0.5, halton(t % JITTER_PERIOD + 1, 3) - 0.5]
            for t in range(num_frames)]
