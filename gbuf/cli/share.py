"""``gbuf dataset push / pull / card`` (the sharing issue)."""

import click

from gbuf.cli import not_available


def register(group: click.Group) -> None:
    for name in ("push", "pull", "card"):
        group.add_command(_stub(name))


def _stub(name: str) -> click.Command:
    @click.command(name, help=f"{name.capitalize()} a dataset (not available yet).",
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args) -> None:
        not_available(f"dataset {name}", "the sharing issue")
    return command
