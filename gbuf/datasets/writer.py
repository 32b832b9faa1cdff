"""Writing gbuf stores: ``SequenceWriter`` appends whole frames, durably and resumably.

Why it is built this way:

* A zarr write into part of a shard re-reads and rewrites the whole shard, so each
  shard is written once, whole, when its last frame arrives.
* Until then the frames of the open shard are *staged*: each frame is one ``.npz``
  file in ``<store>/.gbuf/<sequence>/<resolution>/staging/``, written to a temporary
  name (``.000012.npz.<pid>.tmp``, which no reader takes for a frame) and renamed, so a
  kill (even SIGKILL) loses at most the frame in progress. Readers serve staged frames
  too, so an interrupted store reads every complete frame.
* When a shard is written, a small JSON marker with the per-frame checksums is
  renamed into ``.../shards/<k>.json``; only then are its staged frames deleted.
  A restarted writer first finishes what a kill interrupted: a shard whose frames are
  all staged but that has no marker is committed, staged frames of a committed shard
  are deleted, a half-done swap is completed. Then it continues after the last
  complete frame, with no duplicate and no gap, so a rerun always finishes a store.
* When every shard of a resolution is written, the markers are consolidated into
  the group's attrs (``complete: true``, ``checksums``) and the writer state is
  removed, so a finished store needs nothing outside the zarr hierarchy.
* One writer per block of frames: a writer holds ``.gbuf/<sequence>/writer-<a>-<b>.lock``
  (host, PID) for its frames ``a:b``; a second writer of overlapping frames is refused
  with one line naming the holder, and a lock whose process is gone (same host) is stale
  and taken over.
* Parallel writers (``frame_range=(start, stop)``): each writes one shard-aligned
  block of frames into arrays that already have their final shape; no two blocks
  share a shard, so they never touch one file. Whichever finishes last (or a driver
  calling ``consolidate``) folds the markers in once every shard has one.
* ``replace=True`` builds each group that already exists under a temporary name
  (``.<group>.new``, hidden from readers) and swaps it in only once complete, so a
  killed rewrite leaves the old group whole.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
import socket
import sys
import weakref
from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets import store as _store
from gbuf.datasets.format import frame_checksum, frame_range  # noqa: F401  (their home is the format)
from gbuf.errors import GbufError

log = logging.getLogger(__name__)

#: Aim for shards of about this many raw bytes in the largest pack (the format doc
#: explains the choice: big enough to keep file counts low, small enough to stage).
TARGET_SHARD_BYTES = 192 * 2**20
#: Frames per inner chunk: a 15-frame crop touches 4-5 chunks in time.
CHUNK_FRAMES = 4
#: Spatial tile of inner chunks, by group kind (LR-sized groups get finer tiles).
TILE_LR = 64
TILE_HR = 128

#: A writer's temporary file (``.000012.npz.<pid>.tmp``; ``.000012.tmp<pid>.npz`` from older
#: writers): the frame or shard number it was for.
_TEMP_NAME = re.compile(r"^\.(\d+)\.")
#: A zarr write that the OS refused (zarrs reports it as RuntimeError "... (os error 28)").
_OS_ERROR = re.compile(r"\(os error \d+\)")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # The temporary name does not end in .npz: a reader never takes a half-written file for a frame.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _io_errors(where, what: str):
    """OS errors while writing (a full disk, a read-only folder, a quota) as one line."""
    try:
        yield
    except GbufError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise GbufError(f"{where}: cannot write {what} ({reason}); fix that (free space, permissions) and "
                        f"rerun: the writer resumes where it stopped") from None
    except RuntimeError as err:
        if not _OS_ERROR.search(str(err)):
            raise
        raise GbufError(f"{where}: cannot write {what} ({_store.describe(err)}); fix that (free space, "
                        f"permissions) and rerun: the writer resumes where it stopped") from None


def choose_frames_per_shard(resolutions: dict[str, tuple[int, int, list[str]]]) -> int:
    """Frames per shard so the largest pack's shard is about ``TARGET_SHARD_BYTES``."""
    largest = 1
    for h, w, buffers in resolutions.values():
        for pack, members in fmt.pack_layout(buffers).items():
            chans = sum(c for _, _, c in members)
            largest = max(largest, h * w * chans * fmt.pack_dtype(pack).itemsize)
    chunks = max(1, TARGET_SHARD_BYTES // (largest * CHUNK_FRAMES))
    return int(min(chunks * CHUNK_FRAMES, 64))


def _compressor():
    from zarr.codecs import BloscCodec, Crc32cCodec

    # The CRC-32C after Blosc lets every read check the bytes of each inner chunk it decodes
    # (cheap next to decoding), so a damaged chunk is an error, never silently wrong data.
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()]


# -- the writer lock ------------------------------------------------------------------------------
_LOCK_NAME = re.compile(r"^writer-(\d+)-(\d+)\.lock$")
#: Locks this process holds (path -> writers holding it): a process may open a block again.
_HELD: dict[str, int] = {}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), to tell a reused PID from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    """Whether a lock's holder may still run (another host: assumed so)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    started = info.get("started")
    return started is None or _process_start(pid) in (None, started)


class WriterLock:
    """Frames ``start:stop`` of one sequence belong to one writer: ``.gbuf/<sequence>/writer-<start>-<stop>.lock``.

    The lock file holds the host, PID and start time of its process. A lock of
    overlapping frames held by another live process refuses the writer with one line;
    one whose process is gone (same host) is stale and removed.
    """

    def __init__(self, store: Path, sequence: str, frames: tuple[int, int]):
        self.store, self.sequence = Path(store), sequence
        self.start, self.stop = frames
        self.folder = self.store / fmt.STATE_DIR / sequence
        self.path = self.folder / f"writer-{self.start}-{self.stop}.lock"
        self.held = False

    def _me(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}

    def _read(self, path: Path) -> dict | None:
        for _ in range(2):
            try:
                info = json.loads(path.read_text())
                if isinstance(info, dict):
                    return info
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                pass
            import time

            time.sleep(0.05)  # being written this instant
        return {}

    def _check_others(self) -> None:
        me = self._me()
        for path in sorted(self.folder.iterdir()) if self.folder.is_dir() else []:
            match = _LOCK_NAME.match(path.name)
            if not match:
                continue
            a, b = int(match.group(1)), int(match.group(2))
            if not (a < self.stop and self.start < b):
                continue
            info = self._read(path)
            if info is None:
                continue
            if all(info.get(k) == me[k] for k in ("host", "pid", "started")):
                continue  # this process's own writer
            if info and not _alive(info):
                log.warning("%s: removing the stale lock of PID %s on %s (no longer running)", path,
                            info.get("pid"), info.get("host"))
                path.unlink(missing_ok=True)
                continue
            who = (f"PID {info.get('pid')} on {info.get('host')} (since {info.get('since')})" if info
                   else "a writer whose lock cannot be read")
            raise GbufError(f"{self.store}: frames {a}-{b - 1} of sequence {self.sequence!r} are being written by "
                            f"{who}; wait for it, or delete {path} if that process is gone")

    def acquire(self) -> "WriterLock":
        key = str(self.path)
        if key in _HELD:
            _HELD[key] += 1
            self.held = True
            return self
        with _io_errors(self.store, "its writer lock"):
            self.folder.mkdir(parents=True, exist_ok=True)
        info = {**self._me(), "frames": [self.start, self.stop],
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:300]}
        for _ in range(3):
            self._check_others()
            try:
                with _io_errors(self.store, "its writer lock"):
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue  # taken meanwhile: look at the holder again
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            try:
                self._check_others()  # an overlapping writer that locked between the look and the create
            except GbufError:
                self.path.unlink(missing_ok=True)
                raise
            _HELD[key] = 1
            self.held = True
            return self
        raise GbufError(f"{self.store}: cannot take the writer lock {self.path} (other writers keep taking it)")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = str(self.path)
        _HELD[key] = _HELD.get(key, 1) - 1
        if _HELD[key] > 0:
            return
        del _HELD[key]
        self.path.unlink(missing_ok=True)
        for parent in (self.folder, self.folder.parent):
            try:
                parent.rmdir()
            except OSError:
                pass


# -- the writer ------------------------------------------------------------------------------------
class SequenceWriter:
    """Append whole frames of one sequence to one or more resolution groups.

    ``resolutions`` maps group name to ``(height, width, buffers)``. Only the named
    groups are created or touched, so a degraded group can be added to a sequence
    that already has ``hr`` and ``lr``. An existing, compatible group is resumed
    (``next_frame`` says where); ``overwrite=True`` replaces it at once (deleting it),
    ``replace=True`` builds the new group beside it and swaps it in when complete.

    ``lock=False`` opens (or creates) the groups without taking the writer lock and
    writes no frame: for a driver that plans arrays or reads the layout while block
    writers, each holding its own lock, write.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        sequence: str,
        num_frames: int,
        resolutions: dict[str, tuple[int, int, list[str]]],
        *,
        sequence_attrs: dict | None = None,
        resolution_attrs: dict[str, dict] | None = None,
        dataset_attrs: dict | None = None,
        frames_per_shard: int | None = None,
        overwrite: bool = False,
        resume: bool = True,
        frame_range: tuple[int, int] | None = None,
        replace: bool = False,
        lock: bool = True,
    ):
        from gbuf.datasets.zarr_backend import zarr as _zarr

        zarr = _zarr()

        # 1. The arguments, before anything is read or written.
        local = _store.local_path(store)
        if local is None:
            # Shards are staged and renamed on a local file system; remote stores get data by push.
            raise GbufError(f"{store}: writing straight to a URL is not supported; write a local store "
                            f"(or a shared directory), then `gbuf dataset push` it")
        self.path = local
        self.sequence = sequence
        fmt.check_name(sequence, str(self.path), "sequence")
        self.num_frames = int(num_frames)
        if self.num_frames < 1:
            raise GbufError(f"{self.path}: a sequence needs at least one frame (got {num_frames})")
        if self.num_frames > fmt.MAX_FRAMES:
            raise GbufError(f"{self.path}: {num_frames} frames in one sequence; the most is {fmt.MAX_FRAMES}")
        if not resolutions:
            raise GbufError(f"{self.path}: no resolution to write")
        if overwrite and replace:
            raise GbufError(f"{self.path}: overwrite and replace exclude each other")
        for name in resolutions:
            fmt.check_name(name, str(self.path), "group")
        self._specs = {name: (int(h), int(w), list(bufs)) for name, (h, w, bufs) in resolutions.items()}
        for name, (h, w, bufs) in self._specs.items():
            if h < 1 or w < 1:
                raise GbufError(f"{self.path}: resolution {name!r} has an empty size {w}x{h}")
            if max(h, w) > fmt.MAX_SIDE:
                raise GbufError(f"{self.path}: resolution {name!r} is {w}x{h}; the most is {fmt.MAX_SIDE} a side")
            if not bufs:
                raise GbufError(f"{self.path}: resolution {name!r} has no buffers")
            if len(set(bufs)) != len(bufs):
                raise GbufError(f"{self.path}: resolution {name!r} names a buffer twice")
            fmt.pack_layout(bufs)  # validates buffer names
            if "image" not in bufs:
                raise GbufError(f"{self.path}: resolution {name!r} has no 'image' buffer (every group holds one)")
        if frames_per_shard is not None:
            # 0 is refused, not taken for "choose one" (None does that).
            if isinstance(frames_per_shard, bool) or not isinstance(frames_per_shard, (int, np.integer)) \
                    or not 1 <= frames_per_shard <= fmt.MAX_FRAMES:
                raise GbufError(f"{self.path}: frames per shard must be an integer >= 1, not {frames_per_shard!r}")
        self.frames_per_shard = int(frames_per_shard or choose_frames_per_shard(self._specs))
        self._overwrite, self._replace = overwrite, replace
        self._extra = resolution_attrs or {}

        # 2. The store as it is, read only: its layout decides the shard length and the range.
        existing = self._existing()
        self.start, self.stop = self._check_frame_range(frame_range)

        # 3. Under the lock: create or open, finish what a kill interrupted, find where to go on.
        self._lock = WriterLock(self.path, sequence, (self.start, self.stop)) if lock else None
        if self._lock is not None:
            self._lock.acquire()
            weakref.finalize(self, self._lock.release)
        try:
            with _io_errors(self.path, "the store's metadata"):
                self._root = self._open_root(zarr, dataset_attrs)
                self._seq_group = self._open_sequence(existing, sequence_attrs or {})
                if self._lock is not None:
                    for name in self._specs:
                        self._finish_swap(name)
                self._targets: dict[str, str] = {}
                self._groups = {}
                self._layouts = {}
                for name, (h, w, bufs) in list(self._specs.items()):
                    self._groups[name] = self._open_resolution(name, h, w, bufs, overwrite, resume)
                    self._layouts[name] = fmt.pack_layout(self._specs[name][2])
            if self._lock is not None:
                self._recover()
            self.next_frame = self._first_incomplete()
        except BaseException:
            self._release()
            raise

    # -- set-up ----------------------------------------------------------------------
    def _existing(self):
        """The sequence as stored (validated), or None; sets ``frames_per_shard`` from it."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise GbufError(f"{path}: exists and is a file; a gbuf store is a folder (choose another path)")
        if path.is_dir() and not (path / "zarr.json").is_file():
            try:
                # A folder holding only writer state (a lock a kill left before the store existed) is empty.
                occupied = any(p.name != fmt.STATE_DIR for p in path.iterdir())
            except OSError as err:
                raise GbufError(f"{path}: cannot read the folder ({err.strerror})") from None
            if occupied:
                raise GbufError(f"{path}: exists and is not a gbuf store; refusing to write into it")
            return None
        if not path.is_dir():
            return None
        try:
            ds = _store.open(path, mode="r")
        except GbufError as err:
            if "not a gbuf store" in str(err):
                raise GbufError(f"{path}: a Zarr store but not a gbuf store; refusing to write into it") from None
            raise
        if self.sequence not in ds.sequences:
            return None
        seq = ds[self.sequence]
        if seq.attrs["num_frames"] != self.num_frames:
            raise GbufError(f"{path}: sequence {self.sequence!r} has {seq.attrs['num_frames']} frames, "
                            f"not {self.num_frames}")
        # Groups of one sequence share the shard length, so a block of frames is a set of
        # whole shards in every group (parallel block writers never share a shard).
        for name in _store._quiet_members(seq._group, "group", seq.where, seq.folder, hidden=True):
            base = name[1:].rsplit(".", 1)[0] if fmt.is_hidden(name) else name
            if base in self._specs and self._overwrite:
                continue
            self.frames_per_shard = seq._resolution(name).frames_per_shard
            break
        return seq

    def _check_frame_range(self, frame_range) -> tuple[int, int]:
        """``(start, stop)`` this writer may write: the whole sequence, or whole shards of it."""
        if frame_range is None:
            return 0, self.num_frames
        start, stop = (int(v) for v in frame_range)
        n = self.frames_per_shard
        if not 0 <= start < stop <= self.num_frames:
            raise GbufError(f"{self.path}: frame range {start}:{stop} is empty or outside the "
                            f"{self.num_frames} frames of {self.sequence!r}")
        if start % n or (stop % n and stop != self.num_frames):
            raise GbufError(f"{self.path}: frame range {start}:{stop} of {self.sequence!r} is not aligned to "
                            f"its shards of {n} frames (parallel writers must never share a shard)")
        return start, stop

    def _open_root(self, zarr, dataset_attrs):
        if (self.path / "zarr.json").is_file():
            root = zarr.open_group(str(self.path), mode="r+")
            attrs = dict(_store._gbuf_attrs(root))  # validated by _existing
            if dataset_attrs and _jsonish({**attrs, **dataset_attrs}) != _jsonish(attrs):
                attrs.update(dataset_attrs)
                root.attrs[fmt.ATTRS_KEY] = attrs
            return root
        self.path.mkdir(parents=True, exist_ok=True)
        # "a", not "w-": the folder already holds this writer's lock (.gbuf/), and no zarr.json.
        root = zarr.open_group(str(self.path), mode="a")
        from gbuf import __version__

        attrs = {
            "format": fmt.FORMAT_NAME,
            "version": fmt.FORMAT_VERSION,
            "created_by": f"gbuf {__version__}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "conventions": fmt.conventions(),
        }
        attrs.update(dataset_attrs or {})
        root.attrs[fmt.ATTRS_KEY] = attrs
        return root

    def _open_sequence(self, existing, sequence_attrs: dict):
        if existing is not None:
            group = self._root[self.sequence]
            attrs = dict(existing.attrs)
            if sequence_attrs and _jsonish({**attrs, **sequence_attrs}) != _jsonish(attrs):
                attrs.update(sequence_attrs)
                attrs["num_frames"] = self.num_frames
                group.attrs[fmt.ATTRS_KEY] = attrs
            return group
        _refuse_non_node(self.path / self.sequence)
        group = self._root.create_group(self.sequence)
        group.attrs[fmt.ATTRS_KEY] = {**sequence_attrs, "num_frames": self.num_frames}
        return group

    def _sequence_view(self):
        """A fresh, validated view of the sequence (hidden groups reachable)."""
        return _store.open(self.path, mode="r")[self.sequence]

    def _members(self) -> list[str]:
        seq = self._sequence_view()
        return _store._quiet_members(seq._group, "group", seq.where, seq.folder, hidden=True)

    def _scale(self, name: str, h: int, w: int) -> int:
        """HR size / this group's size, checked to be one integer."""
        if fmt.HR in self._specs:
            hr_h, hr_w = self._specs[fmt.HR][:2]
        elif fmt.HR in self._members():
            hr = self._sequence_view()._resolution(fmt.HR)
            hr_h, hr_w = hr.height, hr.width
        else:
            return 1
        if hr_h % h or hr_w % w or hr_h // h != hr_w // w:
            raise GbufError(f"{self.path}: {name} size {w}x{h} is not HR size {hr_w}x{hr_h} divided "
                            f"by one integer scale")
        return hr_h // h

    def _open_resolution(self, name, h, w, bufs, overwrite, resume):
        scale = self._scale(name, h, w)
        extra = self._extra.get(name, {})
        members = self._members()
        target = name
        if self._replace and name not in members and fmt.replacement_name(name) in members:
            # A replacement left behind by a run whose old group is gone since: nothing to swap with.
            self._delete_group(fmt.replacement_name(name))
            members.remove(fmt.replacement_name(name))
        if name in members and self._replace:
            target = fmt.replacement_name(name)
            if target in members:
                # A replacement a killed run left: go on with it if it is the same recipe, else start over.
                old = self._sequence_view()._resolution(target)
                same = ((old.height, old.width, sorted(old.buffers), old.planned_frames)
                        == (h, w, sorted(bufs), self.num_frames)
                        and all(_jsonish(old.attrs.get(k)) == _jsonish(v) for k, v in extra.items()))
                if not same:
                    self._delete_group(target)
                    members.remove(target)
        self._targets[name] = target
        if target in members:
            if overwrite:
                self._delete_group(target)
            else:
                res = self._sequence_view()._resolution(target)
                if not resume:
                    raise GbufError(f"{self.path}: {self.sequence}/{name} already exists (use overwrite)")
                same = (res.height, res.width, sorted(res.buffers), res.planned_frames)
                if same != (h, w, sorted(bufs), self.num_frames):
                    raise GbufError(f"{self.path}: {self.sequence}/{name} exists with another shape or buffer "
                                    f"set; cannot resume into it (use overwrite)")
                self.frames_per_shard = res.frames_per_shard
                # The buffer set may come in any order; the stored channel layout is what counts.
                where = res.attrs["buffers"]
                stored = sorted(res.buffers, key=lambda b: (fmt.PACKS.index(where[b]["pack"]), where[b]["channels"][0]))
                layout = {b: [p, [s, s + c]] for p, m in fmt.pack_layout(stored).items() for b, s, c in m}
                if any(layout[b] != [where[b]["pack"], where[b]["channels"]] for b in stored):
                    raise GbufError(f"{self.path}: {self.sequence}/{name} packs its buffers otherwise than gbuf "
                                    f"writes them; cannot resume into it (use overwrite)")
                self._specs[name] = (h, w, stored)
                return self._seq_group[target]
        if overwrite and (self.path / self.sequence / target).is_dir():
            shutil.rmtree(self.path / self.sequence / target)  # a folder that lost its zarr.json: replaced too
        _refuse_non_node(self.path / self.sequence / target)
        group = self._seq_group.create_group(target)
        layout = fmt.pack_layout(bufs)
        tile = TILE_HR if name == fmt.HR else TILE_LR
        n = self.frames_per_shard
        buffers_meta = {}
        for pack, members_ in layout.items():
            chans = sum(c for _, _, c in members_)
            shard_h, shard_w = -(-h // tile) * tile, -(-w // tile) * tile
            chunk_t = min(CHUNK_FRAMES, n) if n % min(CHUNK_FRAMES, n) == 0 else 1
            group.create_array(
                pack, shape=(self.num_frames, h, w, chans), dtype=fmt.pack_dtype(pack),
                chunks=(chunk_t, tile, tile, chans), shards=(n, shard_h, shard_w, chans),
                compressors=_compressor(), dimension_names=fmt.DIMENSION_NAMES, fill_value=0,
            )
            for buf, start, count in members_:
                buffers_meta[buf] = {"pack": pack, "channels": [start, start + count],
                                     "dtype": fmt.BUFFERS[buf].dtype}
        meta = {
            "height": h, "width": w, "scale": scale, "num_frames": self.num_frames,
            "frames_per_shard": n, "buffers": buffers_meta,
            "conventions": {b: fmt.BUFFERS[b].description for b in bufs},
            "complete": False,
        }
        meta.update(extra)
        group.attrs[fmt.ATTRS_KEY] = meta
        return group

    def _delete_group(self, target: str) -> None:
        shutil.rmtree(self.path / self.sequence / target, ignore_errors=False)
        shutil.rmtree(self._state_dir(target), ignore_errors=True)

    def _state_dir(self, target: str) -> Path:
        return self.path / _store.STATE_DIR / self.sequence / target

    def _resolution(self, name: str) -> "_store.Resolution":
        return self._sequence_view()._resolution(self._targets[name])

    def _first_incomplete(self) -> int:
        first = self.stop
        for name in self._specs:
            done = self._resolution(name).complete_frames()[self.start:self.stop]
            gaps = np.flatnonzero(~done)
            first = min(first, self.start + int(gaps[0]) if len(gaps) else self.stop)
        return first

    # -- finishing what a kill interrupted ---------------------------------------------------------
    def _shards(self) -> range:
        n = self.frames_per_shard
        return range(self.start // n, -(-self.stop // n))

    def _recover(self) -> None:
        """Commit full staged shards that have no marker; drop what committed shards left staged."""
        n = self.frames_per_shard
        for name in self._specs:
            res = self._resolution(name)
            if res.complete:
                continue
            state = self._state_dir(self._targets[name])
            mine = set(self._shards())
            for folder in (state / "staging", state / "shards"):
                if folder.is_dir():
                    for path in folder.iterdir():
                        temp = _TEMP_NAME.match(path.name)
                        number = int(temp.group(1)) if temp else None
                        if temp and (number // n if folder.name == "staging" else number) in mine:
                            path.unlink(missing_ok=True)  # a temporary file of a killed write
            committed = res.committed_shards()
            staged = res.staged_frames()
            for shard in sorted(mine):
                frames = range(shard * n, min((shard + 1) * n, self.num_frames))
                if shard in committed:
                    for t in frames:
                        if t in staged:
                            (state / "staging" / f"{t:06d}.npz").unlink(missing_ok=True)
                elif all(t in staged for t in frames):
                    try:
                        loaded = [self._load_staged(name, t) for t in frames]
                    except GbufError as err:
                        log.warning("%s", err)  # deleted: the shard is no longer full, the frame is written again
                        continue
                    log.info("%s/%s: committing shard %d, staged whole by an interrupted writer",
                             self.sequence, name, shard)
                    self._commit_shard(name, shard, loaded)

    def _finish_swap(self, name: str) -> None:
        """A replacement that a kill stopped between its two renames: finish it (or undo it)."""
        folder = self.path / self.sequence
        old, new, cur = folder / fmt.retired_name(name), folder / fmt.replacement_name(name), folder / name
        if not old.exists():
            return
        if not cur.exists():
            os.replace(new if new.exists() else old, cur)
        shutil.rmtree(old, ignore_errors=True)

    # -- writing -----------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Every frame this writer may write is written (its block, with ``frame_range``)."""
        return self.next_frame >= self.stop

    def append(self, frame: dict[str, dict[str, np.ndarray]]) -> int:
        """Add frame ``next_frame``: ``{resolution: {buffer: (H, W, C) array}}``. Returns its index."""
        if self._lock is None:
            raise GbufError(f"{self.path}: this writer of {self.sequence!r} was opened with lock=False; it writes "
                            f"no frames")
        t = self.next_frame
        if t >= self.stop:
            if self.stop < self.num_frames or self.start > 0:
                raise GbufError(f"{self.path}: frames {self.start}:{self.stop} of {self.sequence!r} are all written")
            raise GbufError(f"{self.path}: sequence {self.sequence!r} already has all {self.num_frames} frames")
        packed = {name: self._pack(name, frame, t) for name in self._specs}
        with _io_errors(self.path, f"frame {t} of {self.sequence!r}"):
            for name, arrays in packed.items():
                staging = self._state_dir(self._targets[name]) / "staging"
                staging.mkdir(parents=True, exist_ok=True)
                _atomic_savez(staging / f"{t:06d}.npz", arrays)
        self.next_frame = t + 1
        shard = t // self.frames_per_shard
        if self.next_frame % self.frames_per_shard == 0 or self.next_frame == self.num_frames:
            for name in self._specs:
                self._commit_shard(name, shard)
        if self.complete:
            self.finalize()
        return t

    def _pack(self, name: str, frame: dict, t: int) -> dict[str, np.ndarray]:
        h, w, bufs = self._specs[name]
        if name not in frame:
            raise GbufError(f"{self.path}: frame {t} lacks resolution {name!r}")
        given = frame[name]
        missing = [b for b in bufs if b not in given]
        if missing:
            raise GbufError(f"{self.path}: frame {t} of {name} lacks buffer(s) {', '.join(missing)}")
        out = {}
        for pack, members in self._layouts[name].items():
            parts = []
            for buf, _, chans in members:
                arr = np.asarray(given[buf])
                if arr.ndim == 2 and chans == 1:
                    arr = arr[..., None]
                if arr.shape != (h, w, chans):
                    raise GbufError(f"{self.path}: frame {t} {name}/{buf} has shape {arr.shape}, "
                                    f"expected {(h, w, chans)}")
                parts.append(arr.astype(fmt.BUFFERS[buf].dtype, copy=False))
            out[pack] = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        return out

    def _load_staged(self, name: str, t: int) -> dict[str, np.ndarray]:
        path = self._state_dir(self._targets[name]) / "staging" / f"{t:06d}.npz"
        h, w, _ = self._specs[name]
        try:
            with np.load(path) as z:
                frame = {pack: z[pack] for pack in self._layouts[name]}
            for pack, members in self._layouts[name].items():
                want = (h, w, sum(c for _, _, c in members))
                if frame[pack].shape != want or frame[pack].dtype != fmt.pack_dtype(pack):
                    raise ValueError(f"{pack} is {frame[pack].dtype}{list(frame[pack].shape)}, not {list(want)}")
        except Exception as err:
            # Damaged (a disk error, a foreign file): it is dropped and will be written again.
            path.unlink(missing_ok=True)
            raise GbufError(f"{path}: staged frame {t} is damaged ({_store.describe(err)}); it was deleted: rerun "
                            f"to write it again") from None
        return frame

    def _commit_shard(self, name: str, shard: int, frames: list | None = None) -> None:
        n = self.frames_per_shard
        first, last = shard * n, min((shard + 1) * n, self.num_frames)
        state = self._state_dir(self._targets[name])
        if frames is None:
            frames = [self._load_staged(name, t) for t in range(first, last)]
        group = self._groups[name]
        checksums = {}
        stats = {}
        with _io_errors(self.path, f"shard {shard} of {self.sequence}/{name}"):
            for pack, members in self._layouts[name].items():
                block = np.stack([f[pack] for f in frames])
                group[pack][first:last] = block  # whole shard: one write, no read-modify-write
                checksums[pack] = [frame_checksum(f) for f in block]
                for buf, start, count in members:
                    stats[buf] = [frame_range(f[..., start:start + count]) for f in block]
            shards_dir = state / "shards"
            shards_dir.mkdir(parents=True, exist_ok=True)
            record = {"first_frame": first, "num_frames": last - first, "checksums": checksums, "stats": stats}
            _atomic_write_bytes(shards_dir / f"{shard}.json", json.dumps(record).encode())
        for t in range(first, last):
            (state / "staging" / f"{t:06d}.npz").unlink(missing_ok=True)

    def finalize(self) -> bool:
        """Fold shard markers into attrs once every shard is written; remove writer state.

        Returns whether every group is complete (a block writer's other blocks may not be).
        A replacement (``replace=True``) is swapped in here, once complete.
        """
        done = []
        for name in self._specs:  # every group, no short cut
            target = self._targets[name]
            with _io_errors(self.path, f"the attrs of {self.sequence}/{name}"):
                ok = consolidate(self.path, self.sequence, target)
                if ok and target != name:
                    self._swap_in(name, target)
            done.append(ok)
        if self.complete:
            self._release()  # this writer's frames are all written; consolidation needs no lock
        return all(done)

    def _swap_in(self, name: str, target: str) -> None:
        """Put the finished replacement in place of ``name``: two renames, the old group deleted last."""
        folder = self.path / self.sequence
        old = folder / fmt.retired_name(name)
        shutil.rmtree(old, ignore_errors=True)
        if (folder / name).exists():
            os.replace(folder / name, old)
        os.replace(folder / target, folder / name)
        self._targets[name] = name
        self._groups[name] = self._seq_group[name]
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self._state_dir(name), ignore_errors=True)  # the old group's state, if any

    def _release(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    def close(self) -> None:
        try:
            if self.complete:
                self.finalize()
        finally:
            self._release()

    def __enter__(self) -> "SequenceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def consolidate(store: str | os.PathLike, sequence: str, resolution: str) -> bool:
    """If every shard of a group is written, record checksums in its attrs and drop writer state.

    Returns whether the group is complete. Safe to call again (for example by a
    driver after parallel block writers finish).
    """
    from gbuf.datasets.zarr_backend import zarr as _zarr

    zarr = _zarr()

    path = _store.local_path(store)
    if path is None:
        raise GbufError(f"{store}: consolidate works on a local store (writers stage frames on a file system)")
    state = path / _store.STATE_DIR / sequence / resolution
    res = _store.open(path, mode="r")[sequence]._resolution(resolution)
    if res.complete:
        shutil.rmtree(state, ignore_errors=True)  # a finished group's leftovers (a kill after its attrs)
        _remove_empty(path, sequence)
        return True
    if len(res.committed_shards()) < res._num_shards():
        return False
    try:
        sums = res.checksums()
        stats = res.frame_stats()
    except GbufError:
        # Another block writer finishing at the same moment consolidated first and removed
        # the markers (or is writing one): its result stands if it completed the group.
        if _store.open(path, mode="r")[sequence]._resolution(resolution).complete:
            return True
        raise
    if any(v is None for values in sums.values() for v in values):
        return False
    group = zarr.open_group(str(path), mode="r+")[sequence][resolution]
    meta = dict(res.attrs)
    meta.update({"complete": True, "checksums": sums, "stats": stats})
    meta.pop("committed_shards", None)
    group.attrs[fmt.ATTRS_KEY] = meta
    shutil.rmtree(state, ignore_errors=True)
    _remove_empty(path, sequence)
    return True


def _refuse_non_node(folder: Path) -> None:
    """A folder where a new group goes that is not a node: a lost zarr.json, not room for a new group."""
    if folder.exists():
        raise GbufError(f"{folder}: exists but has no zarr.json (a damaged group?); refusing to write over it "
                        f"(restore its zarr.json, or delete the folder)")


def _remove_empty(path: Path, sequence: str) -> None:
    for parent in (path / _store.STATE_DIR / sequence, path / _store.STATE_DIR):
        try:
            parent.rmdir()
        except OSError:
            pass


def _jsonish(value):
    return json.loads(json.dumps(value))


def _check_name(name: str, where) -> None:
    """The format's name rule (kept for callers of the old helper)."""
    fmt.check_name(name, str(where))
