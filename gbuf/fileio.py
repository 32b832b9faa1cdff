"""Writing files so that a reader sees all of a file or none of it (one home for temp + rename).

A file is written under a hidden sibling name that no gbuf reader takes for data
(``.NAME.<random>.part``), then renamed over the target, which is atomic on one file
system. If anything fails, the partial file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(path: str | os.PathLike, suffix: str = ".part") -> Path:
    """A fresh hidden name beside ``path`` (``.NAME.<random>.part``; keeps ``path``'s folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, suffix: str = ".part"):
    """Yield a temporary path to write ``path``'s new content to; it replaces ``path`` on success.

    For writers that take a path (PIL, torch.save, h5py, ONNX, a folder tree): on an
    exception the temporary file or folder is removed and ``path`` is untouched. ``suffix``
    lets a writer that picks its format by extension see the right one (``.png``).
    """
    target = Path(path)
    tmp = temp_sibling(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
