"""Reading gbuf stores: ``open(path)`` -> ``Dataset`` -> ``Sequence`` -> ``Resolution``.

A ``Resolution`` hides how buffers are packed into arrays: every buffer is read by
name as a ``(T, H, W, C)`` numpy array. Frames that a writer has staged but not yet
committed to a shard (an interrupted render) are served from the staging area, so
an interrupted store reads every complete frame.

Reads never invent data. Every node's metadata is validated once, when it is first
opened (``gbuf.datasets.format``); a read that meets a shard file that is missing, bytes
that fail their checksum or do not decode, or a damaged staged frame raises a one-line
``GbufError`` naming the frame, never returns zeros (zarr's fill value) in its place.
The checks cost little on the hot path: inner chunks carry a CRC-32C that the codec
checks as it decodes, and a missing shard can only read as all-zero bytes, so only a
frame whose crop is all zero is looked up.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

#: The writer-state folder (defined with the format's other names).
STATE_DIR = fmt.STATE_DIR

#: A staged frame (``000012.npz``) and a shard marker (``3.json``); nothing else in those folders
#: (a writer's temporary files, strays) is ever taken for one.
STAGED_NAME = re.compile(r"^(\d{6})\.npz$")
MARKER_NAME = re.compile(r"^(\d+)\.json$")


def _zarr():
    from gbuf.datasets.zarr_backend import zarr

    return zarr()


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str | os.PathLike) -> Path | None:
    """The local folder a store path names (``file://`` URLs included), or None for a remote URL."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise GbufError(f"{text}: a file:// URL with a host ({parsed.netloc}) is not a local path; "
                            f"write file:///absolute/path")
        return Path(url2pathname(parsed.path))
    if _is_url(text):
        return None
    return Path(text)


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (for one-line errors around library exceptions)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _gbuf_attrs(node):
    """The node's gbuf attrs as stored (validators check their type; a non-dict is not coerced)."""
    value = node.attrs.get(fmt.ATTRS_KEY, {})
    return dict(value) if isinstance(value, dict) else value


def _quiet_members(group, kind: str, where: str | None = None, folder: Path | None = None, *,
                   hidden: bool = False) -> list[str]:
    """Child groups (or arrays) of ``group``; a child whose zarr.json is damaged is named in one line.

    Names starting with ``fmt.HIDDEN_PREFIX`` (a writer's temporary groups) are left out
    unless ``hidden``. In a local store (``folder``) the children are the sub-folders
    holding a zarr.json, read here: each one's problem is named, and zarr's parallel
    listing (which logs every sibling's exception when one fails) is not needed.
    """
    if folder is not None:
        return [k for k in _local_members(folder, kind, where or str(folder)) if hidden or not fmt.is_hidden(k)]
    # zarr warns about our writer-state folder; it is ours and expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            keys = list(group.group_keys() if kind == "group" else group.array_keys())
        except Exception as err:  # zarr parses every child's zarr.json to list them
            raise _listing_error(group, err, where, folder) from None
    return sorted(k for k in keys if hidden or not fmt.is_hidden(k))


def _local_members(folder: Path, kind: str, where: str) -> list[str]:
    try:
        children = sorted(p for p in folder.iterdir() if p.name != STATE_DIR and p.is_dir())
    except OSError as err:
        raise GbufError(f"{where}: cannot list the folder ({describe(err)})") from None
    names = []
    for child in children:
        meta = child / "zarr.json"
        if not meta.is_file():
            continue  # not a node (verify names such folders)
        doc_where = f"{where}/{child.name}/zarr.json"
        try:
            doc = json.loads(meta.read_bytes())
        except (OSError, ValueError) as err:
            raise GbufError(f"{doc_where}: cannot be read ({describe(err)})") from None
        if fmt.check_node_document(doc, doc_where)["node_type"] == kind:
            names.append(child.name)
    return names


def _listing_error(group, err: BaseException, where: str | None, folder: Path | None) -> GbufError:
    """Which child broke a listing: each child folder is opened alone (local stores)."""
    where = where or str(group.path or ".")
    if folder is not None and folder.is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for child in sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "zarr.json").exists()):
                doc_where = f"{where}/{child}/zarr.json"
                try:
                    fmt.check_node_document(json.loads((folder / child / "zarr.json").read_bytes()), doc_where)
                    group[child]
                except GbufError as bad:
                    return bad
                except Exception as bad:
                    return GbufError(f"{doc_where}: cannot be read ({describe(bad)})")
    return GbufError(f"{where}: cannot list its members ({describe(err)})")


def open(path: str | os.PathLike, mode: str = "r", *, storage_options: dict | None = None,
         cache_dir=None) -> "Dataset":
    """Open a gbuf store (a local path, a ``file://`` URL or an fsspec URL) for reading (``r``) or update (``r+``).

    URLs: options from ``storage_options`` or ``GBUF_STORAGE_OPTIONS``; an optional
    local shard cache from ``cache_dir`` or ``GBUF_CACHE_DIR`` (see remote_store).
    """
    if mode not in ("r", "r+"):
        raise GbufError(f"{path}: mode must be 'r' or 'r+', not {mode!r}")
    zarr = _zarr()
    text = str(path)
    local = local_path(text)
    if local is not None:
        if not local.exists():
            raise GbufError(f"{text}: no such dataset")
        if not local.is_dir():
            raise GbufError(f"{text}: a file, not a gbuf store (a store is a folder)")
        if not (local / "zarr.json").is_file():
            raise GbufError(f"{text}: not a gbuf store (no zarr.json at its root)")
    try:
        if local is None:
            from gbuf.datasets import remote_store

            store = remote_store.open_zarr_store(text, read_only=(mode == "r"),
                                                 storage_options=storage_options, cache_dir=cache_dir)
            root = zarr.open_group(store, mode=mode)
        else:
            root = zarr.open_group(str(local), mode=mode)
        attrs = _gbuf_attrs(root)
    except GbufError:
        raise
    except Exception as err:  # zarr raises many types for a broken store
        raise GbufError(f"{text}: cannot open as a Zarr v3 store ({describe(err)})") from None
    fmt.check_root_attrs(attrs, text)
    return Dataset(text, root, mode)


class Dataset:
    """A gbuf store: sequences by name.

    Sequences and finished groups are opened (and their metadata validated) once per
    ``Dataset``; a loader that reads many crops pays for that once.
    """

    def __init__(self, path: str, root, mode: str):
        self.path = path
        self.mode = mode
        self._root = root
        self._local = local_path(path)
        self._names: list[str] | None = None
        self._opened: dict[str, Sequence] = {}
        #: Per pack array (by its path): the chunk checker that remembers which chunks were good.
        self._checkers: dict[str, Any] = {}

    @property
    def attrs(self) -> dict:
        return dict(_gbuf_attrs(self._root))

    @property
    def local_path(self) -> Path | None:
        return self._local

    @property
    def splits(self) -> dict[str, list[str]]:
        """``{"train": [names], "val": [...], "test": [...]}`` of a store built from a spec
        (``gbuf dataset build``); ``{}`` for a store without a split (docs/format.md, "Splits")."""
        return fmt.check_splits(self.attrs.get(fmt.SPLITS_KEY), f"{self.path}/zarr.json", self.sequences)

    @property
    def spec_record(self) -> dict | None:
        """What the spec the store was built from recorded (``sha256``, ``sequences``...); None if none."""
        return fmt.check_spec_record(self.attrs.get(fmt.SPEC_KEY), f"{self.path}/zarr.json")

    def write_splits(self, splits: dict[str, list[str]], spec_record: dict) -> None:
        """Record the split and the spec's record in the root attrs (``mode="r+"``); both are
        validated first (every name a sequence of the store, none in two splits)."""
        if self.mode != "r+":
            raise GbufError(f"{self.path}: opened read-only; open it with mode='r+' to record a split")
        where = f"{self.path}/zarr.json"
        checked = fmt.check_splits(splits, where, self.sequences)
        record = fmt.check_spec_record(spec_record, where)
        attrs = dict(_gbuf_attrs(self._root))
        attrs[fmt.SPLITS_KEY] = checked
        attrs[fmt.SPEC_KEY] = record
        self._root.attrs[fmt.ATTRS_KEY] = attrs

    @property
    def sequences(self) -> list[str]:
        if self._names is None:
            self._names = _quiet_members(self._root, "group", self.path, self._local)
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self.sequences

    def __getitem__(self, name: str) -> "Sequence":
        if name not in self._opened:
            if name not in self.sequences:
                raise GbufError(f"{self.path}: no sequence {name!r} (has: {', '.join(self.sequences) or 'none'})")
            self._sequence(name)
        return self._opened[name]

    def _sequence(self, name: str) -> "Sequence":
        """A sequence by name without listing the others (verify opens each of a damaged store alone)."""
        if name not in self._opened:
            group = _open_child(self._root, name, f"{self.path}/{name}")
            self._opened[name] = Sequence(self, name, group)
        return self._opened[name]

    def __iter__(self):
        return (self[name] for name in self.sequences)

    def __repr__(self) -> str:
        return f"<gbuf Dataset {self.path} sequences={self.sequences}>"


def _open_child(group, name: str, where: str, kind: str = "group", missing: str | None = None):
    """``group[name]``, or a one-line error naming its zarr.json (``missing``: the message if absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            node = group[name]
        except KeyError:
            raise GbufError(missing or f"{where}: missing (no zarr.json)") from None
        except Exception as err:
            raise GbufError(f"{where}/zarr.json: cannot be read ({describe(err)})") from None
    is_group = hasattr(node, "group_keys")
    if is_group != (kind == "group"):
        raise GbufError(f"{where}/zarr.json: is a Zarr {'group' if is_group else 'array'}, expected a {kind}")
    return node


class Sequence:
    """One clip: its resolution groups (``hr``, ``lr``, degraded variants)."""

    def __init__(self, dataset: Dataset, name: str, group):
        self.dataset = dataset
        self.name = name
        self._group = group
        self._attrs = fmt.check_sequence_attrs(_gbuf_attrs(group), f"{self.where}/zarr.json")
        self._names: list[str] | None = None
        self._opened: dict[str, Resolution] = {}

    @property
    def where(self) -> str:
        return f"{self.dataset.path}/{self.name}"

    @property
    def folder(self) -> Path | None:
        local = self.dataset.local_path
        return None if local is None else local / self.name

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    @property
    def resolutions(self) -> list[str]:
        if self._names is None:
            names = _quiet_members(self._group, "group", self.where, self.folder)
            # hr first, then lr, then the rest alphabetically: the order people read them in.
            order = {fmt.HR: 0, fmt.LR: 1}
            self._names = sorted(names, key=lambda n: (order.get(n, 2), n))
        return list(self._names)

    @property
    def num_frames(self) -> int:
        """Frames complete in every resolution."""
        return min((self[r].num_frames for r in self.resolutions), default=0)

    def __contains__(self, name: str) -> bool:
        return name in self.resolutions

    def __getitem__(self, name: str) -> "Resolution":
        if name in self._opened:
            return self._opened[name]
        if name not in self.resolutions:
            raise GbufError(f"{self.dataset.path}: sequence {self.name!r} has no resolution {name!r} "
                            f"(has: {', '.join(self.resolutions) or 'none'})")
        return self._resolution(name)

    def _resolution(self, name: str) -> "Resolution":
        """Any group by name, a writer's hidden ones included (for the writer)."""
        if name in self._opened:
            return self._opened[name]
        res = Resolution(self, name, _open_child(self._group, name, f"{self.where}/{name}"))
        if res.attrs.get("complete"):
            # A finished group no longer changes; an unfinished one is re-read each time, so a
            # reader sees shards that a writer commits meanwhile.
            self._opened[name] = res
        return res

    def __repr__(self) -> str:
        return f"<gbuf Sequence {self.name} resolutions={self.resolutions}>"


class Resolution:
    """The buffers of one sequence at one resolution; every buffer readable by name."""

    def __init__(self, sequence: Sequence, name: str, group):
        self.sequence = sequence
        self.name = name
        self._group = group
        self._meta = fmt.check_resolution_attrs(_gbuf_attrs(group), f"{self.where}/zarr.json")
        self._arrays: dict[str, Any] = {}
        self._packs = fmt.pack_channels(self._meta["buffers"])
        self._stats: dict[str, list] | None = None
        self._sums: dict[str, list] | None = None
        self._self_checking: dict[str, bool] = {}

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
        return list(self._packs)

    def pack_channels(self, pack: str) -> int:
        """Channels of the pack array (the width of its last axis)."""
        return self._packs[pack]

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

    @property
    def complete(self) -> bool:
        """Every shard written and folded into the attrs (``complete: true``)."""
        return bool(self._meta.get("complete"))

    def channels(self, buffer: str) -> int:
        self._check_buffer(buffer)
        start, stop = self._meta["buffers"][buffer]["channels"]
        return stop - start

    def dtype(self, buffer: str) -> np.dtype:
        self._check_buffer(buffer)
        return np.dtype(self._meta["buffers"][buffer]["dtype"])

    def array(self, pack: str):
        """The zarr array of one pack (for tools that need the raw layout), its metadata checked."""
        if pack not in self._arrays:
            if pack not in self._packs:
                raise GbufError(f"{self.where}: no array {pack!r} (has: {', '.join(self._packs)})")
            where = f"{self.where}/{pack}"
            arr = _open_child(self._group, pack, where, kind="array",
                              missing=f"{self.where}: missing array {pack!r}")
            fmt.check_array(f"{where}/zarr.json", pack, self._meta, arr.shape, arr.dtype, arr.shards,
                            arr.metadata.fill_value)
            self._arrays[pack] = arr
        return self._arrays[pack]

    def _checks_own_bytes(self, pack: str) -> bool:
        """Whether each inner chunk carries a CRC-32C that zarr checks on decode (stores from gbuf 0.x
        before it did not: whole-frame reads of those are checked against the frame checksums)."""
        if pack not in self._self_checking:
            arr = self.array(pack)
            try:
                inner = arr.metadata.codecs[0].codecs if arr.shards is not None else arr.metadata.codecs
                names = {type(c).__name__ for c in inner}
            except (AttributeError, IndexError):
                names = set()
            self._self_checking[pack] = "Crc32cCodec" in names
        return self._self_checking[pack]

    # -- completeness ------------------------------------------------------------------
    def _state_dir(self) -> Path | None:
        local = self.sequence.dataset.local_path
        if local is None:
            return None
        return local / STATE_DIR / self.sequence.name / self.name

    def _num_shards(self) -> int:
        return -(-self.planned_frames // self.frames_per_shard)

    def _markers(self) -> dict[int, Path]:
        state = self._state_dir()
        if state is None or not (state / "shards").is_dir():
            return {}
        found = {}
        for marker in (state / "shards").iterdir():
            match = MARKER_NAME.match(marker.name)
            if match and int(match.group(1)) < self._num_shards():
                found[int(match.group(1))] = marker
        return found

    def committed_shards(self) -> set[int]:
        """Shards whose every frame is written (from attrs once finished, else from markers)."""
        if self.complete:
            return set(range(self._num_shards()))
        return set(self._meta.get("committed_shards", [])) | set(self._markers())

    def staged_frames(self) -> set[int]:
        state = self._state_dir()
        if state is None or not (state / "staging").is_dir():
            return set()
        found = set()
        for path in (state / "staging").iterdir():
            match = STAGED_NAME.match(path.name)
            if match and int(match.group(1)) < self.planned_frames:
                found.add(int(match.group(1)))
        return found

    def complete_frames(self) -> np.ndarray:
        """A boolean per planned frame: is it complete (committed or staged)?"""
        done = self.committed_frames()
        for t in self.staged_frames():
            done[t] = True
        return done

    def committed_frames(self) -> np.ndarray:
        """A boolean per planned frame: is it in a written shard (not only staged)?"""
        done = np.zeros(self.planned_frames, dtype=bool)
        n = self.frames_per_shard
        for shard in self.committed_shards():
            done[shard * n:(shard + 1) * n] = True
        return done

    @property
    def num_frames(self) -> int:
        """Frames complete from frame 0 without a gap (all of them in a finished store)."""
        if self.complete:
            return self.planned_frames
        done = self.complete_frames()
        gaps = np.flatnonzero(~done)
        return int(gaps[0]) if len(gaps) else len(done)

    def checksums(self) -> dict[str, list]:
        """Per-pack, per-frame CRC32 of the frame's raw bytes (None where not yet written)."""
        if self._sums is not None:
            return {p: list(v) for p, v in self._sums.items()}
        sums = {p: [None] * self.planned_frames for p in self.packs}
        for pack, values in (self._meta.get("checksums") or {}).items():
            sums[pack] = list(values)
        for record in self._shard_records():
            first = record["first_frame"]
            for pack, values in record["checksums"].items():
                sums[pack][first:first + len(values)] = values
        if self.complete:
            self._sums = sums
        return {p: list(v) for p, v in sums.items()}

    def frame_stats(self) -> dict[str, list]:
        """Per-buffer, per-frame ``[min, max]`` of finite values (None where not yet written)."""
        if self._stats is not None:
            return self._stats
        stats = {b: [None] * self.planned_frames for b in self.buffers}
        for buf, values in (self._meta.get("stats") or {}).items():
            stats[buf] = list(values)
        for record in self._shard_records():
            first = record["first_frame"]
            for buf, values in record.get("stats", {}).items():
                stats[buf][first:first + len(values)] = values
        if self.complete:
            self._stats = stats  # read per crop by the rdg normalisation: built once
        return stats

    def _shard_records(self) -> list[dict]:
        if self.complete:
            return []
        records = []
        for shard, marker in sorted(self._markers().items()):
            where = str(marker)
            try:
                record = json.loads(marker.read_bytes())
            except FileNotFoundError:
                continue  # consolidated (and removed) meanwhile: the attrs have it now
            except (OSError, ValueError) as err:
                raise GbufError(f"{where}: shard marker cannot be read ({describe(err)}); delete it and rerun "
                                f"the writer to rewrite shard {shard}") from None
            records.append(fmt.check_shard_marker(record, where, shard, self.frames_per_shard, self.planned_frames,
                                                  set(self.packs), set(self.buffers)))
        return records

    # -- reading -----------------------------------------------------------------------
    def read_camera(self) -> dict[str, np.ndarray]:
        """Per-frame camera data (docs/format.md, "Camera data"): ``K`` (T, 3, 3), ``world_to_camera``
        (T, 4, 4), ``near``, ``far``, ``exposure`` (T,), ``jitter`` (T, 2), ``cut``, ``orthographic`` (T,) bool."""
        where = f"{self.where}/zarr.json"
        camera = self._meta.get(fmt.CAMERA_KEY)
        if camera is None:
            raise GbufError(f"{self.where}: no camera data (stores rendered before gbuf recorded cameras "
                            f"have none; render the sequence again to get it)")
        if not isinstance(camera, dict):
            raise GbufError(f"{where}: attributes.{fmt.ATTRS_KEY}.{fmt.CAMERA_KEY} must be an object")
        frames = self._meta["num_frames"]
        out: dict[str, np.ndarray] = {}
        for name, shape in fmt.CAMERA_FIELDS.items():
            try:
                value = np.asarray(camera[name], dtype=bool if name in fmt.CAMERA_FLAGS else np.float64)
            except (KeyError, TypeError, ValueError):
                raise GbufError(f"{where}: attributes.{fmt.ATTRS_KEY}.{fmt.CAMERA_KEY}.{name} is missing or "
                                f"not numeric") from None
            if value.shape != (frames, *shape):
                raise GbufError(f"{where}: attributes.{fmt.ATTRS_KEY}.{fmt.CAMERA_KEY}.{name} has shape "
                                f"{value.shape}, expected {(frames, *shape)}")
            out[name] = value
        return out

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
        parts, t = [], frames.start
        while t < frames.stop:
            # A run of frames that are all in written shards, or one staged frame.
            if (t // n) in committed:
                stop = t
                while stop < frames.stop and (stop // n) in committed:
                    stop += 1
                parts.append(self._read_written(pack, slice(t, stop), y, x, c))
                t = stop
            else:
                parts.append(self._read_staged(pack, t)[None][:, y, x, c])
                t += 1
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.asarray(self.array(pack)[frames, y, x, c])
        return np.concatenate(parts, axis=0)

    def _checker(self, pack: str):
        dataset = self.sequence.dataset
        arr = self.array(pack)
        if arr.path not in dataset._checkers:
            from gbuf.datasets.shards import checker_for

            dataset._checkers[arr.path] = checker_for(arr, dataset.local_path)
        return dataset._checkers[arr.path]

    def _read_written(self, pack: str, frames: slice, y, x, c) -> np.ndarray:
        arr = self.array(pack)
        whole = (_covers(y, self.height) and _covers(x, self.width)) and not self._checks_own_bytes(pack)
        # A store whose chunks carry no CRC-32C: whole frames are checked against their recorded checksums,
        # so they are read with every channel.
        cc = slice(None) if whole else c
        checker = self._checker(pack)
        if checker is not None:
            from gbuf.datasets.shards import BadChunk

            region = ((frames.start, frames.stop), _span(y, self.height), _span(x, self.width),
                      _span(cc, self._packs[pack]))
            try:
                checker.check(region)
            except BadChunk as err:
                raise GbufError(f"{self.where}: frame {max(err.frame, frames.start)}: {pack} bytes fail their "
                                f"checksum ({err}); `gbuf dataset verify` names every damaged frame") from None
            except OSError as err:
                raise GbufError(f"{self.where}: frames {frames.start}-{frames.stop - 1}: {pack} cannot be read "
                                f"({describe(err)})") from None
        try:
            block = np.asarray(arr[frames, y, x, cc])
        except Exception as err:
            raise self._unreadable(pack, frames, y, x, cc, err) from None
        if block.size:
            # A missing shard reads as all-zero bytes: only frames whose crop starts with a zero can be one.
            raw = block.reshape(block.shape[0], -1).view(f"u{block.dtype.itemsize}")
            maybe = np.flatnonzero(raw[:, 0] == 0)
            blank = [int(i) for i in maybe if not raw[i].any()]
            if blank:
                self._check_blank(pack, [frames.start + i for i in blank], y, x)
        if whole:
            expected = self.checksums()[pack]
            for i, frame in enumerate(block):
                t = frames.start + i
                if expected[t] is not None and fmt.frame_checksum(frame) != expected[t]:
                    raise GbufError(f"{self.where}: frame {t}: {pack} bytes fail their checksum (data corrupted); "
                                    f"`gbuf dataset verify` names every damaged frame")
            block = block[..., c]
        return block

    def _unreadable(self, pack: str, frames: slice, y, x, c, err: BaseException) -> GbufError:
        """The first frame of ``frames`` that does not decode, named."""
        arr = self.array(pack)
        bad = frames.start
        for t in range(frames.start, frames.stop):
            try:
                arr[t:t + 1, y, x, c]
            except Exception as one:
                bad, err = t, one
                break
        return GbufError(f"{self.where}: frame {bad}: {pack} cannot be read ({describe(err)}); its shard is "
                         f"damaged (`gbuf dataset verify` names every damaged frame)")

    def _check_blank(self, pack: str, frames: list[int], y, x) -> None:
        """All-zero frames: real zeros (recorded so, or their shard exists), or a missing shard."""
        arr = self.array(pack)
        sums = self.checksums()[pack]
        zero = fmt.zero_checksum(arr.shape[1:], arr.dtype)
        shard_t, shard_h, shard_w = (arr.shards or arr.chunks)[:3]
        (y0, y1), (x0, x1) = _span(y, self.height), _span(x, self.width)
        if y1 <= y0 or x1 <= x0:
            return
        for t in frames:
            if sums[t] == zero:
                continue  # an all-zero frame: the codec may rightly have written no shard for it
            for i in range(y0 // shard_h, (y1 - 1) // shard_h + 1):
                for j in range(x0 // shard_w, (x1 - 1) // shard_w + 1):
                    key = arr.metadata.encode_chunk_key((t // shard_t, i, j, 0))
                    if not self._exists(arr, key):
                        raise GbufError(f"{self.where}: frame {t}: {pack} shard {pack}/{key} is missing; reads "
                                        f"never invent data (restore the file, or write the group again)")

    def _exists(self, arr, key: str) -> bool:
        local = self.sequence.dataset.local_path
        if local is not None:
            return (local / arr.path / key).is_file()
        from zarr.core.sync import sync

        try:
            return bool(sync(arr.store_path.store.exists(f"{arr.path}/{key}")))
        except Exception as err:
            raise GbufError(f"{self.where}: cannot check shard {arr.path}/{key} ({describe(err)})") from None

    def _read_staged(self, pack: str, t: int) -> np.ndarray:
        state = self._state_dir()
        path = state / "staging" / f"{t:06d}.npz" if state is not None else None
        if path is None or not path.is_file():
            raise GbufError(f"{self.where}: frame {t} is not complete")
        try:
            with np.load(path) as staged:
                data = staged[pack]
        except Exception as err:  # a zip with a bad CRC, a truncated file, a missing member...
            raise GbufError(f"{path}: staged frame {t} cannot be read ({describe(err)}); delete it and rerun "
                            f"the writer to write it again") from None
        want = (self.height, self.width, self._packs[pack])
        if data.shape != want or data.dtype != fmt.pack_dtype(pack):
            raise GbufError(f"{path}: staged frame {t} holds {pack} {data.dtype}{list(data.shape)}, expected "
                            f"{fmt.pack_dtype(pack)}{list(want)}; delete it and rerun the writer")
        return data

    def __repr__(self) -> str:
        return (f"<gbuf Resolution {self.sequence.name}/{self.name} {self.width}x{self.height} "
                f"frames={self.num_frames} buffers={self.buffers}>")


def _span(s, size: int) -> tuple[int, int]:
    if isinstance(s, (int, np.integer)):
        s = slice(int(s) % size, int(s) % size + 1) if size else slice(0, 0)
    start, stop, _ = s.indices(size)
    return start, max(start, stop)


def _covers(s, size: int) -> bool:
    return isinstance(s, slice) and s.indices(size)[:2] == (0, size) and s.step in (None, 1)


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
