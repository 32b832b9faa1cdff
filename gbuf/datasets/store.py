"""Reading gbuf stores: ``open(path)`` -> ``Dataset`` -> ``Sequence`` -> ``Resolution``.

A ``Resolution`` hides how buffers are packed into arrays: every buffer is read by
name as a ``(T, H, W, C)`` numpy array. Frames that a writer has staged but not yet
committed to a shard (an interrupted render) are served from the staging area, so
an interrupted store reads every complete frame.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

#: Folder (inside the store, outside the zarr hierarchy) that holds writer state:
#: staged frames and shard markers. Readers of a finished store never need it.
STATE_DIR = ".gbuf"


def _zarr():
    import zarr

    return zarr


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _gbuf_attrs(node) -> dict:
    return dict(node.attrs.get(fmt.ATTRS_KEY, {}))


def _quiet_members(group, kind: str) -> list[str]:
    # zarr warns about our writer-state folder; it is ours and expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = group.group_keys() if kind == "group" else group.array_keys()
        return sorted(keys)


def open(path: str | os.PathLike, mode: str = "r", *, storage_options: dict | None = None,
         cache_dir=None) -> "Dataset":
    """Open a gbuf store (a local path or an fsspec URL) for reading (``r``) or update (``r+``).

    URLs: options from ``storage_options`` or ``GBUF_STORAGE_OPTIONS``; an optional
    local shard cache from ``cache_dir`` or ``GBUF_CACHE_DIR`` (see remote_store).
    """
    if mode not in ("r", "r+"):
        raise GbufError(f"{path}: mode must be 'r' or 'r+', not {mode!r}")
    zarr = _zarr()
    text = str(path)
    if not _is_url(text):
        local = Path(text)
        if not local.exists():
            raise GbufError(f"{text}: no such dataset")
        if not (local / "zarr.json").is_file():
            raise GbufError(f"{text}: not a gbuf store (no zarr.json at its root)")
    try:
        if _is_url(text):
            from gbuf.datasets import remote_store

            store = remote_store.open_zarr_store(text, read_only=(mode == "r"),
                                                 storage_options=storage_options, cache_dir=cache_dir)
            root = zarr.open_group(store, mode=mode)
        else:
            root = zarr.open_group(text, mode=mode)
    except GbufError:
        raise
    except Exception as err:  # zarr raises many types for a broken store
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise GbufError(f"{text}: cannot open as a Zarr v3 store ({type(err).__name__}: {detail})") from None
    attrs = _gbuf_attrs(root)
    if attrs.get("format") != fmt.FORMAT_NAME:
        raise GbufError(f"{text}: not a gbuf store (root attrs lack gbuf.format)")
    major = str(attrs.get("version", "0")).split(".")[0]
    if major != fmt.FORMAT_VERSION.split(".")[0]:
        raise GbufError(f"{text}: gbuf format {attrs.get('version')} is not readable by this gbuf "
                        f"(reads {fmt.FORMAT_VERSION})")
    return Dataset(text, root, mode)


class Dataset:
    """A gbuf store: sequences by name."""

    def __init__(self, path: str, root, mode: str):
        self.path = path
        self.mode = mode
        self._root = root

    @property
    def attrs(self) -> dict:
        return _gbuf_attrs(self._root)

    @property
    def local_path(self) -> Path | None:
        return None if _is_url(self.path) else Path(self.path)

    @property
    def sequences(self) -> list[str]:
        return _quiet_members(self._root, "group")

    def __contains__(self, name: str) -> bool:
        return name in self.sequences

    def __getitem__(self, name: str) -> "Sequence":
        if name not in self.sequences:
            raise GbufError(f"{self.path}: no sequence {name!r} (has: {', '.join(self.sequences) or 'none'})")
        return Sequence(self, name, self._root[name])

    def __iter__(self):
        return (self[name] for name in self.sequences)

    def __repr__(self) -> str:
        return f"<gbuf Dataset {self.path} sequences={self.sequences}>"


class Sequence:
    """One clip: its resolution groups (``hr``, ``lr``, degraded variants)."""

    def __init__(self, dataset: Dataset, name: str, group):
        self.dataset = dataset
        self.name = name
        self._group = group

    @property
    def attrs(self) -> dict:
        return _gbuf_attrs(self._group)

    @property
    def resolutions(self) -> list[str]:
        names = _quiet_members(self._group, "group")
        # hr first, then lr, then the rest alphabetically: the order people read them in.
        order = {fmt.HR: 0, fmt.LR: 1}
        return sorted(names, key=lambda n: (order.get(n, 2), n))

    @property
    def num_frames(self) -> int:
        """Frames complete in every resolution."""
        return min((self[r].num_frames for r in self.resolutions), default=0)

    def __contains__(self, name: str) -> bool:
        return name in self.resolutions

    def __getitem__(self, name: str) -> "Resolution":
        if name not in self.resolutions:
            raise GbufError(f"{self.dataset.path}: sequence {self.name!r} has no resolution {name!r} "
                            f"(has: {', '.join(self.resolutions) or 'none'})")
        return Resolution(self, name, self._group[name])

    def __repr__(self) -> str:
        return f"<gbuf Sequence {self.name} resolutions={self.resolutions}>"


class Resolution:
    """The buffers of one sequence at one resolution; every buffer readable by name."""

    def __init__(self, sequence: Sequence, name: str, group):
        self.sequence = sequence
        self.name = name
        self._group = group
        self._meta = _gbuf_attrs(group)
        if "buffers" not in self._meta:
            raise GbufError(f"{self.where}: not a gbuf resolution group (attrs lack gbuf.buffers)")
        self._arrays: dict[str, Any] = {}

    # -- description -----------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.sequence.dataset.path}/{self.sequence.name}/{self.name}"

    @property
    def attrs(self) -> dict:
        return dict(self._meta)

    @property
    def buffers(self) -> list[str]:
        return list(self._meta["buffers"])

    @property
    def packs(self) -> list[str]:
        return sorted({b["pack"] for b in self._meta["buffers"].values()}, key=fmt.PACKS.index)

    @property
    def height(self) -> int:
        return int(self._meta["height"])

    @property
    def width(self) -> int:
        return int(self._meta["width"])

    @property
    def scale(self) -> int:
        """HR size / this size (1 for ``hr``)."""
        return int(self._meta.get("scale", 1))

    @property
    def planned_frames(self) -> int:
        """The length of the arrays (frames written or still to come)."""
        return int(self._meta["num_frames"])

    @property
    def frames_per_shard(self) -> int:
        return int(self._meta["frames_per_shard"])

    def channels(self, buffer: str) -> int:
        self._check_buffer(buffer)
        start, stop = self._meta["buffers"][buffer]["channels"]
        return stop - start

    def dtype(self, buffer: str) -> np.dtype:
        self._check_buffer(buffer)
        return np.dtype(self._meta["buffers"][buffer]["dtype"])

    def array(self, pack: str):
        """The zarr array of one pack (for tools that need the raw layout)."""
        if pack not in self._arrays:
            try:
                self._arrays[pack] = self._group[pack]
            except KeyError:
                raise GbufError(f"{self.where}: missing array {pack!r}") from None
        return self._arrays[pack]

    # -- completeness ------------------------------------------------------------------
    def _state_dir(self) -> Path | None:
        local = self.sequence.dataset.local_path
        if local is None:
            return None
        return local / STATE_DIR / self.sequence.name / self.name

    def committed_shards(self) -> set[int]:
        """Shards whose every frame is written (from attrs once finished, else from markers)."""
        if self._meta.get("complete"):
            return set(range(self._num_shards()))
        state = self._state_dir()
        done = set(self._meta.get("committed_shards", []))
        if state is not None and (state / "shards").is_dir():
            for marker in (state / "shards").glob("*.json"):
                done.add(int(marker.stem))
        return done

    def _num_shards(self) -> int:
        return -(-self.planned_frames // self.frames_per_shard)

    def staged_frames(self) -> set[int]:
        state = self._state_dir()
        if state is None or not (state / "staging").is_dir():
            return set()
        return {int(p.stem) for p in (state / "staging").glob("*.npz")}

    def complete_frames(self) -> np.ndarray:
        """A boolean per planned frame: is it complete (committed or staged)?"""
        done = np.zeros(self.planned_frames, dtype=bool)
        n = self.frames_per_shard
        for shard in self.committed_shards():
            done[shard * n:(shard + 1) * n] = True
        for t in self.staged_frames():
            if t < len(done):
                done[t] = True
        return done

    @property
    def num_frames(self) -> int:
        """Frames complete from frame 0 without a gap (all of them in a finished store)."""
        if self._meta.get("complete"):
            return self.planned_frames
        done = self.complete_frames()
        gaps = np.flatnonzero(~done)
        return int(gaps[0]) if len(gaps) else len(done)

    def checksums(self) -> dict[str, list]:
        """Per-pack, per-frame CRC32 of the frame's raw bytes (None where not yet written)."""
        sums = {p: [None] * self.planned_frames for p in self.packs}
        stored = self._meta.get("checksums")
        if stored:
            for pack, values in stored.items():
                sums[pack] = list(values)
        for record in self._shard_records():
            first = record["first_frame"]
            for pack, values in record["checksums"].items():
                sums[pack][first:first + len(values)] = values
        return sums

    def frame_stats(self) -> dict[str, list]:
        """Per-buffer, per-frame ``[min, max]`` of finite values (None where not yet written)."""
        stats = {b: [None] * self.planned_frames for b in self.buffers}
        for buf, values in (self._meta.get("stats") or {}).items():
            stats[buf] = list(values)
        for record in self._shard_records():
            first = record["first_frame"]
            for buf, values in record.get("stats", {}).items():
                stats[buf][first:first + len(values)] = values
        return stats

    def _shard_records(self) -> list[dict]:
        state = self._state_dir()
        if state is None or not (state / "shards").is_dir():
            return []
        return [json.loads(m.read_text()) for m in sorted((state / "shards").glob("*.json"))]

    # -- reading -----------------------------------------------------------------------
    def _check_buffer(self, buffer: str) -> None:
        if buffer not in self._meta["buffers"]:
            raise GbufError(f"{self.where}: no buffer {buffer!r} (has: {', '.join(self.buffers)})")

    def read(self, buffer: str, t=slice(None), y=slice(None), x=slice(None)) -> np.ndarray:
        """One buffer as ``(T, H, W, C)`` (an int ``t`` keeps the T axis of length 1)."""
        return self.read_many([buffer], t=t, y=y, x=x)[buffer]

    def read_many(self, buffers, t=slice(None), y=slice(None), x=slice(None)) -> dict[str, np.ndarray]:
        """Several buffers of the same crop; each pack array is read once."""
        for b in buffers:
            self._check_buffer(b)
        frames = _normalise_frames(t, self.num_frames, self.where)
        by_pack: dict[str, list[str]] = {}
        for b in buffers:
            by_pack.setdefault(self._meta["buffers"][b]["pack"], []).append(b)
        out: dict[str, np.ndarray] = {}
        for pack, names in by_pack.items():
            chans = [self._meta["buffers"][b]["channels"] for b in names]
            lo, hi = min(c[0] for c in chans), max(c[1] for c in chans)
            block = self._read_pack(pack, frames, y, x, slice(lo, hi))
            for b, (start, stop) in zip(names, chans):
                out[b] = block[..., start - lo:stop - lo]
        return {b: out[b] for b in buffers}

    def _read_pack(self, pack: str, frames: slice, y, x, c) -> np.ndarray:
        committed = self.committed_shards()
        n = self.frames_per_shard
        staged_needed = [t for t in range(frames.start, frames.stop) if (t // n) not in committed]
        if not staged_needed:
            return np.asarray(self.array(pack)[frames, y, x, c])
        parts = []
        for t in range(frames.start, frames.stop):
            if (t // n) in committed:
                parts.append(np.asarray(self.array(pack)[t:t + 1, y, x, c]))
            else:
                parts.append(self._read_staged(pack, t)[None][:, y, x, c])
        return np.concatenate(parts, axis=0)

    def _read_staged(self, pack: str, t: int) -> np.ndarray:
        state = self._state_dir()
        path = state / "staging" / f"{t:06d}.npz" if state is not None else None
        if path is None or not path.is_file():
            raise GbufError(f"{self.where}: frame {t} is not complete")
        with np.load(path) as staged:
            return staged[pack]

    def __repr__(self) -> str:
        return (f"<gbuf Resolution {self.sequence.name}/{self.name} {self.width}x{self.height} "
                f"frames={self.num_frames} buffers={self.buffers}>")


def _normalise_frames(t, num_frames: int, where: str) -> slice:
    if isinstance(t, (int, np.integer)):
        t = int(t)
        if t < 0:
            t += num_frames
        if not 0 <= t < num_frames:
            raise GbufError(f"{where}: frame {t} out of range (0..{num_frames - 1})")
        return slice(t, t + 1)
    if not isinstance(t, slice) or t.step not in (None, 1):
        raise GbufError(f"{where}: frames must be an int or a contiguous slice")
    start, stop, _ = t.indices(num_frames)
    if t.stop is not None and t.stop > num_frames:
        raise GbufError(f"{where}: frames up to {t.stop} requested, only {num_frames} complete")
    return slice(start, max(start, stop))
