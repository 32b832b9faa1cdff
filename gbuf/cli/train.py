"""``gbuf train``, ``gbuf eval``, ``gbuf upscale`` (issue 6)."""

import click

from gbuf.cli import not_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args) -> None:
    """Train MODEL on a gbuf dataset."""
    not_available("train", "the trainer issue")


@click.command("eval", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_(args) -> None:
    """Evaluate MODEL on a gbuf dataset (PSNR, SSIM, VMAF, E_warp)."""
    not_available("eval", "the trainer issue")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def upscale(args) -> None:
    """Upscale a sequence with MODEL and write frames or a video."""
    not_available("upscale", "the trainer issue")
