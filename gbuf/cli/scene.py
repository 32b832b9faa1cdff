"""``gbuf scene``: procedural scene recipes (issue 3)."""

import click

from gbuf.cli import not_available


@click.group()
def scene() -> None:
    """List and build the procedural scene recipes."""


@scene.command("list")
def list_() -> None:
    """Name the recipes, one line each."""
    not_available("scene list", "the renderer issue")


@scene.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def build(args) -> None:
    """Build recipe NAME into OUT.blend."""
    not_available("scene build", "the renderer issue")
