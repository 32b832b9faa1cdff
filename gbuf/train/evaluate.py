"""``gbuf eval``: score models on whole sequences of a gbuf store; tables and plots.

Every model (and ``bicubic``) runs on each sequence in segments of
``segment_frames`` frames (100, as the official RDG test), a recurrent model's
state reset at each segment. Each output frame is scored against the HR frame in
the display domain (see ``docs/training.md``): PSNR and SSIM (RGB, crop 0, 8-bit,
as the RDG test; luma with ``y_channel``), VMAF (libvmaf of the ffmpeg bundled with
``imageio-ffmpeg``), LPIPS (only with local weights), and E_warp (rendered motion,
occlusion from forward/backward consistency) -- see ``gbuf.train.metrics``.

The table has the paper's shape: one table per metric, models as rows,
sequences and their average as columns (the average of the per-sequence means,
each the mean over frames).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

BICUBIC = "bicubic"

#: (key, column title, format) of each metric, in table order.
METRICS = (
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("vmaf", "VMAF", "{:.2f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("ewarp", "E_warp (x1e-3)", "{:.3f}"),
)


# ---------------------------------------------------------------------------------------------
# Models


class BicubicUpsampler(torch.nn.Module):
    """The ``bicubic`` baseline: the LR image upsampled bicubically (PyTorch, a = -0.75), clipped to [0, 1]."""

    recurrent = False
    inputs = ("image",)

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, batch):
        image = batch["image"]
        b, t, c, h, w = image.shape
        up = F.interpolate(image.reshape(b * t, c, h, w).float(), scale_factor=self.scale, mode="bicubic",
                           align_corners=False)
        return up.clamp(0.0, 1.0).reshape(b, t, c, h * self.scale, w * self.scale)


@dataclasses.dataclass
class LoadedModel:
    name: str
    module: torch.nn.Module
    checkpoint: Path | None
    #: The loader normalisation the model was trained with (``rdg`` or ``none``).
    normalize: str
    #: Which weights were loaded (``params_ema``, ``params``, or ``-`` for bicubic).
    weights: str


def load_model(name: str, checkpoint=None, *, scale: int = 4, device="cpu", weights: str = "ema") -> LoadedModel:
    """Build ``name`` and load ``checkpoint`` (gbuf training checkpoints or the authors' files).

    ``weights``: ``ema`` prefers ``params_ema`` when the file has it, ``params`` takes ``params``.
    The loader normalisation comes from the checkpoint's saved config (``rdg`` otherwise, as
    the official files).
    """
    from gbuf.train import checkpoints, models
    from gbuf.train.trainer import load_checkpoint_file

    if name == BICUBIC:
        return LoadedModel(name, BicubicUpsampler(scale).to(device).eval(), None, "rdg", "-")
    if name not in models.names():
        raise GbufError(f"unknown model {name!r}; known models: {', '.join(models.names())}, {BICUBIC}")
    if checkpoint is None:
        raise GbufError(f"model {name} needs a checkpoint (--ckpt FILE)")
    if weights not in ("ema", "params"):
        raise GbufError(f"--weights {weights!r}: use ema or params")
    checkpoint = Path(checkpoint)
    meta = load_checkpoint_file(checkpoint)
    saved_model = meta.get("model")
    if isinstance(saved_model, str) and saved_model != name:
        raise GbufError(f"{checkpoint}: checkpoint of model {saved_model}, not {name}")
    options = dict(meta.get("model_options") or {})
    normalize = ((meta.get("config") or {}).get("data") or {}).get("normalize", "rdg")
    module = models.create(name, **options)
    # The models' loader knows the authors' files (RDG's CycleFC offsets are checked and dropped).
    state, used = checkpoints.read(checkpoint, key=None if weights == "ema" else "params")
    checkpoints.load_state(module, state, where=str(checkpoint))
    return LoadedModel(name, module.to(device).eval(), checkpoint, normalize, used)


@torch.no_grad()
def model_frames(model, batch: dict, device, amp_dtype=None):
    """Run ``model`` on one segment (``batch``: keys -> ``(1, T, C, H, W)`` on ``device``).

    Yields the output frames ``(3, sH, sW)`` as float32 tensors on ``device``, in order. A
    recurrent model runs frame by frame through ``step`` (bounded memory); the
    others see the whole segment at once.
    """
    from gbuf.train.trainer import autocast

    inputs = {k: batch[k] for k in model.inputs}
    if getattr(model, "recurrent", False) and hasattr(model, "step"):
        state = None
        for t in range(inputs["image"].shape[1]):
            with autocast(torch.device(device), amp_dtype):
                out, state = model.step({k: v[:, t] for k, v in inputs.items()}, state)
            yield out[0].float()
    else:
        with autocast(torch.device(device), amp_dtype):
            out = model(inputs)
        for t in range(out.shape[1]):
            yield out[0, t].float()


# ---------------------------------------------------------------------------------------------
# Display domain


def srgb_encode(x):
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def srgb_decode(x):
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def to_display(x, normalize: str, encoding: str):
    """Network image -> display-referred [0, 1] (the domain every metric and picture uses)."""
    if normalize == "rdg" or encoding == "srgb":
        return x.clamp(0.0, 1.0)
    return srgb_encode(x)


def to_linear(x, normalize: str, encoding: str):
    """Network image -> linear [0, 1] (for EXR output)."""
    if normalize == "rdg" or encoding == "srgb":
        return srgb_decode(x)
    return x.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass
class EvalReport:
    data: str
    lr_group: str
    sequences: list[str]
    models: list[str]
    #: scores[model][metric][sequence] -> mean over frames (None: not available)
    scores: dict
    #: per_frame[model][sequence] -> list of PSNR per frame
    per_frame: dict
    #: profiles[sequence][label] -> (T, W, 3) float array in [0, 1] (labels: lr_bicubic, models..., hr)
    profiles: dict
    profile_rows: dict
    notes: list[str]
    y_channel: bool
    crop: int

    def average(self, model: str, metric: str):
        values = [self.scores[model][metric].get(s) for s in self.sequences]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return float(np.mean(values)) if values else None


def _motion_for_ewarp(seq, lr_group: str, t: slice, hr_size):
    """Backward motion and depth at HR resolution for frames ``t`` (rendered motion of the store)."""
    hr = seq[fmt.HR]
    if "motion" in hr.buffers:
        names = ["motion"] + (["depth"] if "depth" in hr.buffers else [])
        data = hr.read_many(names, t=t)
        motion = torch.from_numpy(np.ascontiguousarray(data["motion"].transpose(0, 3, 1, 2), dtype=np.float32))
        depth = torch.from_numpy(np.ascontiguousarray(data["depth"][..., 0], dtype=np.float32)) if "depth" in data \
            else None
        return motion, depth, "HR"
    lr = seq[lr_group]
    if "motion" not in lr.buffers:
        return None, None, None
    names = ["motion"] + (["depth"] if "depth" in lr.buffers else [])
    data = lr.read_many(names, t=t)
    s = lr.scale
    motion = torch.from_numpy(np.ascontiguousarray(data["motion"].transpose(0, 3, 1, 2), dtype=np.float32))
    motion = F.interpolate(motion, size=hr_size, mode="nearest") * s
    depth = None
    if "depth" in data:
        depth = torch.from_numpy(np.ascontiguousarray(data["depth"][..., 0], dtype=np.float32))
        depth = F.interpolate(depth[:, None], size=hr_size, mode="nearest")[:, 0]
    return motion, depth, f"{lr_group} x{s}"


def evaluate(models: list[tuple[str, str | None]], data: str, *, sequences=None, lr_group: str = fmt.LR,
             segment_frames: int = 100, device: str = "auto", amp: str = "off", y_channel: bool = False,
             crop: int = 0, vmaf: str = "auto", lpips_weights=None, weights: str = "ema", profile_row=None,
             progress=None) -> EvalReport:
    """Score ``models`` (``[(name, checkpoint or None), ...]``) on ``data``; see the module docstring.

    ``vmaf``: ``auto`` (when the bundled ffmpeg has libvmaf), ``on`` (error if not) or ``off``.
    ``progress``: a callable taking one line of text, or None.
    """
    import gbuf.datasets as gd
    from gbuf.train import metrics
    from gbuf.train.trainer import autocast_dtype, model_buffers, network_batch, resolve_device

    if not models:
        raise GbufError("no model to evaluate")
    if segment_frames < 1:
        raise GbufError("--segment-frames must be >= 1")
    say = progress or (lambda text: None)
    dev = resolve_device(device)
    amp_dtype = autocast_dtype(amp, dev)
    ds = gd.open(data)
    names = list(sequences) if sequences else ds.sequences
    if not names:
        raise GbufError(f"{data}: the store holds no sequence")
    for n in names:
        seq = ds[n]
        for group in (lr_group, fmt.HR):
            if group not in seq.resolutions:
                raise GbufError(f"{data}: sequence {n!r} has no resolution group {group!r} "
                                f"(has: {', '.join(seq.resolutions)})")
    scale = ds[names[0]][lr_group].scale

    notes = []
    use_vmaf = False
    if vmaf == "on" and not metrics.vmaf_available():
        raise GbufError("--vmaf on: the ffmpeg bundled with imageio-ffmpeg has no libvmaf here")
    if vmaf in ("on", "auto"):
        use_vmaf = metrics.vmaf_available()
        if use_vmaf:
            notes.append("VMAF: libvmaf (built-in vmaf_v0.6.1 model) in the ffmpeg of imageio-ffmpeg; "
                         "frames converted RGB -> YUV 4:4:4 (BT.601)")
        else:
            notes.append("VMAF: not available (no ffmpeg with libvmaf: install imageio-ffmpeg)")
    else:
        notes.append("VMAF: not computed (--vmaf off)")
    lpips = None
    if lpips_weights:
        lpips = metrics.LPIPS(lpips_weights, device=dev)
        notes.append(f"LPIPS: AlexNet v0.1 from {lpips_weights}")
    else:
        notes.append("LPIPS: not available (no local weights given with --lpips; nothing is downloaded)")

    loaded = []
    seen = set()
    for name, ckpt in models:
        model = load_model(name, ckpt, scale=scale, device=dev, weights=weights)
        label = name if name not in seen else f"{name} ({Path(ckpt).name})"
        seen.add(name)
        loaded.append((label, model))

    scores = {label: {m[0]: {} for m in METRICS} for label, _ in loaded}
    per_frame = {label: {} for label, _ in loaded}
    profiles: dict = {n: {} for n in names}
    profile_rows: dict = {}
    ewarp_sources = set()

    for mi, (label, lm) in enumerate(loaded):
        model = lm.module
        lr_buffers, hr_buffers = model_buffers(model)
        normalize = None if lm.normalize == "none" else lm.normalize
        for name in names:
            seq = ds[name]
            for group, needed in ((lr_group, lr_buffers), (fmt.HR, hr_buffers)):
                missing = [b for b in needed if b not in seq[group].buffers]
                if missing:
                    raise GbufError(f"{seq[group].where}: model {lm.name} needs buffer(s) {', '.join(missing)} "
                                    f"that group {group!r} lacks (has: {', '.join(seq[group].buffers)})")
        dataset = gd.SequenceDataset(data, lr_group=lr_group, lr_buffers=lr_buffers, hr_buffers=hr_buffers,
                                     normalize=normalize, segment_frames=segment_frames, sequences=names)
        encodings = {n: (ds[n][fmt.HR].attrs.get("image_encoding", "linear"),
                         ds[n][lr_group].attrs.get("image_encoding", "linear")) for n in names}
        vmaf_sessions: dict = {}
        frame_scores: dict = {n: {"psnr": [], "ssim": [], "lpips": [], "ewarp": []} for n in names}
        previous_output: dict = {}
        for index in range(len(dataset)):
            name, first, last = dataset.items[index]
            say(f"{label}: {name} frames {first}..{last - 1}")
            item = dataset[index]
            batch = network_batch({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, dev,
                                  lm.normalize)
            hr_enc, lr_enc = encodings[name]
            # metrics run where the model ran (float64 on the GPU is far faster than on the CPU)
            target = to_display(batch[fmt.hr_key("image")][0].float(), lm.normalize, hr_enc)
            hr_h, hr_w = target.shape[-2:]
            row = profile_rows.setdefault(name, hr_h // 2 if profile_row is None else int(profile_row))
            if not 0 <= row < hr_h:
                raise GbufError(f"--profile-row {row}: outside the {hr_h} rows of {name}")
            motion, depth, source = _motion_for_ewarp(seq=ds[name], lr_group=lr_group, t=slice(first, last),
                                                      hr_size=(hr_h, hr_w))
            if source:
                ewarp_sources.add(source)
            if use_vmaf and name not in vmaf_sessions:
                fps = float(ds[name].attrs.get("fps", 24) or 24)
                vmaf_sessions[name] = metrics.VmafSession(hr_w, hr_h, fps=fps)
            lr_display = None
            if mi == 0:
                lr_display = to_display(batch["image"][0].float().cpu(), lm.normalize, lr_enc)
            outs = []
            for t, out in enumerate(model_frames(model, batch, dev, amp_dtype)):
                out = to_display(out, lm.normalize, hr_enc)
                if out.shape != target[t].shape:
                    raise GbufError(f"{label}: output {tuple(out.shape)} does not match HR {tuple(target[t].shape)}")
                fs = frame_scores[name]
                fs["psnr"].append(metrics.psnr(out, target[t], crop, y_channel))
                fs["ssim"].append(metrics.ssim(out, target[t], crop, y_channel))
                if lpips is not None:
                    fs["lpips"].append(lpips(out, target[t]))
                if motion is not None and name in previous_output:
                    err, _ = metrics.warping_error(previous_output[name], out, motion[t].to(out.device),
                                                   None if depth is None else depth[t].to(out.device))
                    if not math.isnan(err):
                        fs["ewarp"].append(err * 1e3)
                previous_output[name] = out
                if use_vmaf:
                    vmaf_sessions[name].add(_hwc_uint8(out), _hwc_uint8(target[t]))
                outs.append(out[:, row, :].permute(1, 0).cpu().numpy())
                if mi == 0:
                    profiles[name].setdefault("hr", []).append(target[t][:, row, :].permute(1, 0).cpu().numpy())
                    up = F.interpolate(lr_display[t][None], scale_factor=scale, mode="bicubic",
                                       align_corners=False)[0].clamp(0, 1)
                    profiles[name].setdefault("lr_bicubic", []).append(up[:, row, :].permute(1, 0).numpy())
            profiles[name].setdefault(label, []).extend(outs)
        for name in names:
            fs = frame_scores[name]
            per_frame[label][name] = list(fs["psnr"])
            scores[label]["psnr"][name] = float(np.mean(fs["psnr"]))
            scores[label]["ssim"][name] = float(np.mean(fs["ssim"]))
            scores[label]["lpips"][name] = float(np.mean(fs["lpips"])) if fs["lpips"] else None
            scores[label]["ewarp"][name] = float(np.mean(fs["ewarp"])) if fs["ewarp"] else None
            scores[label]["vmaf"][name] = vmaf_sessions[name].close()["mean"] if name in vmaf_sessions else None

    if ewarp_sources:
        notes.append("E_warp: mean squared RGB difference (8-bit, /255) x 1e3 between frame t and frame t-1 "
                     f"warped with the rendered motion ({', '.join(sorted(ewarp_sources))}), over pixels that "
                     "pass the forward/backward consistency check")
    else:
        notes.append("E_warp: not available (the store has no motion buffer)")
    profiles = {n: {k: np.stack(v) for k, v in p.items()} for n, p in profiles.items()}
    return EvalReport(data=str(data), lr_group=lr_group, sequences=names, models=[l for l, _ in loaded],
                      scores=scores, per_frame=per_frame, profiles=profiles, profile_rows=profile_rows,
                      notes=notes, y_channel=y_channel, crop=crop)


def _hwc_uint8(image) -> np.ndarray:
    from gbuf.train.metrics import to_uint8

    return to_uint8(image).permute(1, 2, 0).cpu().numpy().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Tables


def _cell(value, template: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return template.format(value)


def table_markdown(report: EvalReport) -> str:
    space = "Y (BT.601)" if report.y_channel else "RGB"
    lines = [f"# gbuf eval: {report.data} (LR group `{report.lr_group}`; {space}, crop {report.crop}, 8-bit)", ""]
    for key, title, template in METRICS:
        lines.append(f"## {title}")
        lines.append("")
        lines.append("| model | " + " | ".join(report.sequences) + " | Average |")
        lines.append("|---|" + "---:|" * (len(report.sequences) + 1))
        for model in report.models:
            cells = [_cell(report.scores[model][key].get(s), template) for s in report.sequences]
            cells.append(_cell(report.average(model, key), template))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Notes:")
    lines.extend(f"- {note}" for note in report.notes)
    return "\n".join(lines) + "\n"


def table_csv(report: EvalReport) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "model", *report.sequences, "average"])
    for key, _, template in METRICS:
        for model in report.models:
            cells = [_cell(report.scores[model][key].get(s), template) for s in report.sequences]
            writer.writerow([key, model, *cells, _cell(report.average(model, key), template)])
    return buf.getvalue()


def write_table(report: EvalReport, path) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        text = table_csv(report)
    elif path.suffix.lower() in (".md", ".markdown"):
        text = table_markdown(report)
    else:
        raise GbufError(f"{path}: --table must end in .md or .csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Plot


def write_plot(report: EvalReport, path) -> Path:
    """Per sequence: per-frame PSNR curves of every model, and temporal profiles.

    A temporal profile stacks one pixel row (``profile_rows``) of every frame
    (time runs down), for LR bicubic, each model and HR.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    # The bicubic baseline, when evaluated, is the LR bicubic profile already.
    labels = ([] if BICUBIC in report.models else ["lr_bicubic"]) + [*report.models, "hr"]
    n_seq = len(report.sequences)
    cols = 1 + len(labels)
    fig, axes = plt.subplots(n_seq, cols, figsize=(4.5 + 2.2 * len(labels), 3.2 * n_seq), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2] + [1] * len(labels)})
    for i, name in enumerate(report.sequences):
        ax = axes[i][0]
        for model in report.models:
            curve = report.per_frame[model][name]
            ax.plot(range(len(curve)), curve, label=model, linewidth=1.2)
        ax.set_title(f"{name}: PSNR per frame")
        ax.set_xlabel("frame")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        for j, label in enumerate(labels):
            pax = axes[i][1 + j]
            prof = report.profiles[name].get(label)
            if prof is not None:
                pax.imshow(np.clip(prof, 0, 1), aspect="auto", interpolation="nearest")
            pax.set_title(label.replace("lr_bicubic", "LR bicubic").replace("hr", "HR") if label in
                          ("lr_bicubic", "hr") else label, fontsize=9)
            pax.set_xlabel(f"x (row {report.profile_rows.get(name)})", fontsize=7)
            pax.set_ylabel("frame", fontsize=7)
            pax.tick_params(labelsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
