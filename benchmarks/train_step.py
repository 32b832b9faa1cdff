"""Training iterations per second of rdg-s and rdg, on CPU and (where present) CUDA.

One iteration is what ``gbuf train`` does per step: forward over the clip, the RDG loss
(Charbonnier + temporal + FFT), backward, Adam, cosine LR step and the EMA update. Batches are
random tensors already on the device, in the official normalisation, so the figure is the
compute of a step (the data loader is measured by ``benchmarks/loader.py``).

Defaults are the RDG recipe: batch 16, 15 frames, 384x384 HR patches (96x96 LR). That is
slow on a CPU; ``--batch``, ``--frames`` and ``--patch`` make a quick run, and the table
says what was run::

    python benchmarks/train_step.py                               # recipe sizes, CPU (+ CUDA)
    python benchmarks/train_step.py --batch 2 --frames 5 --patch 128 --iters 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def make_batch(batch: int, frames: int, lr: int, scale: int, device, generator):
    def rand(c, size):
        return torch.rand(batch, frames, c, size, size, generator=generator).to(device)

    return {
        "image": rand(3, lr), "depth": rand(1, lr), "normal": rand(3, lr), "brdf": rand(3, lr),
        "motion": (rand(2, lr) - 0.5) * 4.0, "hr_image": rand(3, lr * scale),
    }


def bench(name: str, device: torch.device, amp: str, batch: int, frames: int, patch: int, iters: int,
          warmup: int) -> dict:
    from gbuf.train import models
    from gbuf.train.losses import LossWeights, rdg_loss
    from gbuf.runtime import autocast, autocast_dtype
    from gbuf.train.trainer import EMA, cosine_factor

    torch.manual_seed(0)
    model = models.create(name).to(device).train()
    scale = model.scale
    data = make_batch(batch, frames, patch // scale, scale, device, torch.Generator().manual_seed(0))
    inputs = {k: data[k] for k in model.inputs}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, 300_000, 1e-3, 1e-7))
    ema = EMA(model, 0.999)
    dtype = autocast_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    weights = LossWeights()

    def step():
        with autocast(device, dtype):
            out = model(inputs)
        loss, _ = rdg_loss(out, data["hr_image"], weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(model)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise SystemExit(f"{name}: loss is {float(loss)}")
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"model": name, "device": str(device), "amp": "off" if dtype is None else str(dtype).split(".")[-1],
            "s_per_it": median, "it_per_s": 1.0 / median, "clips_per_s": batch / median, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["rdg-s", "rdg"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--patch", type=int, default=384, help="HR patch side (LR = patch / 4)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument("--cuda-amp", nargs="+", default=["off", "bf16"], help="AMP modes timed on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    print(f"training step: batch {args.batch}, {args.frames} frames, {args.patch}x{args.patch} HR patches "
          f"({args.patch // 4}x{args.patch // 4} LR); median of {args.iters} after {args.warmup} warm-up; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    rows = []
    for dev in devices:
        device = torch.device(dev)
        for amp in (args.cuda_amp if device.type == "cuda" else ["off"]):
            for name in args.models:
                row = bench(name, device, amp, args.batch, args.frames, args.patch, args.iters, args.warmup)
                rows.append(row)
                print(f"  {name:6s} {row['device']:6s} amp {row['amp']:8s} {row['it_per_s']:9.3f} it/s  "
                      f"{row['s_per_it']:8.3f} s/it  {row['clips_per_s']:8.2f} clips/s"
                      + ("" if row["peak_gib"] != row["peak_gib"] else f"  peak {row['peak_gib']:.2f} GiB"),
                      flush=True)
    print()
    print("| model | device | AMP | it/s | s/it | clips/s | peak GiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"
        print(f"| {r['model']} | {r['device']} | {r['amp']} | {r['it_per_s']:.3f} | {r['s_per_it']:.3f} | "
              f"{r['clips_per_s']:.2f} | {peak} |")
    by = {(r["model"], r["device"], r["amp"]): r for r in rows}
    for dev in devices:
        for amp in (args.cuda_amp if dev == "cuda" else ["off"]):
            small, big = by.get(("rdg-s", str(torch.device(dev)), amp)), by.get(("rdg", str(torch.device(dev)), amp))
            if small and big:
                print(f"ratio rdg-s / rdg it/s on {dev} (amp {amp}): {small['it_per_s'] / big['it_per_s']:.2f}x")
    cpu = [r for r in rows if r["device"] == "cpu"]
    for r in rows:
        if r["device"] != "cpu":
            base = next((c for c in cpu if c["model"] == r["model"]), None)
            if base:
                print(f"ratio {r['device']} ({r['amp']}) / cpu it/s for {r['model']}: "
                      f"{r['it_per_s'] / base['it_per_s']:.1f}x")


if __name__ == "__main__":
    main()
