"""``verify(path)``: structure, metadata, HR/LR alignment, completeness, checksums and stats of every frame.

Nothing is modified. Every node is opened on its own, so one damaged zarr.json is one
problem and the rest of the store is still checked. In a local store, folders that are
not nodes (a deleted zarr.json) and symbolic links that lead out of the store are
problems too; verify never reads through such a link.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets import store as _store
from gbuf.datasets.format import frame_checksum, frame_range
from gbuf.errors import GbufError


@dataclasses.dataclass
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclasses.dataclass
class VerifyReport:
    path: str
    problems: list[Problem]
    frames_checked: int
    groups_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem(where: str, err: GbufError) -> Problem:
    """A GbufError as a problem; its message already names the file when it starts with a path."""
    text = str(err)
    head, sep, rest = text.partition(": ")
    if sep and (head == where or head.startswith(where + "/")):
        return Problem(head, rest)
    return Problem(where, text)


def links_outside(root: Path) -> dict[str, str]:
    """Symbolic links under ``root`` that lead outside it (or nowhere): ``{relative path: target}``."""
    real_root = os.path.realpath(root)
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([target, real_root]) != real_root or not os.path.exists(target):
                    found[os.path.relpath(path, root).replace(os.sep, "/")] = target
    return found


def _node_names(folder: Path | None, listing) -> list[str]:
    """Child nodes: in a local store, every folder with a zarr.json (so one bad one hides no other)."""
    if folder is None:
        return listing()
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and (p / "zarr.json").exists() and not fmt.is_hidden(p.name)
                  and p.name != fmt.STATE_DIR)


def _stray_folders(folder: Path, where: str) -> list[Problem]:
    """Folders where a node should be that are none: a deleted zarr.json, or something foreign."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.is_symlink() and p.name != fmt.STATE_DIR and not fmt.is_hidden(p.name) \
                and not (p / "zarr.json").exists():
            out.append(Problem(f"{where}/{p.name}", "a folder without zarr.json: not a node of the store "
                                                      "(a deleted or lost zarr.json?)"))
    return out


def verify(path, *, checksums: bool = True, storage_options: dict | None = None) -> VerifyReport:
    """Check a store; every bad node and frame is named in ``report.problems`` (nothing is modified)."""
    ds = _store.open(path, mode="r", storage_options=storage_options)
    where_root = str(path)
    local = ds.local_path
    problems: list[Problem] = []
    frames_checked = groups = 0
    outside: dict[str, str] = {}
    if local is not None:
        outside = links_outside(local)
        for rel, target in sorted(outside.items()):
            problems.append(Problem(f"{where_root}/{rel}", f"a symbolic link to {target}, outside the store (or "
                                                           f"missing); refused: verify does not read through it"))
        problems.extend(_stray_folders(local, where_root))

    def tainted(rel: str, inside: bool = False) -> bool:
        """Whether node ``rel`` is reached through a link out of the store (``inside``: or holds one)."""
        return any(rel == link or rel.startswith(link + "/") or (inside and link.startswith(rel + "/"))
                   for link in outside)

    try:
        names = _node_names(local, lambda: ds.sequences)
    except GbufError as err:
        problems.append(_problem(where_root, err))
        names = []
    if not names and not problems:
        problems.append(Problem(where_root, "store has no sequences"))
    for name in names:
        where_seq = f"{where_root}/{name}"
        if tainted(name):
            continue
        try:
            seq = ds._sequence(name)
            group_names = _node_names(seq.folder, lambda: seq.resolutions)
        except GbufError as err:
            problems.append(_problem(where_seq, err))
            continue
        if seq.folder is not None:
            problems.extend(_stray_folders(seq.folder, where_seq))
        planned = seq.attrs["num_frames"]
        if fmt.HR not in group_names:
            problems.append(Problem(where_seq, "no 'hr' group"))
        opened = {}
        for gname in sorted(group_names, key=lambda n: n != fmt.HR):
            where = f"{where_seq}/{gname}"
            if tainted(f"{name}/{gname}"):
                continue
            try:
                opened[gname] = seq._resolution(gname)
            except GbufError as err:
                problems.append(_problem(where, err))
        hr = opened.get(fmt.HR)
        for gname, res in opened.items():
            groups += 1
            where = f"{where_seq}/{gname}"
            if res.planned_frames != planned:
                problems.append(Problem(where, f"has {res.planned_frames} frames, sequence has {planned}"))
            if hr is not None and gname != fmt.HR:
                s = res.scale
                if res.height * s != hr.height or res.width * s != hr.width:
                    problems.append(Problem(where, f"size {res.width}x{res.height} x scale {s} is not HR "
                                                   f"{hr.width}x{hr.height}"))
            if seq.folder is not None:
                problems.extend(_stray_folders(seq.folder / gname, where))
            readable = _check_arrays(res, where, problems, lambda pack: tainted(f"{name}/{gname}/{pack}", True))
            problems.extend(_check_completeness(res, where))
            if checksums and res.planned_frames == planned:
                bad, n = _check_frames(res, where, readable)
                problems.extend(bad)
                frames_checked += n
    return VerifyReport(where_root, problems, frames_checked, groups)


def _check_arrays(res, where: str, problems: list[Problem], tainted) -> list[str]:
    """Open every pack array (its metadata checked against the attrs); the ones that can be read."""
    readable = []
    for pack in res.packs:
        if tainted(pack):
            continue
        try:
            res.array(pack)
        except GbufError as err:
            problems.append(_problem(where, err))
            continue
        readable.append(pack)
    return readable


def _check_completeness(res, where: str) -> list[Problem]:
    if res.complete:
        return []
    out = []
    committed = res.committed_frames()
    staged = np.zeros_like(committed)
    for t in res.staged_frames():
        staged[t] = True
    missing = np.flatnonzero(~committed & ~staged)
    if len(missing):
        out.append(Problem(where, f"frames incomplete: {_ranges(missing)}"))
    only_staged = np.flatnonzero(~committed & staged)
    if len(only_staged):
        out.append(Problem(where, f"frames incomplete: {_ranges(only_staged)} staged, not yet in a written shard "
                                  f"(an interrupted writer; rerun it to finish)"))
    if not len(missing) and not len(only_staged):
        out.append(Problem(where, "incomplete: every shard is written but the group is not marked complete "
                                  "(rerun the writer, or call gbuf.datasets.consolidate)"))
    return out


def _check_frames(res, where: str, packs: list[str]) -> tuple[list[Problem], int]:
    """Every frame of every written shard: present, decodable, its checksum and its stats."""
    out: list[Problem] = []
    sums = res.checksums()
    stats = res.frame_stats()
    n = res.frames_per_shard
    total = res.planned_frames
    committed = res.committed_shards()
    checked: set[int] = set()
    for pack in packs:
        arr = res.array(pack)
        members = [(b, res.attrs["buffers"][b]["channels"]) for b in res.buffers
                   if res.attrs["buffers"][b]["pack"] == pack]
        zero = fmt.zero_checksum(arr.shape[1:], arr.dtype)
        for first in range(0, total, n):
            last = min(first + n, total)
            if first // n not in committed:
                continue  # staged frames carry no checksum until their shard is written
            expected = sums.get(pack, [None] * total)[first:last]
            missing = [key for key in _shard_keys(arr, first // n) if not res._exists(arr, key)]
            if missing and not all(v == zero for v in expected):
                out.append(Problem(where, f"frames {first}-{last - 1}: {pack} shard {pack}/{missing[0]} is missing"))
                continue
            try:
                block = np.asarray(arr[first:last])
                frames = list(range(first, last))
            except Exception:
                block, frames = None, []
                # The shard does not decode: find the frames that do not.
                for t in range(first, last):
                    try:
                        one = np.asarray(arr[t:t + 1])
                    except Exception as err:
                        out.append(Problem(where, f"frame {t}: {pack} does not decode ({_store.describe(err)})"))
                        continue
                    _compare(one[0], t, sums.get(pack), stats, members, pack, where, out)
                    checked.add(t)
            if block is not None:
                for i, t in enumerate(frames):
                    _compare(block[i], t, sums.get(pack), stats, members, pack, where, out)
                    checked.add(t)
    return out, len(checked)


def _shard_keys(arr, shard: int) -> list[str]:
    """The keys of every shard file of time index ``shard`` (a gbuf shard spans the image: one)."""
    st, sh, sw, sc = arr.shards or arr.chunks
    _, h, w, c = arr.shape
    return [arr.metadata.encode_chunk_key((shard, i, j, k))
            for i in range(-(-h // sh)) for j in range(-(-w // sw)) for k in range(-(-c // sc))]


def _compare(frame, t, expected, stats, members, pack, where, out) -> None:
    want = expected[t] if expected is not None and t < len(expected) else None
    if want is None:
        out.append(Problem(where, f"frame {t}: {pack} has no recorded checksum"))
    elif frame_checksum(frame) != want:
        out.append(Problem(where, f"frame {t}: {pack} checksum mismatch (data corrupted)"))
        return  # its stats would differ too: one problem per damaged frame
    for buf, (start, stop) in members:
        recorded = stats.get(buf, [None] * (t + 1))[t]
        if recorded is None:
            continue  # stores written before stats were recorded
        actual = frame_range(frame[..., start:stop])
        if list(recorded) != actual:
            out.append(Problem(where, f"frame {t}: stats of {buf} are {list(recorded)}, the data has {actual} "
                                      f"(tampered or stale; the rdg normalisation reads them)"))


def _ranges(indices) -> str:
    parts, start, prev = [], None, None
    for i in list(indices) + [None]:
        if start is None:
            start = prev = i
        elif i is not None and i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    return ", ".join(parts)
