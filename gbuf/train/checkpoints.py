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
"""

from __future__ import annotations

from pathlib import Path

import torch

from gbuf.errors import GbufError

WEIGHT_KEYS = ("params_ema", "params")
_SHOWN = 3  # how many mismatching keys an error names


def read(path, key: str | None = None) -> tuple[dict, str]:
    """The state dict stored in ``path`` and the entry it came from (``params_ema``, ``params``
    or ``-`` for a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise GbufError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here (pickle, zip, weights-only refusals)
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise GbufError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {first_line})") from None
    if not isinstance(data, dict):
        raise GbufError(f"{path}: not a checkpoint (holds a {type(data).__name__}, not a dict)")
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
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return path


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
