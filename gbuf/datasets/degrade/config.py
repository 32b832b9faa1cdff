"""Degradation settings: one typed dataclass tree with the published defaults.

Read with the loader every ``--config`` uses (``gbuf.config_files``, the one
``gbuf train`` uses too): a TOML or YAML file mirrors :class:`DegradeConfig`
(any subset of it), then ``--set`` overrides and the command's flags apply by
dotted name. An unknown key or a value of the wrong type is an error naming the
file and the key, so a typo never silently falls back to a default. Example::

    [gaussian]
    variant = "duf"

    [realworld.stage1.noise]
    gaussian_sigma = [1, 15]

    [realworld.video]
    enabled = false

Sources of the realworld numbers: Real-ESRGAN's training options
(``train_realesrgan_x4plus.yml``: kernel lists and probabilities, sigma and beta
ranges, resize probabilities and ranges, noise ranges, JPEG 30-95, second-stage
ranges, final sinc probability 0.8) and RealBasicVSR's REDS configuration (video
rules: per-frame random-walk steps, codecs libx264/h264/mpeg4, bitrate 1e4-1e5).

The realworld section is recorded as it is in a degraded group's attrs
(``method_params.settings``), so field names and the types of the defaults are
part of the store format: a resumed run compares them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from gbuf import config_files
from gbuf.datasets.degrade.blur import VARIANTS
from gbuf.datasets.degrade.gbuffers import MODES
from gbuf.datasets.degrade.video import KNOWN_CODECS
from gbuf.errors import GbufError

PI = math.pi
GAUSSIAN_KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_SIZES = [7, 9, 11, 13, 15, 17, 19, 21]
RESIZE_MODES = ["area", "bilinear", "bicubic"]

_field = dataclasses.field


def _list(values):
    return _field(default_factory=lambda: list(values))


@dataclasses.dataclass
class BicubicConfig:
    antialias: bool = True


@dataclasses.dataclass
class GaussianConfig:
    #: ``matlab`` (BasicVSR) or ``duf``.
    variant: str = "matlab"
    #: None: 1.6 (matlab) or 0.4 * scale (duf).
    sigma: float | None = None
    #: None: 2*ceil(3 sigma)+2 (matlab) or 13 (duf).
    kernel_size: int | None = None


@dataclasses.dataclass
class GBufferConfig:
    #: ``point`` or ``area``: how depth/normal/brdf/motion are resampled.
    mode: str = "point"


@dataclasses.dataclass
class BlurConfig:
    #: Chance the stage blurs at all (per clip).
    prob: float = 1.0
    kernel_list: list[str] = _list(GAUSSIAN_KERNELS)
    kernel_prob: list[float] = _list([0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    #: Chance of a sinc kernel instead of the list.
    sinc_prob: float = 0.1
    kernel_sizes: list[int] = _list(KERNEL_SIZES)
    sigma: list[float] = _list([0.2, 3.0])
    rotation: list[float] = _list([-PI, PI])
    beta_gaussian: list[float] = _list([0.5, 4.0])
    beta_plateau: list[float] = _list([1.0, 2.0])


@dataclasses.dataclass
class ResizeConfig:
    #: Probabilities of up, down, keep.
    prob: list[float] = _list([0.2, 0.7, 0.1])
    range: list[float] = _list([0.15, 1.5])
    modes: list[str] = _list(RESIZE_MODES)


@dataclasses.dataclass
class NoiseConfig:
    gaussian_prob: float = 0.5
    #: In 8-bit levels.
    gaussian_sigma: list[float] = _list([1.0, 30.0])
    poisson_scale: list[float] = _list([0.05, 3.0])
    gray_prob: float = 0.4


@dataclasses.dataclass
class JpegConfig:
    quality: list[int] = _list([30, 95])


@dataclasses.dataclass
class StageConfig:
    blur: BlurConfig = _field(default_factory=BlurConfig)
    resize: ResizeConfig = _field(default_factory=ResizeConfig)
    noise: NoiseConfig = _field(default_factory=NoiseConfig)
    jpeg: JpegConfig = _field(default_factory=JpegConfig)


def _stage2() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=[0.2, 1.5]),
        resize=ResizeConfig(prob=[0.3, 0.4, 0.3], range=[0.3, 1.2]),
        noise=NoiseConfig(gaussian_sigma=[1.0, 25.0], poisson_scale=[0.05, 2.5]))


@dataclasses.dataclass
class FinalConfig:
    sinc_prob: float = 0.8
    kernel_sizes: list[int] = _list(KERNEL_SIZES)
    omega: list[float] = _list([PI / 3, PI])
    modes: list[str] = _list(RESIZE_MODES)


@dataclasses.dataclass
class VideoConfig:
    enabled: bool = True
    codecs: list[str] = _list(KNOWN_CODECS)
    codec_prob: list[float] = _list([1 / 3, 1 / 3, 1 / 3])
    #: Bits per frame (RealBasicVSR encodes at 1 frame/s).
    bitrate: list[int] = _list([10000, 100000])


@dataclasses.dataclass
class WalkConfig:
    """RealBasicVSR: each continuous parameter starts at its clip draw and moves by
    U(-step, step) per frame, clipped to its range."""
    sigma: float = 0.02
    rotation: float = 0.31416
    beta_gaussian: float = 0.05
    beta_plateau: float = 0.1
    omega: float = 0.0628
    resize_stage1: float = 0.015
    resize_stage2: float = 0.03
    gaussian_sigma: float = 0.1
    poisson_scale: float = 0.005
    jpeg_quality: float = 3.0


@dataclasses.dataclass
class RealworldConfig:
    #: ``realbasicvsr`` (the clip rules and codec order of RealBasicVSR) or ``star`` (STAR's: the
    #: codec pass last, one draw per clip, ``walk`` unused; gbuf/datasets/degrade/star.py).
    preset: Literal["realbasicvsr", "star"] = "realbasicvsr"
    #: Real-ESRGAN works on display-referred 8-bit images. A linear store image is divided by
    #: ``white``, clipped to [0, 1] and sRGB-encoded first, and decoded back after (``srgb``);
    #: ``linear`` runs the pipeline on the clipped linear values.
    transfer: Literal["srgb", "linear"] = "srgb"
    white: float = 1.0
    stage1: StageConfig = _field(default_factory=StageConfig)
    stage2: StageConfig = _field(default_factory=_stage2)
    final: FinalConfig = _field(default_factory=FinalConfig)
    video: VideoConfig = _field(default_factory=VideoConfig)
    walk: WalkConfig = _field(default_factory=WalkConfig)


@dataclasses.dataclass
class DegradeConfig:
    bicubic: BicubicConfig = _field(default_factory=BicubicConfig)
    gaussian: GaussianConfig = _field(default_factory=GaussianConfig)
    gbuffers: GBufferConfig = _field(default_factory=GBufferConfig)
    realworld: RealworldConfig = _field(default_factory=RealworldConfig)

    def validate(self, source: str = "options") -> None:
        """Check what the types cannot (choices, ranges, probabilities); GbufError naming the setting."""
        _validate(self, source)


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> DegradeConfig:
    """Defaults <- a ``.toml``/``.yaml``/``.yml`` file <- ``overrides``, validated.

    ``overrides`` maps dotted names (``{"gaussian.variant": "duf"}``, as ``--set``
    gives) or sections (``{"gaussian": {"variant": "duf"}}``) to values.
    """
    return config_files.load(DegradeConfig, path, overrides, overrides_source="options")


def resolve(config: DegradeConfig | str | Path | None,
            overrides: Mapping[str, Any] | None = None) -> DegradeConfig:
    """A ready :class:`DegradeConfig` from what the library functions accept as ``config``:
    None (the defaults), a file, or a :class:`DegradeConfig` (not modified)."""
    if isinstance(config, DegradeConfig):
        return config_files.load(DegradeConfig, None, overrides, base=config, overrides_source="options")
    return load(config, overrides)


# --------------------------------------------------------------------------- validation


def _range(value, name, source, lo=-math.inf, hi=math.inf):
    if (len(value) != 2 or not all(math.isfinite(v) for v in value)
            or value[0] > value[1] or value[0] < lo or value[1] > hi):
        raise GbufError(f"{source}: {name} must be [low, high] with {lo} <= low <= high <= {hi}, got {value!r}")


def _probs(value, n, name, source):
    if len(value) != n or any(p < 0 for p in value) or abs(sum(value) - 1) > 1e-6:
        raise GbufError(f"{source}: {name} must be {n} non-negative probabilities summing to 1, got {value!r}")


def _prob(value, name, source):
    if not 0 <= value <= 1:
        raise GbufError(f"{source}: {name} must be a probability in [0, 1], got {value!r}")


def _sizes(value, name, source):
    if not value or any(k < 3 or k % 2 == 0 for k in value):
        raise GbufError(f"{source}: {name} must be odd integers >= 3, got {value!r}")


def _modes(value, name, source):
    if not value or any(m not in RESIZE_MODES for m in value):
        raise GbufError(f"{source}: {name} must name modes among {', '.join(RESIZE_MODES)}, got {value!r}")


def _validate(cfg: DegradeConfig, source: str) -> None:
    g = cfg.gaussian
    if g.variant not in VARIANTS:
        raise GbufError(f"{source}: gaussian.variant must be one of {', '.join(VARIANTS)}, got {g.variant!r}")
    if g.sigma is not None and not g.sigma > 0:
        raise GbufError(f"{source}: gaussian.sigma must be a positive number, got {g.sigma!r}")
    if g.kernel_size is not None and g.kernel_size < 1:
        raise GbufError(f"{source}: gaussian.kernel_size must be a positive integer, got {g.kernel_size!r}")
    if cfg.gbuffers.mode not in MODES:
        raise GbufError(f"{source}: gbuffers.mode must be one of {', '.join(MODES)}, got {cfg.gbuffers.mode!r}")
    r = cfg.realworld
    if not (math.isfinite(r.white) and r.white > 0):
        raise GbufError(f"{source}: realworld.white must be positive, got {r.white!r}")
    for stage in ("stage1", "stage2"):
        s: StageConfig = getattr(r, stage)
        b = s.blur
        p = f"realworld.{stage}.blur"
        _prob(b.prob, f"{p}.prob", source)
        _prob(b.sinc_prob, f"{p}.sinc_prob", source)
        unknown = [k for k in b.kernel_list if k not in GAUSSIAN_KERNELS]
        if unknown:
            raise GbufError(f"{source}: {p}.kernel_list has unknown kernel(s) {unknown}; "
                            f"known: {', '.join(GAUSSIAN_KERNELS)}")
        _probs(b.kernel_prob, len(b.kernel_list), f"{p}.kernel_prob", source)
        _sizes(b.kernel_sizes, f"{p}.kernel_sizes", source)
        _range(b.sigma, f"{p}.sigma", source, lo=1e-3)
        _range(b.rotation, f"{p}.rotation", source)
        _range(b.beta_gaussian, f"{p}.beta_gaussian", source, lo=1e-3)
        _range(b.beta_plateau, f"{p}.beta_plateau", source, lo=1e-3)
        p = f"realworld.{stage}"
        _probs(s.resize.prob, 3, f"{p}.resize.prob", source)
        _range(s.resize.range, f"{p}.resize.range", source, lo=1e-3)
        _modes(s.resize.modes, f"{p}.resize.modes", source)
        n = s.noise
        _prob(n.gaussian_prob, f"{p}.noise.gaussian_prob", source)
        _prob(n.gray_prob, f"{p}.noise.gray_prob", source)
        _range(n.gaussian_sigma, f"{p}.noise.gaussian_sigma", source, lo=0)
        _range(n.poisson_scale, f"{p}.noise.poisson_scale", source, lo=0)
        _range(s.jpeg.quality, f"{p}.jpeg.quality", source, lo=1, hi=100)
    f = r.final
    _prob(f.sinc_prob, "realworld.final.sinc_prob", source)
    _sizes(f.kernel_sizes, "realworld.final.kernel_sizes", source)
    _range(f.omega, "realworld.final.omega", source, lo=1e-3, hi=PI + 1e-9)
    _modes(f.modes, "realworld.final.modes", source)
    v = r.video
    if not v.codecs:
        raise GbufError(f"{source}: realworld.video.codecs is empty")
    for codec in v.codecs:
        if codec not in KNOWN_CODECS:
            raise GbufError(f"{source}: unknown video codec {codec!r} in realworld.video.codecs; "
                            f"known: {', '.join(KNOWN_CODECS)}")
    _probs(v.codec_prob, len(v.codecs), "realworld.video.codec_prob", source)
    _range(v.bitrate, "realworld.video.bitrate", source, lo=1)
    for field in dataclasses.fields(r.walk):
        step = getattr(r.walk, field.name)
        if not (math.isfinite(step) and step >= 0):
            raise GbufError(f"{source}: realworld.walk.{field.name} must be a non-negative number, got {step!r}")
