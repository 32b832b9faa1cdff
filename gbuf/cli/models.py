"""``gbuf bench`` and ``gbuf export`` (issue 5)."""

from __future__ import annotations

import click

from gbuf.cli._options import threads_option


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
@threads_option
def bench(model_names, lr_size, device, frames, warmup, repeats, table_format, threads) -> None:
    """Params, peak memory, per-frame latency and FLOPs of MODELs (default: all), in one table."""
    from gbuf.train import bench as benchmark

    rows = benchmark.bench(model_names, lr_size, device, frames=frames, warmup=warmup, repeats=repeats,
                           threads=threads, progress=lambda name: click.echo(f"benchmarking {name} ...", err=True))
    click.echo(benchmark.format_table(rows, table_format))


@click.command()
@click.argument("model_name", metavar="MODEL")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--ckpt", type=click.Path(dir_okay=False), help="Weights (default: random initialisation).")
@click.option("--key", type=click.Choice(["params_ema", "params"]),
              help="Checkpoint entry (default: params_ema if present, else params).")
@click.option("--lr-size", default="270x480", show_default=True, help="LR input HEIGHTxWIDTH the graph is fixed to.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset version.")
@threads_option
def export(model_name, onnx_path, ckpt, key, lr_size, opset, threads) -> None:
    """Export MODEL's one-frame step (or single-image forward) to ONNX and check it with ONNX Runtime."""
    from gbuf.train.export import export_onnx

    report = export_onnx(model_name, onnx_path, ckpt=ckpt, lr_size=lr_size, key=key, opset=opset, threads=threads)
    click.echo(f"wrote {report.path} ({model_name}, LR {report.lr_size[0]}x{report.lr_size[1]}, "
               f"weights: {report.checkpoint_entry or 'random'})")
    click.echo(f"inputs: {', '.join(report.input_names)}")
    click.echo(f"outputs: {', '.join(report.output_names)}")
    click.echo(f"ONNX Runtime vs PyTorch: max abs error {report.max_abs_error:.3g} (output), "
               f"{report.state_rel_error:.3g} (state, relative)")
