"""Helpers shared by the trainer, evaluation and upscale tests (tests/test_train*.py, test_eval*.py,
test_upscale*.py): tiny stores and tiny training configurations."""

from __future__ import annotations

from pathlib import Path

from gbuf.datasets.synthetic import make_synthetic_store
from gbuf.train import config as cfg


def synthetic_store(folder: Path, *, sequences: int = 2, frames: int = 6, height: int = 64, width: int = 96,
                    buffers=None) -> Path:
    """A gbuf store of ``sequences`` synthetic sequences (HR ``height x width``, LR x4) in ``folder``."""
    kwargs = {} if buffers is None else {"buffers": buffers}
    return make_synthetic_store(Path(folder) / "data.zarr", sequences=sequences, frames=frames, height=height,
                                width=width, **kwargs)


def tiny_config(store: Path, out: Path, model: str = "rdg-s", *, iters: int = 4, frames: int = 3,
                patch: int = 64, batch: int = 2, seed: int = 0) -> cfg.TrainConfig:
    """A configuration small enough for CPU tests: no workers, no progress bar, no TensorBoard."""
    c = cfg.TrainConfig(model=model)
    c.data.path = str(store)
    c.data.frames, c.data.patch, c.data.batch_size, c.data.workers = frames, patch, batch, 0
    c.data.val_frames = 3
    c.schedule.iters = iters
    c.run.out = str(out)
    c.run.seed = seed
    c.run.val_every = 0
    c.run.ckpt_every = 0
    c.run.log_every = 1
    c.run.progress = False
    c.run.tensorboard = False
    return c
