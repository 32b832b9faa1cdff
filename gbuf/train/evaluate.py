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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gbuf import runtime
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train import inference
from gbuf.train.inference import BICUBIC

#: (key, column title, format) of each metric, in table order.
METRICS = (
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("vmaf", "VMAF", "{:.2f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("ewarp", "E_warp (x1e-3)", "{:.3f}"),
)


def parse_models(models: Sequence[str], checkpoints: Sequence[str | Path]) -> list[tuple[str, str | None]]:
    """``MODEL ...`` and ``--ckpt F ...`` (one per model other than bicubic, in order) -> pairs."""
    learned = [m for m in models if m != BICUBIC]
    if len(checkpoints) != len(learned):
        raise GbufError(f"--ckpt given {len(checkpoints)} time(s) for {len(learned)} model(s) other than "
                        f"bicubic ({', '.join(learned) or 'none'}): give one per model, in order")
    it = iter(checkpoints)
    return [(m, None if m == BICUBIC else next(it)) for m in models]


# ---------------------------------------------------------------------------------------------
# Scoring one model (gbuf eval, and the trainer's validation)


@dataclasses.dataclass
class SequenceScores:
    """What ``score_model`` measured on one sequence; per-frame lists are in frame order."""

    sequence: str
    psnr: list[float]
    #: NaN for frames smaller than SSIM's 11x11 window.
    ssim: list[float]
    #: Empty without LPIPS weights.
    lpips: list[float]
    #: x1e-3, one value per frame after the first with visible pixels; empty without motion.
    ewarp: list[float]
    #: Mean VMAF, or None when not computed.
    vmaf: float | None = None
    #: Which motion E_warp used (``HR`` or ``<lr group> xS``), or None.
    ewarp_source: str | None = None
    #: The HR pixel row of the temporal profiles (None: no profiles).
    profile_row: int | None = None
    #: label -> one ``(W, 3)`` row per frame: ``output``, and ``hr`` / ``lr_bicubic`` when asked.
    profiles: dict = dataclasses.field(default_factory=dict)
    #: ``(LR network image, output, target)`` of the last frame scored (display domain).
    last: tuple | None = None

    def mean(self, metric: str) -> float | None:
        """Mean over frames of a per-frame metric (``vmaf``: the session's mean); None when empty."""
        if metric == "vmaf":
            return self.vmaf
        values = getattr(self, metric)
        return float(np.mean(values)) if values else None


def _ssim(out, target, crop: int, y_channel: bool) -> float:
    from gbuf.train import metrics

    if min(out.shape[-2:]) - 2 * crop < 11:  # smaller than SSIM's window: not measurable
        return float("nan")
    return metrics.ssim(out, target, crop, y_channel)


def score_model(model: torch.nn.Module, data: str | Path, sequences: Sequence[str], *, normalize: str = "rdg",
                lr_group: str = fmt.LR, segment_frames: int = 100, max_frames: int | None = None,
                device: str | torch.device = "cpu", amp_dtype: torch.dtype | None = None, y_channel: bool = False,
                crop: int = 0, lpips=None, vmaf: bool = False, ewarp: bool = True, profiles: bool = False,
                profile_row: int | None = None, reference_profiles: bool = False, label: str = "",
                progress: Callable[[str], None] | None = None) -> list[SequenceScores]:
    """Score ``model`` (a module in eval mode) on ``sequences`` of the store ``data``, per frame.

    Each sequence runs in segments of ``segment_frames`` (a recurrent state reset at each);
    ``max_frames`` scores only the first frames of each sequence. Output and HR target are
    compared in the display domain (``inference.to_display``) with PSNR and SSIM, and with
    ``lpips`` (a ``metrics.LPIPS``), ``vmaf`` and ``ewarp`` (E_warp with the store's rendered
    motion) when asked. ``profiles`` keeps pixel row ``profile_row`` (default: the middle) of each
    output frame, and ``reference_profiles`` that of HR and of the bicubic LR too.
    Returns one ``SequenceScores`` per sequence, in the order of ``sequences``.
    """
    import gbuf.datasets as gd
    from gbuf.train import metrics

    say = progress or (lambda text: None)
    lr_buffers, hr_buffers = inference.model_buffers(model)
    dataset = gd.SequenceDataset(data, lr_group=lr_group, lr_buffers=lr_buffers, hr_buffers=hr_buffers,
                                 normalize=None if normalize == "none" else normalize,
                                 segment_frames=segment_frames, sequences=sequences)
    ds = dataset.ds
    results = {name: SequenceScores(name, [], [], [], []) for name in sequences}
    sessions: dict = {}
    previous_output: dict = {}
    for index in range(len(dataset)):
        name, first, last = dataset.items[index]
        if max_frames is not None and first >= max_frames:
            continue
        end = last if max_frames is None else min(last, max_frames)
        say(f"{label}: {name} frames {first}..{end - 1}")
        seq, res = ds[name], results[name]
        hr_enc = seq[fmt.HR].attrs.get("image_encoding", "linear")
        lr_enc = seq[lr_group].attrs.get("image_encoding", "linear")
        batch = inference.segment_batch(dataset[index], device, normalize)
        # metrics run where the model ran (float64 on the GPU is far faster than on the CPU)
        target = inference.to_display(batch[fmt.hr_key("image")][0].float(), normalize, hr_enc)
        hr_h, hr_w = target.shape[-2:]
        if (profiles or reference_profiles) and res.profile_row is None:
            res.profile_row = hr_h // 2 if profile_row is None else int(profile_row)
            if not 0 <= res.profile_row < hr_h:
                raise GbufError(f"--profile-row {res.profile_row}: outside the {hr_h} rows of {name}")
        row = res.profile_row
        motion = depth = None
        if ewarp:
            motion, depth, res.ewarp_source = _motion_for_ewarp(seq, lr_group, slice(first, last), (hr_h, hr_w))
        if vmaf and name not in sessions:
            sessions[name] = metrics.VmafSession(hr_w, hr_h, fps=float(seq.attrs.get("fps", 24) or 24))
        lr_display = None
        if reference_profiles:
            lr_display = inference.to_display(batch["image"][0].float().cpu(), normalize, lr_enc)
        scored = None
        for t, out in enumerate(inference.model_frames(model, batch, device, amp_dtype)):
            if first + t >= end:
                break
            out = inference.to_display(out, normalize, hr_enc)
            if out.shape != target[t].shape:
                raise GbufError(f"{label}: output {tuple(out.shape)} does not match HR {tuple(target[t].shape)}")
            res.psnr.append(metrics.psnr(out, target[t], crop, y_channel))
            res.ssim.append(_ssim(out, target[t], crop, y_channel))
            if lpips is not None:
                res.lpips.append(lpips(out, target[t]))
            if motion is not None and name in previous_output:
                err, _ = metrics.warping_error(previous_output[name], out, motion[t].to(out.device),
                                               None if depth is None else depth[t].to(out.device))
                if not math.isnan(err):
                    res.ewarp.append(err * 1e3)
            if motion is not None:
                previous_output[name] = out
            if vmaf:
                sessions[name].add(inference.to_hwc_uint8(out), inference.to_hwc_uint8(target[t]))
            if profiles:
                res.profiles.setdefault("output", []).append(out[:, row, :].permute(1, 0).cpu().numpy())
            if reference_profiles:
                res.profiles.setdefault("hr", []).append(target[t][:, row, :].permute(1, 0).cpu().numpy())
                up = inference.bicubic(lr_display[t], size=(hr_h, hr_w))
                res.profiles.setdefault("lr_bicubic", []).append(up[:, row, :].permute(1, 0).numpy())
            scored = (t, out)
        if scored is not None:
            # copies: views would keep the whole segment's tensors alive
            t, out = scored
            res.last = (batch["image"][0, t].clone(), out, target[t].clone())
    for name, session in sessions.items():
        results[name].vmaf = session.close()["mean"]
    return list(results.values())


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
    #: Torch CPU threads the run used.
    threads: int = 1
    #: Where ``table`` / ``plot`` were written (None: not asked for).
    table: Path | None = None
    plot: Path | None = None
    #: The store's split that was scored (``select_sequences``); None: sequences named, or no split.
    split: str | None = None

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


def evaluate(models: Sequence[tuple[str, str | Path | None]], data: str | Path, *,
             sequences: Sequence[str] | None = None, split: str | None = None, lr_group: str = fmt.LR,
             segment_frames: int = 100, device: str = "auto", amp: str = "off", y_channel: bool = False,
             crop: int = 0, vmaf: str = "auto",
             lpips_weights: str | Path | None = None, weights: str = "ema", profile_row: int | None = None,
             table: str | Path | None = None, plot: str | Path | None = None, threads: int | None = None,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Score ``models`` (``[(name, checkpoint or None), ...]``) on ``data``; see the module docstring.

    ``vmaf``: ``auto`` (when the bundled ffmpeg has libvmaf), ``on`` (error if not) or ``off``.
    ``table`` (``.md`` / ``.csv``) and ``plot`` (``.png``): files to write the results to.
    ``threads``: torch CPU threads (None: ``gbuf.runtime``'s default).
    ``progress``: a callable taking one line of text, or None.
    ``sequences`` and ``split``: what is scored (``select_sequences``; default: the test split of a
    store that records a split, else every sequence).
    """
    with runtime.threads(threads) as used:
        report = _evaluate(models, data, sequences=sequences, split=split, lr_group=lr_group,
                           segment_frames=segment_frames, device=device, amp=amp, y_channel=y_channel, crop=crop,
                           vmaf=vmaf,
                           lpips_weights=lpips_weights, weights=weights, profile_row=profile_row,
                           progress=progress)
        report.threads = used
    if table is not None:
        report.table = write_table(report, table)
    if plot is not None:
        report.plot = write_plot(report, plot)
    return report


def select_sequences(ds, sequences: Sequence[str] | None = None, split: str | None = None
                     ) -> tuple[list[str], str | None]:
    """``(names, split)``: ``sequences`` when given; else the store's ``split`` (default ``test``) when it
    records a split (``gbuf dataset build``) and that split is not empty; else every sequence."""
    if sequences and split:
        raise GbufError(f"{ds.path}: give sequences or a split to evaluate, not both")
    if sequences:
        return list(sequences), None
    splits = ds.splits
    if split is not None:
        if not splits:
            raise GbufError(f"{ds.path}: the store records no split (--split needs a store made by "
                            f"`gbuf dataset build`)")
        if split not in splits or not splits[split]:
            raise GbufError(f"{ds.path}: split {split!r} holds no sequence")
        return list(splits[split]), split
    if splits.get("test"):
        return list(splits["test"]), "test"
    return ds.sequences, None


def _evaluate(models, data, *, sequences, split, lr_group, segment_frames, device, amp, y_channel, crop, vmaf,
              lpips_weights, weights, profile_row, progress) -> EvalReport:
    import gbuf.datasets as gd
    from gbuf.train import metrics

    if not models:
        raise GbufError("no model to evaluate")
    if segment_frames < 1:
        raise GbufError("--segment-frames must be >= 1")
    dev = runtime.resolve_device(device)
    amp_dtype = runtime.autocast_dtype(amp, dev)
    ds = gd.open(data)
    names, split = select_sequences(ds, sequences, split)
    if split is not None and progress is not None:
        progress(f"{data}: split {split!r}, {len(names)} sequence(s)")
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
        model = inference.load_model(name, ckpt, scale=scale, device=dev, weights=weights)
        label = name if name not in seen else f"{name} ({Path(ckpt).name})"
        seen.add(name)
        loaded.append((label, model))
    # Which weights each score is of: a short run's params_ema and params can differ by many dB.
    used = [f"{label}: {lm.weights} of {Path(lm.checkpoint).name}" for label, lm in loaded if lm.checkpoint]
    if used:
        notes.append(f"Weights (--weights {weights}): " + "; ".join(used))

    scores = {label: {m[0]: {} for m in METRICS} for label, _ in loaded}
    per_frame = {label: {} for label, _ in loaded}
    profiles: dict = {n: {} for n in names}
    profile_rows: dict = {}
    ewarp_sources = set()

    for mi, (label, lm) in enumerate(loaded):
        lr_buffers, hr_buffers = inference.model_buffers(lm.module)
        inference.check_inputs(ds, lm.name, names, lr_group, lr_buffers, hr_buffers)
        results = score_model(lm.module, data, names, normalize=lm.normalize, lr_group=lr_group,
                              segment_frames=segment_frames, device=dev, amp_dtype=amp_dtype, y_channel=y_channel,
                              crop=crop, lpips=lpips, vmaf=use_vmaf, ewarp=True, profiles=True,
                              profile_row=profile_row, reference_profiles=mi == 0, label=label, progress=progress)
        for res in results:
            name = res.sequence
            per_frame[label][name] = list(res.psnr)
            for metric, _, _ in METRICS:
                scores[label][metric][name] = res.mean(metric)
            if res.ewarp_source:
                ewarp_sources.add(res.ewarp_source)
            profile_rows.setdefault(name, res.profile_row)
            profiles[name].setdefault("hr", res.profiles.get("hr"))
            profiles[name].setdefault("lr_bicubic", res.profiles.get("lr_bicubic"))
            profiles[name][label] = res.profiles.get("output")

    if ewarp_sources:
        notes.append("E_warp: mean squared RGB difference (8-bit, /255) x 1e3 between frame t and frame t-1 "
                     f"warped with the rendered motion ({', '.join(sorted(ewarp_sources))}), over pixels that "
                     "pass the forward/backward consistency check")
    else:
        notes.append("E_warp: not available (the store has no motion buffer)")
    profiles = {n: {k: np.stack(v) for k, v in p.items() if v} for n, p in profiles.items()}
    return EvalReport(data=str(data), lr_group=lr_group, sequences=names, models=[l for l, _ in loaded],
                      scores=scores, per_frame=per_frame, profiles=profiles, profile_rows=profile_rows,
                      notes=notes, y_channel=y_channel, crop=crop, split=split)


# ---------------------------------------------------------------------------------------------
# Tables


def _cell(value, template: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
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
