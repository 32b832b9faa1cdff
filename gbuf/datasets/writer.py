"""Writing gbuf stores: ``SequenceWriter`` appends whole frames, durably and resumably.

Why it is built this way:

* A zarr write into part of a shard re-reads and rewrites the whole shard, so each
  shard is written once, whole, when its last frame arrives.
* Until then the frames of the open shard are *staged*: each frame is one ``.npz``
  file in ``<store>/.gbuf/<sequence>/<resolution>/staging/``, written to a temporary
  name and renamed, so a kill (even SIGKILL) loses at most the frame in progress.
  Readers serve staged frames too, so an interrupted store reads every complete frame.
* When a shard is written, a small JSON marker with the per-frame checksums is
  renamed into ``.../shards/<k>.json``; only then are its staged frames deleted.
  A restarted writer finds the markers and staged frames and continues after the
  last complete frame, with no duplicate and no gap.
* When every shard of a resolution is written, the markers are consolidated into
  the group's attrs (``complete: true``, ``checksums``) and the writer state is
  removed, so a finished store needs nothing outside the zarr hierarchy.
* Parallel writers (``frame_range=(start, stop)``): each writes one shard-aligned
  block of frames into arrays that already have their final shape; no two blocks
  share a shard, so they never touch one file. Whichever finishes last (or a driver
  calling ``consolidate``) folds the markers in once every shard has one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets import store as _store
from gbuf.errors import GbufError

#: Aim for shards of about this many raw bytes in the largest pack (the format doc
#: explains the choice: big enough to keep file counts low, small enough to stage).
TARGET_SHARD_BYTES = 192 * 2**20
#: Frames per inner chunk: a 15-frame crop touches 4-5 chunks in time.
CHUNK_FRAMES = 4
#: Spatial tile of inner chunks, by group kind (LR-sized groups get finer tiles).
TILE_LR = 64
TILE_HR = 128


def frame_checksum(frame: np.ndarray) -> int:
    """CRC32 of one frame of a pack, as stored in the attrs and checked by ``verify``."""
    return zlib.crc32(np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<"), copy=False).tobytes())


def frame_range(frame: np.ndarray) -> list:
    """[min, max] over the finite values of one frame of one buffer ([None, None] if none).

    Kept per frame in the attrs so loaders can apply whole-frame min-max
    normalisation (the official RDG loader's) to a crop without reading the frame.
    """
    values = frame[np.isfinite(frame)]
    if values.size == 0:
        return [None, None]
    return [float(values.min()), float(values.max())]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


class SequenceWriter:
    """Append whole frames of one sequence to one or more resolution groups.

    ``resolutions`` maps group name to ``(height, width, buffers)``. Only the named
    groups are created or touched, so a degraded group can be added to a sequence
    that already has ``hr`` and ``lr``. An existing, compatible group is resumed
    (``next_frame`` says where); ``overwrite=True`` replaces it instead.
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
    ):
        from gbuf.datasets.zarr_backend import zarr as _zarr

        zarr = _zarr()

        if "://" in str(store):
            # Shards are staged and renamed on a local file system; remote stores get data by push.
            raise GbufError(f"{store}: writing straight to a URL is not supported; write a local store "
                            f"(or a shared directory), then `gbuf dataset push` it")
        self.path = Path(store)
        self.sequence = sequence
        self.num_frames = int(num_frames)
        if self.num_frames < 1:
            raise GbufError(f"{self.path}: a sequence needs at least one frame (got {num_frames})")
        if not resolutions:
            raise GbufError(f"{self.path}: no resolution to write")
        _check_name(sequence, self.path)
        for name in resolutions:
            _check_name(name, self.path)
        self._specs = {name: (int(h), int(w), list(bufs)) for name, (h, w, bufs) in resolutions.items()}
        for name, (h, w, bufs) in self._specs.items():
            if h < 1 or w < 1:
                raise GbufError(f"{self.path}: resolution {name!r} has an empty size {w}x{h}")
            if not bufs:
                raise GbufError(f"{self.path}: resolution {name!r} has no buffers")
            if len(set(bufs)) != len(bufs):
                raise GbufError(f"{self.path}: resolution {name!r} names a buffer twice")
            fmt.pack_layout(bufs)  # validates buffer names
        self.frames_per_shard = int(frames_per_shard or choose_frames_per_shard(self._specs))
        if self.frames_per_shard < 1:
            raise GbufError(f"{self.path}: frames_per_shard must be >= 1")

        self._root = self._open_root(zarr, dataset_attrs)
        self._seq_group = self._open_sequence(sequence_attrs or {}, overwrite)
        # Groups of one sequence share the shard length, so a block of frames is a set of
        # whole shards in every group (parallel block writers never share a shard).
        for name in _store._quiet_members(self._seq_group, "group"):
            if name not in self._specs or not overwrite:
                meta = dict(self._seq_group[name].attrs.get(fmt.ATTRS_KEY, {}))
                if "frames_per_shard" in meta:
                    self.frames_per_shard = int(meta["frames_per_shard"])
                    break
        scales = self._scales()
        self._groups = {}
        self._layouts = {}
        for name, (h, w, bufs) in list(self._specs.items()):
            extra = (resolution_attrs or {}).get(name, {})
            self._groups[name] = self._open_resolution(name, h, w, bufs, scales[name], extra, overwrite, resume)
            self._layouts[name] = fmt.pack_layout(self._specs[name][2])
        self.start, self.stop = self._check_frame_range(frame_range)
        self.next_frame = self._first_incomplete()

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

    # -- set-up ----------------------------------------------------------------------
    def _open_root(self, zarr, dataset_attrs):
        if self.path.exists() and not (self.path / "zarr.json").is_file():
            if any(self.path.iterdir()):
                raise GbufError(f"{self.path}: exists and is not a gbuf store; refusing to write into it")
        if (self.path / "zarr.json").is_file():
            root = zarr.open_group(str(self.path), mode="r+")
            attrs = dict(root.attrs.get(fmt.ATTRS_KEY, {}))
            if attrs.get("format") != fmt.FORMAT_NAME:
                raise GbufError(f"{self.path}: a Zarr store but not a gbuf store; refusing to write into it")
            if dataset_attrs and _jsonish({**attrs, **dataset_attrs}) != _jsonish(attrs):
                attrs.update(dataset_attrs)
                root.attrs[fmt.ATTRS_KEY] = attrs
            return root
        root = zarr.open_group(str(self.path), mode="w-")
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

    def _open_sequence(self, sequence_attrs: dict, overwrite: bool):
        root = self._root
        if self.sequence in _store._quiet_members(root, "group"):
            group = root[self.sequence]
            attrs = dict(group.attrs.get(fmt.ATTRS_KEY, {}))
            if attrs.get("num_frames") != self.num_frames:
                raise GbufError(
                    f"{self.path}: sequence {self.sequence!r} has {attrs.get('num_frames')} frames, "
                    f"not {self.num_frames}")
            if sequence_attrs and _jsonish({**attrs, **sequence_attrs}) != _jsonish(attrs):
                attrs.update(sequence_attrs)
                attrs["num_frames"] = self.num_frames
                group.attrs[fmt.ATTRS_KEY] = attrs
            return group
        group = root.create_group(self.sequence)
        group.attrs[fmt.ATTRS_KEY] = {**sequence_attrs, "num_frames": self.num_frames}
        return group

    def _scales(self) -> dict[str, int]:
        """HR size / group size for each group, checked to be an exact integer."""
        if fmt.HR in self._specs:
            hr_h, hr_w = self._specs[fmt.HR][:2]
        elif fmt.HR in _store._quiet_members(self._seq_group, "group"):
            meta = dict(self._seq_group[fmt.HR].attrs.get(fmt.ATTRS_KEY, {}))
            hr_h, hr_w = meta["height"], meta["width"]
        else:
            return {name: 1 for name in self._specs}
        scales = {}
        for name, (h, w, _) in self._specs.items():
            if hr_h % h or hr_w % w or hr_h // h != hr_w // w:
                raise GbufError(f"{self.path}: {name} size {w}x{h} is not HR size {hr_w}x{hr_h} divided "
                                f"by one integer scale")
            scales[name] = hr_h // h
        return scales

    def _open_resolution(self, name, h, w, bufs, scale, extra, overwrite, resume):
        existing = _store._quiet_members(self._seq_group, "group")
        state = self._state_dir(name)
        if name in existing:
            if overwrite:
                del self._seq_group[name]
                shutil.rmtree(state, ignore_errors=True)
            else:
                meta = dict(self._seq_group[name].attrs.get(fmt.ATTRS_KEY, {}))
                if not resume:
                    raise GbufError(f"{self.path}: {self.sequence}/{name} already exists (use overwrite)")
                stored = list(meta.get("buffers", {}))
                same = (meta.get("height"), meta.get("width"), sorted(stored), meta.get("num_frames"))
                want = (h, w, sorted(bufs), self.num_frames)
                if same != want:
                    raise GbufError(f"{self.path}: {self.sequence}/{name} exists with another shape or buffer "
                                    f"set; cannot resume into it (use overwrite)")
                self.frames_per_shard = int(meta["frames_per_shard"])
                # The buffer set may come in any order; the stored channel layout is what counts.
                self._specs[name] = (h, w, stored)
                return self._seq_group[name]
        group = self._seq_group.create_group(name)
        layout = fmt.pack_layout(bufs)
        tile = TILE_HR if name == fmt.HR else TILE_LR
        n = self.frames_per_shard
        buffers_meta = {}
        for pack, members in layout.items():
            chans = sum(c for _, _, c in members)
            shard_h, shard_w = -(-h // tile) * tile, -(-w // tile) * tile
            chunk_t = min(CHUNK_FRAMES, n) if n % min(CHUNK_FRAMES, n) == 0 else 1
            group.create_array(
                pack, shape=(self.num_frames, h, w, chans), dtype=fmt.pack_dtype(pack),
                chunks=(chunk_t, tile, tile, chans), shards=(n, shard_h, shard_w, chans),
                compressors=_compressor(), dimension_names=fmt.DIMENSION_NAMES, fill_value=0,
            )
            for buf, start, count in members:
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

    def _state_dir(self, resolution: str) -> Path:
        return self.path / _store.STATE_DIR / self.sequence / resolution

    def _resolution(self, name: str) -> "_store.Resolution":
        ds = _store.open(self.path, mode="r")
        return ds[self.sequence][name]

    def _first_incomplete(self) -> int:
        first = self.stop
        for name in self._specs:
            done = self._resolution(name).complete_frames()[self.start:self.stop]
            gaps = np.flatnonzero(~done)
            first = min(first, self.start + int(gaps[0]) if len(gaps) else self.stop)
        return first

    # -- writing -----------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Every frame this writer may write is written (its block, with ``frame_range``)."""
        return self.next_frame >= self.stop

    def append(self, frame: dict[str, dict[str, np.ndarray]]) -> int:
        """Add frame ``next_frame``: ``{resolution: {buffer: (H, W, C) array}}``. Returns its index."""
        t = self.next_frame
        if t >= self.stop:
            if self.stop < self.num_frames or self.start > 0:
                raise GbufError(f"{self.path}: frames {self.start}:{self.stop} of {self.sequence!r} are all written")
            raise GbufError(f"{self.path}: sequence {self.sequence!r} already has all {self.num_frames} frames")
        packed = {name: self._pack(name, frame, t) for name in self._specs}
        for name, arrays in packed.items():
            staging = self._state_dir(name) / "staging"
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

    def _commit_shard(self, name: str, shard: int) -> None:
        n = self.frames_per_shard
        first, last = shard * n, min((shard + 1) * n, self.num_frames)
        state = self._state_dir(name)
        staged = [state / "staging" / f"{t:06d}.npz" for t in range(first, last)]
        frames = []
        for path in staged:
            with np.load(path) as z:
                frames.append({k: z[k] for k in z.files})
        group = self._groups[name]
        checksums = {}
        stats = {}
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
        for path in staged:
            path.unlink(missing_ok=True)

    def finalize(self) -> bool:
        """Fold shard markers into attrs once every shard is written; remove writer state.

        Returns whether every group is complete (a block writer's other blocks may not be).
        """
        done = [consolidate(self.path, self.sequence, name) for name in self._specs]  # every group, no short cut
        return all(done)

    def close(self) -> None:
        if self.complete:
            self.finalize()

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

    path = Path(store)
    res = _store.open(path, mode="r")[sequence][resolution]
    if res.attrs.get("complete"):
        return True
    if len(res.committed_shards()) < res._num_shards():
        return False
    try:
        sums = res.checksums()
        stats = res.frame_stats()
    except (FileNotFoundError, ValueError):
        # Another block writer finishing at the same moment consolidated first and removed
        # the markers (or is writing one): its result stands if it completed the group.
        return bool(_store.open(path, mode="r")[sequence][resolution].attrs.get("complete"))
    if any(v is None for values in sums.values() for v in values):
        return False
    group = zarr.open_group(str(path), mode="r+")[sequence][resolution]
    meta = dict(group.attrs.get(fmt.ATTRS_KEY, {}))
    meta.update({"complete": True, "checksums": sums, "stats": stats})
    meta.pop("committed_shards", None)
    group.attrs[fmt.ATTRS_KEY] = meta
    shutil.rmtree(path / _store.STATE_DIR / sequence / resolution, ignore_errors=True)
    for parent in (path / _store.STATE_DIR / sequence, path / _store.STATE_DIR):
        try:
            parent.rmdir()
        except OSError:
            pass
    return True


def _jsonish(value):
    return json.loads(json.dumps(value))


def _check_name(name: str, where) -> None:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise GbufError(f"{where}: invalid group name {name!r} (no '/', no leading '.')")
