"""Model weights in and out: the authors' files (BasicSR layout) and gbuf's own.

A checkpoint is a ``torch.save``d dict whose ``params`` (and optionally ``params_ema``) entry is
a model state dict: what BasicSR, and so the official RDG / SMFANet / SAFMN code, reads and
writes. gbuf training checkpoints add more entries (step, optimiser, config) beside these.

- ``load`` reads with ``torch.load(..., weights_only=True)``: a checkpoint is untrusted input
  and must not run code.
- Which weights: ``key=None`` takes ``params_ema`` when the file has it, else ``params`` (an
  exponential moving average of the weights is what BasicSR validates with when training
  keeps one, and it generalises better); pass ``key="params"`` for the raw weights. A bare
  state dict (every value a tensor) is accepted too.
- The official RDG files store CycleFC's constant ``offset`` buffers; gbuf's CycleFC rebuilds
  them (``official_offset()``) instead of storing them. ``load`` checks each stored offset
  equals the layer's own and drops it; ``save`` writes them back so the official code, which
  loads strictly, reads gbuf's files.
- A checkpoint of another model or size fails with a ``GbufError`` naming the first
  mismatching keys and shapes.

Training runs (``gbuf.train.trainer``) keep ``DIR/ckpt/step_N.pt`` files, written atomically
(``atomic_save``), with the RNG states of every rank (``rng_state`` / ``set_rng_state``: stored
as plain tensors and numbers, so ``weights_only`` loading reads them back).

Integrity. PyTorch's zip container keeps no checksum it checks on reading, so one flipped byte
in a tensor loads silently as a wrong weight. Every file gbuf writes therefore carries
``content_sha256``: a SHA-256 over everything else in the dict (``content_digest``: each
entry's name, and each tensor's dtype, shape and bytes; numbers and strings by value). ``read_file``
recomputes it and refuses a file that does not match with one line naming it. Files without the
entry (the authors' checkpoints, gbuf files older than the check) load as before.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from gbuf.errors import GbufError, error_line

WEIGHT_KEYS = ("params_ema", "params")
_SHOWN = 3  # how many mismatching keys an error names

#: A training run's checkpoints: ``DIR/ckpt/step_N.pt`` and ``DIR/ckpt/best.pt``.
CKPT_DIR = "ckpt"
CKPT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
BEST_NAME = "best.pt"

#: The entry holding ``content_digest`` of the rest of the file.
DIGEST_KEY = "content_sha256"
#: What ``atomic_save`` appends to the name of the file it writes before renaming it.
TMP_SUFFIX = ".tmp"


def read_file(path) -> dict:
    """The whole dict saved in ``path``, read with ``weights_only=True``; a ``GbufError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise GbufError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here (pickle, zip, weights-only refusals)
        raise GbufError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {error_line(err, limit=200)})") from None
    if not isinstance(data, dict):
        raise GbufError(f"{path}: not a checkpoint (holds a {type(data).__name__}, not a dict)")
    if DIGEST_KEY in data:
        stored = data[DIGEST_KEY]
        if not isinstance(stored, str) or stored != content_digest(data):
            raise GbufError(f"{path}: corrupt checkpoint (its content does not match the SHA-256 stored in it "
                            f"when it was written)")
    return data


def content_digest(data: dict) -> str:
    """SHA-256 (hex) of a checkpoint dict, all but its ``DIGEST_KEY`` entry: names, dtypes, shapes
    and bytes of its tensors, and the values of everything else, walked in the dict's order (which
    ``torch.save`` keeps)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _feed(h, value) -> None:
    # Every item is tagged with its kind and length, so no two different structures feed the same bytes.
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{str(t.dtype)}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"D%d:" % len(value))
        for key, item in value.items():
            _feed(h, key)
            _feed(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d:" % len(value))
        for item in value:
            _feed(h, item)
    else:  # str, int, float, bool, None: what weights_only loading gives back
        text = f"{type(value).__name__}={value!r}".encode()
        h.update(b"S%d:" % len(text))
        h.update(text)


def read(path, key: str | None = None, data: dict | None = None) -> tuple[dict, str]:
    """The state dict stored in ``path`` and the entry it came from (``params_ema``, ``params``
    or ``-`` for a bare state dict). ``data``: the file's dict when ``read_file`` already read it."""
    path = Path(path)
    if data is None:
        data = read_file(path)
    if key is not None:
        if key not in data:
            known = [k for k in data if isinstance(data[k], dict)]
            raise GbufError(f"{path}: no entry {key!r} (entries: {', '.join(map(str, known)) or 'none'})")
        state, used = data[key], key
    elif any(k in data for k in WEIGHT_KEYS):
        used = next(k for k in WEIGHT_KEYS if k in data)
        state = data[used]
    elif data and all(isinstance(v, torch.Tensor) for v in data.values()):
        state, used = data, "-"
    else:
        raise GbufError(f"{path}: not a model checkpoint (no 'params' or 'params_ema' entry)")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GbufError(f"{path}: entry {used!r} is not a state dict of tensors")
    # Weights saved from DataParallel / DistributedDataParallel carry a "module." prefix.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state), used


def load(model: torch.nn.Module, path, key: str | None = None) -> str:
    """Load the weights in ``path`` into ``model``; returns the entry used (see ``read``)."""
    state, used = read(path, key)
    load_state(model, state, where=str(path))
    return used


def load_state(model: torch.nn.Module, state: dict, where: str = "checkpoint") -> None:
    """Load a state dict strictly, after checking and dropping constant buffers (CycleFC offsets)."""
    own = model.state_dict()
    state = _drop_constants(model, own, state, where)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} in file vs {tuple(own[k].shape)} in model"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: " + ", ".join(wrong[:_SHOWN]))
        if missing:
            parts.append(f"{len(missing)} keys missing from file: " + ", ".join(missing[:_SHOWN]))
        if unexpected:
            parts.append(f"{len(unexpected)} keys the model lacks: " + ", ".join(unexpected[:_SHOWN]))
        name = type(model).__name__
        raise GbufError(f"{where}: checkpoint does not fit {name} ({'; '.join(parts)})")
    model.load_state_dict(state)


def save(model: torch.nn.Module, path, ema: torch.nn.Module | None = None, **extra) -> Path:
    """Write ``{"params": ..., ["params_ema": ...], **extra}`` to ``path`` (atomically).

    Constant buffers the official code stores (CycleFC offsets) are written too, so the
    authors' loaders read the file.
    """
    path = Path(path)
    data = {"params": official_state(model)}
    if ema is not None:
        data["params_ema"] = official_state(ema)
    data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(data, path)


def atomic_save(data: dict, path) -> Path:
    """``torch.save`` ``data`` plus its ``content_sha256`` to ``path`` through a temporary file
    renamed into place, so an interrupted write never leaves a truncated checkpoint under the final
    name. A failed write (a full disk) removes the temporary file and raises a one-line ``GbufError``."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    sealed = {**{k: v for k, v in data.items() if k != DIGEST_KEY}, DIGEST_KEY: content_digest(data)}
    try:
        torch.save(sealed, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        # A full disk reaches here as OSError (ENOSPC) or, from torch's zip writer, as RuntimeError.
        if not isinstance(err, (OSError, RuntimeError)):
            raise
        reason = getattr(err, "strerror", None) or error_line(err, limit=200)
        raise GbufError(f"{path}: cannot write the checkpoint ({reason})") from None
    return path


def remove_partial_writes(out_dir) -> list[Path]:
    """Delete the ``*.pt.tmp`` files a killed process left in ``DIR/ckpt``; returns them."""
    folder = Path(out_dir) / CKPT_DIR
    removed = []
    if folder.is_dir():
        for p in folder.glob(f"*.pt{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def step_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of a run's ``DIR/ckpt/step_N.pt``, oldest first."""
    folder = Path(out_dir) / CKPT_DIR
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = CKPT_PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir) -> Path | None:
    """The newest ``DIR/ckpt/step_N.pt`` of a run, or None."""
    found = step_checkpoints(out_dir)
    return found[-1][1] if found else None


# -- RNG state ---------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict:
    """The python / numpy / torch (and CUDA, on a CUDA ``device``) RNG states, loadable with
    ``weights_only``."""
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


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what ``rng_state`` saved."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(value):
    # torch.save keeps tuples, but python's setstate insists on tuples all the way down
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def official_state(model: torch.nn.Module) -> dict:
    """``model.state_dict()`` on the CPU plus the constants the official code keeps in its state."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if hasattr(module, "official_offset"):
            state[_join(name, "offset")] = module.official_offset()
    return state


def _drop_constants(model: torch.nn.Module, own: dict, state: dict, where: str) -> dict:
    kept = {}
    for key, value in state.items():
        module_name, _, leaf = key.rpartition(".")
        if leaf == "offset" and key not in own:
            try:
                module = model.get_submodule(module_name)
            except AttributeError:
                module = None
            if module is not None and hasattr(module, "official_offset"):
                expected = module.official_offset()
                # A different shape means another model size: the weights' shapes say so below.
                if tuple(value.shape) == tuple(expected.shape) and not torch.equal(value.float(), expected):
                    raise GbufError(f"{where}: {key} differs from CycleFC's constant offsets")
                continue
        kept[key] = value
    return kept


def _join(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf
