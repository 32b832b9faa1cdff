"""The training configuration: one typed dataclass tree, read from TOML or YAML.

Every option of ``gbuf train`` lives here, with the RDG recipe (CVPR 2025,
official ``train_RDG_x4.yml``) as the default. A run resolves its
configuration in three layers -- these defaults, then the file given with
``--config`` (TOML or YAML, the same nesting as the dataclasses), then the
command-line flags -- and saves the result as ``DIR/config.toml``, which is
itself a valid ``--config`` file.

Unknown keys and values of the wrong type are errors naming the file and the
key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

from gbuf.errors import GbufError


@dataclasses.dataclass
class DataConfig:
    #: The gbuf store to train on.
    path: str = ""
    #: LR resolution group: the native render ``lr`` or a degraded group such as ``lr_bicubic_x4``.
    lr_group: str = "lr"
    #: Frames per training clip.
    frames: int = 15
    #: HR patch side in pixels (the official ``gt_size``); the LR patch is ``patch / scale``.
    patch: int = 384
    #: Clips per step and per process (the official ``batch_size_per_gpu``).
    batch_size: int = 16
    #: DataLoader worker processes per training process (0: load in the main process).
    workers: int = 4
    #: G-buffer normalisation of the loader: ``rdg`` (the official one) or ``none``.
    normalize: str = "rdg"
    #: How linear HDR store images become network images: ``srgb`` (clip to [0, 1], sRGB encode,
    #: like the official 8-bit PNG inputs) or ``clip`` (clip to [0, 1], stay linear).
    image_transform: str = "srgb"
    #: Sequences to train on; empty: every sequence not used for validation.
    train_sequences: list[str] = dataclasses.field(default_factory=list)
    #: Held-out validation sequences; empty: the last sequence when the store has two or more.
    val_sequences: list[str] = dataclasses.field(default_factory=list)
    #: Validate on the first N frames of each validation sequence (0: all frames).
    val_frames: int = 100


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    #: Clip the gradient norm to this value (0: no clipping, as the recipe).
    grad_clip: float = 0.0
    #: Exponential moving average of the weights (``params_ema``); 0 turns it off.
    ema_decay: float = 0.999


@dataclasses.dataclass
class ScheduleConfig:
    #: Training iterations; the cosine schedule anneals over all of them.
    iters: int = 300_000
    #: Learning rate at the end of the cosine schedule.
    eta_min: float = 1e-7


@dataclasses.dataclass
class LossConfig:
    charbonnier: float = 1.0
    #: Squared epsilon of the Charbonnier loss.
    charbonnier_eps: float = 1e-12
    #: Temporal consistency (MSE of frame differences).
    temporal: float = 1.0
    #: L1 of rfft2 differences.
    fft: float = 0.05


@dataclasses.dataclass
class RunConfig:
    #: Output directory; ``{model}`` is replaced by the model name.
    out: str = "runs/{model}"
    #: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: Mixed precision: ``auto`` (bf16 on CUDA, off on CPU), ``bf16``, ``fp16`` (CUDA only) or ``off``.
    amp: str = "auto"
    seed: int = 0
    #: Log scalars every N iterations.
    log_every: int = 100
    #: Validate every N iterations (0: never).
    val_every: int = 5000
    #: Save ``ckpt/step_N.pt`` every N iterations (and always at the end or on Ctrl-C).
    ckpt_every: int = 5000
    #: Keep the newest K step checkpoints (``best.pt`` is kept apart).
    keep_last: int = 3
    #: Write TensorBoard scalars and image grids under ``DIR/tb``.
    tensorboard: bool = True
    #: Show the rich progress bar (rank 0 only).
    progress: bool = True


@dataclasses.dataclass
class TrainConfig:
    model: str = "rdg"
    #: Keyword options passed to the model constructor (``gbuf.train.models.create``).
    model_options: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def out_dir(self) -> Path:
        return Path(self.run.out.replace("{model}", self.model))

    def validate(self, source: str = "config") -> None:
        """Check values a type check cannot; raise ``GbufError`` naming ``source``."""
        checks = [
            (self.data.frames >= 1, "data.frames must be >= 1"),
            (self.data.patch >= 1, "data.patch must be >= 1"),
            (self.data.batch_size >= 1, "data.batch_size must be >= 1"),
            (self.data.workers >= 0, "data.workers must be >= 0"),
            (self.data.normalize in ("rdg", "none"), "data.normalize must be 'rdg' or 'none'"),
            (self.data.image_transform in ("srgb", "clip"), "data.image_transform must be 'srgb' or 'clip'"),
            (self.schedule.iters >= 1, "schedule.iters must be >= 1"),
            (self.optim.lr > 0 and math.isfinite(self.optim.lr), "optim.lr must be a positive number"),
            (len(self.optim.betas) == 2, "optim.betas must hold two numbers"),
            (0.0 <= self.optim.ema_decay < 1.0, "optim.ema_decay must be in [0, 1)"),
            (self.run.amp in ("auto", "bf16", "fp16", "off"), "run.amp must be auto, bf16, fp16 or off"),
            (self.run.device == "auto" or self.run.device == "cpu" or self.run.device.startswith("cuda"),
             "run.device must be auto, cpu, cuda or cuda:N"),
            (self.run.keep_last >= 1, "run.keep_last must be >= 1"),
            (self.run.log_every >= 1, "run.log_every must be >= 1"),
            (self.run.ckpt_every >= 0 and self.run.val_every >= 0, "run.ckpt_every and run.val_every must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise GbufError(f"{source}: {message}")


# Options that decide the trajectory of a run: a resumed run must not change them, or it would
# no longer continue the same run exactly.
TRAJECTORY_KEYS = (
    "model", "model_options", "data.path", "data.lr_group", "data.frames", "data.patch",
    "data.batch_size", "data.normalize", "data.image_transform", "data.train_sequences",
    "optim.lr", "optim.betas", "optim.weight_decay", "optim.grad_clip", "optim.ema_decay",
    "schedule.iters", "schedule.eta_min", "loss.charbonnier", "loss.charbonnier_eps",
    "loss.temporal", "loss.fft", "run.seed",
)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _coerce(value, annotation, where: str, source: str):
    """Check ``value`` against a dataclass field type; ints are accepted where floats are."""
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GbufError(f"{source}: {where} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GbufError(f"{source}: {where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise GbufError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise GbufError(f"{source}: {where} must be a string, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise GbufError(f"{source}: {where} must be a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise GbufError(f"{source}: {where} must be a table, got {value!r}")
        return dict(value)
    raise AssertionError(f"unsupported config field type {annotation!r}")


def from_dict(data: dict, source: str = "config", base: TrainConfig | None = None) -> TrainConfig:
    """Overlay nested ``data`` on ``base`` (defaults when None) and return a new config."""
    # A deep copy via a round trip, so the sections of ``base`` are not shared.
    config = _build(TrainConfig, to_dict(base if base is not None else TrainConfig()), "", source)
    return _overlay(config, data, "", source)


def _build(cls, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = values[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            kwargs[field.name] = _build(hints[field.name], value, f"{prefix}{field.name}.", source)
        else:
            kwargs[field.name] = _coerce(value, hints[field.name], prefix + field.name, source)
    return cls(**kwargs)


def _overlay(obj, data: dict, prefix: str, source: str):
    if not isinstance(data, dict):
        raise GbufError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a table")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            known = ", ".join(prefix + n for n in sorted(names))
            raise GbufError(f"{source}: unknown option {prefix}{key} (known here: {known})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            _overlay(getattr(obj, key), value, f"{prefix}{key}.", source)
        else:
            setattr(obj, key, _coerce(value, annotation, prefix + key, source))
    return obj


def set_dotted(config: TrainConfig, key: str, value, source: str = "command line") -> None:
    """Set one option by its dotted name (``data.patch``), type-checked."""
    parts = key.split(".")
    nested: dict = {}
    cursor = nested
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    _overlay(config, nested, "", source)


def get_dotted(config: TrainConfig, key: str):
    obj = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def load_file(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config over ``base``."""
    from gbuf.config_files import read_config_file

    path = Path(path)
    data = read_config_file(path)
    config = from_dict(data, str(path), base)
    config.validate(str(path))
    return config


# --- TOML output (tomllib reads only; the values here are simple enough to write by hand) ---

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def to_toml(config: TrainConfig) -> str:
    data = to_dict(config)
    lines = ["# gbuf train: resolved configuration (usable as --config)"]
    tables = []
    for key, value in data.items():
        if isinstance(value, dict) and key != "model_options":
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save(config: TrainConfig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_toml(config), encoding="utf-8")
    tmp.replace(path)
