"""The one progress protocol of the library: ``progress(label, done, total)``.

Long library calls (render, degrade, push, pull, import, train) take an optional callback
of this shape and call it as work completes: ``label`` names what is being done (a
sequence, a file, a transfer), ``done`` and ``total`` count its units (frames, steps,
bytes; each call says which in its docstring). The library never draws anything; the CLI
(``gbuf.cli._output.progress_bar``) turns the calls into bars, a notebook can print them.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, label: str, done: int, total: int) -> None: ...
