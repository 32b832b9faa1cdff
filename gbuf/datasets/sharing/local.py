"""The local side of push and pull: listing a store, reading, hashing and writing its files.

Every byte is read once and hashed once, while it is in memory: a file is hashed as it
is copied (``copy_local``), and a file's SHA-256 is remembered in the hash cache,
``<store>/.gbuf/sharing-cache.json``, keyed by its size, mtime, ctime and inode (a
file changed since is hashed again), so a second push or pull reads nothing it has
already hashed. Files take their name only once complete (temporary name, then
rename). Symlinks are untrusted input: a store's links are followed only inside it.

Also here: a local store's root attrs (the format check is ``format.check_root_attrs``)
and its identity (``dataset_id``), which push publishes and pull recognises.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
import time
import uuid
from pathlib import Path

from gbuf import fileio
from gbuf.datasets import format as fmt
from gbuf.datasets.datacard import CARD
from gbuf.datasets.sharing.manifest import MANIFEST, NOT_CONTENT
from gbuf.errors import GbufError

#: Inside ``<store>/.gbuf/``: the local SHA-256 cache (and the card cache); the dataset id.
CACHE_FILE = "sharing-cache.json"
ID_FILE = "dataset_id"
#: Read/hash/write block: small enough to stay in the CPU cache between the three.
BLOCK = 1 << 20
#: A file modified this close to the moment it was hashed is not cached: a second
#: change within one file-system timestamp tick would keep the same mtime.
RACY_NS = 100_000_000
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_O_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def local_jobs(jobs: int) -> int:
    """Threads for work that only reads, hashes and writes local files: CPU-bound, so no more
    than the CPUs (more threads only contend; measured with benchmarks/transfer.py)."""
    return max(1, min(jobs, os.cpu_count() or 1))


# -- listing ----------------------------------------------------------------------------

def stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")  # an interrupted transfer's file


def regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_source(root: Path) -> dict[str, tuple[str, os.stat_result]]:
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
                if (not prefix and entry.name in (fmt.STATE_DIR, *NOT_CONTENT, CARD)) or is_temporary(entry.name):
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
                if not regular(st):
                    raise GbufError(f"{root}/{rel}: not a regular file; refused")
                files[rel] = (path, st)
    return files


def scan_local(root: Path) -> tuple[dict[str, os.stat_result], list[Path]]:
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
            if not prefix and entry.name == fmt.STATE_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((prefix + entry.name + "/", entry.path))
            elif is_temporary(entry.name):
                temporary.append(Path(entry.path))
            else:
                files[prefix + entry.name] = entry.stat(follow_symlinks=False)
    return files, temporary


def refuse_overlap(root: Path, dest: Path, url: str) -> None:
    """A local push destination (pull source) must not be the store, inside it, or a folder that holds it.

    Inside: a push would copy its own output into itself, its stale-file removal and
    temporary files landing in the source (a pull, the same the other way round). Holding
    it: the store's files would be mixed with (and could be removed as) the other side's.
    """
    src, dst = Path(os.path.realpath(root)), Path(os.path.realpath(dest))
    if dst == src:
        raise GbufError(f"{url}: is the store {root} itself; use another folder")
    if src in dst.parents:
        raise GbufError(f"{url}: is inside the store {root}; use a folder outside it")
    if dst in src.parents:
        raise GbufError(f"{url}: holds the store {root}; use a folder outside it")


# -- reading and writing ------------------------------------------------------------------

_tls = threading.local()


def _buffer() -> memoryview:
    """This thread's block buffer, reused for every file (no allocation per read)."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = memoryview(bytearray(BLOCK))
    return buf


def tmp_path(path: Path) -> Path:
    return fileio.temp_sibling(path)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(fd: int, size: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, max(size, BLOCK))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size = max(0, size - len(chunk))


def unchanged(where: str, before: os.stat_result, fd: int, nbytes: int) -> None:
    """Refuse a file that changed while it was read (its bytes and its hash may disagree)."""
    after = os.fstat(fd)
    if nbytes != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise GbufError(f"{where}: changed while being read; rerun when it is no longer being written")


def open_source(path: str, where: str) -> int:
    try:
        return os.open(path, _O_READ)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW: a symlink (listed as a file, or swapped in since)
            raise GbufError(f"{where}: is a symlink; refused (links are not followed)") from None
        raise


def hash_file(path: str, where: str) -> tuple[str, os.stat_result]:
    """SHA-256 of a local file (one pass, this thread's buffer) and its stat."""
    fd = open_source(path, where)
    try:
        before = os.fstat(fd)
        h = hashlib.sha256()
        buf = _buffer()
        total = 0
        while n := os.readv(fd, [buf]):
            h.update(buf[:n])
            total += n
        unchanged(where, before, fd, total)
        return h.hexdigest(), before
    finally:
        os.close(fd)


class Dirs:
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


def copy_local(src: str, dst: Path, dirs: Dirs, where: str, check=None) -> tuple[int, str, os.stat_result]:
    """Copy one local file to ``dst`` (temporary name, then rename), hashing the bytes on the way.

    ``check(size, sha, tmp)`` runs before the rename and may refuse the file.
    Returns (size, sha256, stat of the source as read).
    """
    dirs.make(dst.parent)
    fd_in = open_source(src, where)
    tmp = tmp_path(dst)
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
            unchanged(where, before, fd_in, total)
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


def write_local(dst: Path, data: bytes, dirs: Dirs) -> None:
    dirs.make(dst.parent)
    tmp = tmp_path(dst)
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


# -- the hash cache -------------------------------------------------------------------------

class HashCache:
    """``<store>/.gbuf/sharing-cache.json``: local files' SHA-256 keyed by (size, mtime, ctime, inode).

    A cache only: unreadable or missing means "hash again"; failing to save it is
    not an error (a read-only store pushes as well, only without the cache).
    """

    def __init__(self, root: Path):
        self.path = root / fmt.STATE_DIR / CACHE_FILE
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
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == stat_key(st):
            return entry[4]
        return None

    def record(self, rel: str, st: os.stat_result, digest: str, *, racy_check: bool = True) -> None:
        if racy_check and st.st_mtime_ns > time.time_ns() - RACY_NS:
            return  # too recent to trust its mtime later; it will be hashed again next time
        with self._lock:
            self.files[rel] = [*stat_key(st), digest]
            self._dirty = True

    def digest(self, rel: str, path: str, st: os.stat_result, where: str) -> str:
        """The file's SHA-256: from the cache, else hashed now (and recorded)."""
        digest = self.lookup(rel, st)
        if digest is None:
            digest, st = hash_file(path, where)
            self.record(rel, st, digest)
        return digest

    def set_card(self, key: str, text: str) -> None:
        self.card = {"key": key, "text": text}
        self._dirty = True

    def save(self, keep: set[str] | None = None) -> None:
        if not self._dirty:
            return
        files = {k: v for k, v in self.files.items() if keep is None or k in keep}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(exist_ok=True)
            tmp = tmp_path(self.path)
            tmp.write_text(json.dumps({"version": 1, "files": files, "card": self.card}))
            os.replace(tmp, self.path)


# -- the local store: its root attrs and identity -------------------------------------------

def root_attrs(root: Path) -> dict:
    """The gbuf attrs of a local store's root, read as JSON (no zarr machinery), checked by the format."""
    try:
        meta = json.loads((root / "zarr.json").read_text())
    except FileNotFoundError:
        raise GbufError(f"{root}: not a gbuf store (no zarr.json at its root)") from None
    except (OSError, ValueError) as err:
        raise GbufError(f"{root}/zarr.json: unreadable ({type(err).__name__})") from None
    attrs = (meta.get("attributes") or {}).get(fmt.ATTRS_KEY) if isinstance(meta, dict) else None
    return fmt.check_root_attrs(attrs, str(root))


def dataset_id(root: Path, attrs: dict | None = None) -> str:
    """The store's identity, which lets push tell "the same dataset again" from "another one".

    It must survive between pushes, so it is recorded, but not in the store's content
    (push leaves that untouched): the root attrs' ``dataset_id`` if the store already
    has one (an earlier gbuf wrote it there on the first push), else the id of the manifest
    a pull left (a pulled copy pushes as the same dataset), else ``.gbuf/dataset_id``,
    written on the first push (a copy of the store made with ``cp -r`` keeps it). A store
    where it cannot be written (read-only) is named by a hash of its root metadata instead,
    which is as stable as the store itself.
    """
    root = Path(root)
    attrs = root_attrs(root) if attrs is None else attrs
    if attrs.get("dataset_id"):
        return str(attrs["dataset_id"])
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        pulled = json.loads((root / MANIFEST).read_text())["dataset_id"]
        if isinstance(pulled, str) and pulled:
            return pulled
    path = root / fmt.STATE_DIR / ID_FILE
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    new = uuid.uuid4().hex
    tmp = tmp_path(path)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(new + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return hashlib.sha256((root / "zarr.json").read_bytes()).hexdigest()[:32]
    return new
