"""``push(store, url)`` and ``pull(url, store)``: publish and fetch gbuf stores over fsspec.

A pushed store carries a manifest, ``gbuf-manifest.json`` at its root: every file's
relative path, size and SHA-256, and the dataset's identity. Push writes it last,
so a destination without it is an unfinished push, and pull refuses it.

Every byte is read once and hashed once on each side, while it is in memory:

Push
  * lists the local store (skipping writer state, ``.gbuf/``) without reading it;
    refuses a symlink that leads out of the store, and a store not complete;
  * reads what the destination already holds: the previous manifest and the push
    journal (``gbuf-manifest.partial.json``, the files an interrupted push finished,
    flushed every few seconds). A file listed there with the same size and the same
    SHA-256 as the local file is not sent again, so a second push sends nothing and
    a rerun after an interruption sends only what is missing. The local SHA-256
    comes from a cache, ``<store>/.gbuf/sharing-cache.json``, keyed by each file's
    size, mtime, ctime and inode (a file changed since is hashed again);
  * refuses a destination that holds another dataset (or non-gbuf files) unless
    ``force``;
  * sends the rest in parallel threads, hashing the bytes as they are read: the
    manifest records the SHA-256 of exactly the bytes sent (a file that changes
    while it is read is an error). At the destination every object is checked by
    size (one listing; on a local folder, each file as written); ``readback``
    downloads every object sent again and compares its SHA-256 with the manifest;
  * writes the manifest last and removes files the new manifest no longer names.

  The source store is not modified: the card (``README.md``) is generated in
  memory and sent (cached in ``.gbuf/``), and the dataset's identity is kept in
  ``.gbuf/dataset_id`` unless the store already names one. Only ``license=``
  writes, as asked, into the store's root attrs.

Pull
  * reads the manifest (a URL without one is refused: an unfinished push, or not a
    pushed store), refuses paths outside the destination (absolute, ``..``);
  * downloads in parallel threads what the local copy lacks (a local file counts
    when its size and SHA-256, cached as for push, match the manifest), hashes the
    received bytes in memory and compares them with the manifest before they
    take their name (temporary name, then rename); an object that arrives
    corrupted is named with its sequence, pack and frames, and nothing is written
    for it;
  * with ``frame_check``, also decodes every frame and checks its CRC-32
    (``gbuf dataset verify``): this catches a source whose manifest agrees with
    corrupt data, at the cost of decoding the whole store;
  * writes the manifest locally last (an interrupted pull lacks it; the rerun
    finishes).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import hashlib
import json
import os
import posixpath
import threading
import time
import uuid
from pathlib import Path, PurePosixPath

from gbuf.datasets import format as fmt
from gbuf.datasets import remote_store
from gbuf.datasets.store import STATE_DIR
from gbuf.errors import GbufError

MANIFEST = "gbuf-manifest.json"
JOURNAL = "gbuf-manifest.partial.json"
MANIFEST_FORMAT = "gbuf-manifest"
CARD = "README.md"
#: Inside ``<store>/.gbuf/``: the local SHA-256 cache and the card cache; the dataset id.
CACHE_FILE = "sharing-cache.json"
ID_FILE = "dataset_id"
#: Files that are not store content (never listed in a manifest).
_NOT_CONTENT = {MANIFEST, JOURNAL}
_JOURNAL_FLUSH_S = 2.0
#: Read/hash/write block: small enough to stay in the CPU cache between the three.
_BLOCK = 1 << 20
#: Objects up to this size travel in one request; larger ones are streamed in blocks.
_WHOLE_MAX = 64 << 20
_REMOTE_BLOCK = 8 << 20
#: A file modified this close to the moment it was hashed is not cached: a second
#: change within one file-system timestamp tick would keep the same mtime.
_RACY_NS = 100_000_000
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_O_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


# -- hashing and manifests -------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_manifest(dataset_id: str | None, files: dict) -> dict:
    return {"format": MANIFEST_FORMAT, "version": 1, "hash": "sha256", "dataset_id": dataset_id,
            "files": dict(sorted(files.items())), "total_bytes": sum(e["size"] for e in files.values())}


def check_manifest(manifest, where: str) -> dict:
    """Refuse a manifest that is malformed or names paths outside the store."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise GbufError(f"{where}: not a gbuf manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise GbufError(f"{where}: manifest has no file list")
    for rel, entry in files.items():
        safe_relpath(rel, where)
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise GbufError(f"{where}: manifest entry for {rel!r} lacks a size or sha256")
    return manifest


def safe_relpath(rel, where: str) -> str:
    """A manifest path must stay inside the store: relative, no ``..``, no drive, no backslash."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or ":" in rel:
        raise GbufError(f"{where}: manifest names an unsafe path {rel!r}; refused")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise GbufError(f"{where}: manifest names a path outside the store {rel!r}; refused")
    if p.parts[0] == STATE_DIR or rel in _NOT_CONTENT:
        raise GbufError(f"{where}: manifest names a reserved path {rel!r}; refused")
    return rel


# -- local files: listing, reading, writing --------------------------------------------

def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")  # an interrupted transfer's file


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _scan_source(root: Path) -> dict[str, tuple[str, os.stat_result]]:
    """The files of a store to push: ``{rel: (path to read, stat)}``; nothing is read.

    Symlinks are untrusted input: one that resolves inside the store is pushed as the
    file (or folder) it names; one that leads outside it, dangles or loops is refused.
    """
    real_root = os.path.realpath(root)
    files: dict[str, tuple[str, os.stat_result]] = {}
    linked_dirs: set[str] = set()
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if (not prefix and entry.name in (STATE_DIR, *_NOT_CONTENT, CARD)) or _is_temporary(entry.name):
                    continue  # writer state, manifests, the card (generated) and temporary files
                path = entry.path
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _inside(target, real_root):
                        raise GbufError(f"{root}/{rel}: a symlink to {target}, outside the store; refused "
                                        f"(copy the file into the store or remove the link)")
                    if not os.path.exists(target):
                        raise GbufError(f"{root}/{rel}: a symlink to {target}, which does not exist; refused")
                    path = target
                    if os.path.isdir(path):
                        # Only links can make a walk loop: each linked folder is entered once.
                        if path in linked_dirs:
                            raise GbufError(f"{root}/{rel}: reaches {path} a second time through a symlink "
                                            f"(a loop or a duplicate); refused")
                        linked_dirs.add(path)
                        stack.append((rel + "/", path))
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", path))
                    continue
                st = os.stat(path) if entry.is_symlink() else entry.stat(follow_symlinks=False)
                if not _regular(st):
                    raise GbufError(f"{root}/{rel}: not a regular file; refused")
                files[rel] = (path, st)
    return files


def _regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _scan_local(root: Path) -> tuple[dict[str, os.stat_result], list[Path]]:
    """A local folder's files (links not followed) and temporary files, outside ``.gbuf/``."""
    files: dict[str, os.stat_result] = {}
    temporary: list[Path] = []
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not prefix and entry.name == STATE_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((prefix + entry.name + "/", entry.path))
            elif _is_temporary(entry.name):
                temporary.append(Path(entry.path))
            else:
                files[prefix + entry.name] = entry.stat(follow_symlinks=False)
    return files, temporary


_tls = threading.local()


def _buffer() -> memoryview:
    """This thread's block buffer, reused for every file (no allocation per read)."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = memoryview(bytearray(_BLOCK))
    return buf


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, max(size, _BLOCK))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size = max(0, size - len(chunk))


def _unchanged(where: str, before: os.stat_result, fd: int, nbytes: int) -> None:
    after = os.fstat(fd)
    if nbytes != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise GbufError(f"{where}: changed while being read; rerun when it is no longer being written")


def _open_source(path: str, where: str) -> int:
    try:
        return os.open(path, _O_READ)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW: a symlink (listed as a file, or swapped in since)
            raise GbufError(f"{where}: is a symlink; refused (links are not followed)") from None
        raise


def _hash_file(path: str, where: str) -> tuple[str, os.stat_result]:
    """SHA-256 of a local file (one pass, this thread's buffer) and its stat."""
    fd = _open_source(path, where)
    try:
        before = os.fstat(fd)
        h = hashlib.sha256()
        buf = _buffer()
        total = 0
        while n := os.readv(fd, [buf]):
            h.update(buf[:n])
            total += n
        _unchanged(where, before, fd, total)
        return h.hexdigest(), before
    finally:
        os.close(fd)


class _Dirs:
    """``mkdir -p`` once per folder (transfers share parents)."""

    def __init__(self):
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def make(self, folder: Path) -> None:
        key = str(folder)
        if key not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._made.add(key)


def _copy_local(src: str, dst: Path, dirs: _Dirs, where: str, check=None) -> tuple[int, str, os.stat_result]:
    """Copy one local file to ``dst`` (temporary name, then rename), hashing the bytes on the way.

    ``check(size, sha, tmp)`` runs before the rename and may refuse the file.
    Returns (size, sha256, stat of the source as read).
    """
    dirs.make(dst.parent)
    fd_in = _open_source(src, where)
    tmp = _tmp_path(dst)
    try:
        before = os.fstat(fd_in)
        fd_out = os.open(tmp, _O_WRITE, 0o644)
        try:
            h = hashlib.sha256()
            buf = _buffer()
            total = 0
            while n := os.readv(fd_in, [buf]):
                block = buf[:n]
                h.update(block)
                _write_all(fd_out, block)
                total += n
            _unchanged(where, before, fd_in, total)
        finally:
            os.close(fd_out)
        digest = h.hexdigest()
        if check is not None:
            check(total, digest, tmp)
        os.replace(tmp, dst)
        return total, digest, before
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(fd_in)


def _write_local(dst: Path, data: bytes, dirs: _Dirs) -> None:
    dirs.make(dst.parent)
    tmp = _tmp_path(dst)
    try:
        fd = os.open(tmp, _O_WRITE, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class _HashCache:
    """``<store>/.gbuf/sharing-cache.json``: local files' SHA-256 keyed by (size, mtime, ctime, inode).

    A cache only: unreadable or missing means "hash again"; failing to save it is
    not an error (a read-only store pushes as well, only without the cache).
    """

    def __init__(self, root: Path):
        self.path = root / STATE_DIR / CACHE_FILE
        self._lock = threading.Lock()
        self._dirty = False
        try:
            data = json.loads(self.path.read_text())
            self.files = data["files"] if isinstance(data.get("files"), dict) else {}
            self.card = data.get("card") if isinstance(data.get("card"), dict) else {}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            self.files, self.card = {}, {}

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        entry = self.files.get(rel)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == _stat_key(st):
            return entry[4]
        return None

    def record(self, rel: str, st: os.stat_result, digest: str, *, racy_check: bool = True) -> None:
        if racy_check and st.st_mtime_ns > time.time_ns() - _RACY_NS:
            return  # too recent to trust its mtime later; it will be hashed again next time
        with self._lock:
            self.files[rel] = [*_stat_key(st), digest]
            self._dirty = True

    def set_card(self, key: str, text: str) -> None:
        self.card = {"key": key, "text": text}
        self._dirty = True

    def save(self, keep: set[str] | None = None) -> None:
        if not self._dirty:
            return
        files = {k: v for k, v in self.files.items() if keep is None or k in keep}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(exist_ok=True)
            tmp = _tmp_path(self.path)
            tmp.write_text(json.dumps({"version": 1, "files": files, "card": self.card}))
            os.replace(tmp, self.path)


# -- errors --------------------------------------------------------------------------

def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    code = getattr(err, "response", None)
    if isinstance(code, dict):  # botocore ClientError
        error = code.get("Error", {})
        text = f"{error.get('Code', '')} {error.get('Message', '')}".strip() or text
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def _remote_errors(url: str, doing: str):
    """Turn any transport/credential error into one GbufError line naming the URL."""
    try:
        yield
    except GbufError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - botocore, aiohttp, OSError, ... all mean the same to the user
        raise GbufError(f"{url}: {doing} failed ({_describe(err)})") from None


# -- progress ------------------------------------------------------------------------

class _Progress:
    """A rich progress bar in bytes with bytes/s, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str):
        self._bar = None
        self._lock = threading.Lock()
        if enabled and total:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(label, total=total)
            self._bar.start()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _local_jobs(jobs: int) -> int:
    """Threads for work that only reads, hashes and writes local files: CPU-bound, so no more
    than the CPUs (more threads only contend; measured with benchmarks/transfer.py)."""
    return max(1, min(jobs, os.cpu_count() or 1))


def _run_all(work, batches, jobs: int) -> int:
    """Run ``work`` on every item, batch after batch, in threads; stop at the first error.

    Transfers not yet started are cancelled; those in flight finish (and are recorded).
    """
    total = 0
    with cf.ThreadPoolExecutor(max(1, jobs)) as pool:
        for batch in batches:
            futures = [pool.submit(work, item) for item in batch]
            try:
                for future in cf.as_completed(futures):
                    total += future.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return total


# -- push ----------------------------------------------------------------------------

def _root_attrs(root: Path) -> dict:
    try:
        meta = json.loads((root / "zarr.json").read_text())
    except FileNotFoundError:
        raise GbufError(f"{root}: not a gbuf store (no zarr.json at its root)") from None
    except (OSError, ValueError) as err:
        raise GbufError(f"{root}/zarr.json: unreadable ({type(err).__name__})") from None
    attrs = (meta.get("attributes") or {}).get(fmt.ATTRS_KEY) if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or attrs.get("format") != fmt.FORMAT_NAME:
        raise GbufError(f"{root}: not a gbuf store (root attrs lack gbuf.format)")
    if str(attrs.get("version", "0")).split(".")[0] != fmt.FORMAT_VERSION.split(".")[0]:
        raise GbufError(f"{root}: gbuf format {attrs.get('version')} is not readable by this gbuf "
                        f"(reads {fmt.FORMAT_VERSION})")
    return attrs


def _check_pushable(root: Path, files: dict) -> dict:
    """The root attrs; refuses a store with a resolution group that is not complete.

    Reads the group metadata (``<sequence>/<group>/zarr.json``) as JSON: no zarr
    machinery, so the check costs milliseconds whatever the store's size.
    """
    attrs = _root_attrs(root)
    for rel, (path, _) in files.items():
        parts = rel.split("/")
        if len(parts) != 3 or parts[2] != "zarr.json":
            continue
        try:
            meta = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise GbufError(f"{root}/{rel}: unreadable ({type(err).__name__})") from None
        if meta.get("node_type") == "group" and not (meta.get("attributes") or {}).get(fmt.ATTRS_KEY, {}).get(
                "complete"):
            raise GbufError(f"{root}/{parts[0]}/{parts[1]}: not complete (finish the render/degrade first); "
                            f"refusing to push")
    return attrs


def _dataset_id(root: Path, attrs: dict) -> str:
    """The store's identity, which lets push tell "the same dataset again" from "another one".

    It must survive between pushes, so it is recorded, but not in the store's content
    (push leaves that untouched): the root attrs' ``dataset_id`` if the store already
    has one (an earlier gbuf wrote it there on the first push), else the id of the manifest
    a pull left (a pulled copy pushes as the same dataset), else ``.gbuf/dataset_id``,
    written on the first push (a copy of the store made with ``cp -r`` keeps it). A store
    where it cannot be written (read-only) is named by a hash of its root metadata instead,
    which is as stable as the store itself.
    """
    if attrs.get("dataset_id"):
        return str(attrs["dataset_id"])
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        pulled = json.loads((root / MANIFEST).read_text())["dataset_id"]
        if isinstance(pulled, str) and pulled:
            return pulled
    path = root / STATE_DIR / ID_FILE
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    new = uuid.uuid4().hex
    tmp = _tmp_path(path)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(new + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return hashlib.sha256((root / "zarr.json").read_bytes()).hexdigest()[:32]
    return new


def _card_bytes(root: Path, files: dict, dataset_id: str, cache: _HashCache) -> bytes:
    """The dataset card for this state of the store (generated from its attrs, cached in ``.gbuf/``)."""
    from gbuf import __version__
    from gbuf.datasets.datacard import card_text

    h = hashlib.sha256(json.dumps([__version__, dataset_id, str(root.resolve().name)]).encode())
    for rel in sorted(files):
        st = files[rel][1]
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = h.hexdigest()
    if cache.card.get("key") == key and isinstance(cache.card.get("text"), str):
        return cache.card["text"].encode()
    text = card_text(root, dataset_id=dataset_id)
    cache.set_card(key, text)
    return text.encode()


def _read_json(fs, path: str, url: str):
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise GbufError(f"{url}: {posixpath.basename(path)} is not valid JSON") from None


def _dumps(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root else rel


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_object_store(fs) -> bool:
    # Object stores replace an object atomically on PUT; file systems need tmp + rename.
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2") for p in protocols)


def _remote_listing(fs, root: str) -> dict[str, int]:
    try:
        listing = fs.find(root, detail=True) if fs.exists(root) else {}
    except FileNotFoundError:
        listing = {}
    return {posixpath.relpath(p, root) if root else p: int(info.get("size") or 0)
            for p, info in listing.items() if info.get("type", "file") != "directory"}


class _Destination:
    """Where push writes: a local folder (plain file calls) or any fsspec file system."""

    def __init__(self, fs, root: str, url: str):
        self.fs, self.root, self.url = fs, root, url
        self.local = _is_local(fs)
        self.atomic_put = _is_object_store(fs)
        self.dirs = _Dirs()

    def path(self, rel: str) -> str:
        return _join(self.root, rel)

    def listing(self) -> dict[str, int]:
        if self.local:
            files, temporary = _scan_local(Path(self.root))
            present = {rel: st.st_size for rel, st in files.items()}
            # An interrupted push's temporary files are junk of a push destination.
            present.update({p.relative_to(self.root).as_posix(): 0 for p in temporary})
            return present
        return _remote_listing(self.fs, self.root)

    def read_json(self, rel: str):
        return _read_json(self.fs, self.path(rel), self.url)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            _write_local(Path(self.path(rel)), data, self.dirs)
        elif self.atomic_put:
            self.fs.pipe_file(self.path(rel), data)
        else:
            target = self.path(rel)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            tmp = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.{uuid.uuid4().hex}.part"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, target)

    def send_file(self, rel: str, src: str, where: str) -> tuple[int, str, os.stat_result]:
        """Send a local file: read once, hashed in memory on the way; returns (size, sha256, stat)."""
        if self.local:
            return _copy_local(src, Path(self.path(rel)), self.dirs, where)
        fd = _open_source(src, where)
        try:
            before = os.fstat(fd)
            if before.st_size <= _WHOLE_MAX:
                data = _read_all(fd, before.st_size)
                _unchanged(where, before, fd, len(data))
                digest = sha256(data)
                self.write_bytes(rel, data)
                return len(data), digest, before
            # Large: streamed in blocks (an object store's multipart upload appears whole at the end).
            target = self.path(rel)
            name = target
            if not self.atomic_put:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                name = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.{uuid.uuid4().hex}.part"
            h = hashlib.sha256()
            total = 0
            with self.fs.open(name, "wb") as out:
                while block := os.read(fd, _REMOTE_BLOCK):
                    h.update(block)
                    out.write(block)
                    total += len(block)
                _unchanged(where, before, fd, total)
            if name != target:
                self.fs.mv(name, target)
            return total, h.hexdigest(), before
        finally:
            os.close(fd)

    def readback(self, rel: str) -> tuple[int, str]:
        h = hashlib.sha256()
        total = 0
        with self.fs.open(self.path(rel), "rb") as f:
            while block := f.read(_REMOTE_BLOCK):
                h.update(block)
                total += len(block)
        return total, h.hexdigest()

    def remove(self, rels: list[str]) -> None:
        if self.local:
            for rel in rels:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(rel))
        elif rels:
            self.fs.rm([self.path(r) for r in rels])


def push(store, url: str, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: bool = False, readback: bool = False, license: str | None = None) -> dict:
    """Publish a local store at ``url``; returns counts of files/bytes sent and skipped."""
    root = Path(store)
    if remote_store.is_url(str(store)):
        raise GbufError(f"{store}: push reads a local store; pull it first")
    if str(url).split("://")[0].lower() in ("http", "https"):
        raise GbufError(f"{url}: http(s) is read-only; push to a folder, s3://, gs:// or az:// and serve that")
    if not root.is_dir():
        raise GbufError(f"{root}: no such dataset")
    if license is not None:
        from gbuf.datasets.datacard import set_license

        if not license.strip():
            raise GbufError(f"{root}: license must not be empty")
        _root_attrs(root)  # refuse non-gbuf folders before touching attrs
        set_license(root, license.strip())  # asked for: the license belongs to the store's attrs
    files = _scan_source(root)
    attrs = _check_pushable(root, files)
    dataset_id = _dataset_id(root, attrs)
    cache = _HashCache(root)
    card = _card_bytes(root, files, dataset_id, cache)
    fs, dest_root = remote_store.filesystem(url, storage_options)
    dest = _Destination(fs, dest_root, url)

    with _remote_errors(url, "reading the destination"):
        present = dest.listing()
        old = dest.read_json(MANIFEST) if MANIFEST in present else None
        journal = dest.read_json(JOURNAL) if JOURNAL in present else None

    known: dict[str, dict] = {}
    previous_ids = {m.get("dataset_id") for m in (old, journal) if isinstance(m, dict)}
    previous_ids.discard(None)
    if not force:
        if previous_ids and previous_ids != {dataset_id}:
            raise GbufError(f"{url}: holds a different dataset (id {min(previous_ids)}, pushing "
                            f"{dataset_id}); use --force to replace it")
        if present and not previous_ids:
            raise GbufError(f"{url}: not empty and not a gbuf push destination; use --force to write into it")
        for m in (old, journal):  # journal last: it is newer than the manifest it follows
            if isinstance(m, dict):
                check_manifest(m, f"{url}/{MANIFEST}")
                known.update(m["files"])

    # A file counts as sent when a finished upload recorded its size and hash, it is
    # there with that size, and the local file has that size and hash.
    card_entry = {"size": len(card), "sha256": sha256(card)}
    sizes = {rel: st.st_size for rel, (_, st) in files.items()} | {CARD: len(card)}
    candidates = [rel for rel in sizes
                  if rel in known and present.get(rel) == known[rel]["size"] == sizes[rel]]
    local_sha: dict[str, str] = {CARD: card_entry["sha256"]}

    def local_hash(rel: str) -> None:
        path, st = files[rel]
        digest = cache.lookup(rel, st)
        if digest is None:
            digest, st = _hash_file(path, f"{root}/{rel}")
            cache.record(rel, st, digest)
        local_sha[rel] = digest

    with cf.ThreadPoolExecutor(_local_jobs(jobs)) as pool:
        list(pool.map(local_hash, [rel for rel in candidates if rel != CARD]))
    done = {rel: {"size": known[rel]["size"], "sha256": known[rel]["sha256"]}
            for rel in candidates if local_sha[rel] == known[rel]["sha256"]}
    todo = sorted((rel for rel in sizes if rel not in done), key=lambda rel: (not rel.endswith("zarr.json"), rel))

    journal_state = {"format": MANIFEST_FORMAT, "version": 1, "hash": "sha256",
                     "dataset_id": dataset_id, "files": dict(done)}
    lock = threading.Lock()
    last_flush = [time.monotonic()]

    def flush(force_now=False):
        with lock:
            if force_now or time.monotonic() - last_flush[0] > _JOURNAL_FLUSH_S:
                dest.write_bytes(JOURNAL, _dumps(journal_state))
                last_flush[0] = time.monotonic()

    def upload(rel: str) -> int:
        if rel == CARD:
            dest.write_bytes(CARD, card)
            entry = card_entry
        else:
            path, _ = files[rel]
            size, digest, st = dest.send_file(rel, path, f"{root}/{rel}")
            entry = {"size": size, "sha256": digest}
            cache.record(rel, st, digest)
        if readback:
            got_size, got_sha = dest.readback(rel)
            if (got_size, got_sha) != (entry["size"], entry["sha256"]):
                raise GbufError(f"{url}/{rel}: arrived corrupted ({got_size} bytes, sha256 {got_sha[:12]}... "
                                f"read back; sent {entry['size']} bytes, sha256 {entry['sha256'][:12]}...)")
        with lock:
            journal_state["files"][rel] = entry
        flush()
        bar.advance(entry["size"])
        return entry["size"]

    bar = _Progress(progress, sum(sizes[r] for r in todo), "push")
    sent = 0
    stale: list[str] = []
    try:
        with _remote_errors(url, "push"):
            try:
                if dest.local:
                    dest.dirs.make(Path(dest_root))
                elif not dest.atomic_put:
                    fs.makedirs(dest_root, exist_ok=True)
                # The old manifest is withdrawn first: while files change, the destination is unfinished.
                dest.write_bytes(JOURNAL, _dumps(journal_state))
                if old is not None:
                    dest.remove([MANIFEST])
                sent = _run_all(upload, [todo], _local_jobs(jobs) if dest.local else jobs)
            finally:
                bar.close()
                with contextlib.suppress(Exception):
                    flush(force_now=True)
            manifest = _new_manifest(dataset_id, journal_state["files"])
            if dest.local:
                after = present  # every file sent was checked as written (size and hash in memory)
            else:
                # Arrival check: every object is there with its size (one listing, not one request each).
                after = _remote_listing(fs, dest_root)
                for rel, entry in manifest["files"].items():
                    if after.get(rel) != entry["size"]:
                        raise GbufError(f"{url}/{rel}: has {after.get(rel)} bytes after upload, "
                                        f"expected {entry['size']}")
            dest.write_bytes(MANIFEST, _dumps(manifest))
            dest.remove([JOURNAL])
            # Files the new manifest does not name go, but only from a gbuf push destination
            # (--force into a folder of other things never deletes them).
            stale = sorted(r for r in after if r not in manifest["files"] and r not in _NOT_CONTENT) \
                if previous_ids else []
            dest.remove(stale)
    finally:
        cache.save(keep=set(files))
    return {"files": len(manifest["files"]), "sent_files": len(todo), "sent_bytes": sent,
            "skipped_files": len(done), "total_bytes": manifest["total_bytes"], "dataset_id": dataset_id,
            "removed_files": len(stale)}


# -- pull ----------------------------------------------------------------------------

def _shard_frames(root: Path, rel: str, data: bytes | None = None) -> str:
    """Name the sequence, group, pack, buffers and frames an object holds (for error messages).

    With the received (corrupt) bytes, the shard is decoded in memory frame by frame
    and compared with the group's per-frame checksums, to name the frames that differ.
    """
    parts = rel.split("/")
    if not (len(parts) >= 5 and parts[3] == "c"):
        return rel
    seq, res, pack = parts[0], parts[1], parts[2]
    try:
        meta = json.loads((root / seq / res / pack / "zarr.json").read_text())
        group = json.loads((root / seq / res / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]
        shard = int(parts[4])
        n = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        first, last = shard * n, min(meta["shape"][0], (shard + 1) * n)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return f"sequence {seq}, group {res}, pack {pack!r}"
    buffers = [b for b, spec in group.get("buffers", {}).items() if spec.get("pack") == pack]
    where = f"sequence {seq}, group {res}, pack {pack!r} ({', '.join(buffers)})"
    bad = _bad_frames(meta, group, pack, rel, data, first, last) if data is not None else None
    if bad:
        return f"{where}, frame(s) {', '.join(map(str, bad))}"
    return f"{where}, frames {first}-{last - 1}"


def _bad_frames(meta: dict, group: dict, pack: str, rel: str, data: bytes, first: int, last: int):
    """Frames of a received shard that do not decode or whose checksum differs (None if unknown)."""
    try:
        import zarr
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        from gbuf.datasets.writer import frame_checksum

        expected = (group.get("checksums") or {}).get(pack)
        if not expected:
            return None
        proto = default_buffer_prototype()
        key = "/".join(rel.split("/")[3:])
        store = MemoryStore({"zarr.json": proto.buffer.from_bytes(json.dumps(meta).encode()),
                             key: proto.buffer.from_bytes(data)})
        array = zarr.open_array(store, mode="r")
        bad = []
        for t in range(first, last):
            try:
                if frame_checksum(array[t]) != expected[t]:
                    bad.append(t)
            except Exception:  # noqa: BLE001 - does not decode
                bad.append(t)
        return bad
    except Exception:  # noqa: BLE001 - only an error message's detail is lost
        return None


def _is_gbuf_root(root: Path) -> bool:
    try:
        attrs = json.loads((root / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(attrs, dict) and attrs.get("format") == fmt.FORMAT_NAME


def _read_manifest(fs, src: str, url: str) -> dict:
    with _remote_errors(url, "reading the manifest"):
        try:
            raw = fs.cat_file(_join(src, MANIFEST))
        except FileNotFoundError:
            unfinished = False
            with contextlib.suppress(Exception):
                unfinished = fs.exists(_join(src, JOURNAL))
            if unfinished:
                raise GbufError(f"{url}: no {MANIFEST}: its push is unfinished (a push journal is there); "
                                f"rerun the push, then pull") from None
            raise GbufError(f"{url}: no {MANIFEST}: not a pushed gbuf store (pull fetches what "
                            f"gbuf dataset push published; a store that was never pushed can be read in "
                            f"place, e.g. gbuf dataset verify URL)") from None
    try:
        return check_manifest(json.loads(raw), f"{url}/{MANIFEST}")
    except json.JSONDecodeError:
        raise GbufError(f"{url}/{MANIFEST}: not valid JSON") from None


def pull(url: str, store, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: bool = False, frame_check: bool = False) -> dict:
    """Fetch a pushed store into the local folder ``store``; every object's SHA-256 checked on arrival.

    ``frame_check`` also decodes every frame and checks its CRC-32 once the files are in.
    """
    root = Path(store)
    fs, src = remote_store.filesystem(url, storage_options)
    manifest = _read_manifest(fs, src, url)

    # The local folder: empty, an earlier pull of this dataset, or refused.
    if root.exists() and any(root.iterdir()):
        local_ids = set()
        for marker in (MANIFEST, JOURNAL):  # a finished or an interrupted pull
            with contextlib.suppress(Exception):
                local_ids.add(json.loads((root / marker).read_text())["dataset_id"])
        with contextlib.suppress(Exception):
            local_ids.add(json.loads((root / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]["dataset_id"])
        with contextlib.suppress(OSError):
            local_ids.add((root / STATE_DIR / ID_FILE).read_text().strip())
        if manifest.get("dataset_id") not in local_ids:
            if not (root / "zarr.json").is_file() or not local_ids and not _is_gbuf_root(root):
                # Pull removes files the manifest does not name: never do that to a folder of other things.
                raise GbufError(f"{root}: not empty and not a gbuf store; pull into an empty folder")
            if not force:
                raise GbufError(f"{root}: holds another dataset; use --force to replace it")
    root.mkdir(parents=True, exist_ok=True)
    local, leftovers = _scan_local(root)
    cache = _HashCache(root)
    # The local copy is unfinished until this pull ends: the journal names what it is becoming.
    _write_local(root / JOURNAL, _dumps(manifest), _Dirs())
    if (root / MANIFEST).is_file():
        (root / MANIFEST).unlink()
    for leftover in leftovers:  # an interrupted pull's temporary files
        with contextlib.suppress(OSError):
            leftover.unlink()

    files = manifest["files"]

    def have(rel: str) -> bool:
        st = local[rel]
        digest = cache.lookup(rel, st)
        if digest is None:
            digest, st = _hash_file(str(root / rel), f"{root}/{rel}")
            cache.record(rel, st, digest)
        return digest == files[rel]["sha256"]

    candidates = [rel for rel in files if rel in local and _regular(local[rel])
                  and local[rel].st_size == files[rel]["size"]]
    with cf.ThreadPoolExecutor(_local_jobs(jobs)) as pool:
        present = {rel for rel, ok in zip(candidates, pool.map(have, candidates)) if ok}
    todo = [rel for rel in files if rel not in present]
    # Metadata first: error messages about a shard read the array's zarr.json.
    todo.sort(key=lambda rel: (not rel.endswith("zarr.json"), rel))
    bar = _Progress(progress, sum(files[r]["size"] for r in todo), "pull")
    dirs = _Dirs()
    source_is_local = _is_local(fs)
    http = any(p in ("http", "https") for p in (fs.protocol if isinstance(fs.protocol, (tuple, list))
                                                 else (fs.protocol,)))

    # Metadata goes first (the queue is first in, first out) but chunks do not wait for it;
    # only an error message about a chunk, which reads its array's zarr.json, waits.
    metadata_left = [sum(1 for r in todo if r.endswith("zarr.json"))]
    metadata_in = threading.Event()
    if not metadata_left[0]:
        metadata_in.set()
    count_lock = threading.Lock()

    def refuse(rel: str, size: int, digest: str, data) -> None:
        entry = files[rel]
        if size != entry["size"] or digest != entry["sha256"]:
            if not isinstance(data, bytes):  # a temporary file: read back for the error message only
                data = data.read_bytes() if size <= _WHOLE_MAX else None
            metadata_in.wait(timeout=60)
            raise GbufError(f"{url}/{rel}: arrived corrupted ({size} bytes, sha256 mismatch; "
                            f"{_shard_frames(root, rel, data)}); nothing written for it")

    def download(rel: str) -> int:
        try:
            return fetch(rel)
        finally:
            if rel.endswith("zarr.json"):
                with count_lock:
                    metadata_left[0] -= 1
                    if not metadata_left[0]:
                        metadata_in.set()

    def fetch(rel: str) -> int:
        entry = files[rel]
        path = root / rel
        if source_is_local:
            size, _, _ = _copy_local(_join(src, rel), path, dirs, f"{url}/{rel}",
                                     check=lambda n, d, tmp: refuse(rel, n, d, tmp))
        elif entry["size"] <= _WHOLE_MAX:
            data = fs.cat_file(_join(src, rel))
            size = len(data)
            refuse(rel, size, sha256(data), data)
            _write_local(path, data, dirs)
        else:  # streamed in blocks to a temporary file, hashed on the way
            dirs.make(path.parent)
            tmp = _tmp_path(path)
            try:
                h = hashlib.sha256()
                size = 0
                with fs.open(_join(src, rel), "rb", **({"block_size": 0} if http else {})) as f, \
                        open(tmp, "wb") as out:
                    while block := f.read(_REMOTE_BLOCK):
                        h.update(block)
                        out.write(block)
                        size += len(block)
                refuse(rel, size, h.hexdigest(), tmp)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        # Written by this pull just now: cached without the racy-mtime rule (nothing else writes here).
        cache.record(rel, os.stat(path), entry["sha256"], racy_check=False)
        bar.advance(size)
        return size

    try:
        with _remote_errors(url, "pull"):
            try:
                received = _run_all(download, [todo], _local_jobs(jobs) if source_is_local else jobs)
            finally:
                bar.close()
    finally:
        cache.save(keep=set(files))
    # Files the manifest no longer names (an older version of the dataset) go.
    removed = 0
    for rel in local:
        if rel not in files and rel not in _NOT_CONTENT:
            with contextlib.suppress(FileNotFoundError):
                (root / rel).unlink()
                removed += 1
    frames = 0
    if frame_check:
        from gbuf.datasets.integrity import verify as verify_store

        report = verify_store(root)
        if not report.ok:
            shown = "; ".join(str(p) for p in report.problems[:3])
            more = f" (+{len(report.problems) - 3} more)" if len(report.problems) > 3 else ""
            raise GbufError(f"{root}: pulled store fails verification: {shown}{more}")
        frames = report.frames_checked
    os.replace(root / JOURNAL, root / MANIFEST)
    return {"files": len(files), "received_files": len(todo), "received_bytes": received,
            "skipped_files": len(files) - len(todo), "total_bytes": manifest.get("total_bytes"),
            "frames_verified": frames, "removed_files": removed}
