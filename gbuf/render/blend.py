"""Opening a .blend safely: a .blend is untrusted input.

A .blend can carry Python (text blocks registered to run on load, driver
expressions). Blender as a module starts with auto-execution off, and
``open_mainfile(use_scripts=False)`` keeps it off for the file it loads, so by
default nothing embedded runs; ``allow_scripts=True`` is the explicit opt-in.
The file is checked to be a .blend (its header) before Blender sees it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from pathlib import Path

from gbuf.errors import GbufError, error_line

#: Every .blend starts with this, after decompression ("BLENDER-v279", "BLENDER17-01v0500", ...).
BLEND_MAGIC = b"BLENDER"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"   # Blender >= 3.0 compressed files
GZIP_MAGIC = b"\x1f\x8b"           # Blender < 3.0 compressed files


def blend_header(path: Path) -> bytes:
    """The first bytes of the .blend proper, decompressing zstd or gzip files."""
    with path.open("rb") as f:
        head = f.read(len(BLEND_MAGIC))
        if head.startswith(ZSTD_MAGIC):
            import zstandard  # a dependency of bpy

            f.seek(0)
            try:
                return zstandard.ZstdDecompressor().stream_reader(f).read(len(BLEND_MAGIC))
            except zstandard.ZstdError:
                return b""
        if head.startswith(GZIP_MAGIC):
            f.seek(0)
            try:
                return gzip.GzipFile(fileobj=f).read(len(BLEND_MAGIC))
            except (OSError, EOFError):
                return b""
        return head


def check_blend_file(path) -> Path:
    """The path of a readable .blend file, or a one-line ``GbufError`` naming the problem."""
    p = Path(path)
    if not p.exists():
        raise GbufError(f"{p}: no such file")
    if p.is_dir():
        raise GbufError(f"{p}: is a folder, not a .blend file")
    try:
        header = blend_header(p)
    except OSError as err:
        raise GbufError(f"{p}: cannot read ({err.strerror or err})") from None
    if not header.startswith(BLEND_MAGIC):
        raise GbufError(f"{p}: not a .blend file (no BLENDER header)")
    return p




def open_blend(path, *, allow_scripts: bool = False):
    """Load ``path`` into the bpy session (replacing what was there); returns its scene.

    Embedded scripts stay off unless ``allow_scripts``. A file Blender cannot
    read raises ``GbufError``.
    """
    import bpy

    p = check_blend_file(path)
    # The session preference decides for files loaded later (linked libraries); keep
    # it in step with this file's choice.
    bpy.context.preferences.filepaths.use_scripts_auto_execute = bool(allow_scripts)
    try:
        bpy.ops.wm.open_mainfile(filepath=str(p.resolve()), load_ui=False, use_scripts=bool(allow_scripts))
    except RuntimeError as err:
        raise GbufError(f"{p}: Blender cannot open it ({error_line(err, last=True)})") from None
    return bpy.context.scene


def scene_camera(scene, where):
    """The scene's active camera object, or a ``GbufError``."""
    camera = scene.camera
    if camera is None:
        raise GbufError(f"{where}: scene {scene.name!r} has no active camera")
    if camera.type != "CAMERA":
        raise GbufError(f"{where}: the active camera {camera.name!r} of scene {scene.name!r} is not a camera")
    return camera


@contextlib.contextmanager
def native_output_to(log_path: str | os.PathLike = os.devnull):
    """Send what Blender's C code prints (render status, "Info: Saved" lines) to a log file, not the terminal."""
    import ctypes

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        libc.fflush(None)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
