"""``gbuf dataset ...``: inspect, verify, import, export and share stores."""

import click

from gbuf.cli import not_available


@click.group()
def dataset() -> None:
    """Inspect, verify, convert and share gbuf datasets."""


def _stub(name: str, issue: str):
    @dataset.command(name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args) -> None:
        not_available(f"dataset {name}", issue)

    command.__doc__ = f"{name} (not available yet)."
    return command


for _name in ("info", "verify", "import-folder", "export", "preview"):
    _stub(_name, "the foundation issue")
for _name in ("push", "pull", "card"):
    _stub(_name, "the sharing issue")
