"""Rendering to a URL (``s3://``, ``gs://``, ``az://``, ...): a local working store, pushed when complete.

Zarr shards are staged and renamed on a file system, and a shard written by two
writers loses data, so nothing writes into an object store piece by piece: frames
go into a local *working store* (``work_store_for``), which is published to the URL
with the verified, incremental ``gbuf.datasets.sharing.push`` once the whole render
is complete (``publish``). The destination is checked before anything is rendered
(``check_destination``). The working store persists, so an interrupted render
resumes there and the rerun's push sends only what the destination lacks.

``render_to_url`` is that whole sequence around any function that renders into a
local store; ``gbuf.render.render``/``render_scenes`` (``job.py``) and
``gbuf.render.blocks.render_on_ray`` use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gbuf.errors import GbufError

if TYPE_CHECKING:
    from gbuf.datasets.sharing import Progress, PushResult

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """The push of a complete working store to its URL."""

    url: str
    work_store: str
    push: PushResult
    #: ``keep_work=False``: what was sent was read back and checked, then the working store deleted.
    work_removed: bool


def is_url(output) -> bool:
    from gbuf.datasets.remote_store import is_url as _is_url

    return _is_url(str(output))


def work_store_for(url: str, work_dir=None) -> Path:
    """The local working store a render to ``url`` writes, to be pushed there when complete.

    ``work_dir`` if given; else ``$GBUF_CACHE_DIR/render/<key>/<name>``, or
    ``${XDG_CACHE_HOME:-~/.cache}/gbuf/render/<key>/<name>`` without it, where
    ``<key>`` is the first 16 hex digits of the SHA-256 of the URL (without a trailing
    ``/``) and ``<name>`` the URL's last path component (so the dataset card names it).
    """
    if work_dir is not None and str(work_dir).strip():
        return Path(work_dir).expanduser().resolve()
    from gbuf.datasets import remote_store

    base = remote_store.cache_dir_for(None)
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gbuf"
    text = str(url).rstrip("/")
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.rsplit("/", 1)[-1]).lstrip(".") or "data"
    return (base / "render" / key / name).expanduser().resolve()


def check_work_options(output, work_dir, keep_work: bool) -> None:
    """A working store (``work_dir``, ``keep_work=False``) belongs to a URL as output."""
    if not is_url(output) and (work_dir is not None or not keep_work):
        raise GbufError("render: --work-dir and --no-keep-work are for -o URL (a local -o is the store itself)")


def check_destination(url: str, work: Path, storage_options: dict | None = None) -> None:
    """Refuse, before anything is rendered, a destination the final push would refuse or cannot reach.

    Reads the destination as push starts (``sharing.inspect_destination``: wrong
    credentials, an unreachable endpoint or a missing bucket give push's one-line
    error); without a manifest or push journal there, it must be empty. A
    destination holding a gbuf dataset must be the working store's own dataset.
    """
    from gbuf.datasets import sharing

    if str(url).split("://")[0].lower() in ("http", "https"):
        raise GbufError(f"{url}: http(s) is read-only; render to s3://, gs://, az:// or a folder, and serve that")
    work = Path(work)
    state = sharing.inspect_destination(url, storage_options)
    if not state.dataset_ids:
        if not state.empty:
            raise GbufError(f"{url}: not empty and not a gbuf push destination; render to another URL "
                            f"(or render with --work-dir DIR and `gbuf dataset push --force DIR {url}`)")
        return
    shown = ", ".join(sorted(state.dataset_ids))
    if not (work / "zarr.json").is_file():
        raise GbufError(f"{url}: already holds a gbuf dataset (id {shown}) that the working store {work} does "
                        f"not have; to add to it, `gbuf dataset pull {url} {work}` first (or give its working "
                        f"store with --work-dir), else render to another URL")
    work_id = sharing.dataset_id(work)
    if work_id not in state.dataset_ids:
        raise GbufError(f"{url}: holds another dataset (id {shown}) than the working store {work} "
                        f"(id {work_id}); render to another URL or use that dataset's working store")


def unpublished_note(url: str, work) -> str:
    return f"nothing pushed to {url}; the working store is {work}"


def publish(work, url: str, *, keep_work: bool = True, storage_options: dict | None = None,
            progress: Progress | None = None, jobs: int = 8) -> PublishResult:
    """Push the complete working store ``work`` to ``url`` (incremental, verified).

    ``keep_work=False`` reads every object this push sends back and compares its
    SHA-256 (``readback``; objects already there were checked when they were sent),
    then deletes the working store: the local copy goes only once the push is checked.
    """
    from gbuf.datasets import sharing

    work = Path(work)
    try:
        pushed = sharing.push(work, url, jobs=jobs, storage_options=storage_options, progress=progress,
                              readback=not keep_work)
    except GbufError as err:
        raise GbufError(f"{err} (the working store {work} is kept; fix this and rerun, or "
                        f"`gbuf dataset push {work} {url}`)") from None
    if not keep_work:
        shutil.rmtree(work)
        if work == work_store_for(url):
            with contextlib.suppress(OSError):
                work.parent.rmdir()  # the default working store's <key> folder, when empty
    return PublishResult(url=str(url), work_store=str(work), push=pushed, work_removed=not keep_work)


def render_to_url(url: str, render_into: Callable[[Path], T], *, work_dir=None, keep_work: bool = True,
                  storage_options: dict | None = None, progress: Progress | None = None,
                  push: bool = True) -> tuple[T, Path, PublishResult | None]:
    """``render_into(work)`` on the working store of ``url``, then (``push``) publish it there.

    Returns what ``render_into`` returned, the working store and the push (None without
    ``push``: a plan or one block of a sequence, which needs no access to the URL, is
    never published). The destination is checked first; when the render fails, nothing
    is pushed and the error says where the frames are.
    """
    url = str(url)
    work = work_store_for(url, work_dir)
    if push:
        check_destination(url, work, storage_options)
    try:
        rendered = render_into(work)
    except GbufError as err:
        raise GbufError(f"{err} ({unpublished_note(url, work)})") from None
    except KeyboardInterrupt:
        raise GbufError(f"interrupted ({unpublished_note(url, work)}); rerun the same command to resume") \
            from None
    except BaseException as err:  # a bug keeps its traceback, which then says where the frames are
        err.add_note(f"{unpublished_note(url, work)}; rerun the same command to resume")
        raise
    if not push:
        return rendered, work, None
    return rendered, work, publish(work, url, keep_work=keep_work, storage_options=storage_options,
                                   progress=progress)
