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
  python / numpy / torch (and CUDA) RNG states of every rank are saved.

A run interrupted at any step and resumed therefore ends with the same weights,
bit for bit, as a run that was never interrupted (``tests/test_train_resume.py``).

Checkpoints: ``DIR/ckpt/step_N.pt`` holds ``params`` and ``params_ema`` (the key
names the official RDG / BasicSR loaders read) and ``train_state``; the newest
``run.keep_last`` are kept, and ``DIR/ckpt/best.pt`` is the one with the best
validation PSNR. They load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train import config as cfg
from gbuf.train.losses import LossWeights, rdg_loss

CKPT_DIR = "ckpt"
CKPT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
BEST_NAME = "best.pt"


# ---------------------------------------------------------------------------------------------
# Devices, processes, precision


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


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the CUDA device of this rank when present, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GbufError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            return torch.device("cuda", local_rank)
    try:
        return torch.device(spec)
    except RuntimeError:
        raise GbufError(f"device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)") from None


def autocast_dtype(amp: str, device: torch.device):
    """The autocast dtype for ``amp`` on ``device`` (None: full precision)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise GbufError("--amp fp16 needs CUDA (use bf16 or off on CPU)")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    raise GbufError(f"--amp {amp!r}: use auto, bf16, fp16 or off")


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Data


def model_buffers(model) -> tuple[list[str], list[str]]:
    """``(lr_buffers, hr_buffers)`` to load for ``model``: its inputs, plus the LR and HR images.

    The LR image is always read (it is the bicubic baseline of the image grids), the HR
    image is the target.
    """
    inputs = list(getattr(model, "inputs", ("image",)))
    lr = [k for k in inputs if not k.startswith(fmt.HR_PREFIX)]
    hr = [k[len(fmt.HR_PREFIX):] for k in inputs if k.startswith(fmt.HR_PREFIX)]
    if "image" not in lr:
        lr.insert(0, "image")
    if "image" not in hr:
        hr.insert(0, "image")
    return lr, hr


def check_store_for_model(ds, model_name: str, sequences, lr_group: str, lr_buffers, hr_buffers) -> int:
    """Check every sequence has the groups and buffers the model reads; return the LR scale."""
    scales = set()
    for name in sequences:
        seq = ds[name]
        for group, needed in ((lr_group, lr_buffers), (fmt.HR, hr_buffers)):
            if group not in seq.resolutions:
                raise GbufError(f"{ds.path}: sequence {name!r} has no resolution group {group!r} "
                                f"(has: {', '.join(seq.resolutions)})")
            res = seq[group]
            missing = [b for b in needed if b not in res.buffers]
            if missing:
                raise GbufError(f"{res.where}: model {model_name} needs buffer(s) {', '.join(missing)} "
                                f"that group {group!r} lacks (has: {', '.join(res.buffers)})")
        scales.add(seq[lr_group].scale)
    if len(scales) != 1:
        raise GbufError(f"{ds.path}: group {lr_group!r} has different scales across sequences: {sorted(scales)}")
    return scales.pop()


def split_sequences(ds, data: cfg.DataConfig) -> tuple[list[str], list[str]]:
    """``(train, validation)`` sequence names from the config (see ``DataConfig``)."""
    names = ds.sequences
    if not names:
        raise GbufError(f"{ds.path}: the store holds no sequence")
    for name in list(data.train_sequences) + list(data.val_sequences):
        if name not in names:
            raise GbufError(f"{ds.path}: no sequence {name!r} (has: {', '.join(names)})")
    val = list(data.val_sequences) if data.val_sequences else (names[-1:] if len(names) >= 2 else [])
    train = list(data.train_sequences) if data.train_sequences else [n for n in names if n not in val]
    if not train:
        raise GbufError(f"{ds.path}: no sequence left to train on (validation holds {', '.join(val)})")
    return train, val


def network_batch(batch: dict, device: torch.device, normalize: str) -> dict:
    """Move a loader batch to ``device``; map images into the network's [0, 1] domain.

    With ``normalize="rdg"`` the loader already made images display-referred (clip
    to [0, 1], sRGB encode, as the official 8-bit PNG inputs). With ``"none"`` the
    linear HDR images are only clipped to [0, 1].
    """
    out = {}
    for key, value in batch.items():
        if not torch.is_tensor(value):
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if normalize == "none" and key in ("image", fmt.hr_key("image")):
            value = torch.nan_to_num(value, nan=0.0, posinf=1.0).clamp(0.0, 1.0)
        out[key] = value
    return out


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


class EMA:
    """Exponential moving average of the parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def cosine_factor(step: int, total: int, base_lr: float, eta_min: float) -> float:
    """LR multiplier after ``step`` scheduler steps: cosine from ``base_lr`` to ``eta_min`` over ``total``."""
    progress = min(step, total) / total
    return (eta_min + 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress))) / base_lr


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def step_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of ``DIR/ckpt/step_N.pt``, oldest first."""
    folder = Path(out_dir) / CKPT_DIR
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = CKPT_PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = step_checkpoints(out_dir)
    return found[-1][1] if found else None


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: Path) -> dict:
    """The dict saved in ``path`` (``weights_only``); a ``GbufError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise GbufError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GbufError(f"{path}: not a loadable checkpoint ({message})") from None
    if not isinstance(data, dict):
        raise GbufError(f"{path}: not a checkpoint (holds a {type(data).__name__})")
    return data


# ---------------------------------------------------------------------------------------------
# Logging


class _Logger:
    """Rank-0 output: rich progress bar, ``log.jsonl`` scalars, TensorBoard."""

    def __init__(self, out_dir: Path, config: cfg.TrainConfig, first_step: int, main: bool):
        self.main = main
        self.out_dir = out_dir
        self.total = config.schedule.iters
        self.progress = None
        self.task = None
        self.tb = None
        self.tb_note = None
        self._last_time = time.perf_counter()
        self._last_step = first_step - 1
        self.rate = 0.0
        if not main:
            return
        self.jsonl = open(out_dir / "log.jsonl", "a", encoding="utf-8")
        if config.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=first_step)
            except ImportError:
                self.tb_note = "tensorboard is not installed: scalars go to log.jsonl only"
        from rich.console import Console

        self.console = Console(stderr=True)
        if config.run.progress and self.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} it/s"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[terms]}"), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task(config.model, total=self.total, completed=first_step - 1,
                                               rate="-", terms="")
        if self.tb_note:
            self.print(self.tb_note)

    def print(self, text: str) -> None:
        if self.main:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

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
            self.progress.update(self.task, completed=step, rate=f"{self.rate:.2f}", terms=text)
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

    def validation(self, step: int, scores: dict, grid) -> None:
        if not self.main:
            return
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
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
        self.jsonl.close()


def image_grid(lr_image, output, target):
    """``(3, H, 3W)`` in [0, 1]: LR bicubic | output | HR of one frame ``(3, h, w)`` / ``(3, H, W)``."""
    up = F.interpolate(lr_image[None].float(), size=target.shape[-2:], mode="bicubic", align_corners=False)[0]
    return torch.cat([up.clamp(0, 1), output.float().clamp(0, 1), target.float().clamp(0, 1)], dim=-1).cpu()


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


def train(config: cfg.TrainConfig, *, resume: bool = False) -> TrainResult:
    """Train ``config.model`` as configured; see the module docstring. Returns the final state."""
    import gbuf.datasets as gd
    from gbuf.train import models as model_registry

    config.validate()
    dist_info = _init_distributed(config.run.device)
    try:
        return _train(config, resume, dist_info, gd, model_registry)
    finally:
        if dist_info.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(config, resume, dist_info, gd, model_registry) -> TrainResult:
    from gbuf.train import checkpoints as model_checkpoints

    rank, world = dist_info.rank, dist_info.world
    device = resolve_device(config.run.device, dist_info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = autocast_dtype(config.run.amp, device)
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
    lr_buffers, hr_buffers = model_buffers(model)
    train_seqs, val_seqs = split_sequences(ds, config.data)
    scale = check_store_for_model(ds, config.model, train_seqs + val_seqs, config.data.lr_group,
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
        config.data.path, frames=config.data.frames, patch=config.data.patch // scale,
        lr_group=config.data.lr_group, lr_buffers=lr_buffers, hr_buffers=hr_buffers, normalize=normalize,
        length=total * config.data.batch_size * world, seed=seed, sequences=train_seqs)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, betas=tuple(config.optim.betas),
                                 weight_decay=config.optim.weight_decay)
    base_lr, eta_min = config.optim.lr, config.schedule.eta_min
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total, base_lr, eta_min))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = EMA(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    weights = LossWeights(config.loss.charbonnier, config.loss.charbonnier_eps, config.loss.temporal,
                          config.loss.fft)

    step = 0
    best_psnr = None
    if resume:
        path = latest_checkpoint(out_dir)
        if path is None:
            raise GbufError(f"{ckpt_dir}: no step_N.pt checkpoint to resume from")
        state = load_checkpoint_file(path)
        if "train_state" not in state:
            raise GbufError(f"{path}: holds weights only, no training state to resume")
        ts = state["train_state"]
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
        step = int(ts["step"])
        best_psnr = ts.get("best_psnr")
        rng = ts["rng"][rank] if rank < len(ts["rng"]) else ts["rng"][0]
        _set_rng_state(rng, device)

    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(config, out_dir / "config.toml")

    train_model = model
    if dist_info.active:
        from torch.nn.parallel import DistributedDataParallel

        # Some models hold parameters a forward pass does not use (RDG's CTR alpha, kept for
        # the official parameter count), so DDP must look for unused parameters.
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)

    logger = _Logger(out_dir, config, step + 1, dist_info.main)
    if dist_info.main:
        logger.print(f"gbuf train {config.model}: {sum(p.numel() for p in model.parameters()):,} params, "
                     f"{world} process(es) on {device}{'' if amp_dtype is None else f' ({amp_dtype})'}, "
                     f"{len(train_seqs)} training / {len(val_seqs)} validation sequence(s), "
                     f"steps {step + 1}..{total} -> {out_dir}")

    def save(at_step: int, best: bool = False) -> Path | None:
        rngs = [_rng_state(device)]
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
        _atomic_save(payload, path)
        if best:
            _atomic_save(payload, ckpt_dir / BEST_NAME)
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
            print("\ngbuf train: interrupt received; finishing this step and saving a checkpoint "
                  "(press Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

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
    last_grid = None
    try:
        batches = iter(loader)
        train_model.train()
        while step < total:
            if stop_now():
                interrupted = True
                break
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception:
                # Ctrl-C also reaches DataLoader workers; their death is the interruption, not a bug.
                if stop_requested["flag"]:
                    interrupted = True
                    break
                raise
            batch = network_batch(batch, device, config.data.normalize)
            inputs = {k: batch[k] for k in model.inputs}
            target = batch[fmt.hr_key("image")]
            with autocast(device, amp_dtype):
                output = train_model(inputs)
            loss, terms = rdg_loss(output, target, weights)
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
                ema.update(model)
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
                    scores, grid = validate(ema.model if ema is not None else model, ds, val_seqs, config,
                                            lr_buffers, hr_buffers, device, amp_dtype)
                    logger.validation(step, scores, grid)
                    if best_psnr is None or scores["psnr"] > best_psnr:
                        best_psnr, best = scores["psnr"], True
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
                       ema.model if ema is not None else None)


@torch.no_grad()
def validate(model, ds, sequences, config: cfg.TrainConfig, lr_buffers, hr_buffers, device, amp_dtype):
    """Mean PSNR / SSIM (RGB, 8-bit, crop 0) over the first ``data.val_frames`` frames of each sequence.

    Returns ``(scores, grid)``: the grid (LR bicubic | output | HR) of the last frame of the first
    sequence, for TensorBoard.
    """
    import gbuf.datasets as gd
    from gbuf.train import metrics
    from gbuf.train.evaluate import model_frames, to_display

    normalize = None if config.data.normalize == "none" else config.data.normalize
    segment = config.data.val_frames or 100
    data = gd.SequenceDataset(config.data.path, lr_group=config.data.lr_group, lr_buffers=lr_buffers,
                              hr_buffers=hr_buffers, normalize=normalize, segment_frames=segment,
                              sequences=sequences)
    was_training = model.training
    model.eval()
    per_sequence: dict[str, list[tuple[float, float]]] = {}
    grid = None
    for index in range(len(data)):
        name, first, _ = data.items[index]
        if config.data.val_frames and first > 0:
            continue
        item = data[index]
        batch = network_batch({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, device,
                              config.data.normalize)
        # scored in the display domain, as gbuf eval does
        encoding = ds[name][fmt.HR].attrs.get("image_encoding", "linear")
        target = to_display(batch[fmt.hr_key("image")][0], config.data.normalize, encoding)
        scores = per_sequence.setdefault(name, [])
        last = None
        for t, out in enumerate(model_frames(model, batch, device, amp_dtype)):
            out = to_display(out, config.data.normalize, encoding)
            scores.append((metrics.psnr(out, target[t]), metrics.ssim(out, target[t])
                           if min(out.shape[-2:]) >= 11 else float("nan")))
            last = (t, out)
        if grid is None and last is not None:
            grid = image_grid(batch["image"][0, last[0]], last[1], target[last[0]])
    if was_training:
        model.train()
    seq_psnr = [float(np.mean([s[0] for s in v])) for v in per_sequence.values()]
    seq_ssim = [float(np.mean([s[1] for s in v])) for v in per_sequence.values()]
    return {"psnr": float(np.mean(seq_psnr)), "ssim": float(np.mean(seq_ssim))}, grid
