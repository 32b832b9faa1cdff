"""``gbuf train``, ``gbuf eval``, ``gbuf upscale`` (issue 6).

Each command parses its options and calls one library function
(``gbuf.train.trainer.train_from``, ``gbuf.train.evaluate.evaluate``,
``gbuf.train.upscale.upscale``); torch is imported only inside the command body.
"""

from __future__ import annotations

import contextlib
import sys

import click

from gbuf.cli._options import DEVICES, threads_option


def _device(value: str | None) -> str | None:
    return None if value is None else value.lower()


@click.command()
@click.argument("model")
@click.option("--data", "data", metavar="DS", help="gbuf store to train on (data.path).")
@click.option("--data-lr", "lr_group", metavar="GROUP", help="LR group: lr (native) or a degraded one, e.g. lr_bicubic_x4.")
@click.option("--split", "train_split", type=click.Choice(["train", "val", "test"]),
              help="With a store that records a split (gbuf dataset build): the split to train on (default train).")
@click.option("--val-split", type=click.Choice(["train", "val", "test"]),
              help="With a store that records a split: the split to validate on (default val).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML or YAML file with any options.")
@click.option("--out", metavar="DIR", help="Run directory (checkpoints, config, logs); default runs/MODEL.")
@click.option("--iters", type=int, help="Training iterations (schedule.iters; default 300000).")
@click.option("--batch-size", type=int, help="Clips per step and process (default 16).")
@click.option("--frames", type=int, help="Frames per clip (default 15).")
@click.option("--patch", type=int, help="HR patch side in pixels (default 384; LR = patch / scale).")
@click.option("--lr", "learning_rate", type=float, help="Adam learning rate (default 1e-3).")
@click.option("--device", type=DEVICES, help="auto (CUDA when present), cpu or cuda.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), help="Mixed precision (CUDA).")
@click.option("--workers", type=int, help="DataLoader workers per process (default 4).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--val-every", type=int, help="Validate every N iterations (0: never).")
@click.option("--ckpt-every", type=int, help="Checkpoint every N iterations.")
@click.option("--log-every", type=int, help="Log scalars every N iterations.")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Any option by its dotted name, e.g. data.val_frames=50.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint.")
@click.option("--init", "init", metavar="CKPT",
              help="Start from these weights (a gbuf or the authors' checkpoint; keys and shapes must match).")
@click.option("--init-weights", type=click.Choice(["ema", "params"]),
              help="Which weights of --init: ema (params_ema when present, else params; default) or params.")
@threads_option
def train(model, data, lr_group, train_split, val_split, config_file, out, iters, batch_size, frames, patch,
          learning_rate, device, amp, workers, seed, val_every, ckpt_every, log_every, extra, resume, init,
          init_weights, threads) -> None:
    """Train MODEL on a gbuf dataset with the RDG recipe (single process or torchrun)."""
    from gbuf.config_files import parse_set
    from gbuf.train import trainer

    flags = {
        "model": model, "data.path": data, "data.lr_group": lr_group, "data.train_split": train_split,
        "data.val_split": val_split, "schedule.iters": iters,
        "data.batch_size": batch_size, "data.frames": frames, "data.patch": patch, "optim.lr": learning_rate,
        "run.device": _device(device), "run.amp": amp, "data.workers": workers, "run.seed": seed,
        "run.val_every": val_every, "run.ckpt_every": ckpt_every, "run.log_every": log_every,
        "init": init, "init_weights": init_weights,
    }
    overrides = {**parse_set(extra), **{k: v for k, v in flags.items() if v is not None}}
    with _train_output() as progress:
        result = trainer.train_from(config_file=config_file, overrides=overrides, out=out, resume=resume,
                                    threads=threads, progress=progress)
    if result.interrupted:
        sys.exit(130)
    if result.checkpoint is not None:
        best = "" if result.best_psnr is None else f"; best validation PSNR {result.best_psnr:.2f} dB"
        click.echo(f"trained {result.config.model} to step {result.step}: {result.checkpoint}{best}")


@contextlib.contextmanager
def _train_output():
    """The trainer's log lines on stderr and, on a terminal, a progress bar; yields the bar's callback."""
    from gbuf.cli._output import console as cli_console
    from gbuf.cli._output import show_library_logs

    console = cli_console()
    show_library_logs()
    bar = None
    try:
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
            task = None

            def progress(label: str, done: int, total: int) -> None:
                nonlocal task
                if task is None:
                    bar.start()
                    task = bar.add_task(label, total=total, completed=done)
                else:
                    bar.update(task, description=label, completed=done, total=total)

            yield progress
        else:
            yield None
    finally:
        if bar is not None:
            bar.stop()


def _sequences(values) -> list[str] | None:
    names = [n for v in values for n in v.split(",") if n]
    return names or None


@click.command("eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--ckpt", "checkpoints", multiple=True, metavar="F",
              help="Checkpoint of each MODEL other than bicubic, in order.")
@click.option("--data", required=True, metavar="DS", help="gbuf store with HR and LR groups.")
@click.option("--data-lr", "lr_group", default="lr", show_default=True, metavar="GROUP", help="LR group to upscale.")
@click.option("--sequences", multiple=True,
              help="Sequences to evaluate (repeat or comma-separate; default: the test split of a store that "
                   "records a split, else all).")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="With a store that records a split: evaluate this split (default test).")
@click.option("--table", type=click.Path(dir_okay=False), help="Write the table to OUT.md or OUT.csv.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write PSNR curves and temporal profiles to OUT.png.")
@click.option("--segment-frames", default=100, show_default=True, help="Frames per segment (recurrent state reset).")
@click.option("--y-channel", is_flag=True, help="PSNR/SSIM on BT.601 luma instead of RGB.")
@click.option("--crop", "crop_border", default=0, show_default=True, help="Border pixels left out of PSNR/SSIM.")
@click.option("--vmaf", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--lpips", "lpips_weights", type=click.Path(file_okay=False),
              help="Folder with LPIPS weights (alexnet-owt-7be5be79.pth, alex.pth); else LPIPS is n/a.")
@click.option("--weights", type=click.Choice(["ema", "params"]), default="ema", show_default=True,
              help="Which weights of a gbuf checkpoint to use.")
@click.option("--profile-row", type=int, help="HR pixel row of the temporal profile (default: the middle).")
@click.option("--device", type=DEVICES, default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="off", show_default=True)
@threads_option
def eval_(models, checkpoints, data, lr_group, sequences, split, table, plot, segment_frames, y_channel, crop_border,
          vmaf, lpips_weights, weights, profile_row, device, amp, threads) -> None:
    """Evaluate MODEL(s) on a gbuf dataset: PSNR, SSIM, VMAF, LPIPS, E_warp."""
    from gbuf.train import evaluate

    pairs = evaluate.parse_models(models, checkpoints)
    report = evaluate.evaluate(
        pairs, data, sequences=_sequences(sequences), split=split, lr_group=lr_group, segment_frames=segment_frames,
        device=_device(device), amp=amp, y_channel=y_channel, crop=crop_border, vmaf=vmaf,
        lpips_weights=lpips_weights, weights=weights, profile_row=profile_row, table=table, plot=plot,
        threads=threads, progress=lambda text: click.echo(text, err=True))
    click.echo(evaluate.table_markdown(report), nl=False)
    if report.table:
        click.echo(f"table: {report.table}")
    if report.plot:
        click.echo(f"plot: {report.plot}")


@click.command()
@click.argument("model")
@click.option("--ckpt", "checkpoint", metavar="F", help="Checkpoint (not needed for bicubic).")
@click.option("--data", required=True, metavar="DS", help="gbuf store.")
@click.option("--sequence", required=True, help="Sequence to upscale.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--data-lr", "lr_group", default="lr", show_default=True, metavar="GROUP")
@click.option("--video", is_flag=True, help="Also write SEQUENCE.mp4 (H.264 via PyAV).")
@click.option("--compare", is_flag=True, help="Write compare.mp4 (LR bicubic | model | HR) and crops.png.")
@click.option("--exr", is_flag=True, help="Also write half-float linear EXR frames.")
@click.option("--png/--no-png", default=True, show_default=True, help="Write 8-bit PNG frames.")
@click.option("--crop", metavar="X,Y,SIZE", help="Crop of the grid in HR pixels (default: a centred quarter).")
@click.option("--fps", type=float, help="Video frame rate (default: the sequence's).")
@click.option("--segment-frames", default=100, show_default=True)
@click.option("--weights", type=click.Choice(["ema", "params"]), default="ema", show_default=True)
@click.option("--device", type=DEVICES, default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="off", show_default=True)
@threads_option
def upscale(model, checkpoint, data, sequence, out, lr_group, video, compare, exr, png, crop, fps, segment_frames,
            weights, device, amp, threads) -> None:
    """Upscale a sequence with MODEL and write frames or a video."""
    from gbuf.train import upscale as up

    result = up.upscale(model, data, sequence, out, checkpoint=checkpoint, lr_group=lr_group,
                        segment_frames=segment_frames, device=_device(device), amp=amp, weights=weights, png=png,
                        exr=exr, video=video, compare=compare, crop=crop, fps=fps, threads=threads,
                        progress=lambda text: click.echo(text, err=True))
    click.echo(f"{result.frames} frame(s) -> {result.out_dir}")
    for label, path in (("video", result.video), ("compare", result.compare_video), ("crops", result.crop_grid)):
        if path is not None:
            click.echo(f"{label}: {path}")
