"""Efficiency of models, in the columns of the RDG paper's table: params, peak memory, latency, FLOPs.

``bench(names, lr_size=(270, 480), device="cpu")`` builds each model with random weights, feeds
random inputs of the LR size (HR G-buffers at ``scale`` times it) and measures, per frame:

- **latency**: recurrent models with a one-frame ``step`` are timed step by step with their
  state carried (the streaming use); other models (single-image, bidirectional) run
  ``forward`` on a clip of ``frames`` frames, divided by ``frames``. ``warmup`` untimed runs,
  then the median of ``repeats`` timed ones; CUDA is timed with CUDA events after a
  synchronise, the CPU with ``time.perf_counter``. Everything runs under ``torch.inference_mode``.
- **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over one frame (weights, state
  and inputs included, as the official RDG script reports it). On the CPU there is no
  allocator high-water mark, so the figure is the bytes of tensors live before the frame
  (weights, buffers, state, inputs) plus the peak of the running sum of the allocations and
  frees that ``torch.profiler`` (``profile_memory=True``) records during the frame: tensor
  memory, the same quantity as on CUDA, not the process RSS (which also holds the Python
  heap and allocator caches).
- **threads**: torch CPU threads, ``threads`` (``--threads``) or ``gbuf.runtime``'s default (one;
  see ``docs/training.md``), recorded in each row.
- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one frame; it counts 2 FLOPs per
  multiply-add of convolutions and matrix products (``GMACs`` is half of it: what fvcore and
  most papers call FLOPs). Elementwise ops, interpolation, ``grid_sample`` and
  ``torchvision.ops.deform_conv2d`` are not counted.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

from gbuf import runtime
from gbuf.errors import GbufError

DEFAULT_LR_SIZE = (270, 480)

#: What torch's profiler (Kineto) prints on stderr around every profiled frame, whatever the
#: machine: its start/stop trace points, and on a CPU-only machine the failed GPU count. Dropped
#: from the output of the memory measurement, which runs under the profiler.
PROFILER_NOISE = (
    r"^USDT:.*\] profiler_(start|stop)\s*$",
    r"^ERROR:.*\] gpuGetDeviceCount failed with code \d+\s*$",
)


@dataclasses.dataclass
class BenchRow:
    model: str
    params: int
    peak_mib: float | None
    latency_ms: float
    gflops: float
    device: str
    lr_size: tuple[int, int]
    scale: int
    mode: str  # "step" (streaming) or "clip/N" (forward over N frames)
    #: Torch CPU threads during the measurement.
    threads: int = 1

    @property
    def gmacs(self) -> float:
        return self.gflops / 2.0

    @property
    def fps(self) -> float:
        return 1000.0 / self.latency_ms if self.latency_ms > 0 else float("inf")


def parse_size(text: str) -> tuple[int, int]:
    """``"270x480"`` -> ``(270, 480)`` (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise GbufError(f"size {text!r}: expected HEIGHTxWIDTH, e.g. 270x480") from None
    if h < 1 or w < 1:
        raise GbufError(f"size {text!r}: height and width must be positive")
    return h, w


def bench_model(name: str, lr_size: tuple[int, int] = DEFAULT_LR_SIZE, device="cpu", frames: int = 5, warmup: int = 2,
                repeats: int = 5, model=None, threads: int | None = None, **options) -> BenchRow:
    """Measure one model (built with ``models.create(name, **options)`` unless ``model`` is given).

    ``threads``: torch CPU threads (None: ``gbuf.runtime``'s default).
    """
    with runtime.threads(threads):
        return _bench_model(name, lr_size, device, frames, warmup, repeats, model, options)


def _bench_model(name, lr_size, device, frames, warmup, repeats, model, options) -> BenchRow:
    import torch

    from gbuf.train import models
    from gbuf.train.inference import example_clip, example_frame, streams

    device = runtime.resolve_device(device) if not hasattr(device, "type") else device
    if model is None:
        model = models.create(name, **options)
    model = model.to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    frames = max(int(frames), 1)

    with torch.inference_mode():
        if streams(model):
            mode = "step"
            sequence = [example_frame(model, lr_size, device, seed=t) for t in range(2)]
            state = None
            counter = [0]

            def run():  # one frame, state carried over
                nonlocal state
                out, state = model.step(sequence[counter[0] % 2], state)
                counter[0] += 1
                return out

            run()  # a first frame so the measured ones have a state
            per_call = 1
        else:
            mode = f"clip/{frames}"
            clip = example_clip(model, lr_size, frames, device)

            def run():
                return model(clip)

            per_call = frames

        for _ in range(max(int(warmup), 0)):
            run()
        times = [_time(run, device) / per_call for _ in range(max(int(repeats), 1))]
        peak = _peak_memory(run, model, device, state if mode == "step" else None,
                            sequence[0] if mode == "step" else clip)
        gflops = _flops(run) / per_call / 1e9
    return BenchRow(name, params, peak, statistics.median(times) * 1000.0, gflops, str(device),
                    tuple(lr_size), int(getattr(model, "scale", 0)), mode, torch.get_num_threads())


def bench(names: Sequence[str] | None = None, lr_size: tuple[int, int] | str = DEFAULT_LR_SIZE, device: str = "cpu",
          frames: int = 5, warmup: int = 2, repeats: int = 5, threads: int | None = None,
          progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """``bench_model`` for each name (all registered models when ``names`` is empty).

    ``lr_size``: ``(height, width)`` or ``"HxW"``; ``threads``: torch CPU threads (None:
    ``gbuf.runtime``'s default); ``progress(name)`` is called before each model.
    """
    import torch

    from gbuf.train import models

    if isinstance(lr_size, str):
        lr_size = parse_size(lr_size)
    if frames < 1 or repeats < 1 or warmup < 0:
        raise GbufError("--frames and --repeats must be at least 1, --warmup at least 0")
    names = list(names or models.names())
    for name in names:  # fail on a typo before spending minutes on the others
        if name not in models.names():
            raise GbufError(f"unknown model {name!r}; known models: {', '.join(models.names())}")
    rows = []
    with runtime.threads(threads):
        device = runtime.resolve_device(device)
        for name in names:
            if progress is not None:
                progress(name)
            torch.manual_seed(0)
            rows.append(_bench_model(name, lr_size, device, frames, warmup, repeats, None, {}))
    return rows


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(run, device) -> float:
    """Seconds of one ``run()``."""
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin


def _tensor_bytes(obj) -> int:
    import torch
    from torch.utils._pytree import tree_leaves

    seen, total = set(), 0
    for leaf in tree_leaves(obj):
        if isinstance(leaf, torch.Tensor) and id(leaf) not in seen:
            seen.add(id(leaf))
            total += leaf.numel() * leaf.element_size()
    return total


def _peak_memory(run, model, device, state, inputs) -> float | None:
    """MiB; see the module docstring for what is measured on each device."""
    import torch

    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type != "cpu":
        return None
    resident = _tensor_bytes(list(model.parameters()) + list(model.buffers())) + _tensor_bytes(state) \
        + _tensor_bytes(inputs)
    peak = _profiled_peak_allocation(run)
    return None if peak is None else (resident + peak) / 2**20


def _profiled_peak_allocation(run) -> int | None:
    """Peak of the running sum of CPU allocations during ``run()`` (bytes above the start)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # a profiler without the event tree: say "n/a" rather than guess
        return None
    with runtime.drop_stderr_lines(*PROFILER_NOISE):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
    allocations.sort()
    live = peak = 0
    for _, size in allocations:
        live += size
        peak = max(peak, live)
    return peak


def _flops(run) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


# -- tables ---------------------------------------------------------------------------------

COLUMNS = ("model", "params (M)", "peak mem (MiB)", "latency (ms/frame)", "FPS", "GFLOPs/frame",
           "GMACs/frame", "timed as")


def _cells(row: BenchRow) -> list[str]:
    return [row.model, f"{row.params / 1e6:.3f}", "n/a" if row.peak_mib is None else f"{row.peak_mib:.1f}",
            f"{row.latency_ms:.2f}", f"{row.fps:.2f}", f"{row.gflops:.2f}", f"{row.gmacs:.2f}", row.mode]


def format_table(rows: list[BenchRow], fmt: str = "text") -> str:
    """The rows as ``text`` (aligned columns), ``markdown`` or ``csv``."""
    if fmt not in ("text", "markdown", "csv"):
        raise GbufError(f"--format {fmt!r}: use text, markdown or csv")
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "params", "peak_mib", "latency_ms", "fps", "gflops", "gmacs", "mode", "device",
                         "lr_height", "lr_width", "scale", "threads"])
        for r in rows:
            writer.writerow([r.model, r.params, "" if r.peak_mib is None else f"{r.peak_mib:.3f}",
                             f"{r.latency_ms:.4f}", f"{r.fps:.4f}", f"{r.gflops:.4f}", f"{r.gmacs:.4f}",
                             r.mode, r.device, r.lr_size[0], r.lr_size[1], r.scale, r.threads])
        return out.getvalue().rstrip("\n")
    body = [_cells(r) for r in rows]
    if rows:
        r = rows[0]
        where = f"{r.device}, {r.threads} thread{'s' if r.threads != 1 else ''}" if r.device == "cpu" else r.device
        title = (f"{where}, LR {r.lr_size[0]}x{r.lr_size[1]} -> "
                 f"{r.lr_size[0] * r.scale}x{r.lr_size[1] * r.scale} (x{r.scale})")
    else:
        title = "no models"
    if fmt == "markdown":
        lines = [f"| {' | '.join(COLUMNS)} |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
        lines += [f"| {' | '.join(cells)} |" for cells in body]
        return title + "\n\n" + "\n".join(lines)
    widths = [max(len(c), *(len(cells[i]) for cells in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([title, line(COLUMNS), line(["-" * w for w in widths])] + [line(c) for c in body])
