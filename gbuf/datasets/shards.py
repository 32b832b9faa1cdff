"""Checking the bytes of a crop's inner chunks against their CRC-32C, cheaply.

Every inner chunk gbuf writes ends in a CRC-32C (``writer._compressor``). zarr-python
checks it whenever it decodes a chunk; zarrs checks it only when a read covers the whole
chunk, and a crop seldom does (it decodes the part it needs), so a flipped bit in a
local store could reach a crop unnoticed. ``ChunkChecker`` closes that gap without
decoding anything: it reads each inner chunk's encoded bytes once (through the shard
index at the end of the shard file), checks their CRC-32C (hardware CRC, a fraction of a
millisecond per crop) and remembers the chunk as good for as long as its shard file is
unchanged (same size and mtime).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_EMPTY = 2**64 - 1


class BadChunk(Exception):
    """An inner chunk whose bytes fail their CRC-32C; ``frame`` is the first frame it holds."""

    def __init__(self, message: str, frame: int):
        super().__init__(message)
        self.frame = frame


def layout(arr) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(shard shape, chunk shape)`` if ``arr`` is sharded the way gbuf checks (index at the end,
    itself CRC'd; inner chunks ending in a CRC-32C), else None (nothing to check)."""
    try:
        codecs = arr.metadata.codecs
        if len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec":
            return None
        sharding = codecs[0]
        if str(getattr(sharding.index_location, "value", sharding.index_location)) != "end":
            return None
        if [type(c).__name__ for c in sharding.index_codecs] != ["BytesCodec", "Crc32cCodec"]:
            return None
        if type(sharding.codecs[-1]).__name__ != "Crc32cCodec":
            return None
        return tuple(arr.shards), tuple(sharding.chunk_shape)
    except (AttributeError, IndexError, TypeError):
        return None


class ChunkChecker:
    """The inner chunks of one local pack array that a read touches, checked once each."""

    def __init__(self, arr, root: Path):
        import google_crc32c

        self._crc = google_crc32c.value
        self.arr = arr
        self.folder = Path(root) / arr.path
        self.shard, self.chunk = layout(arr)
        self.per_shard = tuple(s // c for s, c in zip(self.shard, self.chunk))
        self._good: dict[str, tuple[tuple[int, int], set[int]]] = {}

    def check(self, region: tuple[tuple[int, int], ...]) -> None:
        """Check every inner chunk that ``region`` (``(start, stop)`` per axis) touches."""
        if any(hi <= lo for lo, hi in region):
            return
        first = [lo // c for (lo, _), c in zip(region, self.chunk)]
        last = [(hi - 1) // c for (_, hi), c in zip(region, self.chunk)]
        pt, py, px, pc = self.per_shard
        by_shard: dict[tuple[int, ...], list[int]] = {}
        for ct in range(first[0], last[0] + 1):
            for cy in range(first[1], last[1] + 1):
                for cx in range(first[2], last[2] + 1):
                    for cc in range(first[3], last[3] + 1):
                        shard = (ct // pt, cy // py, cx // px, cc // pc)
                        inner = (((ct % pt) * py + cy % py) * px + cx % px) * pc + cc % pc
                        by_shard.setdefault(shard, []).append(inner)
        for shard, chunks in by_shard.items():
            self._check_shard(shard, chunks)

    def _check_shard(self, shard: tuple[int, ...], chunks: list[int]) -> None:
        key = self.arr.metadata.encode_chunk_key(shard)
        path = self.folder / key
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return  # absent: all fill value (the reader's blank-frame check decides if that is right)
        version = (st.st_size, st.st_mtime_ns)
        known = self._good.get(key)
        if known is None or known[0] != version:
            known = (version, set())
            self._good[key] = known
        todo = [c for c in chunks if c not in known[1]]
        if not todo:
            return
        n = int(np.prod(self.per_shard))
        with open(path, "rb") as f:
            fd = f.fileno()
            index_bytes = os.pread(fd, n * 16 + 4, st.st_size - (n * 16 + 4))
            first_frame = shard[0] * self.shard[0]
            if len(index_bytes) != n * 16 + 4 or self._crc(index_bytes[:-4]) != int.from_bytes(index_bytes[-4:], "little"):
                raise BadChunk(f"{path}: the shard index fails its CRC-32C", first_frame)
            index = np.frombuffer(index_bytes[:-4], dtype="<u8").reshape(n, 2)
            for c in todo:
                offset, length = (int(v) for v in index[c])
                if offset == _EMPTY and length == _EMPTY:
                    known[1].add(c)
                    continue
                frame = first_frame + (c // (n // self.per_shard[0])) * self.chunk[0]
                if length < 4 or offset + length > st.st_size:
                    raise BadChunk(f"{path}: inner chunk {c} lies outside the shard file", frame)
                data = os.pread(fd, length, offset)
                if len(data) != length or self._crc(data[:-4]) != int.from_bytes(data[-4:], "little"):
                    raise BadChunk(f"{path}: inner chunk {c} fails its CRC-32C", frame)
                known[1].add(c)


def checker_for(arr, root: Path | None) -> ChunkChecker | None:
    """A checker where one is needed: a local store read through zarrs, with chunks gbuf can check."""
    if root is None or layout(arr) is None:
        return None
    from gbuf.datasets import zarr_backend

    if zarr_backend.zarr().config.get("codec_pipeline.path") != zarr_backend.ZARRS_PIPELINE:
        return None  # zarr-python decodes whole chunks and checks each CRC-32C itself
    try:
        return ChunkChecker(arr, root)
    except ImportError:  # google_crc32c comes with zarr; without it zarr-python could not check either
        return None


__all__ = ["ChunkChecker", "BadChunk", "checker_for", "layout"]
