"""RDG-s and RDG per-frame latency: fast CycleFC (shift + 1x1 conv) vs the deform_conv2d form.

The baseline is the official computation: CycleFC through ``torchvision.ops.deform_conv2d`` with
constant offsets (``cyclefc="deform"``), every other layer as the official code runs it (NCHW,
module by module). The fast form is gbuf's inference path: shift + 1x1 CycleFC, and on CPU
channels-last memory with exact algebraic rewrites run through oneDNN's fused conv/matmul kernels
(``gbuf.train.models.rdg_onednn``; the rewrites themselves are in ``gbuf.train.models.rdg``). Both
models hold the same weights and stream the same frames (``step`` with the state carried, the
real-time use) in one process, frame by frame alternately, so load changes on the machine hit
both alike. Inference mode, as ``gbuf upscale`` runs.

The minor page faults per frame are printed too: a CPU tensor over glibc's 32 MB mmap ceiling
is fresh, page-faulted memory every time, which is a large part of the deform form's time on a
virtual machine (its deform_conv2d column buffers are hundreds of MB per layer).

    .venv/bin/python benchmarks/models.py [--lr-size 270x480] [--frames 6] [--threads N] [--models rdg-s,rdg]

Prints, per model: the median per-frame time of each form, the ratio fast / deform (target
<= 0.5) and the largest absolute difference between their outputs over all frames (target
<= 1e-5). Inputs are smooth random fields in the normalised range (as ``gbuf bench``).
A second line per model times the six CycleFC layers alone (on the NCHW inputs they received in
the deform model's last frame) in both forms, which shows how much of the network CycleFC is.
"""

from __future__ import annotations

import argparse
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", default="270x480", help="LR HEIGHTxWIDTH (output is x4)")
    parser.add_argument("--frames", type=int, default=6, help="timed frames per form (after 1 warm-up frame)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: every core, as a user runs inference; 1 is steadier on "
                             "a shared machine, where a descheduled thread stalls each parallel region)")
    parser.add_argument("--models", default="rdg-s,rdg")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from gbuf import runtime
    from gbuf.train import bench, inference, models

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    lr_size = bench.parse_size(args.lr_size)
    device = runtime.resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, LR {lr_size[0]}x{lr_size[1]} -> "
          f"{lr_size[0] * 4}x{lr_size[1] * 4}, {args.frames} timed frames per form")
    for name in args.models.split(","):
        torch.manual_seed(0)
        fast = models.create(name, cyclefc="fast").to(device).eval()
        deform = models.create(name, cyclefc="deform").to(device).eval()
        deform.load_state_dict(fast.state_dict())
        forms = {"fast": fast, "deform": deform}
        frames = [inference.example_frame(fast, lr_size, device, seed=t) for t in range(args.frames + 1)]
        states = {k: None for k in forms}
        times = {k: [] for k in forms}
        faults = {k: [] for k in forms}
        max_diff = 0.0
        with torch.inference_mode():
            for t, frame in enumerate(frames):
                outputs = {}
                # Alternate which form goes first, so neither always runs on a cache the other warmed.
                order = list(forms) if t % 2 == 0 else list(reversed(forms))
                for form in order:
                    before = _minor_faults()
                    seconds = bench._time(lambda: _step(forms[form], frame, states, form, outputs), device)
                    if t > 0:  # frame 0 is the warm-up
                        times[form].append(seconds)
                        faults[form].append(_minor_faults() - before)
                max_diff = max(max_diff, float((outputs["fast"] - outputs["deform"]).abs().max()))
        fast_ms, deform_ms = (statistics.median(times[k]) * 1000 for k in ("fast", "deform"))
        print(f"{name:6s} fast {fast_ms:9.1f} ms/frame   deform_conv2d {deform_ms:9.1f} ms/frame   "
              f"ratio fast/deform {fast_ms / deform_ms:.3f} (target <= 0.5)   "
              f"max |fast - deform| {max_diff:.2e} (target <= 1e-5)", flush=True)
        print(f"{'':6s} minor page faults per frame: fast {statistics.median(faults['fast']):,.0f}   "
              f"deform_conv2d {statistics.median(faults['deform']):,.0f}", flush=True)
        layer_fast, layer_deform = _cyclefc_layers(deform, fast, frames[-1], device, bench)
        print(f"{'':6s} CycleFC layers alone: fast {layer_fast:7.1f} ms/frame   deform_conv2d {layer_deform:7.1f} "
              f"ms/frame   ratio {layer_fast / layer_deform:.3f}; rest of the network "
              f"{fast_ms - layer_fast:.1f} ms/frame", flush=True)


def _cyclefc_layers(deform, fast, frame, device, bench, repeats: int = 5) -> tuple[float, float]:
    """Median time (ms) of all CycleFC layers of one frame, per form, on the inputs they received.

    The inputs are captured from the deform model: the fast model's DFM folds the second
    CycleFC's 1x1 conv into the next layer, so that layer's forward never runs there."""
    import torch

    from gbuf.train.models.rdg import CycleFC

    captured = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: captured.__setitem__(n, args[0]))
             for n, m in deform.named_modules() if isinstance(m, CycleFC)]
    with torch.inference_mode():
        deform.step(frame, None)
    for h in hooks:
        h.remove()
    totals = {}
    with torch.inference_mode():
        for form, model in (("fast", fast), ("deform", deform)):
            layers = [(model.get_submodule(n), x) for n, x in captured.items()]
            run = lambda: [layer(x) for layer, x in layers]  # noqa: E731
            run()
            totals[form] = statistics.median(bench._time(run, device) for _ in range(repeats)) * 1000
    return totals["fast"], totals["deform"]


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _step(model, frame, states, form, outputs) -> None:
    outputs[form], states[form] = model.step(frame, states[form])


if __name__ == "__main__":
    main()
