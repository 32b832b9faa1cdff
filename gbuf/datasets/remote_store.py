"""Opening gbuf stores at fsspec URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ...).

Storage options come from the caller or, when none are given, from the
environment variable ``GBUF_STORAGE_OPTIONS`` (a JSON object, for example
``{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}``), so
every command that takes a dataset path (``info``, ``verify``, ``train --data``)
accepts a URL without options of its own.

An optional local cache (``cache_dir=`` or ``GBUF_CACHE_DIR``) keeps a copy of every
chunk (shard) object read. zarr-python 3.1 reads a shard's inner chunks one ranged
request after another, which is slow over a network; the cache fetches each shard
whole, once, and serves every later range by reading just that range of the local
file. Cached copies are named after the object's version, so a changed remote object
is fetched again rather than served stale: its SHA-256 in the store's
``gbuf-manifest.json`` (every pushed store has one; the bytes are checked against it
when they arrive), else its ETag/mtime and size (one metadata request per object and
process; an object with no such metadata is not cached). Metadata (``zarr.json``) is
never cached: a later push may add groups or attrs. Superseded copies stay in the
folder until it is removed. Cache files are written to a temporary name and renamed,
so DataLoader worker processes that share one cache folder never see a half-written
object.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gbuf import fileio
from gbuf.datasets.sharing.manifest import MANIFEST, Entry, Manifest
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


def _read_range(path: Path, byte_range) -> bytes:
    """Bytes of a cached object for a zarr byte request, reading only that range from the file."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if byte_range is None:
            start, end = 0, size
        elif isinstance(byte_range, RangeByteRequest):
            start, end = byte_range.start, min(byte_range.end, size)
        elif isinstance(byte_range, OffsetByteRequest):
            start, end = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, end = max(0, size - byte_range.suffix), size
        else:  # pragma: no cover - zarr added a new request type
            raise TypeError(f"unsupported byte range {byte_range!r}")
        parts = []
        while start < end:
            chunk = os.pread(fd, end - start, start)
            if not chunk:
                break
            parts.append(chunk)
            start += len(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _slice(data: bytes, byte_range) -> bytes:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start:byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset:]
    if isinstance(byte_range, SuffixByteRequest):
        return data[len(data) - byte_range.suffix:] if byte_range.suffix else b""
    raise TypeError(f"unsupported byte range {byte_range!r}")  # pragma: no cover


#: Object metadata that changes whenever an object's content does (all present are used).
_VERSION_FIELDS = ("ETag", "etag", "Content-MD5", "Digest", "md5", "md5Hash", "crc32c", "generation",
                   "VersionId", "version_id", "LastModified", "Last-Modified", "last_modified", "updated",
                   "mtime", "ino", "created")


def _manifest_entries(raw: bytes) -> dict[str, Entry]:
    """The files of a gbuf-manifest.json, or {} if it is not a valid one (objects are then keyed by ETag)."""
    try:
        return Manifest.from_bytes(raw, MANIFEST).files
    except GbufError:
        return {}


def _cached_store_class():
    from zarr.abc.store import Store
    from zarr.storage import WrapperStore

    class _CachedStore(WrapperStore):
        """Read-through cache: whole chunk objects fetched once, ranges read from the local copy.

        Each cached copy is named after the object's version: its SHA-256 from the store's
        ``gbuf-manifest.json`` (and checked against it on arrival), or, for an object the
        manifest does not list, its size and ETag/mtime (one metadata request per object
        and process). A changed remote object therefore gets a new cached copy instead of
        the old one being served.
        """

        def __init__(self, store, folder: Path):
            super().__init__(store)
            self.folder = Path(folder)
            self._manifest: dict | None = None  # read on first use
            self._versions: dict[str, tuple | None] = {}

        def __eq__(self, other) -> bool:
            return type(self) is type(other) and self._store == other._store and self.folder == other.folder

        def _where(self, key: str) -> str:
            return f"{getattr(self._store, 'path', '')}/{key}".lstrip("/")

        async def _version(self, key: str, prototype) -> tuple | None:
            """(tag, sha256 or None) naming this version of the object; None: not cacheable."""
            if key in self._versions:
                return self._versions[key]
            if self._manifest is None:
                raw = await self._store.get(MANIFEST, prototype)
                self._manifest = _manifest_entries(raw.to_bytes()) if raw is not None else {}
            entry = self._manifest.get(key)
            version = None
            if entry is not None:
                version = (f"sha256-{entry.sha256}", entry.sha256, entry.size)
            else:
                fs, path = getattr(self._store, "fs", None), getattr(self._store, "path", None)
                info = None
                if fs is not None and path is not None:
                    try:
                        info = await fs._info(f"{path.rstrip('/')}/{key}")
                    except (FileNotFoundError, NotImplementedError, AttributeError):
                        info = None
                fields = {f: str(info[f]) for f in _VERSION_FIELDS if isinstance(info, dict) and info.get(f)}
                if fields:  # size alone is no version: such objects are read uncached
                    fields["size"] = str(info.get("size"))
                    tag = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
                    version = (f"v-{tag}", None, None)
            self._versions[key] = version
            return version

        async def get(self, key, prototype, byte_range=None):
            if "/c/" not in f"/{key}":  # metadata: always fresh
                return await self._store.get(key, prototype, byte_range)
            version = await self._version(key, prototype)
            if version is None:
                return await self._store.get(key, prototype, byte_range)
            tag, digest, size = version
            path = self.folder / f"{key}.{tag}"
            if path.is_file():
                return prototype.buffer.from_bytes(_read_range(path, byte_range))
            buf = await self._store.get(key, prototype)
            if buf is None:
                return None
            data = buf.to_bytes()
            if digest is not None and (len(data) != size or hashlib.sha256(data).hexdigest() != digest):
                raise GbufError(f"{self._where(key)}: does not match its sha256 in {MANIFEST} (corrupted, "
                                f"or the store was pushed again since it was opened: open it again)")
            path.parent.mkdir(parents=True, exist_ok=True)
            fileio.write_bytes(path, data)  # atomic: other workers see all of it or none
            return prototype.buffer.from_bytes(_slice(data, byte_range))

        async def get_partial_values(self, prototype, key_ranges):
            return [await self.get(key, prototype, rng) for key, rng in key_ranges]

        # zarr 3.4 reads a shard's inner chunks through get_ranges and metadata through
        # _get_many, which WrapperStore hands straight to the wrapped store: both must come
        # through get() above, or every range is a request again and nothing is cached.
        async def get_ranges(self, key, byte_ranges, *, prototype, **coalescing):
            options = {k: v for k, v in coalescing.items() if v is not None}  # None: the default
            async for group in Store.get_ranges(self, key, byte_ranges, prototype=prototype, **options):
                yield group

        async def _get_many(self, requests):
            for key, prototype, byte_range in requests:
                yield key, await self.get(key, prototype, byte_range)

        def __repr__(self) -> str:
            return f"CachedStore({self._store!r}, cache={self.folder})"

    return _CachedStore


def CachedStore(store, folder: Path):
    """Wrap a zarr store with a local read-through cache in ``folder``."""
    return _cached_store_class()(store, folder)
