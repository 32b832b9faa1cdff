"""``gbuf bench`` and ``gbuf export`` (issue 5)."""

from __future__ import annotations

import click

from gbuf.errors import GbufError


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise GbufError(f"--threads {threads}: must be at least 1")
        torch.set_num_threads(threads)


@click.command()
@click.argument("model_names", metavar="[MODEL]...", nargs=-1)
@click.option("--lr-size", default="270x480", show_default=True, help="LR input HEIGHTxWIDTH (output is x scale).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--frames", default=5, show_default=True, type=int,
              help="Clip length for models timed on whole clips (single-image, bidirectional).")
@click.option("--warmup", default=2, show_default=True, type=int, help="Untimed runs first.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Timed runs; the median is reported.")
@click.option("--format", "table_format", type=click.Choice(["text", "markdown", "csv"]), default="text",
              show_default=True)
@click.option("--threads", type=int, help="torch CPU threads (default: torch's).")
def bench(model_names, lr_size, device, frames, warmup, repeats, table_format, threads) -> None:
    """Params, peak memory, per-frame latency and FLOPs of MODELs (default: all), in one table."""
    from gbuf.train import bench as benchmark

    size = benchmark.parse_size(lr_size)
    if frames < 1 or repeats < 1 or warmup < 0:
        raise GbufError("--frames and --repeats must be at least 1, --warmup at least 0")
    _threads(threads)
    rows = benchmark.bench(model_names, size, device, frames=frames, warmup=warmup, repeats=repeats,
                           progress=lambda name: click.echo(f"benchmarking {name} ...", err=True))
    click.echo(benchmark.format_table(rows, table_format))


@click.command()
@click.argument("model_name", metavar="MODEL")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--ckpt", type=click.Path(dir_okay=False), help="Weights (default: random initialisation).")
@click.option("--key", type=click.Choice(["params_ema", "params"]),
              help="Checkpoint entry (default: params_ema if present, else params).")
@click.option("--lr-size", default="270x480", show_default=True, help="LR input HEIGHTxWIDTH the graph is fixed to.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset version.")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's).")
def export(model_name, onnx_path, ckpt, key, lr_size, opset, threads) -> None:
    """Export MODEL's one-frame step (or single-image forward) to ONNX and check it with ONNX Runtime."""
    from gbuf.train import bench as benchmark
    from gbuf.train import models
    from gbuf.train.export import export_onnx

    if model_name not in models.names():
        raise GbufError(f"unknown model {model_name!r}; known models: {', '.join(models.names())}")
    _threads(threads)
    report = export_onnx(model_name, onnx_path, ckpt=ckpt, lr_size=benchmark.parse_size(lr_size), key=key,
                         opset=opset)
    click.echo(f"wrote {report.path} ({model_name}, LR {report.lr_size[0]}x{report.lr_size[1]}, "
               f"weights: {report.checkpoint_entry or 'random'})")
    click.echo(f"inputs: {', '.join(report.input_names)}")
    click.echo(f"outputs: {', '.join(report.output_names)}")
    click.echo(f"ONNX Runtime vs PyTorch: max abs error {report.max_abs_error:.3g} (output), "
               f"{report.state_rel_error:.3g} (state, relative)")
