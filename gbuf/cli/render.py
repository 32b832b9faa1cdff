"""``gbuf render``: Blender scenes to HR/LR G-buffer sequences (issue 3)."""

import click

from gbuf.cli import not_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def render(args) -> None:
    """Render SCENE.blend into HR/LR G-buffer sequences in a gbuf store."""
    not_available("render", "the renderer issue")
