"""Torch CPU threads: 1 vs every core, on a quiet machine and under load, side by side in one run.

What ``gbuf.runtime.DEFAULT_THREADS`` is chosen from (``docs/training.md``, "CPU threads").
For each configuration it measures

- **inference**: rdg-s per-frame latency, streamed through ``step`` with the state carried (what
  ``gbuf bench`` / ``gbuf upscale`` run), under ``torch.inference_mode``, at each ``--lr-size``;
- **training** (unless ``--no-train``): one rdg-s training step (forward over a short clip, the
  RDG loss, backward, Adam) on a small random batch, as seconds per iteration.

Each is timed at 1 thread and at every core (``os.cpu_count()``), first on the machine as it is
("quiet": nothing added by this script) and then under a load this script makes itself:
``--load`` busy-looping child processes (default: one per core), each of which exits by itself
after a bounded time and is killed at the end in any case. Each thread count runs a block of
frames (as a real run holds one count), the order of the blocks swapping every round, and the
quiet and loaded phases alternate over ``--rounds`` rounds, so slow drifts of the machine
(other jobs) hit every configuration alike. Medians are reported, then the ratios::

    .venv/bin/python benchmarks/threads.py                       # 36x64 and 135x240, 3 rounds
    .venv/bin/python benchmarks/threads.py --lr-size 36x64 --rounds 1 --no-train   # quick

The load average before the run is printed: "quiet" means only what else the machine runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

#: A busy loop that ends by itself, so a killed parent never leaves it spinning.
_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_load(processes: int, seconds: float):
    """``processes`` busy-looping children for at most ``seconds``; killed when the block ends."""
    children = [subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds=seconds)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(processes)]
    try:
        time.sleep(0.3)  # let them start spinning before anything is timed
        yield
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()


def _inference_runner(lr_size):
    import torch

    from gbuf.train import inference, models

    torch.manual_seed(0)
    model = models.create("rdg-s").eval()
    frames = [inference.example_frame(model, lr_size, seed=t) for t in range(2)]
    states: dict = {}

    def run(key) -> None:  # one streamed frame; each configuration carries its own state
        with torch.inference_mode():
            index = states.get(("n", key), 0)
            _, states[key] = model.step(frames[index % 2], states.get(key))
            states[("n", key)] = index + 1

    return run


def _training_runner(frames: int, patch: int, batch: int):
    import torch

    from gbuf.train import inference, losses, models

    torch.manual_seed(0)
    model = models.create("rdg-s").train()
    lr = patch // model.scale
    clip = inference.example_clip(model, (lr, lr), frames, batch=batch)
    target = torch.rand(batch, frames, 3, patch, patch, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def run(key) -> None:  # one step: forward, loss, backward, Adam (the key is unused: no state)
        loss, _ = losses.rdg_loss(model(clip), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def measure(run, thread_counts, repeats: int, budget_s: float, reverse: bool = False) -> dict[int, list[float]]:
    """Seconds per call at each thread count: a block of calls per count, as a real run holds one.

    One untimed warm-up call per block, then ``repeats`` timed calls, fewer when the block runs
    past ``budget_s`` (a collapsed configuration can take seconds per frame). ``reverse`` swaps
    the order of the blocks (alternated over rounds, so neither count always goes first).
    """
    import torch

    times: dict[int, list[float]] = {}
    for n in (list(reversed(thread_counts)) if reverse else thread_counts):
        torch.set_num_threads(n)
        run(n)
        times[n] = []
        start = time.perf_counter()
        for _ in range(repeats):
            begin = time.perf_counter()
            run(n)
            times[n].append(time.perf_counter() - begin)
            if begin - start > budget_s:
                break
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", nargs="+", default=["36x64", "135x240"], help="LR HEIGHTxWIDTH sizes")
    parser.add_argument("--frames", type=int, default=8, help="timed frames per thread count and phase")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/loaded phase pairs")
    parser.add_argument("--load", type=int, default=None, help="busy-loop processes (default: one per core)")
    parser.add_argument("--budget", type=float, default=25.0, help="seconds at most per timed phase")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step figure")
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from gbuf.train.bench import parse_size

    cores = os.cpu_count() or 1
    load = cores if args.load is None else args.load
    counts = [1] if cores == 1 else [1, cores]
    load_avg = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"torch {torch.__version__}, {cores} cores, thread counts {counts}; load average before: {load_avg}; "
          f"load phase: {load} busy-loop process(es); {args.rounds} round(s)", flush=True)

    workloads = [(f"rdg-s inference {s} (ms/frame)", _inference_runner(parse_size(s)), args.frames, 1000.0)
                 for s in args.lr_size]
    if not args.no_train:
        workloads.append(("rdg-s training step b1 f3 p64 (s/it)", _training_runner(3, 64, 1), args.train_steps,
                          1.0))
    results = {(name, phase, n): [] for name, *_ in workloads for phase in ("quiet", "loaded") for n in counts}
    phase_seconds = args.budget * len(workloads) * 2 + 60
    for r in range(args.rounds):
        for phase in ("quiet", "loaded"):
            context = cpu_load(load, phase_seconds) if phase == "loaded" else contextlib.nullcontext()
            with context:
                for name, run, repeats, unit in workloads:
                    for n, values in measure(run, counts, repeats, args.budget, reverse=r % 2 == 1).items():
                        results[(name, phase, n)].extend(v * unit for v in values)
                        print(f"  round {r + 1} {phase:6s} {name:40s} {n} thread(s): "
                              f"median {statistics.median(values) * unit:9.2f} over {len(values)}", flush=True)

    print()
    print("| workload | threads | quiet | loaded | loaded / quiet |")
    print("|---|---:|---:|---:|---:|")
    med = {k: statistics.median(v) for k, v in results.items() if v}
    for name, *_ in workloads:
        for n in counts:
            q, lo = med[(name, "quiet", n)], med[(name, "loaded", n)]
            print(f"| {name} | {n} | {q:.2f} | {lo:.2f} | {lo / q:.1f}x |")
    if len(counts) > 1:
        print()
        print(f"ratio {counts[-1]} threads / 1 thread (time; < 1: more threads are faster):")
        for name, *_ in workloads:
            q = med[(name, "quiet", counts[-1])] / med[(name, "quiet", 1)]
            lo = med[(name, "loaded", counts[-1])] / med[(name, "loaded", 1)]
            spread = (max(results[(name, "loaded", counts[-1])]) / min(results[(name, "loaded", counts[-1])]))
            print(f"  {name:40s} quiet {q:5.2f}   loaded {lo:6.2f}   "
                  f"(loaded {counts[-1]}-thread max/min {spread:.1f}x)")


if __name__ == "__main__":
    main()
