"""Degradation settings: published defaults, overridable by a TOML or YAML file.

The file mirrors :data:`DEFAULTS` (any subset of it); a key that does not exist
there is an error, so a typo never silently falls back to a default. Example::

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
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from gbuf.errors import GbufError

PI = math.pi
GAUSSIAN_KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_SIZES = [7, 9, 11, 13, 15, 17, 19, 21]


def _blur(sigma, prob):
    return {
        "prob": prob,                        # chance the stage blurs at all (per clip)
        "kernel_list": list(GAUSSIAN_KERNELS),
        "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
        "sinc_prob": 0.1,                    # chance of a sinc kernel instead of the list
        "kernel_sizes": list(KERNEL_SIZES),
        "sigma": list(sigma),
        "rotation": [-PI, PI],
        "beta_gaussian": [0.5, 4.0],
        "beta_plateau": [1.0, 2.0],
    }


DEFAULTS: dict = {
    "bicubic": {
        "antialias": True,
    },
    "gaussian": {
        "variant": "matlab",                 # "matlab" (BasicVSR) or "duf"
        "sigma": None,                       # None: 1.6 (matlab) or 0.4 * scale (duf)
        "kernel_size": None,                 # None: 2*ceil(3 sigma)+2 (matlab) or 13 (duf)
    },
    "gbuffers": {
        "mode": "point",                     # "point" or "area"
    },
    "realworld": {
        # Real-ESRGAN works on display-referred 8-bit images. A linear store image is
        # divided by `white`, clipped to [0, 1] and sRGB-encoded first, and decoded back
        # after ("srgb"); "linear" runs the pipeline on the clipped linear values.
        "transfer": "srgb",
        "white": 1.0,
        "stage1": {
            "blur": _blur([0.2, 3.0], 1.0),
            "resize": {"prob": [0.2, 0.7, 0.1], "range": [0.15, 1.5], "modes": ["area", "bilinear", "bicubic"]},
            "noise": {"gaussian_prob": 0.5, "gaussian_sigma": [1.0, 30.0], "poisson_scale": [0.05, 3.0],
                      "gray_prob": 0.4},
            "jpeg": {"quality": [30, 95]},
        },
        "stage2": {
            "blur": _blur([0.2, 1.5], 0.8),
            "resize": {"prob": [0.3, 0.4, 0.3], "range": [0.3, 1.2], "modes": ["area", "bilinear", "bicubic"]},
            "noise": {"gaussian_prob": 0.5, "gaussian_sigma": [1.0, 25.0], "poisson_scale": [0.05, 2.5],
                      "gray_prob": 0.4},
            "jpeg": {"quality": [30, 95]},
        },
        "final": {
            "sinc_prob": 0.8,
            "kernel_sizes": list(KERNEL_SIZES),
            "omega": [PI / 3, PI],
            "modes": ["area", "bilinear", "bicubic"],
        },
        "video": {
            "enabled": True,
            "codecs": ["libx264", "h264", "mpeg4"],
            "codec_prob": [1 / 3, 1 / 3, 1 / 3],
            "bitrate": [10000, 100000],
        },
        # RealBasicVSR: each continuous parameter starts at its clip draw and moves by
        # U(-step, step) per frame, clipped to its range.
        "walk": {
            "sigma": 0.02,
            "rotation": 0.31416,
            "beta_gaussian": 0.05,
            "beta_plateau": 0.1,
            "omega": 0.0628,
            "resize_stage1": 0.015,
            "resize_stage2": 0.03,
            "gaussian_sigma": 0.1,
            "poisson_scale": 0.005,
            "jpeg_quality": 3.0,
        },
    },
}


def defaults() -> dict:
    return copy.deepcopy(DEFAULTS)


def _merge(base: dict, override: dict, where: str, source: str) -> None:
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            known = ", ".join(sorted(base))
            raise GbufError(f"{source}: unknown setting {path!r} (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise GbufError(f"{source}: {path} must be a table of settings")
            _merge(base[key], value, path, source)
        else:
            base[key] = value


def load(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, updated by a ``.toml``/``.yaml``/``.yml`` file, then by ``overrides``."""
    cfg = defaults()
    if path is not None:
        from gbuf.config_files import read_config_file

        path = Path(path)
        data = read_config_file(path)
        _merge(cfg, data, "", str(path))
    if overrides:
        _merge(cfg, overrides, "", "options")
    validate(cfg, str(path) if path else "options")
    return cfg


def _range(value, name, source, lo=-math.inf, hi=math.inf):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            or value[0] > value[1] or value[0] < lo or value[1] > hi):
        raise GbufError(f"{source}: {name} must be [low, high] with {lo} <= low <= high <= {hi}, got {value!r}")


def _probs(value, n, name, source):
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or any(not isinstance(p, (int, float)) or p < 0 for p in value) or abs(sum(value) - 1) > 1e-6):
        raise GbufError(f"{source}: {name} must be {n} non-negative probabilities summing to 1, got {value!r}")


def _prob(value, name, source):
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise GbufError(f"{source}: {name} must be a probability in [0, 1], got {value!r}")


def validate(cfg: dict, source: str) -> None:
    """Check types and ranges; GbufError naming the setting."""
    from gbuf.datasets.degrade.blur import VARIANTS

    g = cfg["gaussian"]
    if g["variant"] not in VARIANTS:
        raise GbufError(f"{source}: gaussian.variant must be one of {', '.join(VARIANTS)}, got {g['variant']!r}")
    if g["sigma"] is not None and not (isinstance(g["sigma"], (int, float)) and g["sigma"] > 0):
        raise GbufError(f"{source}: gaussian.sigma must be a positive number, got {g['sigma']!r}")
    if g["kernel_size"] is not None and not (isinstance(g["kernel_size"], int) and g["kernel_size"] >= 1):
        raise GbufError(f"{source}: gaussian.kernel_size must be a positive integer, got {g['kernel_size']!r}")
    if cfg["gbuffers"]["mode"] not in ("point", "area"):
        raise GbufError(f"{source}: gbuffers.mode must be 'point' or 'area', got {cfg['gbuffers']['mode']!r}")
    r = cfg["realworld"]
    if r["transfer"] not in ("srgb", "linear"):
        raise GbufError(f"{source}: realworld.transfer must be 'srgb' or 'linear', got {r['transfer']!r}")
    if not (isinstance(r["white"], (int, float)) and r["white"] > 0):
        raise GbufError(f"{source}: realworld.white must be positive, got {r['white']!r}")
    for stage in ("stage1", "stage2"):
        s = r[stage]
        b = s["blur"]
        p = f"realworld.{stage}.blur"
        _prob(b["prob"], f"{p}.prob", source)
        _prob(b["sinc_prob"], f"{p}.sinc_prob", source)
        unknown = [k for k in b["kernel_list"] if k not in GAUSSIAN_KERNELS]
        if unknown:
            raise GbufError(f"{source}: {p}.kernel_list has unknown kernel(s) {unknown}; "
                            f"known: {', '.join(GAUSSIAN_KERNELS)}")
        _probs(b["kernel_prob"], len(b["kernel_list"]), f"{p}.kernel_prob", source)
        _sizes(b["kernel_sizes"], f"{p}.kernel_sizes", source)
        _range(b["sigma"], f"{p}.sigma", source, lo=1e-3)
        _range(b["rotation"], f"{p}.rotation", source)
        _range(b["beta_gaussian"], f"{p}.beta_gaussian", source, lo=1e-3)
        _range(b["beta_plateau"], f"{p}.beta_plateau", source, lo=1e-3)
        rs = s["resize"]
        _probs(rs["prob"], 3, f"realworld.{stage}.resize.prob", source)
        _range(rs["range"], f"realworld.{stage}.resize.range", source, lo=1e-3)
        _modes(rs["modes"], f"realworld.{stage}.resize.modes", source)
        n = s["noise"]
        _prob(n["gaussian_prob"], f"realworld.{stage}.noise.gaussian_prob", source)
        _prob(n["gray_prob"], f"realworld.{stage}.noise.gray_prob", source)
        _range(n["gaussian_sigma"], f"realworld.{stage}.noise.gaussian_sigma", source, lo=0)
        _range(n["poisson_scale"], f"realworld.{stage}.noise.poisson_scale", source, lo=0)
        _range(s["jpeg"]["quality"], f"realworld.{stage}.jpeg.quality", source, lo=1, hi=100)
    f = r["final"]
    _prob(f["sinc_prob"], "realworld.final.sinc_prob", source)
    _sizes(f["kernel_sizes"], "realworld.final.kernel_sizes", source)
    _range(f["omega"], "realworld.final.omega", source, lo=1e-3, hi=PI + 1e-9)
    _modes(f["modes"], "realworld.final.modes", source)
    v = r["video"]
    if not isinstance(v["enabled"], bool):
        raise GbufError(f"{source}: realworld.video.enabled must be true or false")
    if not v["codecs"]:
        raise GbufError(f"{source}: realworld.video.codecs is empty")
    from gbuf.datasets.degrade.video import KNOWN_CODECS

    for codec in v["codecs"]:
        if codec not in KNOWN_CODECS:
            raise GbufError(f"{source}: unknown video codec {codec!r} in realworld.video.codecs; "
                            f"known: {', '.join(KNOWN_CODECS)}")
    _probs(v["codec_prob"], len(v["codecs"]), "realworld.video.codec_prob", source)
    _range(v["bitrate"], "realworld.video.bitrate", source, lo=1)
    for key, step in r["walk"].items():
        if not isinstance(step, (int, float)) or step < 0:
            raise GbufError(f"{source}: realworld.walk.{key} must be a non-negative number, got {step!r}")


def _sizes(value, name, source):
    if not value or any(not isinstance(k, int) or k < 3 or k % 2 == 0 for k in value):
        raise GbufError(f"{source}: {name} must be odd integers >= 3, got {value!r}")


def _modes(value, name, source):
    if not value or any(m not in ("area", "bilinear", "bicubic") for m in value):
        raise GbufError(f"{source}: {name} must name modes among area, bilinear, bicubic, got {value!r}")
