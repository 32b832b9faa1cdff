"""``push(store, url)`` and ``pull(url, store)``: publish and fetch gbuf stores over fsspec.

A pushed store carries a manifest, ``gbuf-manifest.json`` at its root: every file's
relative path, size and SHA-256, and the dataset's identity. Push writes it last,
so a destination without it is an unfinished push, and pull refuses it.

Push
  * hashes the local store (skipping writer state, ``.gbuf/``) and writes its card;
  * reads what the destination already holds: the previous manifest and the push
    journal (``gbuf-manifest.partial.json``, the files an interrupted push finished,
    flushed every few seconds); a file listed there with the same hash and size
    is not sent again, so a second push sends nothing and a rerun after an
    interruption sends only what is missing;
  * refuses a destination that holds another dataset (or non-gbuf files) unless
    ``force``;
  * uploads in parallel threads, checks every object's size at the destination
    (and with ``readback`` downloads and re-hashes it), then writes the manifest
    and removes files the new manifest no longer names.

Pull
  * reads the manifest, refuses paths outside the destination (absolute, ``..``);
  * downloads in parallel threads what the local copy lacks, re-hashes the
    received bytes before writing them (temporary name, then rename), and names
    the sequence, pack and frames of any object that arrives corrupted;
  * then checks every frame's checksum with ``verify`` and writes the manifest
    locally last (an interrupted pull lacks it; the rerun finishes).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
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
#: Files that are not store content (never listed in a manifest).
_NOT_CONTENT = {MANIFEST, JOURNAL}
_JOURNAL_FLUSH_S = 2.0


# -- hashing and manifests -------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local_files(root: Path) -> list[str]:
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.split("/")[0] in (STATE_DIR,) or rel in _NOT_CONTENT:
            continue
        if path.name.endswith(".part") and path.name.startswith("."):
            continue  # an interrupted pull's temporary file
        out.append(rel)
    return sorted(out)


def build_manifest(root, *, jobs: int = 4, dataset_id: str | None = None) -> dict:
    """The manifest of a local store: every content file's size and SHA-256."""
    root = Path(root)
    files = _local_files(root)

    def one(rel):
        data = (root / rel).read_bytes()
        return rel, {"size": len(data), "sha256": sha256(data)}

    with cf.ThreadPoolExecutor(max(1, jobs)) as pool:
        entries = dict(pool.map(one, files))
    return {"format": MANIFEST_FORMAT, "version": 1, "hash": "sha256",
            "dataset_id": dataset_id, "files": entries,
            "total_bytes": sum(e["size"] for e in entries.values())}


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
    except Exception as err:  # botocore, aiohttp, OSError, ... all mean the same to the user
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

def _dataset_id(root: Path) -> str:
    """The store's identity: a uuid kept in its root attrs (added on first push)."""
    import zarr

    group = zarr.open_group(str(root), mode="r")
    attrs = dict(group.attrs.get(fmt.ATTRS_KEY, {}))
    if attrs.get("dataset_id"):
        return str(attrs["dataset_id"])
    group = zarr.open_group(str(root), mode="r+")
    attrs["dataset_id"] = uuid.uuid4().hex
    group.attrs[fmt.ATTRS_KEY] = attrs
    return attrs["dataset_id"]


def _check_pushable(root: Path) -> None:
    from gbuf.datasets import store as _store

    ds = _store.open(root, mode="r")
    for seq in ds:
        for name in seq.resolutions:
            if not seq[name].attrs.get("complete"):
                raise GbufError(f"{root}/{seq.name}/{name}: not complete (finish the render/degrade first); "
                                f"refusing to push")


def _read_json(fs, path: str, url: str):
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise GbufError(f"{url}: {posixpath.basename(path)} is not valid JSON") from None


def _write_json(fs, path: str, obj) -> None:
    fs.pipe_file(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root else rel


def _is_object_store(fs) -> bool:
    # Object stores replace an object atomically on PUT; file systems need tmp + rename.
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2") for p in protocols)


def push(store, url: str, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: bool = False, readback: bool = False, license: str | None = None) -> dict:
    """Publish a local store at ``url``; returns counts of files/bytes sent and skipped."""
    from gbuf.datasets.datacard import write_card

    root = Path(store)
    if remote_store.is_url(str(store)):
        raise GbufError(f"{store}: push reads a local store; pull it first")
    if str(url).split("://")[0].lower() in ("http", "https"):
        raise GbufError(f"{url}: http(s) is read-only; push to a folder, s3://, gs:// or az:// and serve that")
    _check_pushable(root)
    dataset_id = _dataset_id(root)
    write_card(root, license=license)  # push regenerates the card
    manifest = build_manifest(root, jobs=jobs, dataset_id=dataset_id)
    fs, dest = remote_store.filesystem(url, storage_options)
    atomic_put = _is_object_store(fs)

    with _remote_errors(url, "reading the destination"):
        try:
            listing = fs.find(dest, detail=True) if fs.exists(dest) else {}
        except FileNotFoundError:
            listing = {}
        present = {posixpath.relpath(p, dest) if dest else p: int(info.get("size") or 0)
                   for p, info in listing.items() if info.get("type", "file") != "directory"}
        old = _read_json(fs, _join(dest, MANIFEST), url) if MANIFEST in present else None
        journal = _read_json(fs, _join(dest, JOURNAL), url) if JOURNAL in present else None

    known: dict[str, dict] = {}
    previous_ids = {m.get("dataset_id") for m in (old, journal) if isinstance(m, dict)}
    previous_ids.discard(None)
    if not force:
        if previous_ids and previous_ids != {dataset_id}:
            raise GbufError(f"{url}: holds a different dataset (id {sorted(previous_ids)[0]}, pushing "
                            f"{dataset_id}); use --force to replace it")
        if present and not previous_ids:
            raise GbufError(f"{url}: not empty and not a gbuf push destination; use --force to write into it")
        for m in (old, journal):  # journal last: it is newer than the manifest it follows
            if isinstance(m, dict):
                check_manifest(m, f"{url}/{MANIFEST}")
                known.update(m["files"])
    # A file counts as sent when a finished upload recorded its hash and it is there, whole.
    done = {rel: e for rel, e in known.items()
            if present.get(rel) == e["size"] and manifest["files"].get(rel) == e}
    todo = [rel for rel in manifest["files"] if rel not in done]
    todo.sort(key=lambda rel: (not rel.endswith("zarr.json"), rel))

    journal_state = {"format": MANIFEST_FORMAT, "version": 1, "hash": "sha256",
                     "dataset_id": dataset_id, "files": dict(done)}
    lock = threading.Lock()
    last_flush = [time.monotonic()]

    def flush(force_now=False):
        with lock:
            if force_now or time.monotonic() - last_flush[0] > _JOURNAL_FLUSH_S:
                _write_json(fs, _join(dest, JOURNAL), journal_state)
                last_flush[0] = time.monotonic()

    def upload(rel: str) -> int:
        data = (root / rel).read_bytes()
        entry = manifest["files"][rel]
        if sha256(data) != entry["sha256"]:
            raise GbufError(f"{root / rel}: changed while pushing; rerun the push")
        target = _join(dest, rel)
        if atomic_put:
            fs.pipe_file(target, data)
        else:
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex}.part"
            fs.pipe_file(tmp, data)
            fs.mv(tmp, target)
        if readback:
            got = fs.cat_file(target)
            if len(got) != entry["size"] or sha256(got) != entry["sha256"]:
                raise GbufError(f"{url}/{rel}: arrived corrupted (sha256 mismatch after upload)")
        with lock:
            journal_state["files"][rel] = entry
        flush()
        bar.advance(entry["size"])
        return entry["size"]

    bar = _Progress(progress, sum(manifest["files"][r]["size"] for r in todo), "push")
    sent = 0
    stale: list[str] = []
    with _remote_errors(url, "push"):
        try:
            if not atomic_put:
                fs.makedirs(dest, exist_ok=True)
            # The old manifest is withdrawn first: while files change, the destination is unfinished.
            _write_json(fs, _join(dest, JOURNAL), journal_state)
            if old is not None:
                fs.rm_file(_join(dest, MANIFEST))
            sent = _run_all(upload, [todo], jobs)
        finally:
            bar.close()
            with contextlib.suppress(Exception):
                flush(force_now=True)
        # Arrival check: every object is there with its size (one listing, not one request each).
        after = {posixpath.relpath(p, dest) if dest else p: int(info.get("size") or 0)
                 for p, info in fs.find(dest, detail=True).items()}
        for rel, entry in manifest["files"].items():
            if after.get(rel) != entry["size"]:
                raise GbufError(f"{url}/{rel}: has {after.get(rel)} bytes after upload, expected {entry['size']}")
        _write_json(fs, _join(dest, MANIFEST), manifest)
        fs.rm_file(_join(dest, JOURNAL))
        # Files the new manifest does not name go, but only from a gbuf push destination
        # (--force into a folder of other things never deletes them).
        stale = [r for r in after if r not in manifest["files"] and r not in _NOT_CONTENT] if previous_ids else []
        if stale:
            fs.rm([_join(dest, r) for r in stale])
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
            except Exception:  # does not decode
                bad.append(t)
        return bad
    except Exception:
        return None


def _is_gbuf_root(root: Path) -> bool:
    try:
        attrs = json.loads((root / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(attrs, dict) and attrs.get("format") == fmt.FORMAT_NAME


def pull(url: str, store, *, jobs: int = 8, force: bool = False, storage_options: dict | None = None,
         progress: bool = False, verify: bool = True) -> dict:
    """Fetch a pushed store into the local folder ``store``; verified file by file and frame by frame."""
    root = Path(store)
    fs, src = remote_store.filesystem(url, storage_options)
    with _remote_errors(url, "reading the manifest"):
        try:
            raw = fs.cat_file(_join(src, MANIFEST))
        except FileNotFoundError:
            raise GbufError(f"{url}: no {MANIFEST} (not a pushed gbuf store, or its push is unfinished)") from None
    try:
        manifest = check_manifest(json.loads(raw), f"{url}/{MANIFEST}")
    except json.JSONDecodeError:
        raise GbufError(f"{url}/{MANIFEST}: not valid JSON") from None

    # The local folder: empty, an earlier pull of this dataset, or refused.
    if root.exists() and any(root.iterdir()):
        local_ids = set()
        for marker in (MANIFEST, JOURNAL):  # a finished or an interrupted pull
            with contextlib.suppress(Exception):
                local_ids.add(json.loads((root / marker).read_text())["dataset_id"])
        with contextlib.suppress(Exception):
            local_ids.add(json.loads((root / "zarr.json").read_text())["attributes"][fmt.ATTRS_KEY]["dataset_id"])
        if manifest.get("dataset_id") not in local_ids:
            if not (root / "zarr.json").is_file() or not local_ids and not _is_gbuf_root(root):
                # Pull removes files the manifest does not name: never do that to a folder of other things.
                raise GbufError(f"{root}: not empty and not a gbuf store; pull into an empty folder")
            if not force:
                raise GbufError(f"{root}: holds another dataset; use --force to replace it")
    root.mkdir(parents=True, exist_ok=True)
    local_manifest = None
    if (root / MANIFEST).is_file():
        with contextlib.suppress(Exception):
            local_manifest = json.loads((root / MANIFEST).read_text())
    # The local copy is unfinished until this pull ends: the journal names what it is becoming.
    (root / JOURNAL).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if (root / MANIFEST).is_file():
        (root / MANIFEST).unlink()

    files = manifest["files"]

    def have(rel: str) -> bool:
        path = root / rel
        if not path.is_file() or path.stat().st_size != files[rel]["size"]:
            return False
        if isinstance(local_manifest, dict) and local_manifest.get("files", {}).get(rel) == files[rel]:
            return True
        return sha256(path.read_bytes()) == files[rel]["sha256"]

    with cf.ThreadPoolExecutor(max(1, jobs)) as pool:
        present = dict(zip(files, pool.map(have, files)))
    todo = [rel for rel in files if not present[rel]]
    # Metadata first: error messages about a shard read the array's zarr.json.
    todo.sort(key=lambda rel: (not rel.endswith("zarr.json"), rel))
    bar = _Progress(progress, sum(files[r]["size"] for r in todo), "pull")

    def download(rel: str) -> int:
        data = fs.cat_file(_join(src, rel))
        entry = files[rel]
        if len(data) != entry["size"] or sha256(data) != entry["sha256"]:
            raise GbufError(f"{url}/{rel}: arrived corrupted (sha256 mismatch; "
                            f"{_shard_frames(root, rel, data)}); nothing written for it")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        bar.advance(len(data))
        return len(data)

    with _remote_errors(url, "pull"):
        try:
            metadata = [r for r in todo if r.endswith("zarr.json")]
            chunks = [r for r in todo if not r.endswith("zarr.json")]
            received = _run_all(download, [metadata, chunks], jobs)
        finally:
            bar.close()
    # Files the manifest no longer names (an older version of the dataset) go.
    removed = 0
    for rel in _local_files(root):
        if rel not in files:
            (root / rel).unlink()
            removed += 1
    for leftover in root.rglob(".*.part"):  # an interrupted pull's temporary files
        if leftover.is_file() and STATE_DIR not in leftover.relative_to(root).parts:
            leftover.unlink()
    frames = 0
    if verify:
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
