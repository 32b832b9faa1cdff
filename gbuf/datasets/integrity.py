"""``verify(path)``: shapes, HR/LR alignment, completeness and per-frame checksums."""

from __future__ import annotations

import dataclasses

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets import store as _store
from gbuf.datasets.writer import frame_checksum
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


def verify(path, *, checksums: bool = True, storage_options: dict | None = None) -> VerifyReport:
    """Check a store; every bad frame is named in ``report.problems`` (nothing is modified)."""
    ds = _store.open(path, mode="r", storage_options=storage_options)
    problems: list[Problem] = []
    frames_checked = groups = 0
    if not ds.sequences:
        problems.append(Problem(str(path), "store has no sequences"))
    for seq in ds:
        where_seq = f"{path}/{seq.name}"
        planned = seq.attrs.get("num_frames")
        resolutions = seq.resolutions
        if fmt.HR not in resolutions:
            problems.append(Problem(where_seq, "no 'hr' group"))
        hr = seq[fmt.HR] if fmt.HR in resolutions else None
        for name in resolutions:
            try:
                res = seq[name]
            except GbufError as err:
                problems.append(Problem(f"{where_seq}/{name}", str(err)))
                continue
            groups += 1
            where = f"{where_seq}/{name}"
            if planned is not None and res.planned_frames != planned:
                problems.append(Problem(where, f"has {res.planned_frames} frames, sequence has {planned}"))
            if hr is not None and name != fmt.HR:
                s = res.scale
                if res.height * s != hr.height or res.width * s != hr.width:
                    problems.append(Problem(where, f"size {res.width}x{res.height} x scale {s} is not HR "
                                                   f"{hr.width}x{hr.height}"))
            problems.extend(_check_arrays(res, where))
            done = res.complete_frames()
            missing = np.flatnonzero(~done)
            if len(missing):
                problems.append(Problem(where, f"frames incomplete: {_ranges(missing)}"))
            if checksums:
                bad, n = _check_checksums(res, where)
                problems.extend(bad)
                frames_checked += n
    return VerifyReport(str(path), problems, frames_checked, groups)


def _check_arrays(res, where: str) -> list[Problem]:
    out = []
    for pack in res.packs:
        try:
            arr = res.array(pack)
        except GbufError:
            out.append(Problem(where, f"missing array {pack!r}"))
            continue
        chans = max(res._meta["buffers"][b]["channels"][1] for b in res.buffers
                    if res._meta["buffers"][b]["pack"] == pack)
        expect = (res.planned_frames, res.height, res.width, chans)
        if tuple(arr.shape) != expect:
            out.append(Problem(where, f"array {pack!r} has shape {tuple(arr.shape)}, expected {expect}"))
        if np.dtype(arr.dtype) != fmt.pack_dtype(pack):
            out.append(Problem(where, f"array {pack!r} has dtype {arr.dtype}, expected {fmt.pack_dtype(pack)}"))
    return out


def _check_checksums(res, where: str) -> tuple[list[Problem], int]:
    out: list[Problem] = []
    sums = res.checksums()
    n = res.frames_per_shard
    total = res.num_frames
    checked = 0
    committed = res.committed_shards()
    for pack in res.packs:
        expected = sums.get(pack, [])
        try:
            if res.array(pack).shape[0] != res.planned_frames:
                continue  # reported by _check_arrays; frame indices would not line up
        except GbufError:
            continue
        for first in range(0, total, n):
            last = min(first + n, total)
            if first // n not in committed:
                continue  # staged frames carry no checksum until their shard is written
            try:
                block = np.asarray(res.array(pack)[first:last])
                frames = list(range(first, last))
            except Exception:
                block, frames = None, []
                # The shard does not decode: find the frames that do not.
                for t in range(first, last):
                    try:
                        one = np.asarray(res.array(pack)[t:t + 1])
                    except Exception as err:
                        out.append(Problem(where, f"frame {t}: {pack} does not decode ({type(err).__name__})"))
                        continue
                    _compare(one[0], t, expected, pack, where, out)
                    checked += 1
            if block is not None:
                for i, t in enumerate(frames):
                    _compare(block[i], t, expected, pack, where, out)
                    checked += 1
    return out, checked // max(1, len(res.packs))


def _compare(frame, t, expected, pack, where, out) -> None:
    want = expected[t] if t < len(expected) else None
    if want is None:
        out.append(Problem(where, f"frame {t}: {pack} has no recorded checksum"))
    elif frame_checksum(frame) != want:
        out.append(Problem(where, f"frame {t}: {pack} checksum mismatch (data corrupted)"))


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
