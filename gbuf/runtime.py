"""Where torch runs: the device, autocast precision, CPU threads, and the C-level noise of torch.

Every command that runs torch (``gbuf train``, ``eval``, ``upscale``, ``bench``, ``export``,
``degrade``) resolves its ``--device``, ``--amp`` and ``--threads`` here, so they mean the same
everywhere. This module lives at the top of the package, not in ``gbuf.train``, because
``gbuf.datasets.degrade`` uses it too and ``gbuf.datasets`` does not import ``gbuf.train``.

torch is imported inside the functions: importing ``gbuf`` (or this module) does not load it.

Threads. ``threads(n)`` runs a block with ``n`` torch CPU (intra-op) threads and restores the
count after; ``n=None`` takes ``default_threads()``. The default is one thread (see
``docs/training.md``, "CPU threads", for the figures of ``benchmarks/threads.py``): torch's own
default, one thread per core, was at best 1.8x faster on an idle 2-core machine, but 7-17x
slower than one thread when other processes competed for the cores, because every parallel
region waits for its slowest thread, and a descheduled one holds it for a whole time slice.
``GBUF_THREADS`` or ``OMP_NUM_THREADS`` in the environment replace the default (an explicit
``--threads`` wins over both).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from gbuf.errors import GbufError

#: Torch CPU threads when neither ``--threads`` nor the environment says otherwise (see above).
DEFAULT_THREADS = 1
#: Environment variables that set the default thread count, first found wins.
THREADS_ENV = ("GBUF_THREADS", "OMP_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# Devices and precision


def resolve_device(spec: str | None = "auto", local_rank: int = 0):
    """``auto`` (or None) -> the CUDA device of this rank when CUDA is present, else the CPU.

    ``cpu``, ``cuda`` (device ``local_rank``) and ``cuda:N`` are taken as given; asking for CUDA
    on a machine without it is a ``GbufError``.
    """
    import torch

    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GbufError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            return torch.device("cuda", local_rank)
    try:
        return torch.device(spec)
    except RuntimeError:
        raise GbufError(f"device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)") from None


def autocast_dtype(amp: str, device):
    """The autocast dtype for ``amp`` (``auto``, ``bf16``, ``fp16``, ``off``) on ``device``; None: full precision.

    ``auto`` is bf16 on a CUDA device that supports it and full precision elsewhere.
    """
    import torch

    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise GbufError("--amp fp16 needs CUDA (use bf16 or off on CPU)")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    raise GbufError(f"--amp {amp!r}: use auto, bf16, fp16 or off")


def autocast(device, dtype):
    """A context running its block under autocast to ``dtype`` (None: a no-op context)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# CPU threads


def check_threads(n, source: str = "--threads") -> int:
    """``n`` as an int >= 1, else a ``GbufError`` naming ``source``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GbufError(f"{source} {n}: must be an integer >= 1")
    return n


def default_threads() -> int:
    """The thread count ``threads(None)`` uses: ``GBUF_THREADS``, else ``OMP_NUM_THREADS``, else 1."""
    for name in THREADS_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return check_threads(int(value), name)
            except ValueError:
                raise GbufError(f"{name}={value!r}: must be an integer >= 1") from None
    return DEFAULT_THREADS


def set_threads(n: int | None = None) -> int:
    """Set torch's CPU threads to ``n`` (None: ``default_threads()``); returns the count before."""
    import torch

    n = default_threads() if n is None else check_threads(n)
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    return before


@contextlib.contextmanager
def threads(n: int | None = None):
    """Run a block with ``n`` torch CPU threads (None: the default), restoring the count after.

    Yields the count in effect. Validation comes first, so a bad ``n`` fails before any work.
    """
    import torch

    before = set_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Noise on the C-level stderr


@contextlib.contextmanager
def drop_stderr_lines(*patterns: str):
    """Drop stderr lines matching any of ``patterns`` (regular expressions) written inside the block.

    For messages C++ libraries print straight to file descriptor 2 (torch's profiler, Kineto), which
    neither ``warnings`` nor ``logging`` can filter. The block's stderr goes to a temporary file;
    afterwards every line that matches no pattern is written back to stderr, in order, so real
    errors still show (after the block rather than during it).
    """
    compiled = [re.compile(p) for p in patterns]
    fd = 2  # where C++ code writes, whatever sys.stderr is now
    try:
        saved = os.dup(fd)
    except OSError:  # no stderr at all
        yield
        return
    _flush_stderr()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not any(p.search(line) for p in compiled)]
            data = "".join(kept).encode("utf-8", "replace")
            while data:  # a write to a pipe may take only part of it
                data = data[os.write(fd, data):]


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # replaced, or closed
        pass
