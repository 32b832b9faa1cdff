"""Running a model: its inputs, batches, frames out, the display domain, loading it from a checkpoint.

What the trainer, ``gbuf eval``, ``gbuf upscale``, ``gbuf bench`` and ``gbuf export`` share
about feeding a network and reading its output. It sits below all of them (it imports
``gbuf.runtime`` and ``gbuf.train.checkpoints``, never the modules that use it).

- Inputs: ``model_buffers`` (which LR / HR buffers to load for a model), ``check_inputs`` (the
  store has them), ``network_batch`` / ``segment_batch`` (a loader batch on the device, in the
  network's domain), ``example_frame`` / ``example_clip`` (random inputs of a given size).
- Outputs: ``model_frames`` runs one segment and yields its frames, a recurrent model frame
  by frame through ``step`` (bounded memory), the others on the whole segment at once.
- Display domain: ``to_display`` (what every metric and picture uses), ``to_linear`` (EXR) and
  ``to_hwc_uint8`` (8-bit pictures).
- ``bicubic`` upsampling and ``BicubicUpsampler``, the ``bicubic`` baseline model.
- ``load_model``: a registered model with weights from a gbuf or official checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gbuf import runtime
from gbuf.datasets import format as fmt
from gbuf.datasets.colour import srgb_decode, srgb_encode, to_uint8
from gbuf.errors import GbufError, error_line

#: The name of the bicubic baseline in ``gbuf eval`` / ``gbuf upscale``.
BICUBIC = "bicubic"


# ---------------------------------------------------------------------------------------------
# Model inputs


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


def check_inputs(ds, model_name: str, sequences, lr_group: str, lr_buffers, hr_buffers) -> int:
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


def network_batch(batch: dict, device, normalize: str) -> dict:
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


def segment_batch(item: dict, device, normalize: str) -> dict:
    """One ``SequenceDataset`` item (``(T, C, H, W)`` per key) as a batch of one segment on ``device``."""
    return network_batch({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, device, normalize)


def buffer_channels(key: str) -> int:
    """Channels of a batch key: a gbuf buffer name, or ``hr_`` + one."""
    name = key[len(fmt.HR_PREFIX):] if key.startswith(fmt.HR_PREFIX) else key
    if name not in fmt.BUFFERS:
        raise GbufError(f"model input {key!r}: not a gbuf buffer (known: {', '.join(fmt.BUFFERS)})")
    return fmt.BUFFERS[name].channels


def example_frame(model, lr_size, device="cpu", batch: int = 1, seed: int = 0) -> dict:
    """Random inputs for one frame: ``(B, C, H, W)`` per key of ``model.inputs``.

    Smooth fields with values in [0, 1] (the normalised range), motion in [-2, 2] pixels; HR keys
    at ``model.scale`` times the LR size.
    """
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise GbufError(f"{type(model).__name__}: the model declares no inputs (model.inputs)")
    generator = torch.Generator().manual_seed(seed)
    h, w = lr_size
    frame = {}
    for key in inputs:
        s = model.scale if key.startswith(fmt.HR_PREFIX) else 1
        size = (h * s, w * s)
        # Smooth random fields (noise at 1/4 size, upsampled), closer to rendered buffers than
        # white noise, which drives the features of trained models far out of their range.
        coarse = torch.rand(batch, buffer_channels(key), -(-size[0] // 4), -(-size[1] // 4), generator=generator)
        values = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        if key.endswith("motion"):
            values = values * 4.0 - 2.0
        frame[key] = values.to(device)
    return frame


def example_clip(model, lr_size, frames: int, device="cpu", batch: int = 1, seed: int = 0) -> dict:
    """Random inputs for a clip: ``(B, T, C, H, W)`` per key."""
    clip = [example_frame(model, lr_size, device, batch, seed + t) for t in range(frames)]
    return {k: torch.stack([f[k] for f in clip], dim=1) for k in clip[0]}


# ---------------------------------------------------------------------------------------------
# Running a model


def streams(model) -> bool:
    """Whether ``model`` runs frame by frame through ``step`` (recurrent, with a one-frame step):
    how it is evaluated, benchmarked and exported."""
    return bool(getattr(model, "recurrent", False)) and callable(getattr(model, "step", None))


@torch.no_grad()
def model_frames(model, batch: dict, device, amp_dtype=None):
    """Run ``model`` on one segment (``batch``: keys -> ``(1, T, C, H, W)`` on ``device``).

    Yields the output frames ``(3, sH, sW)`` as float32 tensors on ``device``, in order. A
    recurrent model runs frame by frame through ``step`` (bounded memory); the
    others see the whole segment at once.
    """
    device = torch.device(device)
    inputs = {k: batch[k] for k in model.inputs}
    if streams(model):
        state = None
        for t in range(inputs["image"].shape[1]):
            with runtime.autocast(device, amp_dtype):
                out, state = model.step({k: v[:, t] for k, v in inputs.items()}, state)
            yield out[0].float()
    else:
        with runtime.autocast(device, amp_dtype):
            out = model(inputs)
        for t in range(out.shape[1]):
            yield out[0, t].float()


# ---------------------------------------------------------------------------------------------
# Display domain


def to_display(x, normalize: str, encoding: str):
    """Network image -> display-referred [0, 1] (the domain every metric and picture uses)."""
    if normalize in ("rdg", "rdg-official") or encoding == "srgb":
        return x.clamp(0.0, 1.0)
    return srgb_encode(x)


def to_linear(x, normalize: str, encoding: str):
    """Network image -> linear [0, 1] (for EXR output)."""
    if normalize in ("rdg", "rdg-official") or encoding == "srgb":
        return srgb_decode(x)
    return x.clamp(0.0, 1.0)


def to_hwc_uint8(image) -> np.ndarray:
    """A display-referred ``(3, H, W)`` tensor -> ``(H, W, 3)`` uint8 numpy (pictures, videos, VMAF)."""
    # rounded in float64, as the metrics' 8-bit levels (gbuf.train.metrics.levels8)
    return to_uint8(image.detach().to(torch.float64)).permute(1, 2, 0).cpu().numpy()


def bicubic(image, scale: int | None = None, size=None):
    """``(..., C, H, W)`` upsampled bicubically (PyTorch, a = -0.75, half-pixel centres) by ``scale``
    or to ``size``, in float32, clipped to [0, 1]."""
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:]).float()
    up = F.interpolate(flat, scale_factor=None if size is not None else scale, size=size, mode="bicubic",
                       align_corners=False)
    return up.clamp(0.0, 1.0).reshape(*lead, *up.shape[-3:])


class BicubicUpsampler(torch.nn.Module):
    """The ``bicubic`` baseline: the LR image upsampled with ``bicubic``, clipped to [0, 1]."""

    recurrent = False
    inputs = ("image",)

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, batch):
        return bicubic(batch["image"], self.scale)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass
class LoadedModel:
    name: str
    module: torch.nn.Module
    checkpoint: Path | None
    #: The loader normalisation the model was trained with (``rdg`` or ``none``).
    normalize: str
    #: Which weights were loaded (``params_ema``, ``params``, or ``-`` for bicubic).
    weights: str


#: The values of ``data.normalize`` a checkpoint's saved config can hold (gbuf.train.config).
SAVED_NORMALISATIONS = ("rdg", "rdg-official", "none")


def _saved_model_settings(meta: dict, checkpoint: Path) -> tuple[dict, str]:
    """``model_options`` and the loader normalisation a gbuf checkpoint recorded (the authors'
    files record neither: no options, ``rdg``); a field of the wrong kind is a one-line error."""
    options = meta.get("model_options")
    if options is None:
        options = {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise GbufError(f"{checkpoint}: model_options is a {type(options).__name__}, not a table of options")
    config = meta.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if config is not None and not isinstance(config, dict) or data is not None and not isinstance(data, dict):
        raise GbufError(f"{checkpoint}: its saved config is not a table (config.data: {type(data).__name__})")
    normalize = (data or {}).get("normalize", "rdg")
    if normalize not in SAVED_NORMALISATIONS:
        raise GbufError(f"{checkpoint}: config.data.normalize {normalize!r} is not one of "
                        f"{', '.join(SAVED_NORMALISATIONS)}")
    return dict(options), normalize


def load_model(name: str, checkpoint=None, *, scale: int = 4, device="cpu", weights: str = "ema") -> LoadedModel:
    """Build ``name`` and load ``checkpoint`` (gbuf training checkpoints or the authors' files).

    ``weights``: ``ema`` prefers ``params_ema`` when the file has it, ``params`` takes ``params``.
    The loader normalisation comes from the checkpoint's saved config (``rdg`` otherwise, as
    the official files).
    """
    from gbuf.train import checkpoints, models

    if name == BICUBIC:
        return LoadedModel(name, BicubicUpsampler(scale).to(device).eval(), None, "rdg", "-")
    if name not in models.names():
        raise GbufError(f"unknown model {name!r}; known models: {', '.join(models.names())}, {BICUBIC}")
    if checkpoint is None:
        raise GbufError(f"model {name} needs a checkpoint (--ckpt FILE)")
    if weights not in ("ema", "params"):
        raise GbufError(f"--weights {weights!r}: use ema or params")
    checkpoint = Path(checkpoint)
    meta = checkpoints.read_file(checkpoint)
    saved_model = meta.get("model")
    if isinstance(saved_model, str) and saved_model != name:
        raise GbufError(f"{checkpoint}: checkpoint of model {saved_model}, not {name}")
    options, normalize = _saved_model_settings(meta, checkpoint)
    try:
        module = models.create(name, **options)
    except (TypeError, ValueError) as err:  # options that this version's constructor refuses
        raise GbufError(f"{checkpoint}: its model_options do not build {name} ({error_line(err)})") from None
    # The models' loader knows the authors' files (RDG's CycleFC offsets are checked and dropped).
    state, used = checkpoints.read(checkpoint, key=None if weights == "ema" else "params", data=meta)
    checkpoints.load_state(module, state, where=str(checkpoint))
    return LoadedModel(name, module.to(device).eval(), checkpoint, normalize, used)
