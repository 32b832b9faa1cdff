"""``push(store, url)``: publish a local store at any fsspec URL, incrementally and verified.

Push

* lists the local store (skipping writer state, ``.gbuf/``) without reading it;
  refuses a symlink that leads out of the store, and a store not complete;
* reads what the destination already holds: the previous manifest and the push
  journal (the files an interrupted push finished, flushed every few seconds). A
  file listed there with the same size and the same SHA-256 as the local file is not
  sent again, so a second push sends nothing and a rerun after an interruption sends
  only what is missing (the local SHA-256 comes from the hash cache, ``local.py``);
* refuses a destination that holds another dataset (or non-gbuf files) unless ``force``;
* sends the rest in parallel threads, hashing the bytes as they are read: the manifest
  records the SHA-256 of exactly the bytes sent (a file that changes while it is read
  is an error). At the destination every object is checked by size (one listing; on
  a local folder, each file as written); ``readback`` downloads every object sent
  again and compares its SHA-256 with the manifest;
* writes the manifest last and removes files the new manifest no longer names.

The source store is not modified: the card (``README.md``) is generated in memory and
sent (cached in ``.gbuf/``), and the dataset's identity is kept in ``.gbuf/dataset_id``
unless the store already names one. Only ``license=`` writes, as asked, into the
store's root attrs.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import threading
import time
import uuid
from pathlib import Path

from gbuf.datasets import format as fmt
from gbuf.datasets import remote_store
from gbuf.datasets.datacard import CARD
from gbuf.datasets.sharing import local, transport
from gbuf.datasets.sharing.manifest import JOURNAL, MANIFEST, NOT_CONTENT, Entry, Manifest, sha256
from gbuf.errors import GbufError

_JOURNAL_FLUSH_S = 2.0


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What one push did: files and bytes sent, skipped (already there) and removed."""

    store: str
    url: str
    dataset_id: str
    files: int              # files the destination's manifest now lists (the card included)
    total_bytes: int        # their bytes
    sent_files: int
    sent_bytes: int
    skipped_files: int      # already at the destination with the same size and SHA-256
    removed_files: int      # at the destination before, no longer part of the dataset


@dataclasses.dataclass(frozen=True)
class DestinationState:
    """What a push destination holds, read as push starts (``inspect_destination``)."""

    url: str
    #: The ids its manifest and push journal name: non-empty for a gbuf push destination.
    dataset_ids: frozenset[str]
    #: Nothing at all is there (only looked at when no manifest or journal is).
    empty: bool


def _check_pushable(root: Path, files: dict) -> dict:
    """The root attrs; refuses a store with a resolution group that is not complete.

    Reads the group metadata (``<sequence>/<group>/zarr.json``) as JSON: no zarr
    machinery, so the check costs milliseconds whatever the store's size.
    """
    attrs = local.root_attrs(root)
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


def _card_bytes(root: Path, files: dict, dataset_id: str, cache: local.HashCache) -> bytes:
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


class _Destination:
    """Where push writes: a local folder (plain file calls) or any fsspec file system."""

    def __init__(self, fs, root: str, url: str):
        self.fs, self.root, self.url = fs, root, url
        self.local = transport.is_local(fs)
        self.atomic_put = transport.is_object_store(fs)
        self.dirs = local.Dirs()

    def path(self, rel: str) -> str:
        return transport.join(self.root, rel)

    def listing(self) -> dict[str, int]:
        if self.local:
            files, temporary = local.scan_local(Path(self.root))
            present = {rel: st.st_size for rel, st in files.items()}
            # An interrupted push's temporary files are junk of a push destination.
            present.update({p.relative_to(self.root).as_posix(): 0 for p in temporary})
            return present
        return transport.remote_listing(self.fs, self.root)

    def read_json(self, rel: str):
        return transport.read_json(self.fs, self.path(rel), self.url)

    def make_root(self) -> None:
        if self.local:
            self.dirs.make(Path(self.root))
        elif not self.atomic_put:
            self.fs.makedirs(self.root, exist_ok=True)

    def _tmp_name(self, target: str) -> str:
        return f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.{uuid.uuid4().hex}.part"

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            local.write_local(Path(self.path(rel)), data, self.dirs)
        elif self.atomic_put:
            self.fs.pipe_file(self.path(rel), data)
        else:
            target = self.path(rel)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            tmp = self._tmp_name(target)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, target)

    def send_file(self, rel: str, src: str, where: str) -> tuple[int, str, os.stat_result]:
        """Send a local file: read once, hashed in memory on the way; returns (size, sha256, stat)."""
        if self.local:
            return local.copy_local(src, Path(self.path(rel)), self.dirs, where)
        fd = local.open_source(src, where)
        try:
            before = os.fstat(fd)
            if before.st_size <= transport.WHOLE_MAX:
                data = local.read_all(fd, before.st_size)
                local.unchanged(where, before, fd, len(data))
                digest = sha256(data)
                self.write_bytes(rel, data)
                return len(data), digest, before
            # Large: streamed in blocks (an object store's multipart upload appears whole at the end).
            target = self.path(rel)
            name = target
            if not self.atomic_put:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                name = self._tmp_name(target)
            h = hashlib.sha256()
            total = 0
            with self.fs.open(name, "wb") as out:
                while block := os.read(fd, transport.REMOTE_BLOCK):
                    h.update(block)
                    out.write(block)
                    total += len(block)
                local.unchanged(where, before, fd, total)
            if name != target:
                self.fs.mv(name, target)
            return total, h.hexdigest(), before
        finally:
            os.close(fd)

    def readback(self, rel: str) -> Entry:
        h = hashlib.sha256()
        total = 0
        with self.fs.open(self.path(rel), "rb") as f:
            while block := f.read(transport.REMOTE_BLOCK):
                h.update(block)
                total += len(block)
        return Entry(total, h.hexdigest())

    def remove(self, rels: list[str]) -> None:
        if self.local:
            for rel in rels:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(rel))
        elif rels:
            self.fs.rm([self.path(r) for r in rels])


def _refuse_http(url: str, instead: str) -> None:
    if str(url).split("://")[0].lower() in ("http", "https"):
        raise GbufError(f"{url}: http(s) is read-only; {instead}")


def push(store, url: str, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: transport.Progress | None = None, readback: bool = False,
         license: str | None = None) -> PushResult:
    """Publish the local store ``store`` at ``url`` (incremental, verified; see the module doc).

    ``progress(label, bytes_done, bytes_total)`` is called as files are sent.
    """
    root = Path(store)
    if remote_store.is_url(str(store)):
        raise GbufError(f"{store}: push reads a local store; pull it first")
    _refuse_http(url, "push to a folder, s3://, gs:// or az:// and serve that")
    if not root.is_dir():
        raise GbufError(f"{root}: no such dataset")
    fs, dest_root = remote_store.filesystem(url, storage_options)
    if transport.is_local(fs):
        local.refuse_overlap(root, Path(dest_root), url)
    if license is not None:
        from gbuf.datasets.datacard import set_license

        if not license.strip():
            raise GbufError(f"{root}: license must not be empty")
        local.root_attrs(root)  # refuse non-gbuf folders before touching attrs
        set_license(root, license.strip())  # asked for: the license belongs to the store's attrs
    files = local.scan_source(root)
    attrs = _check_pushable(root, files)
    dataset_id = local.dataset_id(root, attrs)
    cache = local.HashCache(root)
    card = _card_bytes(root, files, dataset_id, cache)
    dest = _Destination(fs, dest_root, url)

    with transport.remote_errors(url, "reading the destination"):
        present = dest.listing()
        old = dest.read_json(MANIFEST) if MANIFEST in present else None
        journal = dest.read_json(JOURNAL) if JOURNAL in present else None

    known: dict[str, Entry] = {}
    previous_ids = {m.get("dataset_id") for m in (old, journal) if isinstance(m, dict)} - {None}
    if not force:
        if previous_ids and previous_ids != {dataset_id}:
            raise GbufError(f"{url}: holds a different dataset (id {min(previous_ids)}, pushing "
                            f"{dataset_id}); use --force to replace it")
        if present and not previous_ids:
            raise GbufError(f"{url}: not empty and not a gbuf push destination; use --force to write into it")
        for name, m in ((MANIFEST, old), (JOURNAL, journal)):  # journal last: newer than the manifest
            if isinstance(m, dict):
                known.update(Manifest.from_json(m, f"{url}/{name}").files)

    # A file counts as sent when a finished upload recorded its size and hash, it is
    # there with that size, and the local file has that size and hash.
    card_entry = Entry(len(card), sha256(card))
    sizes = {rel: st.st_size for rel, (_, st) in files.items()} | {CARD: len(card)}
    candidates = [rel for rel in sizes if rel in known and present.get(rel) == known[rel].size == sizes[rel]]
    local_sha: dict[str, str] = {CARD: card_entry.sha256}

    def local_hash(rel: str) -> None:
        path, st = files[rel]
        local_sha[rel] = cache.digest(rel, path, st, f"{root}/{rel}")

    with cf.ThreadPoolExecutor(local.local_jobs(jobs)) as pool:
        list(pool.map(local_hash, [rel for rel in candidates if rel != CARD]))
    done = {rel: known[rel] for rel in candidates if local_sha[rel] == known[rel].sha256}
    # Metadata first: an interrupted push leaves the arrays' zarr.json before their chunks.
    todo = sorted((rel for rel in sizes if rel not in done), key=lambda rel: (not rel.endswith("zarr.json"), rel))

    journal_state = Manifest(dataset_id, dict(done))
    lock = threading.Lock()
    last_flush = [time.monotonic()]

    def flush(force_now=False):
        with lock:
            if force_now or time.monotonic() - last_flush[0] > _JOURNAL_FLUSH_S:
                dest.write_bytes(JOURNAL, journal_state.to_bytes())
                last_flush[0] = time.monotonic()

    def upload(rel: str) -> int:
        if rel == CARD:
            dest.write_bytes(CARD, card)
            entry = card_entry
        else:
            path, _ = files[rel]
            size, digest, st = dest.send_file(rel, path, f"{root}/{rel}")
            entry = Entry(size, digest)
            cache.record(rel, st, digest)
        if readback:
            got = dest.readback(rel)
            if got != entry:
                raise GbufError(f"{url}/{rel}: arrived corrupted ({got.size} bytes, sha256 {got.sha256[:12]}... "
                                f"read back; sent {entry.size} bytes, sha256 {entry.sha256[:12]}...)")
        with lock:
            journal_state.files[rel] = entry
        flush()
        reporter.advance(entry.size)
        return entry.size

    reporter = transport.Reporter(progress, "push", sum(sizes[r] for r in todo))
    sent = 0
    stale: list[str] = []
    try:
        with transport.remote_errors(url, "push"):
            try:
                dest.make_root()
                # The old manifest is withdrawn first: while files change, the destination is unfinished.
                dest.write_bytes(JOURNAL, journal_state.to_bytes())
                if old is not None:
                    dest.remove([MANIFEST])
                sent = transport.run_all(upload, todo, local.local_jobs(jobs) if dest.local else jobs)
            finally:
                with contextlib.suppress(Exception):
                    flush(force_now=True)
            manifest = Manifest(dataset_id, dict(journal_state.files))
            if dest.local:
                after = present  # every file sent was checked as written (size and hash in memory)
            else:
                # Arrival check: every object is there with its size (one listing, not one request each).
                after = transport.remote_listing(fs, dest_root)
                for rel, entry in manifest.files.items():
                    if after.get(rel) != entry.size:
                        raise GbufError(f"{url}/{rel}: has {after.get(rel)} bytes after upload, "
                                        f"expected {entry.size}")
            dest.write_bytes(MANIFEST, manifest.to_bytes())
            dest.remove([JOURNAL])
            # Files the new manifest does not name go, but only from a gbuf push destination
            # (--force into a folder of other things never deletes them).
            stale = sorted(r for r in after if r not in manifest.files and r not in NOT_CONTENT) \
                if previous_ids else []
            dest.remove(stale)
    finally:
        cache.save(keep=set(files))
    return PushResult(store=str(store), url=str(url), dataset_id=dataset_id, files=len(manifest.files),
                      total_bytes=manifest.total_bytes, sent_files=len(todo), sent_bytes=sent,
                      skipped_files=len(done), removed_files=len(stale))


def inspect_destination(url: str, storage_options: dict | None = None) -> DestinationState:
    """Read what a push to ``url`` would start with, without writing anything.

    Reads the manifest and the push journal as push does (so wrong credentials or an
    unreachable endpoint give push's one-line error); without either, lists the
    destination once, and refuses an empty one on an object store whose bucket does not
    exist. Lets a caller refuse, before any work, a destination the push would refuse.
    """
    _refuse_http(url, "push to a folder, s3://, gs:// or az:// and serve that")
    fs, root = remote_store.filesystem(url, storage_options)
    empty = False
    with transport.remote_errors(url, "reading the destination"):
        marks = [transport.read_json(fs, transport.join(root, name), url) for name in (MANIFEST, JOURNAL)]
        ids = frozenset(m.get("dataset_id") for m in marks if isinstance(m, dict)) - {None}
        if not ids:
            try:
                entries = fs.ls(root, detail=False)
            except FileNotFoundError:
                entries = []
            empty = not entries
            bucket = root.strip("/").split("/")[0]
            if empty and transport.is_object_store(fs) and bucket:
                try:
                    fs.info(bucket)
                except FileNotFoundError:
                    raise GbufError(f"{url}: bucket {bucket!r} does not exist (create it first)") from None
        with contextlib.suppress(Exception):
            fs.invalidate_cache(root)  # the push lists the destination afresh, maybe hours later
    return DestinationState(url=str(url), dataset_ids=frozenset(map(str, ids)), empty=empty)
