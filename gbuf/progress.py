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


#: A label ending in this counts the samples of the frame that is rendering (Cycles' own
#: progress, ``done`` of ``total`` samples per pixel), next to the frames of its sequence;
#: it starts again at 0 with every render (HR, then LR, of every frame).
SAMPLES_SUFFIX = ": this frame"


def sample_label(label: str) -> str:
    """The label of the sample progress within a frame of what ``label`` counts in frames."""
    return label + SAMPLES_SUFFIX
