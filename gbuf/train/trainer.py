"""``gbuf train``: fit a model on a gbuf store with the RDG recipe; resume exactly.

One process trains on one device (CPU, or a CUDA GPU with optional autocast);
under ``torchrun`` every process is one rank of a DistributedDataParallel run
(NCCL on CUDA, gloo on CPU) and rank 0 alone logs, validates and writes.

Exact resumption. Everything a step depends on is either in the checkpoint or a
pure function of the step number:

- the data: crop ``i`` of ``CropDataset`` is a pure function of ``(seed, i)``, and
  the sampler hands step ``s`` (1-based) of rank ``r`` the indices
  ``((s - 1) * world + r) * batch + [0, batch)``, so the data order needs only the
  step, and a resumed run starts its loader at the next step;
- weights, EMA weights, optimizer, scheduler, AMP scaler, the step and the
  python / numpy / torch (and CUDA) RNG states of every rank are saved; the EMA's
  decay is a function of the step (``EMA.decay_at``).

A run interrupted at any step and resumed therefore ends with the same weights,
bit for bit, as a run that was never interrupted (``tests/test_train_resume.py``).

Checkpoints: ``DIR/ckpt/step_N.pt`` holds ``params`` and ``params_ema`` (the key
names the official RDG / BasicSR loaders read) and ``train_state``; the newest
``run.keep_last`` are kept, and ``DIR/ckpt/best.pt`` is the one with the best
validation PSNR. They load with ``torch.load(..., weights_only=True)`` and carry a
SHA-256 of their content, checked on every load (``gbuf.train.checkpoints``).
``log.jsonl`` holds each step once: a resumed run drops the lines past its checkpoint.

``init`` (``--init CKPT``) starts a run from trained weights (a fine-tune); the EMA
starts from them too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gbuf import fileio, runtime
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError, error_line
from gbuf.progress import Progress
from gbuf.train import config as cfg
from gbuf.train import inference
from gbuf.train.checkpoints import BEST_NAME, CKPT_DIR, latest_checkpoint, step_checkpoints
from gbuf.train.losses import LossWeights, rdg_loss

_log = logging.getLogger(__name__)

#: Warnings torch gives during a run that say nothing the user can act on; ignored by message.
QUIET_WARNINGS = (
    # torch's generic caution when data.workers exceeds the cores: the worker count is a setting
    # of its own (data.workers, --workers, documented), and every run on a small machine got it.
    r"This DataLoader will create \d+ worker processes in total",
    # DDP, on depthwise convolutions: the weight's gradient and its bucket view differ only in the
    # stride of a dimension of size 1, which changes no byte of the copy.
    r"Grad strides do not match bucket view strides",
)


# ---------------------------------------------------------------------------------------------
# Processes


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _init_distributed(device_spec: str) -> Distributed:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if dist.is_initialized():
        return Distributed(rank, world, local_rank, False)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank, world, local_rank, True)


# ---------------------------------------------------------------------------------------------
# Data


def split_sequences(ds, data: cfg.DataConfig) -> tuple[list[str], list[str]]:
    """``(train, validation)`` sequence names from the config (see ``DataConfig``).

    Sequences named in the config win; else a store with a recorded split gives
    ``data.train_split`` and ``data.val_split``; else validation is the last sequence.
    """
    names = ds.sequences
    if not names:
        raise GbufError(f"{ds.path}: the store holds no sequence")
    for name in list(data.train_sequences) + list(data.val_sequences):
        if name not in names:
            raise GbufError(f"{ds.path}: no sequence {name!r} (has: {', '.join(names)})")
    splits = ds.splits
    if splits:
        val = list(data.val_sequences) or splits[data.val_split]
        train = list(data.train_sequences) or [n for n in splits[data.train_split] if n not in val]
        if not train:
            raise GbufError(f"{ds.path}: split {data.train_split!r} holds no sequence to train on")
        return train, val
    val = list(data.val_sequences) if data.val_sequences else (names[-1:] if len(names) >= 2 else [])
    train = list(data.train_sequences) if data.train_sequences else [n for n in names if n not in val]
    if not train:
        raise GbufError(f"{ds.path}: no sequence left to train on (validation holds {', '.join(val)})")
    return train, val


class StepSampler(torch.utils.data.distributed.DistributedSampler):
    """A distributed sampler whose order is a pure function of the step.

    Step ``s`` (1-based) of rank ``r`` reads dataset indices
    ``((s - 1) * world + r) * batch + [0, batch)``; iteration starts at
    ``first_step``, so a resumed run continues the data order with nothing to
    replay. (Every index is read once; the crop dataset draws a fresh random crop
    per index from ``(seed, index)``.)
    """

    def __init__(self, dataset, *, batch_size: int, rank: int, world: int, first_step: int, last_step: int):
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=True)
        self.batch_size, self.first_step, self.last_step = batch_size, first_step, last_step

    def __iter__(self):
        b, w, r = self.batch_size, self.num_replicas, self.rank
        for step in range(self.first_step, self.last_step + 1):
            base = ((step - 1) * w + r) * b
            yield from range(base, base + b)

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step + 1) * self.batch_size


# ---------------------------------------------------------------------------------------------
# EMA, schedule


#: ``EMA.decay_at``: update ``k`` uses at most ``(1 + k) / (EMA_WARMUP + k)``.
EMA_WARMUP = 10


class EMA:
    """Exponential moving average of the parameters (buffers are copied), starting from the
    model's weights as they are when it is built (random or ``init``).

    With ``warmup`` the decay of update ``k`` (0-based) is ``min(decay, (1 + k) / (10 + k))``:
    0.1 at the first update, 0.5 at the ninth, 0.99 at the 891st, ``decay`` (0.999) from the
    8991st. A fixed 0.999 from the first step keeps ``0.999^k`` of the starting weights in the
    average -- 78 % after 250 steps, 14 % after 2000 -- so a short run or a fine-tune scored
    with its EMA weights showed mostly the starting point. The decay is a function of the step
    alone (saved in every checkpoint), so resumption stays exact.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay of the update that follows ``updates`` earlier ones."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + updates) / (EMA_WARMUP + updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        """Average ``model``'s parameters in; ``updates``: how many updates came before (the step)."""
        decay = self.decay_at(updates)
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def load_init(model: torch.nn.Module, path: str | Path, weights: str = "ema") -> str:
    """Load the starting weights of a run (``init``) into ``model``; returns the entry used.

    ``weights``: ``ema`` takes ``params_ema`` when the file has it, else ``params`` (the authors'
    files hold only ``params``); ``params`` takes the raw weights. Keys and shapes must match the
    model exactly: anything else is a one-line ``GbufError`` naming the file and the first
    mismatching keys.
    """
    from gbuf.train import checkpoints as model_checkpoints

    if weights not in ("ema", "params"):
        raise GbufError(f"init_weights {weights!r}: use ema or params")
    state, used = model_checkpoints.read(path, key=None if weights == "ema" else "params")
    model_checkpoints.load_state(model, state, where=f"--init {path}")
    return used


def _restore(path, state: dict, model, ema, optimizer, scheduler, scaler, config, rank: int, world: int,
             device) -> tuple[int, float | None]:
    """Load a checkpoint's weights and ``train_state`` for ``--resume``; ``(step, best_psnr)``.

    Any malformed part is a one-line ``GbufError`` naming the file, never a traceback.
    """
    from gbuf.train import checkpoints as model_checkpoints

    if "train_state" not in state:
        raise GbufError(f"{path}: holds weights only, no training state to resume")
    ts = state["train_state"]
    expected = {"step": int, "optimizer": dict, "scheduler": dict, "rng": list, "data_order": dict}
    if not isinstance(ts, dict):
        raise GbufError(f"{path}: malformed train_state (a {type(ts).__name__}, not a table)")
    for key, kind in expected.items():
        if not isinstance(ts.get(key), kind) or (kind is int and isinstance(ts[key], bool)):
            got = "missing" if key not in ts else f"a {type(ts[key]).__name__}"
            raise GbufError(f"{path}: malformed train_state ({key} is {got}, not {kind.__name__})")
    if not ts["rng"]:
        raise GbufError(f"{path}: malformed train_state (rng holds no state)")
    if not 0 <= ts["step"] <= config.schedule.iters:
        raise GbufError(f"{path}: malformed train_state (step {ts['step']} is outside 0..{config.schedule.iters})")
    if "params" not in state:
        raise GbufError(f"{path}: no 'params' entry to resume from")
    try:
        data_order = ts["data_order"]
        if data_order["world"] != world or data_order["batch_size"] != config.data.batch_size:
            raise GbufError(f"{path}: saved with {data_order['world']} process(es) x batch "
                            f"{data_order['batch_size']}; resuming with {world} x {config.data.batch_size} "
                            f"would change the data order")
        model_checkpoints.load_state(model, state["params"], where=str(path))
        if ema is not None:
            model_checkpoints.load_state(ema.model, state.get("params_ema", state["params"]), where=str(path))
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if "scaler" in ts and scaler.is_enabled():
            scaler.load_state_dict(ts["scaler"])
        rng = ts["rng"][rank] if rank < len(ts["rng"]) else ts["rng"][0]
        model_checkpoints.set_rng_state(rng, device)
    except GbufError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        # torch's load_state_dict and the RNG setters say what was wrong, in many words and types
        raise GbufError(f"{path}: malformed train_state ({type(err).__name__}: {error_line(err, limit=200)})") from None
    # The scheduler steps once a step: a state that disagrees would shift the whole schedule.
    if scheduler.last_epoch != ts["step"]:
        raise GbufError(f"{path}: malformed train_state (scheduler at step {scheduler.last_epoch!r}, "
                        f"the checkpoint at step {ts['step']})")
    best_psnr = ts.get("best_psnr")
    if best_psnr is not None and not isinstance(best_psnr, (int, float)):
        raise GbufError(f"{path}: malformed train_state (best_psnr is a {type(best_psnr).__name__})")
    return ts["step"], best_psnr


def unused_parameters(model: torch.nn.Module, lr_size, frames: int, device) -> list[str]:
    """Names of the parameters a training forward of ``model`` leaves without a gradient.

    Tried on a copy with random inputs (``inference.example_clip``) of ``frames`` frames at
    ``lr_size``; the global RNG states are restored after, so the run itself is unchanged.
    """
    trial = copy.deepcopy(model).train()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        out = trial(inference.example_clip(trial, lr_size, frames, device))
        out.float().mean().backward()
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
    return [name for name, p in trial.named_parameters() if p.requires_grad and p.grad is None]


def cosine_factor(step: int, total: int, base_lr: float, eta_min: float) -> float:
    """LR multiplier after ``step`` scheduler steps: cosine from ``base_lr`` to ``eta_min`` over ``total``."""
    progress = min(step, total) / total
    return (eta_min + 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress))) / base_lr


# ---------------------------------------------------------------------------------------------
# Logging


class _Logger:
    """Rank-0 output: ``log.jsonl`` scalars, TensorBoard, lines through ``logging``, ``progress`` calls.

    ``progress(label, step, total)`` is called after every step (when ``run.progress``), the label
    holding the rate and the loss; without it a line (with the loss terms) is logged every
    ``run.log_every`` steps.
    """

    def __init__(self, out_dir: Path, config: cfg.TrainConfig, first_step: int, main: bool, progress=None):
        self.main = main
        self.out_dir = out_dir
        self.model = config.model
        self.total = config.schedule.iters
        self.progress = progress if main and config.run.progress else None
        self.tb = None
        self._last_time = time.perf_counter()
        self._last_step = first_step - 1
        self.rate = 0.0
        if not main:
            return
        dropped = trim_log(out_dir / LOG_NAME, first_step)
        if dropped:
            self.print(f"gbuf train: dropped {dropped} line(s) of {out_dir / LOG_NAME} past step {first_step - 1}, "
                       f"which this run writes again")
        self.jsonl = open(out_dir / LOG_NAME, "a", encoding="utf-8")
        if config.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=first_step)
            except ImportError:
                self.print("tensorboard is not installed: scalars go to log.jsonl only")
        if self.progress is not None:
            self.progress(self.model, first_step - 1, self.total)

    def print(self, text: str) -> None:
        if self.main:
            _log.info(text)

    def step(self, step: int, lr: float, loss: float, terms: dict, log_now: bool) -> None:
        if not self.main:
            return
        now = time.perf_counter()
        if log_now or self.progress is not None:
            if now > self._last_time and step > self._last_step:
                self.rate = (step - self._last_step) / (now - self._last_time)
            self._last_time, self._last_step = now, step
        text = f"loss {loss:.4g} " + " ".join(f"{k} {v:.3g}" for k, v in terms.items())
        if self.progress is not None:
            self.progress(f"{self.model}  {self.rate:.2f} it/s  loss {loss:.4g}", step, self.total)
        if log_now:
            record = {"step": step, "lr": lr, "loss": loss, **{f"loss_{k}": v for k, v in terms.items()},
                      "it_per_s": self.rate}
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
            if self.tb is not None:
                self.tb.add_scalar("train/loss", loss, step)
                for k, v in terms.items():
                    self.tb.add_scalar(f"train/{k}", v, step)
                self.tb.add_scalar("train/lr", lr, step)
                self.tb.add_scalar("train/it_per_s", self.rate, step)
            if self.progress is None:
                self.print(f"step {step}/{self.total}  {self.rate:.2f} it/s  lr {lr:.3g}  {text}")

    def validation(self, step: int, result: ValidationScores) -> None:
        if not self.main:
            return
        scores, grid = result.scalars(), result.grid
        self.jsonl.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in scores.items()}}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in scores.items():
                self.tb.add_scalar(f"val/{k}", v, step)
            if grid is not None:
                self.tb.add_image("val/lr_bicubic|output|hr", grid, step)
        self.print(f"validation at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def image(self, tag: str, grid, step: int) -> None:
        if self.main and self.tb is not None and grid is not None:
            self.tb.add_image(tag, grid, step)

    def close(self) -> None:
        if not self.main:
            return
        if self.tb is not None:
            self.tb.close()
        self.jsonl.close()


#: A run's scalar log, one JSON record a line.
LOG_NAME = "log.jsonl"


def trim_log(path: Path, first_step: int) -> int:
    """Keep only the records of ``path`` (``log.jsonl``) for steps before ``first_step``; returns
    how many lines were dropped.

    A resumed run repeats the steps after its checkpoint, and a fresh run in an old directory
    repeats them all, so their lines would appear twice. A line that is not a JSON record with a
    ``step`` (half written when the process died) goes too. Rewritten through a renamed file.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
                ok = isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] < first_step
            except ValueError:
                ok = False
            if ok:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        fileio.write_text(path, "".join(kept))
    return dropped


def image_grid(lr_image, output, target):
    """``(3, H, 3W)`` in [0, 1]: LR bicubic | output | HR of one frame ``(3, h, w)`` / ``(3, H, W)``."""
    up = inference.bicubic(lr_image, size=tuple(target.shape[-2:])).to(output.device)
    return torch.cat([up, output.float().clamp(0, 1), target.float().clamp(0, 1)], dim=-1).cpu()


# ---------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    step: int
    interrupted: bool
    checkpoint: Path | None
    best_psnr: float | None
    model: torch.nn.Module
    ema_model: torch.nn.Module | None
    #: The resolved configuration the run used.
    config: cfg.TrainConfig | None = None
    #: Torch CPU threads the run used (per process).
    threads: int = 1
    #: Seconds this call waited for the data loader (reading and cropping the clips), of its wall time.
    load_seconds: float = 0.0
    #: The sequences trained on and validated on (``split_sequences``; none validated with run.val_every 0).
    train_sequences: list[str] = dataclasses.field(default_factory=list)
    val_sequences: list[str] = dataclasses.field(default_factory=list)


def resolve_config(*, config_file=None, overrides: dict | None = None, resume: bool = False,
                   out: str | None = None) -> cfg.TrainConfig:
    """Defaults <- ``config_file`` <- ``overrides`` (dotted keys); with ``resume``, the run's saved config.

    A resumed run may change only options that do not alter its trajectory
    (device, AMP, workers, logging); anything else is an error naming the option.
    """
    overrides = dict(overrides or {})
    if out is not None:
        overrides["run.out"] = out
    base = cfg.TrainConfig()
    if config_file is not None:
        base = cfg.load_file(config_file, base)
    requested = cfg.from_dict({}, base=base)
    for key, value in overrides.items():
        cfg.set_dotted(requested, key, value)
    if not resume:
        requested.validate()
        return requested
    run_dir = requested.out_dir()
    saved_path = run_dir / "config.toml"
    if not saved_path.is_file():
        raise GbufError(f"{saved_path}: no saved configuration to resume (train without --resume first)")
    saved = cfg.load_file(saved_path)
    explicit = dict(overrides)
    if config_file is not None:
        # Options set in the file count as requested too.
        for key in cfg.TRAJECTORY_KEYS:
            if cfg.get_dotted(base, key) != cfg.get_dotted(cfg.TrainConfig(), key):
                explicit.setdefault(key, cfg.get_dotted(base, key))
    resolved = cfg.from_dict({}, base=saved)
    for key, value in explicit.items():
        cfg.set_dotted(resolved, key, value)
    changed = [k for k in cfg.TRAJECTORY_KEYS if cfg.get_dotted(resolved, k) != cfg.get_dotted(saved, k)]
    if changed:
        details = ", ".join(f"{k}: {cfg.get_dotted(saved, k)!r} -> {cfg.get_dotted(resolved, k)!r}" for k in changed)
        raise GbufError(f"{saved_path}: --resume cannot change {details} (it would not continue the same run)")
    resolved.validate(str(saved_path))
    return resolved


def train_from(*, config_file=None, overrides: dict | None = None, out: str | None = None, resume: bool = False,
               threads: int | None = None, progress: Progress | None = None) -> TrainResult:
    """``train(resolve_config(...))``: what ``gbuf train`` runs (see ``resolve_config`` and ``train``)."""
    if threads is not None:
        runtime.check_threads(threads)  # before reading any file
    config = resolve_config(config_file=config_file, overrides=overrides, resume=resume, out=out)
    return train(config, resume=resume, threads=threads, progress=progress)


def train(config: cfg.TrainConfig, *, resume: bool = False, threads: int | None = None,
          progress: Progress | None = None) -> TrainResult:
    """Train ``config.model`` as configured; see the module docstring. Returns the final state.

    ``threads``: torch CPU threads of this process (None: ``gbuf.runtime``'s default).
    ``progress(label, step, total)``: called on rank 0 after every step when ``run.progress``
    (the label holds the rate and the loss). Other output goes to ``logging``
    (``gbuf.train.trainer``, level INFO).
    """
    import gbuf.datasets as gd
    from gbuf.train import models as model_registry

    with runtime.threads(threads) as used:
        config.validate()
        dist_info = _init_distributed(config.run.device)
        try:
            with warnings.catch_warnings():
                for message in QUIET_WARNINGS:
                    warnings.filterwarnings("ignore", message=message, category=UserWarning)
                result = _train(config, resume, dist_info, gd, model_registry, progress)
        finally:
            if dist_info.initialized_here:
                import torch.distributed as dist

                dist.destroy_process_group()
    result.config, result.threads = config, used
    return result


def _train(config, resume, dist_info, gd, model_registry, progress) -> TrainResult:
    from gbuf.train import checkpoints as model_checkpoints

    rank, world = dist_info.rank, dist_info.world
    device = runtime.resolve_device(config.run.device, dist_info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = runtime.autocast_dtype(config.run.amp, device)
    out_dir = config.out_dir()
    ckpt_dir = out_dir / CKPT_DIR

    if not config.data.path:
        raise GbufError("no dataset given (--data DS or data.path in the config)")
    ds = gd.open(config.data.path)

    seed = config.run.seed
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)

    # Every rank builds the same initial weights (seeded), so DDP's broadcast changes nothing.
    torch.manual_seed(seed)
    model = model_registry.create(config.model, **config.model_options).to(device)
    torch.manual_seed(seed + rank)
    init_entry = None
    if config.init and not resume:  # a resumed run takes every weight from its checkpoint
        init_entry = load_init(model, config.init, config.init_weights)
    lr_buffers, hr_buffers = inference.model_buffers(model)
    train_seqs, val_seqs = split_sequences(ds, config.data)
    scale = inference.check_inputs(ds, config.model, train_seqs + val_seqs, config.data.lr_group,
                                   lr_buffers, hr_buffers)
    model_scale = getattr(model, "scale", scale)
    if model_scale != scale:
        raise GbufError(f"{ds.path}: group {config.data.lr_group!r} is x{scale} but {config.model} upscales "
                        f"x{model_scale}")
    if config.data.patch % scale:
        raise GbufError(f"--patch {config.data.patch}: the HR patch must be a multiple of the scale {scale}")
    normalize = None if config.data.normalize == "none" else config.data.normalize

    if config.run.val_every == 0:
        val_seqs = []
    total = config.schedule.iters
    crop_dataset = gd.CropDataset(
        config.data.path, frames=config.data.frames, patch=config.data.patch,
        lr_group=config.data.lr_group, lr_buffers=lr_buffers, hr_buffers=hr_buffers, normalize=normalize,
        length=total * config.data.batch_size * world, seed=seed, sequences=train_seqs, cache=config.data.cache)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, betas=tuple(config.optim.betas),
                                 weight_decay=config.optim.weight_decay)
    base_lr, eta_min = config.optim.lr, config.schedule.eta_min
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total, base_lr, eta_min))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # built after ``init`` is loaded: the average starts from the weights training starts from
    ema = EMA(model, config.optim.ema_decay, config.optim.ema_warmup) if config.optim.ema_decay > 0 else None
    weights = LossWeights(**dataclasses.asdict(config.loss))  # the same field names

    step = 0
    best_psnr = None
    if resume:
        path = latest_checkpoint(out_dir)
        if path is None:
            raise GbufError(f"{ckpt_dir}: no step_N.pt checkpoint to resume from")
        state = model_checkpoints.read_file(path)
        step, best_psnr = _restore(path, state, model, ema, optimizer, scheduler, scaler, config, rank, world,
                                   device)

    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for partial in model_checkpoints.remove_partial_writes(out_dir):
            _log.info(f"gbuf train: removed {partial}, a checkpoint whose writing was cut short")
        cfg.save(config, out_dir / "config.toml")

    train_model = model
    if dist_info.active:
        from torch.nn.parallel import DistributedDataParallel

        # Some models hold parameters a forward pass does not use (RDG's CTR alpha, kept for
        # the official parameter count): DDP must then look for unused parameters each step. For
        # the others that search is wasted, and torch says so on every run (from C++, past any
        # Python filter), so it is asked for only when a trial pass finds such parameters.
        unused = unused_parameters(model, (config.data.patch // scale,) * 2, min(config.data.frames, 2), device)
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=bool(unused))

    logger = _Logger(out_dir, config, step + 1, dist_info.main, progress)
    split_note = ""
    if ds.splits and not config.data.train_sequences:
        split_note = f" (split {config.data.train_split!r}" + \
            ("" if config.data.val_sequences or not val_seqs else f" / {config.data.val_split!r}") + ")"
    if dist_info.main:
        logger.print(f"gbuf train {config.model}: {sum(p.numel() for p in model.parameters()):,} params, "
                     f"{world} process(es) on {device}{'' if amp_dtype is None else f' ({amp_dtype})'}, "
                     f"{len(train_seqs)} training / {len(val_seqs)} validation sequence(s){split_note}, "
                     f"steps {step + 1}..{total} -> {out_dir}")
        if init_entry is not None:
            logger.print(f"gbuf train: initialised from {config.init} ({init_entry})")

    def save(at_step: int, best: bool = False) -> Path | None:
        rngs = [model_checkpoints.rng_state(device)]
        if dist_info.active:
            import torch.distributed as dist

            gathered = [None] * world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not dist_info.main:
            return None
        payload = {
            # official_state adds the constants the authors' code keeps in its state dict (RDG's
            # CycleFC offsets), so their strict loader reads these files
            "params": model_checkpoints.official_state(model),
            "params_ema": model_checkpoints.official_state(ema.model if ema is not None else model),
            "model": config.model,
            "model_options": dict(config.model_options),
            "config": cfg.to_dict(config),
            "train_state": {
                "step": at_step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rngs,
                "best_psnr": best_psnr,
                "data_order": {"sampler": "step", "seed": seed, "batch_size": config.data.batch_size,
                               "world": world, "next_step": at_step + 1},
            },
        }
        if scaler.is_enabled():
            payload["train_state"]["scaler"] = scaler.state_dict()
        path = ckpt_dir / f"step_{at_step}.pt"
        try:
            model_checkpoints.atomic_save(payload, path)
            if best:
                model_checkpoints.atomic_save(payload, ckpt_dir / BEST_NAME)
        except GbufError as err:
            where = f"; the last good checkpoint is {last_saved}" if last_saved else ""
            raise GbufError(f"{err}; training stopped after step {at_step}{where}") from None
        for _, old in step_checkpoints(out_dir)[:-config.run.keep_last]:
            old.unlink(missing_ok=True)
        return path

    stop_requested = {"flag": False}
    previous_handler = None

    def on_sigint(signum, frame):
        if stop_requested["flag"]:
            raise KeyboardInterrupt
        stop_requested["flag"] = True
        if dist_info.main:
            _log.warning("gbuf train: interrupt received; finishing this step and saving a checkpoint "
                         "(press Ctrl-C again to abort without saving)")

    import threading

    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, on_sigint)

    def stop_now() -> bool:
        flag = stop_requested["flag"]
        if dist_info.active:
            import torch.distributed as dist

            t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    workers = config.data.workers
    loader = torch.utils.data.DataLoader(
        crop_dataset, batch_size=config.data.batch_size,
        sampler=StepSampler(crop_dataset, batch_size=config.data.batch_size, rank=rank, world=world,
                            first_step=step + 1, last_step=total),
        num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
        persistent_workers=False, multiprocessing_context="forkserver" if workers > 0 else None,
        prefetch_factor=2 if workers > 0 else None)

    last_saved = latest_checkpoint(out_dir) if resume else None
    interrupted = False
    load_seconds = 0.0
    last_grid = None
    try:
        batches = iter(loader)
        train_model.train()
        while step < total:
            if stop_now():
                interrupted = True
                break
            try:
                waited = time.perf_counter()
                batch = next(batches)
                load_seconds += time.perf_counter() - waited
            except StopIteration:
                break
            except Exception:
                # Ctrl-C also reaches DataLoader workers; their death is the interruption, not a bug.
                if stop_requested["flag"]:
                    interrupted = True
                    break
                raise
            batch = inference.network_batch(batch, device, config.data.normalize)
            inputs = {k: batch[k] for k in model.inputs}
            target = batch[fmt.hr_key("image")]
            with runtime.autocast(device, amp_dtype):
                output = train_model(inputs)
            # progress (0 at the first step, 1 at the last) moves the dynamic-frequency weights
            loss, terms = rdg_loss(output, target, weights.at_step(step, total))
            finite = torch.isfinite(loss.detach()).float()
            if dist_info.active:
                import torch.distributed as dist

                # every rank stops together, or the others would wait for it forever
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite.item()):
                where = f"; the last good checkpoint is {last_saved}" if last_saved else ""
                raise GbufError(f"{out_dir}: loss became {float(loss.detach())} at step {step + 1} "
                                f"(terms: {', '.join(f'{k} {float(v):.4g}' for k, v in terms.items())}); "
                                f"training stopped{where}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model, step)
            step += 1

            log_now = step % config.run.log_every == 0 or step == total
            if log_now or logger.progress is not None:
                values = torch.stack([loss.detach().float()] + [v.float() for v in terms.values()])
                if log_now and dist_info.active:
                    import torch.distributed as dist

                    # logged losses are the mean over all ranks' batches
                    dist.all_reduce(values)
                    values = values / world
                values = values.tolist()
                logger.step(step, optimizer.param_groups[0]["lr"], values[0], dict(zip(terms, values[1:])), log_now)
            if log_now and dist_info.main and not val_seqs:
                last_grid = (batch["image"][0, -1], output[0, -1].detach(), target[0, -1])

            best = False
            if val_seqs and config.run.val_every and (step % config.run.val_every == 0 or step == total):
                if dist_info.main:
                    scores = validate(ema.model if ema is not None else model, val_seqs, config, device,
                                      amp_dtype)
                    logger.validation(step, scores)
                    if best_psnr is None or scores.psnr > best_psnr:
                        best_psnr, best = scores.psnr, True
                if dist_info.active:
                    import torch.distributed as dist

                    flags = [best_psnr, best]
                    dist.broadcast_object_list(flags, src=0)
                    best_psnr, best = flags
            if (config.run.ckpt_every and step % config.run.ckpt_every == 0) or step == total or best:
                if last_grid is not None:
                    logger.image("train/lr_bicubic|output|hr", image_grid(*last_grid), step)
                saved = save(step, best)
                last_saved = saved or last_saved
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if interrupted and (last_saved is None or not str(last_saved).endswith(f"step_{step}.pt")):
            last_saved = save(step) or last_saved
            logger.print(f"gbuf train: interrupted after step {step}; saved {last_saved}; "
                         f"continue with --resume")
        logger.close()
    return TrainResult(out_dir, step, interrupted, last_saved, best_psnr, model,
                       ema.model if ema is not None else None, load_seconds=load_seconds,
                       train_sequences=train_seqs, val_sequences=val_seqs)


@dataclasses.dataclass
class ValidationScores:
    """Mean PSNR / SSIM over the validation sequences (each the mean over its frames)."""

    psnr: float
    ssim: float
    #: ``(3, H, 3W)`` LR bicubic | output | HR of the last frame of the first sequence (TensorBoard).
    grid: torch.Tensor | None = None

    def scalars(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim}


def validate(model, sequences, config: cfg.TrainConfig, device, amp_dtype) -> ValidationScores:
    """Score ``model`` on the first ``data.val_frames`` frames of each validation sequence.

    The scoring is ``gbuf eval``'s (``evaluate.score_model``: display domain, RGB, 8-bit, crop 0).
    """
    from gbuf.train.evaluate import score_model

    frames = config.data.val_frames or None
    was_training = model.training
    model.eval()
    try:
        results = score_model(model, config.data.path, sequences, normalize=config.data.normalize,
                              lr_group=config.data.lr_group, segment_frames=frames or 100, max_frames=frames,
                              device=device, amp_dtype=amp_dtype, ewarp=False)
    finally:
        if was_training:
            model.train()
    first = results[0].last
    grid = image_grid(*first) if first is not None else None
    return ValidationScores(float(np.mean([r.mean("psnr") for r in results])),
                            float(np.mean([r.mean("ssim") for r in results])), grid)
