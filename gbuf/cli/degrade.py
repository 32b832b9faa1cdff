"""``gbuf degrade``: synthesise LR groups from HR (issue 4)."""

import click

from gbuf.cli import not_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def degrade(args) -> None:
    """Make an LR group from HR: --bicubic, --gaussian or --realworld."""
    not_available("degrade", "the degradation issue")
