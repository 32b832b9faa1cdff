"""``pull(url, store)``: fetch a pushed store into a local folder, every object checked on arrival.

Pull

* reads the manifest (a URL without one is refused: an unfinished push, or not a
  pushed store), refuses paths outside the destination (absolute, ``..``);
* downloads in parallel threads what the local copy lacks (a local file counts when
  its size and SHA-256, cached as for push, match the manifest), hashes the received
  bytes in memory and compares them with the manifest before they take their name
  (temporary name, then rename); an object that arrives corrupted is named with its
  sequence, pack and frames, and nothing is written for it;
* with ``frame_check``, also decodes every frame and checks its CRC-32 (``gbuf
  dataset verify``): this catches a source whose manifest agrees with corrupt data,
  at the cost of decoding the whole store;
* writes the manifest locally last (an interrupted pull lacks it; the rerun finishes).

Pull manages only what pulls wrote into the folder, recorded in ``<store>/.gbuf/pulled.json``
(``PULLED_FILE``: each file's path, size and SHA-256 as pull wrote it). Local work beside it
(a sequence rendered, a group degraded into the pulled store) is never deleted: only a file
pull wrote, still as it wrote it, that the manifest no longer names is removed. A file the
manifest names whose local bytes differ from the source's is overwritten only when pull wrote
it and nobody changed it since; otherwise (changed locally, or never written by pull) pull
refuses before writing anything, naming the file, unless ``force``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from gbuf.datasets import format as fmt
from gbuf.datasets import remote_store
from gbuf.datasets.sharing import local, transport
from gbuf.datasets.sharing.manifest import JOURNAL, MANIFEST, NOT_CONTENT, Entry, Manifest, sha256
from gbuf.errors import GbufError

log = logging.getLogger(__name__)

#: Inside ``<store>/.gbuf/``: what pulls wrote, ``{"version": 1, "dataset_id": ..., "files":
#: {rel: [size, sha256]}}``. A store pulled before it existed is read from its local manifest.
PULLED_FILE = "pulled.json"


@dataclasses.dataclass(frozen=True)
class PullResult:
    """What one pull did: files and bytes received, skipped (already here) and removed."""

    url: str
    store: str
    files: int              # files the manifest lists
    total_bytes: int        # their bytes
    received_files: int
    received_bytes: int
    skipped_files: int      # already here with the manifest's size and SHA-256
    removed_files: int      # written by an earlier pull, unchanged, no longer named by the manifest
    frames_verified: int    # frames decoded and checked (``frame_check``), else 0
    kept_files: int = 0     # written by an earlier pull, no longer named, but changed locally: kept


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
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        from gbuf.datasets.writer import frame_checksum
        from gbuf.datasets.zarr_backend import zarr

        expected = (group.get("checksums") or {}).get(pack)
        if not expected:
            return None
        proto = default_buffer_prototype()
        key = "/".join(rel.split("/")[3:])
        store = MemoryStore({"zarr.json": proto.buffer.from_bytes(json.dumps(meta).encode()),
                             key: proto.buffer.from_bytes(data)})
        array = zarr().open_array(store, mode="r")
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


def _read_manifest(fs, src: str, url: str) -> Manifest:
    with transport.remote_errors(url, "reading the manifest"):
        try:
            raw = fs.cat_file(transport.join(src, MANIFEST))
        except FileNotFoundError:
            unfinished = False
            with contextlib.suppress(Exception):
                unfinished = fs.exists(transport.join(src, JOURNAL))
            if unfinished:
                raise GbufError(f"{url}: no {MANIFEST}: its push is unfinished (a push journal is there); "
                                f"rerun the push, then pull") from None
            raise GbufError(f"{url}: no {MANIFEST}: not a pushed gbuf store (pull fetches what "
                            f"gbuf dataset push published; a store that was never pushed can be read in "
                            f"place, e.g. gbuf dataset verify URL)") from None
    return Manifest.from_bytes(raw, f"{url}/{MANIFEST}")


def _read_pulled(root: Path) -> dict[str, Entry]:
    """What earlier pulls wrote into ``root`` (``{rel: Entry}``), from ``.gbuf/pulled.json``.

    A copy pulled before the record existed is described by its local manifest: that
    pull wrote exactly the files it names (and removed every other). Unreadable: nothing
    is known to be pull's, which only makes pull more careful (it refuses, never deletes).
    """
    try:
        data = json.loads((root / fmt.STATE_DIR / PULLED_FILE).read_text())
        files = data["files"]
        return {rel: Entry(int(e[0]), str(e[1])) for rel, e in files.items()
                if isinstance(rel, str) and isinstance(e, list) and len(e) == 2}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s: unreadable; files there are treated as not written by pull", root / fmt.STATE_DIR
                    / PULLED_FILE)
        return {}
    with contextlib.suppress(Exception):
        return dict(Manifest.from_bytes((root / MANIFEST).read_bytes(), str(root / MANIFEST)).files)
    return {}


def _save_pulled(root: Path, dataset_id: str | None, files: dict[str, Entry]) -> None:
    path = root / fmt.STATE_DIR / PULLED_FILE
    data = {"version": 1, "dataset_id": dataset_id,
            "files": {rel: [e.size, e.sha256] for rel, e in sorted(files.items())}}
    try:
        local.write_local(path, json.dumps(data, indent=0).encode(), local.Dirs())
    except OSError as err:  # the next pull only refuses more (files not known as pull's)
        log.warning("%s: not written (%s)", path, err)


def _remove_empty_parents(root: Path, rel: str) -> None:
    """Folders a removed file leaves empty go too (a folder still holding anything stays)."""
    parent = (root / rel).parent
    while parent != root:
        try:
            parent.rmdir()
        except OSError:  # not empty (or gone): so are its parents
            return
        parent = parent.parent


def _check_local_folder(root: Path, manifest: Manifest, force: bool) -> None:
    """The local folder must be empty, an earlier pull of this dataset, or (``force``) a gbuf store."""
    if not (root.exists() and any(root.iterdir())):
        return
    local_ids = set()
    for marker in (MANIFEST, JOURNAL):  # a finished or an interrupted pull
        with contextlib.suppress(Exception):
            local_ids.add(json.loads((root / marker).read_text())["dataset_id"])
    with contextlib.suppress(Exception):
        local_ids.add(json.loads((root / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]["dataset_id"])
    with contextlib.suppress(OSError):
        local_ids.add((root / fmt.STATE_DIR / local.ID_FILE).read_text().strip())
    if manifest.dataset_id in local_ids:
        return
    # Pull removes files the manifest does not name: never do that to a folder of other things.
    if not (root / "zarr.json").is_file():
        raise GbufError(f"{root}: not empty and not a gbuf store; pull into an empty folder")
    if not local_ids:
        try:
            local.root_attrs(root)
        except GbufError as err:
            raise GbufError(f"{err}; pull into an empty folder") from None
    if not force:
        raise GbufError(f"{root}: holds another dataset; use --force to replace it")


def pull(url: str, store, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: transport.Progress | None = None, frame_check: bool = False) -> PullResult:
    """Fetch a pushed store into the local folder ``store``; every object's SHA-256 checked on arrival.

    ``frame_check`` also decodes every frame and checks its CRC-32 once the files are in.
    ``force``: pull into a folder that holds another dataset, and overwrite files changed
    locally since pull wrote them (or never written by pull) where the source's differ.
    ``progress(label, bytes_done, bytes_total)`` is called as files arrive.
    """
    root = Path(store)
    fs, src = remote_store.filesystem(url, storage_options)
    if transport.is_local(fs):
        local.refuse_overlap(root, Path(src), url)
    manifest = _read_manifest(fs, src, url)
    _check_local_folder(root, manifest, force)
    present_here, leftovers = local.scan_local(root) if root.is_dir() else ({}, [])
    cache = local.HashCache(root)
    pulled = _read_pulled(root)
    files = manifest.files

    def local_digest(rel: str) -> str:
        return cache.digest(rel, str(root / rel), present_here[rel], f"{root}/{rel}")

    def state(rel: str) -> str:
        """``same`` as the manifest's, ``pulled`` (as an earlier pull wrote it), or ``local`` (changed)."""
        st = present_here[rel]
        want, wrote = files.get(rel), pulled.get(rel)
        if not local.regular(st) or st.st_size not in {e.size for e in (want, wrote) if e is not None}:
            return "local"
        digest = local_digest(rel)
        if want is not None and st.st_size == want.size and digest == want.sha256:
            return "same"
        return "pulled" if wrote is not None and (st.st_size, digest) == (wrote.size, wrote.sha256) else "local"

    # Every file here that the manifest names, or that an earlier pull wrote, is looked at
    # before anything is written: a refusal leaves the folder as it was.
    looked_at = [rel for rel in present_here if rel in files or rel in pulled]
    with cf.ThreadPoolExecutor(local.local_jobs(jobs)) as pool:
        states = dict(zip(looked_at, pool.map(state, looked_at)))
    conflicts = sorted(rel for rel in looked_at if rel in files and states[rel] == "local")
    if conflicts and not force:
        cache.save(keep=set(files) | set(pulled))
        rel = conflicts[0]
        why = ("changed locally since pull wrote it" if rel in pulled
               else "not written by an earlier pull (local work?)")
        more = f" (and {len(conflicts) - 1} more file(s))" if len(conflicts) > 1 else ""
        raise GbufError(f"{root}/{rel}: {why}, and differs from {url}/{rel}{more}; refusing to overwrite "
                        f"it (move it away, or pull --force to overwrite)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # The local copy is unfinished until this pull ends: the journal names what it is becoming.
        local.write_local(root / JOURNAL, manifest.to_bytes(), local.Dirs())
    except OSError as err:  # a read-only folder, a file in the way, a full disk: one line
        raise GbufError(f"{root}: cannot write the pulled copy here ({type(err).__name__}: "
                        f"{err.strerror or err})") from None
    if (root / MANIFEST).is_file():
        (root / MANIFEST).unlink()
    for leftover in leftovers:  # an interrupted pull's temporary files
        with contextlib.suppress(OSError):
            leftover.unlink()
    # From here on the record names every file pull wrote, saved even if the pull fails.
    record = {rel: e for rel, e in pulled.items() if rel not in present_here or states.get(rel) != "local"}
    present = {rel for rel in files if states.get(rel) == "same"}
    record.update({rel: files[rel] for rel in present})

    todo = [rel for rel in files if rel not in present]
    # Metadata first: error messages about a shard read the array's zarr.json.
    todo.sort(key=lambda rel: (not rel.endswith("zarr.json"), rel))
    reporter = transport.Reporter(progress, "pull", sum(files[r].size for r in todo))
    dirs = local.Dirs()
    source_is_local = transport.is_local(fs)
    http = transport.is_http(fs)

    # Metadata goes first (the queue is first in, first out) but chunks do not wait for it;
    # only an error message about a chunk, which reads its array's zarr.json, waits.
    metadata_left = [sum(1 for r in todo if r.endswith("zarr.json"))]
    metadata_in = threading.Event()
    if not metadata_left[0]:
        metadata_in.set()
    count_lock = threading.Lock()

    def refuse(rel: str, size: int, digest: str, data) -> None:
        entry = files[rel]
        if size != entry.size or digest != entry.sha256:
            if not isinstance(data, bytes):  # a temporary file: read back for the error message only
                data = data.read_bytes() if size <= transport.WHOLE_MAX else None
            if not rel.endswith("zarr.json"):
                # A metadata file's own message needs no other metadata (and waiting for
                # the metadata to be in would wait for this very file).
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
            size, _, _ = local.copy_local(transport.join(src, rel), path, dirs, f"{url}/{rel}",
                                          check=lambda n, d, tmp: refuse(rel, n, d, tmp))
        elif entry.size <= transport.WHOLE_MAX:
            data = fs.cat_file(transport.join(src, rel))
            size = len(data)
            refuse(rel, size, sha256(data), data)
            local.write_local(path, data, dirs)
        else:  # streamed in blocks to a temporary file, hashed on the way
            dirs.make(path.parent)
            tmp = local.tmp_path(path)
            try:
                h = hashlib.sha256()
                size = 0
                with fs.open(transport.join(src, rel), "rb", **({"block_size": 0} if http else {})) as f, \
                        open(tmp, "wb") as out:
                    while block := f.read(transport.REMOTE_BLOCK):
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
        cache.record(rel, os.stat(path), entry.sha256, racy_check=False)
        with count_lock:
            record[rel] = entry
        reporter.advance(size)
        return size

    try:
        with transport.remote_errors(url, "pull"):
            received = transport.run_all(download, todo, local.local_jobs(jobs) if source_is_local else jobs)
        # Files an earlier pull wrote, still as it wrote them, that the manifest no longer names
        # (an older version of the dataset) go; changed ones are local work now and stay.
        removed = kept = 0
        for rel in sorted(set(present_here) & set(pulled) - set(files) - NOT_CONTENT):
            if states[rel] == "pulled":
                with contextlib.suppress(FileNotFoundError):
                    (root / rel).unlink()
                    removed += 1
                _remove_empty_parents(root, rel)
            else:
                kept += 1
                log.info("%s/%s: no longer in %s but changed locally: kept", root, rel, url)
        for rel in set(record) - set(files):  # removed, kept (local work now) or gone already
            record.pop(rel)
    finally:
        cache.save(keep=set(files))
        _save_pulled(root, manifest.dataset_id, record)
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
    return PullResult(url=str(url), store=str(store), files=len(files), total_bytes=manifest.total_bytes,
                      received_files=len(todo), received_bytes=received, skipped_files=len(files) - len(todo),
                      removed_files=removed, frames_verified=frames, kept_files=kept)
