"""``gbuf bench`` and ``gbuf export`` (issue 5)."""

import click

from gbuf.cli import not_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args) -> None:
    """Params, peak memory, latency and FLOPs of models."""
    not_available("bench", "the models issue")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def export(args) -> None:
    """Export a model's one-frame step to ONNX."""
    not_available("export", "the models issue")
