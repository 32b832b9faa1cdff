"""Options every command that runs torch shares, spelled once (``--threads``, ``--device``)."""

from __future__ import annotations

import click

#: ``--device`` of the commands that default to ``auto``.
DEVICES = click.Choice(["auto", "cpu", "cuda"], case_sensitive=False)


def threads_option(function):
    """``--threads N``: torch CPU threads; the library checks N >= 1 (a one-line error otherwise)."""
    return click.option(
        "--threads", type=int, metavar="N",
        help="torch CPU threads (default 1, or GBUF_THREADS / OMP_NUM_THREADS; see docs/training.md).")(function)
