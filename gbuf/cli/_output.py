"""What the CLI shows while the library works: its ``logging`` records and progress bars (rich lives here).

The library reports progress through one callback, ``progress(label, done, total)``
(``gbuf.progress.Progress``), and everything else through stdlib ``logging`` under the
``gbuf`` logger. Both are drawn on a duplicate of the process's stderr taken when the CLI
starts: while Cycles renders, gbuf points file descriptors 1 and 2 at a log file to catch
Blender's own chatter, and what the CLI shows must not land there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading

from gbuf.progress import SAMPLES_SUFFIX


@functools.cache
def console():
    """The rich console of the CLI, on stderr as it was when first asked for."""
    from rich.console import Console

    return Console(file=os.fdopen(os.dup(2), "w", buffering=1), stderr=False)


class _ToConsole(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.WARNING:
            text = f"gbuf: {record.levelname.lower()}: {text}"
        console().print(text, highlight=False, markup=False, soft_wrap=True)


def show_library_logs(level: int = logging.INFO) -> None:
    """Route the ``gbuf`` logger's records (``level`` and above) to the CLI console, once."""
    library = logging.getLogger("gbuf")
    if not any(isinstance(h, _ToConsole) for h in library.handlers):
        library.addHandler(_ToConsole(level))
    library.setLevel(min(library.level or level, level))


def _Rate(unit: str):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("--" if speed is None else f"{speed:.2f} {task.fields.get('unit', unit)}/s")

    return Rate()


def _Count(unit: str):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Count(ProgressColumn):
        """``done/total unit`` in one cell: each bar its own unit (frames, samples), kept together."""

        def render(self, task) -> Text:
            total = "?" if task.total is None else f"{task.total:.0f}"
            return Text(f"{task.completed:.0f}/{total} {task.fields.get('unit', unit)}")

    return Count()


@contextlib.contextmanager
def progress_bar(enabled: bool = True, *, unit: str = "items"):
    """Yield a ``progress(label, done, total)`` callback drawing one bar per label (None if disabled).

    ``unit``: ``"bytes"`` (sizes and speeds) or anything else (counts, rate and ETA); a label
    ending in ``gbuf.progress.SAMPLES_SUFFIX`` counts samples. The bar
    starts at the first call and stops once every label is complete, so a later bar (a push
    after a render) can take over the terminal.
    """
    if not enabled:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    if unit == "bytes":
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())
    else:
        columns = (TextColumn("[bold]{task.description}"), _Count(unit), BarColumn(), _Rate(unit), TextColumn("ETA"),
                   TimeRemainingColumn())
    bar = Progress(*columns, console=console(), transient=False)
    tasks: dict[str, int] = {}
    last: dict[str, int] = {}
    running = False
    lock = threading.Lock()

    def progress(label: str, done: int, total: int) -> None:
        nonlocal running
        with lock:
            if label not in tasks:
                # The samples of the frame rendering share the frames' bar (rich draws one at a time).
                shown = "samples" if label.endswith(SAMPLES_SUFFIX) else unit
                tasks[label] = bar.add_task(label, total=total, completed=done, unit=shown)
            elif done < last[label]:
                bar.reset(tasks[label], total=total, completed=done)  # samples of the next render: rate anew
            else:
                bar.update(tasks[label], completed=done, total=total)
            last[label] = done
            if not running and done < total:
                bar.start()
                running = True
            elif running and all(t.finished for t in bar.tasks):
                bar.stop()
                running = False

    try:
        yield progress
    finally:
        if running:
            bar.stop()
