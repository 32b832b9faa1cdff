"""The experiment's report: a paper-shaped markdown table, an SVG bar chart, a JSON summary.

- ``results.md``: one row per model (bicubic first, the baseline), with params, latency
  (``gbuf bench``'s measure), PSNR / SSIM on each test sequence and their average, and the
  average PSNR gain over bicubic; below it the data, the budget, where the time went, notes.
- ``results.svg``: average PSNR per model as bars, bicubic's level as a dashed line. Written
  by hand (a few rectangles and labels): the environment has no plotting library to spare.
- ``results.json``: everything above as data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from html import escape
from pathlib import Path

from gbuf import fileio
from gbuf.experiments.config import BICUBIC

TABLE_NAME = "results.md"
PLOT_NAME = "results.svg"
SUMMARY_NAME = "results.json"


def _num(value, template: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return template.format(value)


def _baseline(result):
    return next((r for r in result.rows if r.label == BICUBIC), None)


def timing_lines(result) -> list[str]:
    """Where the time went: seconds by kind over every stage's record, and this call's wall time."""
    total = sum(result.timings.values())
    parts = [f"{kind} {seconds:.1f} s" for kind, seconds in result.timings.items()]
    jobs = (getattr(result, "facts", None) or {}).get("jobs", 1)
    side = f" (trainings {jobs} at a time: load and train summed over them)" if jobs > 1 else ""
    lines = [f"time by stage (all runs of this experiment){side}: {', '.join(parts)}; total {total:.1f} s",
             f"this call: {result.seconds:.1f} s wall; ran {len(result.ran)} stage(s), skipped "
             f"{len(result.skipped)} finished one(s)"]
    return lines


def table_markdown(result) -> str:
    tests = result.test_sequences
    base = _baseline(result)
    base_psnr = base.average("psnr") if base is not None else None
    facts = result.facts
    lines = [f"# Experiment {result.name}", ""]
    if facts.get("description"):
        lines += [facts["description"], ""]
    if facts.get("command"):
        lines += [f"`{facts['command']}`", ""]
    vmaf = any(any(v is not None for v in row.vmaf.values()) for row in result.rows)
    header = ["model", "params (M)", "latency (ms/frame)", *(f"{s} PSNR / SSIM" for s in tests),
              "Average PSNR / SSIM", *(["Average VMAF"] if vmaf else []), "vs bicubic (dB)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    for row in result.rows:
        what = row.kind if row.label == row.model else f"{row.model}, {row.kind}"
        cells = [row.label if row.kind == "baseline" else f"{row.label} ({what})",
                 _num(None if row.params is None else row.params / 1e6, "{:.3f}"),
                 _num(row.latency_ms, "{:.2f}")]
        for s in tests:
            cells.append(f"{_num(row.psnr.get(s), '{:.2f}')} / {_num(row.ssim.get(s), '{:.4f}')}")
        avg = row.average("psnr")
        cells.append(f"{_num(avg, '{:.2f}')} / {_num(row.average('ssim'), '{:.4f}')}")
        if vmaf:
            cells.append(_num(row.average("vmaf"), "{:.2f}"))
        gain = None if avg is None or base_psnr is None else avg - base_psnr
        cells.append("-" if row.label == BICUBIC else _num(gain, "{:+.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if facts:
        b = facts["budget"]
        splits = facts["splits"]
        lines.append(f"- Data: HR {facts['render']} (x{facts['scale']}, LR group `{facts['lr_group']}`), "
                     f"{'adaptive' if facts['samples'] is None else facts['samples']} spp; train: "
                     f"{', '.join(splits.get('train', [])) or 'none'}; test (held out): {', '.join(tests)}; "
                     f"frames per sequence: {sorted(set(facts['frames_per_sequence'].values()))}.")
        own = {label: lr for label, lr in facts["lr_rates"].items() if lr != b["lr"]}
        fewer = {label: n for label, n in (facts.get("iterations") or {}).items() if n != b["iters"]}
        lines.append(f"- Budget of every trained model: {b['iters']} iterations, batch {b['batch_size']}, "
                     f"{b['frames']} frames, HR patch {b['patch']}, seed {b['seed']}, Adam lr {b['lr']:g}"
                     + (" (" + ", ".join(f"{k}: {v:g}" for k, v in own.items()) + ")" if own else "")
                     + (" (" + ", ".join(f"{k}: {v} iterations" for k, v in fewer.items()) + ")" if fewer else "")
                     + (f"; loss weights other than the RDG recipe's: {b['loss']}" if b.get("loss") else "") + ".")
        lines.append(f"- Scores: `gbuf eval`'s (display domain, RGB, 8-bit, no border crop), mean over each "
                     f"test sequence's frames; trained models with their `{facts['eval_weights']}` weights; "
                     f"loader normalisation `{facts['normalize']}`.")
        bench = facts["bench"]
        lines.append(f"- Latency: `gbuf bench`'s measure (median per frame) at LR {bench['lr_size'][0]}x"
                     f"{bench['lr_size'][1]} on {bench['device']}, {bench['threads']} thread(s).")
    for line in timing_lines(result):
        lines.append(f"- {line[0].upper()}{line[1:]}.")
    for note in result.notes:
        lines.append(f"- Note: {note}.")
    return "\n".join(lines) + "\n"


def plot_svg(result) -> str:
    """Average PSNR per model as an SVG bar chart (bicubic's level dashed)."""
    rows = [(r.label, r.average("psnr")) for r in result.rows]
    values = [v for _, v in rows if v is not None]
    width, bar, gap, left, top, height = 120 + 90 * max(len(rows), 1), 60, 30, 70, 40, 260
    lo = math.floor(min(values) - 1.0) if values else 0.0
    hi = math.ceil(max(values) + 0.5) if values else 1.0
    hi = hi if hi > lo else lo + 1.0
    y = lambda v: top + height * (1.0 - (v - lo) / (hi - lo))  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 90}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="22" font-size="14">{escape(result.name)}: average PSNR (dB) on the test split '
           f'({escape(", ".join(result.test_sequences))})</text>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="black"/>',
           f'<line x1="{left}" y1="{top + height}" x2="{width - 20}" y2="{top + height}" stroke="black"/>']
    for i in range(int(hi - lo) + 1):
        v = lo + i
        out.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        out.append(f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{left}" y2="{y(v):.1f}" stroke="black"/>')
    for i, (label, value) in enumerate(rows):
        x = left + gap + i * (bar + gap)
        if value is not None:
            colour = "#999999" if label == BICUBIC else "#3b6ea8"
            out.append(f'<rect x="{x}" y="{y(value):.1f}" width="{bar}" height="{top + height - y(value):.1f}" '
                       f'fill="{colour}"><title>{escape(label)}: {value:.2f} dB</title></rect>')
            out.append(f'<text x="{x + bar / 2}" y="{y(value) - 5:.1f}" text-anchor="middle">{value:.2f}</text>')
        out.append(f'<text x="{x + bar / 2}" y="{top + height + 16}" text-anchor="end" '
                   f'transform="rotate(-30 {x + bar / 2} {top + height + 16})">{escape(label)}</text>')
    base = _baseline(result)
    if base is not None and base.average("psnr") is not None:
        level = y(base.average("psnr"))
        out.append(f'<line x1="{left}" y1="{level:.1f}" x2="{width - 20}" y2="{level:.1f}" stroke="#999999" '
                   f'stroke-dasharray="4 3"/>')
    out.append(f'<text x="16" y="{top + height / 2}" transform="rotate(-90 16 {top + height / 2})" '
               f'text-anchor="middle">PSNR (dB), axis from {lo:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _finite(value):
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def summary_json(result) -> str:
    data = {"experiment": str(result.experiment), "name": result.name, "workdir": str(result.workdir),
            "train_sequences": result.train_sequences, "test_sequences": result.test_sequences,
            "rows": [{**dataclasses.asdict(r), "psnr_average": r.average("psnr"), "ssim_average": r.average("ssim")}
                     for r in result.rows],
            "timings": result.timings, "seconds": result.seconds, "ran": result.ran, "skipped": result.skipped,
            "interrupted": result.interrupted, "notes": result.notes, "facts": result.facts}
    return json.dumps(_finite(data), indent=1, allow_nan=False, default=str) + "\n"


def write(result) -> None:
    """Write the three report files into the work directory (atomically) and set their paths."""
    if result.interrupted:  # no table of half the models
        return
    work = Path(result.workdir)
    result.table = fileio.write_text(work / TABLE_NAME, table_markdown(result))
    result.plot = fileio.write_text(work / PLOT_NAME, plot_svg(result))
    result.summary = fileio.write_text(work / SUMMARY_NAME, summary_json(result))
