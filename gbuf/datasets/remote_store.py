"""Opening gbuf stores at fsspec URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ...).

Storage options come from the caller or, when none are given, from the
environment variable ``GBUF_STORAGE_OPTIONS`` (a JSON object, for example
``{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}``), so
every command that takes a dataset path (``info``, ``verify``, ``train --data``)
accepts a URL without options of its own.

An optional local cache (``cache_dir=`` or ``GBUF_CACHE_DIR``) keeps a copy of every
chunk (shard) object read. zarr-python 3.1 reads a shard's inner chunks one ranged
request after another, which is slow over a network; the cache fetches each shard
whole, once, and serves every later range from the local file. Metadata
(``zarr.json``) is never cached: a later push may add groups or attrs. Shards of a
finished store are written once, so cached copies stay valid (use a fresh cache
folder for a store whose frames were re-rendered with ``overwrite``). Cache files
are written to a temporary name and renamed, so DataLoader worker processes that
share one cache folder never see a half-written object.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from gbuf.errors import GbufError

CACHE_ENV = "GBUF_CACHE_DIR"
OPTIONS_ENV = "GBUF_STORAGE_OPTIONS"


def is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def storage_options_for(url: str, storage_options: dict | None) -> dict:
    """The caller's options, else those in ``GBUF_STORAGE_OPTIONS``, else none."""
    if storage_options is not None:
        return dict(storage_options)
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as err:
        raise GbufError(f"{OPTIONS_ENV}: not a JSON object ({err})") from None
    if not isinstance(opts, dict):
        raise GbufError(f"{OPTIONS_ENV}: not a JSON object")
    return opts


def filesystem(url: str, storage_options: dict | None = None):
    """``(fs, root)`` for a URL or local path, with a one-line GbufError for unknown protocols."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(url), **storage_options_for(str(url), storage_options))
    except ImportError as err:
        raise GbufError(f"{url}: this protocol needs an extra package ({err})") from None
    except (ValueError, TypeError) as err:
        raise GbufError(f"{url}: cannot use this URL ({err})") from None


def cache_dir_for(cache_dir) -> Path | None:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else None


def open_zarr_store(url: str, *, read_only: bool, storage_options: dict | None = None, cache_dir=None):
    """A zarr Store for the URL (cached when a cache folder is configured and read-only)."""
    from zarr.storage import FsspecStore

    opts = storage_options_for(url, storage_options)
    try:
        store = FsspecStore.from_url(url, storage_options=opts, read_only=read_only)
    except ImportError as err:
        raise GbufError(f"{url}: this protocol needs an extra package ({err})") from None
    except (ValueError, TypeError) as err:
        raise GbufError(f"{url}: cannot use this URL ({err})") from None
    folder = cache_dir_for(cache_dir)
    if folder is not None and read_only:
        # One sub-folder per store URL, so two stores never share cached keys.
        key = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
        store = CachedStore(store, folder / key)
    return store


def _cached_store_class():
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.storage import WrapperStore

    class _CachedStore(WrapperStore):
        """Read-through cache: whole objects fetched once, ranges served from local files."""

        def __init__(self, store, folder: Path):
            super().__init__(store)
            self.folder = Path(folder)

        def __eq__(self, other) -> bool:
            return type(self) is type(other) and self._store == other._store and self.folder == other.folder

        def _local(self, key: str) -> Path:
            return self.folder / key

        async def _fetch(self, key: str, prototype) -> bytes | None:
            path = self._local(key)
            if path.is_file():
                return path.read_bytes()
            buf = await self._store.get(key, prototype)
            if buf is None:
                return None
            data = buf.to_bytes()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: other workers see all of it or none
            return data

        async def get(self, key, prototype, byte_range=None):
            if "/c/" not in f"/{key}":  # metadata: always fresh
                return await self._store.get(key, prototype, byte_range)
            data = await self._fetch(key, prototype)
            if data is None:
                return None
            if byte_range is None:
                pass
            elif isinstance(byte_range, RangeByteRequest):
                data = data[byte_range.start:byte_range.end]
            elif isinstance(byte_range, OffsetByteRequest):
                data = data[byte_range.offset:]
            elif isinstance(byte_range, SuffixByteRequest):
                data = data[-byte_range.suffix:] if byte_range.suffix else b""
            else:  # pragma: no cover - zarr added a new request type
                raise TypeError(f"unsupported byte range {byte_range!r}")
            return prototype.buffer.from_bytes(data)

        async def get_partial_values(self, prototype, key_ranges):
            return [await self.get(key, prototype, rng) for key, rng in key_ranges]

        def __repr__(self) -> str:
            return f"CachedStore({self._store!r}, cache={self.folder})"

    return _CachedStore


def CachedStore(store, folder: Path):
    """Wrap a zarr store with a local read-through cache in ``folder``."""
    return _cached_store_class()(store, folder)
