"""The training configuration: one typed dataclass tree, read from TOML or YAML.

Every option of ``gbuf train`` lives here, with the RDG recipe (CVPR 2025,
official ``train_RDG_x4.yml``) as the default. A run resolves its
configuration in three layers -- these defaults, then the file given with
``--config`` (TOML or YAML, the same nesting as the dataclasses), then the
command-line flags -- and saves the result as ``DIR/config.toml``, which is
itself a valid ``--config`` file.

Reading, type checks, ``--set`` overrides and the TOML output are the shared
loader's (``gbuf.config_files``, the one ``gbuf degrade`` uses too): unknown keys
and values of the wrong type are errors naming the file and the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from gbuf import config_files
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
    #: Hold the training sequences in memory (read whole once per process, crops cut from memory:
    #: the same crops, no chunk decoding per step). For stores that fit in memory.
    cache: bool = False
    #: G-buffer normalisation of the loader (``gbuf.datasets.loader``): ``rdg`` (the official one, sky
    #: depth 1 and surfaces over [0, 1]), ``rdg-official`` (the official formula to the letter: where sky
    #: is visible every surface's depth is about 0) or ``none``.
    normalize: str = "rdg"
    #: Sequences to train on; empty: the store's ``train_split`` when it has a split (built from a
    #: spec, ``gbuf dataset build``), else every sequence not used for validation.
    train_sequences: list[str] = dataclasses.field(default_factory=list)
    #: Held-out validation sequences; empty: the store's ``val_split`` when it has a split, else the
    #: last sequence when the store has two or more.
    val_sequences: list[str] = dataclasses.field(default_factory=list)
    #: With a store that records a split: the split trained on and the one validated on
    #: (``train``, ``val`` or ``test``; docs/datasets.md).
    train_split: Literal["train", "val", "test"] = "train"
    val_split: Literal["train", "val", "test"] = "val"
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
    #: Warm the EMA decay up: update ``k`` (from 0) uses ``min(ema_decay, (1 + k) / (10 + k))``, so
    #: the average follows the weights early in a run instead of staying at the initial ones
    #: (docs/training.md). Reaches 0.999 at update 8991; false: ``ema_decay`` from the first update.
    ema_warmup: bool = True


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
    #: STAR's dynamic-frequency loss (0: off; gbuf.train.losses): L1 of the low and the high part
    #: of each frame's rfft2, weighted (1 - p)^alpha and 1 - (1 - p)^alpha at training progress p.
    dynamic_frequency: float = 0.0
    dynamic_frequency_alpha: float = 2.0
    #: The low/high cutoff: this quantile of |F| (``magnitude``, STAR's) or of the spatial frequency.
    dynamic_frequency_quantile: float = 0.8
    dynamic_frequency_sharpness: float = 10.0
    dynamic_frequency_split: Literal["magnitude", "frequency"] = "magnitude"
    #: Also scale the term by p (STAR's 1 - t/999 factor).
    dynamic_frequency_ramp: bool = False


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
    #: Start from the weights in this checkpoint (gbuf's or the authors') instead of a random
    #: initialisation; keys and shapes must match the model exactly. Empty: random initialisation.
    init: str = ""
    #: Which weights of ``init``: ``ema`` (``params_ema`` when the file has it, else ``params``) or
    #: ``params`` (the raw weights). The EMA of the run starts from the same weights.
    init_weights: Literal["ema", "params"] = "ema"
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
            (self.data.train_split != self.data.val_split, "data.train_split and data.val_split must differ"),
            (self.data.normalize in ("rdg", "rdg-official", "none"),
             "data.normalize must be 'rdg', 'rdg-official' or 'none'"),
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
    "model", "model_options", "init", "init_weights", "data.path", "data.lr_group", "data.frames", "data.patch",
    "data.batch_size", "data.normalize", "data.train_sequences", "data.train_split",
    "optim.lr", "optim.betas", "optim.weight_decay", "optim.grad_clip", "optim.ema_decay",
    "optim.ema_warmup",
    "schedule.iters", "schedule.eta_min", "loss.charbonnier", "loss.charbonnier_eps",
    "loss.temporal", "loss.fft", "loss.dynamic_frequency", "loss.dynamic_frequency_alpha",
    "loss.dynamic_frequency_quantile", "loss.dynamic_frequency_sharpness", "loss.dynamic_frequency_split",
    "loss.dynamic_frequency_ramp", "run.seed",
)


def to_dict(config) -> dict:
    return config_files.to_dict(config)


def from_dict(data: dict, source: str = "config", base: TrainConfig | None = None) -> TrainConfig:
    """Overlay nested ``data`` on a copy of ``base`` (defaults when None) and return it."""
    config = config_files.copy(base if base is not None else TrainConfig())
    return config_files.overlay(config, data, source)


def set_dotted(config: TrainConfig, key: str, value, source: str = "command line") -> None:
    """Set one option by its dotted name (``data.patch``), type-checked."""
    config_files.set_dotted(config, key, value, source)


def get_dotted(config: TrainConfig, key: str):
    return config_files.get_dotted(config, key)


#: Options that were removed; the ``config.toml`` of an older run may still hold them.
RETIRED_KEYS = ("data.image_transform",)  # validated but never read: images follow data.normalize


def load_file(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config over ``base``, validated."""
    return config_files.load(TrainConfig, path, base=base, retired=RETIRED_KEYS)


_SAVED_HEADER = "gbuf train: resolved configuration (usable as --config)"


def to_toml(config: TrainConfig) -> str:
    return config_files.to_toml(config, _SAVED_HEADER)


def save(config: TrainConfig, path: str | Path) -> None:
    config_files.save_toml(config, path, _SAVED_HEADER)
