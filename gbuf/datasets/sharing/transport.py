"""What push and pull share on the wire: fsspec helpers, parallel transfers, errors, progress.

Any transport or credential error (botocore, aiohttp, OSError, ...) becomes one
``GbufError`` line naming the URL (``remote_errors``). Objects up to ``WHOLE_MAX``
travel in one request; larger ones are streamed in ``REMOTE_BLOCK`` blocks, hashed
on the way. Progress is reported through a callback ``progress(label, bytes_done,
bytes_total)``, called from one thread at a time; the CLI draws the bar.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import posixpath
import threading

from gbuf.errors import GbufError, error_line

#: Push and pull report bytes: ``progress(label, bytes_done, bytes_total)``.
from gbuf.progress import Progress  # noqa: E402,F401

#: Objects up to this size travel in one request; larger ones are streamed in blocks.
WHOLE_MAX = 64 << 20
REMOTE_BLOCK = 8 << 20


def _describe(err: BaseException) -> str:
    text = error_line(err) if str(err).strip() else ""
    name = type(err).__name__
    code = getattr(err, "response", None)
    if isinstance(code, dict):  # botocore ClientError
        error = code.get("Error", {})
        text = f"{error.get('Code', '')} {error.get('Message', '')}".strip() or text
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def remote_errors(url: str, doing: str):
    """Turn any transport/credential error into one GbufError line naming the URL."""
    try:
        yield
    except GbufError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - botocore, aiohttp, OSError, ... all mean the same to the user
        raise GbufError(f"{url}: {doing} failed ({_describe(err)})") from None


class Reporter:
    """Reports bytes done to a ``Progress`` callback (or to nothing), one call at a time."""

    def __init__(self, progress: Progress | None, label: str, total: int):
        self._progress = progress if total else None
        self._label, self._total, self._done = label, total, 0
        self._lock = threading.Lock()
        if self._progress is not None:
            self._progress(label, 0, total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            with self._lock:
                self._done += n
                self._progress(self._label, self._done, self._total)


def run_all(work, items, jobs: int) -> int:
    """Run ``work`` on every item in threads and sum what it returns; stop at the first error.

    Transfers not yet started are cancelled; those in flight finish (and are recorded).
    """
    total = 0
    with cf.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in cf.as_completed(futures):
                total += future.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return total


# -- fsspec ---------------------------------------------------------------------------------

def join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root else rel


def protocols(fs) -> tuple[str, ...]:
    return tuple(fs.protocol) if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)


def is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def is_object_store(fs) -> bool:
    # Object stores replace an object atomically on PUT; file systems need tmp + rename.
    return any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2") for p in protocols(fs))


def is_http(fs) -> bool:
    return any(p in ("http", "https") for p in protocols(fs))


def remote_listing(fs, root: str) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``root`` (one listing)."""
    try:
        listing = fs.find(root, detail=True) if fs.exists(root) else {}
    except FileNotFoundError:
        listing = {}
    return {posixpath.relpath(p, root) if root else p: int(info.get("size") or 0)
            for p, info in listing.items() if info.get("type", "file") != "directory"}


def read_json(fs, path: str, url: str):
    """A JSON file at ``path`` on ``fs``, or None where there is none."""
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise GbufError(f"{url}: {posixpath.basename(path)} is not valid JSON") from None
