"""push / pull / card / remote reading against real servers on loopback.

An S3 server (moto's standalone server, with IAM credential checking switched on;
the ``s3`` fixture in conftest.py) and a plain ``http.server`` are started by the
tests and stopped after.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gbuf.datasets as gd
from gbuf.cli import main as cli
from gbuf.datasets import sharing
from gbuf.datasets.sharing import local as sharing_local
from gbuf.datasets.sharing import transport
from gbuf.datasets.synthetic import make_synthetic_store
from gbuf.errors import GbufError

pytest.importorskip("s3fs", reason="gbuf[share] not installed (s3fs)")
pytest.importorskip("moto.server", reason="gbuf[share] not installed (moto[server])")

BUCKET = "gbuf-data"  # made by the s3 fixture (conftest.py)


def s3fs_for(options):
    import s3fs

    return s3fs.S3FileSystem(**options)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "data.zarr"
    return make_synthetic_store(path, sequences=2, frames=8, height=32, width=48, frames_per_shard=4)


def content_files(root: Path) -> dict[str, bytes]:
    """The store's content: what a manifest lists (no writer state or sharing cache, no manifest, no card)."""
    return {rel: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and (rel := p.relative_to(root).as_posix()).split("/")[0] not in (".gbuf", sharing.MANIFEST, "README.md")}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file outside .gbuf/ with its bytes and mtime (to see that push leaves a store alone)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != ".gbuf"}


def copy_store(source: Path, dest: Path, *, age_s: float = 60.0) -> Path:
    """A copy of the store whose files look written ``age_s`` ago (past the hash cache's racy window)."""
    import os
    import shutil
    import time

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".gbuf"))
    past = time.time_ns() - int(age_s * 1e9)
    for p in dest.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(past, past))
    return dest


def test_push_pull_s3_roundtrip_incremental(s3, source, tmp_path):
    url = f"s3://{BUCKET}/roundtrip/data.zarr"
    first = sharing.push(source, url, jobs=4, storage_options=s3)
    assert first.sent_files == first.files > 10 and first.skipped_files == 0
    assert not (source / "README.md").exists()  # the card is generated and sent, not written locally
    again = sharing.push(source, url, jobs=4, storage_options=s3)
    assert again.sent_files == 0 and again.sent_bytes == 0 and again.skipped_files == first.files
    fs = s3fs_for(s3)
    assert fs.exists(f"{BUCKET}/roundtrip/data.zarr/{sharing.MANIFEST}")
    assert not fs.exists(f"{BUCKET}/roundtrip/data.zarr/{sharing.JOURNAL}")
    assert b"Dataset id: `" + first.dataset_id.encode() in fs.cat_file(f"{BUCKET}/roundtrip/data.zarr/README.md")

    local = tmp_path / "pulled.zarr"
    reported = []
    got = sharing.pull(url, local, jobs=4, storage_options=s3, progress=lambda *a: reported.append(a))
    assert got.received_files == first.files and got.frames_verified == 0  # sha256 only by default
    assert got.received_bytes == got.total_bytes == first.total_bytes
    assert reported[0] == ("pull", 0, got.received_bytes) and reported[-1] == ("pull",) + (got.received_bytes,) * 2
    assert [done for _, done, _ in reported] == sorted(done for _, done, _ in reported)
    assert content_files(local) == content_files(source) and (local / "README.md").is_file()
    assert gd.verify(local).ok
    assert sharing.pull(url, local, jobs=4, storage_options=s3).received_files == 0
    checked = sharing.pull(url, local, jobs=4, storage_options=s3, frame_check=True)
    assert checked.received_files == 0 and checked.frames_verified == 32


def test_interrupted_push_resumes(s3, source, tmp_path, monkeypatch):
    import s3fs

    url = f"s3://{BUCKET}/interrupted/data.zarr"
    real = s3fs.S3FileSystem._pipe_file
    uploaded = []

    async def flaky(self, path, data, *args, **kwargs):
        if not path.endswith(sharing.JOURNAL):
            if len(uploaded) >= 5:
                raise ConnectionError("network dropped")
            uploaded.append(path)
        return await real(self, path, data, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", flaky)
    with pytest.raises(GbufError, match="interrupted/data.zarr: push failed .*network dropped"):
        sharing.push(source, url, jobs=3, storage_options=s3)
    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", real)
    # Unfinished: no manifest, so pull refuses rather than fetching half a store.
    with pytest.raises(GbufError, match="no gbuf-manifest.json"):
        sharing.pull(url, tmp_path / "early.zarr", storage_options=s3)
    rerun = sharing.push(source, url, jobs=3, storage_options=s3)
    assert rerun.skipped_files == len(uploaded) == 5
    assert rerun.sent_files == rerun.files - 5
    local = tmp_path / "pulled.zarr"
    sharing.pull(url, local, storage_options=s3)
    assert content_files(local) == content_files(source)


def test_interrupted_pull_resumes(source, tmp_path, monkeypatch):
    pushed = tmp_path / "pushed"
    total = sharing.push(source, str(pushed)).files
    real = sharing_local.copy_local
    fetched = []

    def flaky(src, *args, **kwargs):
        if len(fetched) >= 6:
            raise ConnectionResetError("connection reset")
        fetched.append(src)
        return real(src, *args, **kwargs)

    monkeypatch.setattr(sharing_local, "copy_local", flaky)
    local = tmp_path / "pulled.zarr"
    with pytest.raises(GbufError, match="pull failed .*connection reset"):
        sharing.pull(str(pushed), local, jobs=1)
    assert not (local / sharing.MANIFEST).exists()  # unfinished, and says so
    monkeypatch.setattr(sharing_local, "copy_local", real)
    rerun = sharing.pull(str(pushed), local, jobs=2)
    assert rerun.skipped_files == 6 and rerun.received_files == total - 6
    assert content_files(local) == content_files(source) and (local / sharing.MANIFEST).is_file()
    assert not list(local.rglob("*.part"))
    with pytest.raises(GbufError, match="read-only"):
        sharing.push(source, "http://127.0.0.1:9/data.zarr")


def test_corrupted_object_is_caught_on_pull(s3, source, tmp_path):
    url = f"s3://{BUCKET}/corrupt/data.zarr"
    sharing.push(source, url, storage_options=s3)
    fs = s3fs_for(s3)
    key = f"{BUCKET}/corrupt/data.zarr/synthetic_001/hr/color/c/1/0/0/0"
    good = fs.cat_file(key)
    bad = bytearray(good)
    bad[len(bad) // 3] ^= 0xFF
    fs.pipe_file(key, bytes(bad))
    local = tmp_path / "pulled.zarr"
    with pytest.raises(GbufError) as err:
        sharing.pull(url, local, storage_options=s3)
    msg = str(err.value)
    assert "\n" not in msg
    assert "sequence synthetic_001, group hr, pack 'color' (image)" in msg
    assert re.search(r"frame\(s\) [4-7]\b", msg), msg  # the frame the flipped byte lies in
    assert not (local / "synthetic_001/hr/color/c/1/0/0/0").exists()  # nothing corrupt written
    assert not (local / sharing.MANIFEST).exists()

    # Corrupt data whose manifest agrees (a bad source): the per-frame checksums name the frame.
    manifest = json.loads(fs.cat_file(f"{BUCKET}/corrupt/data.zarr/{sharing.MANIFEST}"))
    manifest["files"]["synthetic_001/hr/color/c/1/0/0/0"]["sha256"] = sharing.sha256(bytes(bad))
    fs.pipe_file(f"{BUCKET}/corrupt/data.zarr/{sharing.MANIFEST}", json.dumps(manifest).encode())
    assert sharing.pull(url, tmp_path / "trusting.zarr", storage_options=s3).frames_verified == 0
    with pytest.raises(GbufError, match=r"synthetic_001/hr: frame [4-7]: color"):
        sharing.pull(url, local, storage_options=s3, frame_check=True)
    assert not (local / sharing.MANIFEST).exists()
    # Repaired at the source: the rerun fetches the one object again and verifies.
    fs.pipe_file(key, good)
    manifest["files"]["synthetic_001/hr/color/c/1/0/0/0"]["sha256"] = sharing.sha256(good)
    fs.pipe_file(f"{BUCKET}/corrupt/data.zarr/{sharing.MANIFEST}", json.dumps(manifest).encode())
    assert sharing.pull(url, local, storage_options=s3, frame_check=True).received_files == 1


def test_wrong_credentials_and_unreachable(s3, source, tmp_path, monkeypatch):
    url = f"s3://{BUCKET}/creds/data.zarr"
    wrong = {**s3, "secret": "not-the-secret"}
    with pytest.raises(GbufError, match="creds/data.zarr: .*(Forbidden|SignatureDoesNotMatch|Access)"):
        sharing.push(source, url, storage_options=wrong)
    assert not s3fs_for(s3).exists(f"{BUCKET}/creds/data.zarr")  # nothing written
    sharing.push(source, url, storage_options=s3)
    with pytest.raises(GbufError, match="Forbidden|SignatureDoesNotMatch|Access"):
        sharing.pull(url, tmp_path / "x.zarr", storage_options=wrong)
    with pytest.raises(GbufError):
        gd.open(url, storage_options=wrong)
    # The CLI: options from GBUF_STORAGE_OPTIONS, one line on stderr, exit 2.
    monkeypatch.setenv("GBUF_STORAGE_OPTIONS", json.dumps(wrong))
    result = CliRunner().invoke(cli, ["dataset", "pull", url, str(tmp_path / "y.zarr")])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("gbuf: error")]
    assert len(lines) == 1 and url in lines[0]
    assert "pulled" not in result.output
    unreachable = {**s3, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    with pytest.raises(GbufError, match="creds/data.zarr: .*(Connect|connect)"):
        sharing.push(source, url, storage_options=unreachable)


def test_refuses_other_dataset_unless_forced(s3, source, tmp_path):
    url = f"s3://{BUCKET}/identity/data.zarr"
    sharing.push(source, url, storage_options=s3)
    other = make_synthetic_store(tmp_path / "other.zarr", sequences=1, frames=4, height=32, width=48, seed=7)
    with pytest.raises(GbufError, match="different dataset.*--force"):
        sharing.push(other, url, storage_options=s3)
    replaced = sharing.push(other, url, storage_options=s3, force=True)
    assert replaced.removed_files > 0  # the first dataset's second sequence is gone
    local = tmp_path / "pulled.zarr"
    sharing.pull(url, local, storage_options=s3)
    assert content_files(local) == content_files(other)
    # A local folder with a different dataset is refused too.
    with pytest.raises(GbufError, match="another dataset.*--force"):
        sharing.pull(url, source, storage_options=s3)
    # A folder of other things is never pulled into (pull would remove what the manifest lacks).
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GbufError, match="not a gbuf store"):
        sharing.pull(url, tmp_path / "mine", storage_options=s3, force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_manifest_paths_outside_destination_refused(source, tmp_path):
    dest = tmp_path / "pushed"
    sharing.push(source, str(dest))
    manifest = json.loads((dest / sharing.MANIFEST).read_text())
    for evil in ("../escape.txt", "/tmp/escape.txt", "a/../../escape.txt", ".gbuf/x"):
        hacked = dict(manifest, files={**manifest["files"], evil: {"size": 1, "sha256": "0" * 64}})
        (dest / sharing.MANIFEST).write_text(json.dumps(hacked))
        with pytest.raises(GbufError, match="refused"):
            sharing.pull(str(dest), tmp_path / "out.zarr")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out.zarr").exists()


def test_push_leaves_the_source_alone_and_hashes_each_file_once(source, tmp_path, monkeypatch):
    from gbuf.datasets.datacard import card_text

    store = copy_store(source, tmp_path / "store.zarr")
    before = snapshot(store)
    dest = tmp_path / "dest"
    reported = []
    first = sharing.push(store, str(dest), jobs=2, progress=lambda *a: reported.append(a))
    assert snapshot(store) == before  # nothing outside .gbuf/ written, not even touched
    assert (first.store, first.url, first.sent_files, first.skipped_files) == (str(store), str(dest), first.files, 0)
    assert len(reported) == first.sent_files + 1 and reported[-1] == ("push", first.sent_bytes, first.total_bytes)
    assert sorted(p.name for p in (store / ".gbuf").iterdir()) == [sharing.ID_FILE, sharing.CACHE_FILE]
    # The manifest describes exactly the bytes that arrived, and the card was generated for the push.
    manifest = json.loads((dest / sharing.MANIFEST).read_text())
    assert set(manifest["files"]) == set(content_files(store)) | {"README.md"}
    for rel, entry in manifest["files"].items():
        data = (dest / rel).read_bytes()
        assert (len(data), sharing.sha256(data)) == (entry["size"], entry["sha256"]), rel
    assert (dest / "README.md").read_text() == card_text(store, dataset_id=first.dataset_id)
    assert not list(dest.rglob("*.part"))

    # A second push reads no file: sizes and SHA-256 come from the cache in .gbuf/.
    hashed = []
    real_hash = sharing_local.hash_file
    monkeypatch.setattr(sharing_local, "hash_file", lambda path, where: hashed.append(path) or real_hash(path, where))
    reported.clear()
    again = sharing.push(store, str(dest), jobs=2, progress=lambda *a: reported.append(a))
    assert again.sent_files == 0 and again.skipped_files == first.files and hashed == []
    assert reported == []  # nothing to send, nothing to report
    # A shard rewritten in place with the same size is noticed (its mtime moved) and sent again.
    rel = "synthetic_000/hr/color/c/0/0/0/0"
    changed = bytearray((store / rel).read_bytes())
    changed[100] ^= 0xFF
    (store / rel).write_bytes(bytes(changed))
    third = sharing.push(store, str(dest), jobs=2)
    assert third.sent_files == 1 and [Path(p).name for p in hashed] == ["0"]
    assert (dest / rel).read_bytes() == bytes(changed)
    assert json.loads((dest / sharing.MANIFEST).read_text())["files"][rel]["sha256"] == sharing.sha256(changed)


def test_open_push_and_pull_ask_the_format_alike(source, tmp_path):
    """One check of "a gbuf store this gbuf reads" (format.check_root_attrs): open and push say the same."""
    from gbuf.datasets import format as fmt

    store = copy_store(source, tmp_path / "newer.zarr")
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["gbuf"]["version"] = "2.0"
    (store / "zarr.json").write_text(json.dumps(meta))
    expected = f"{store}: gbuf format 2.0 is not readable by this gbuf (reads {fmt.FORMAT_VERSION})"
    with pytest.raises(GbufError) as opened:
        gd.open(store)
    with pytest.raises(GbufError) as pushed:
        sharing.push(store, str(tmp_path / "dest"))
    assert str(opened.value) == str(pushed.value) == expected
    assert not (tmp_path / "dest").exists()
    # Pull never replaces a folder it cannot read as a gbuf store, even with --force.
    published = tmp_path / "published"
    sharing.push(source, str(published))
    with pytest.raises(GbufError, match=re.escape(f"{expected}; pull into an empty folder")):
        sharing.pull(str(published), store, force=True)
    assert json.loads((store / "zarr.json").read_text()) == meta


def test_push_from_a_store_it_cannot_write_to(source, tmp_path, monkeypatch):
    store = copy_store(source, tmp_path / "store.zarr")
    real_mkdir, real_write = Path.mkdir, Path.write_text

    def refuse(path):  # as on a read-only mount (chmod would not stop root)
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse(self) if self.is_relative_to(store)
                        else real_mkdir(self, *a, **k))
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: refuse(self) if self.is_relative_to(store)
                        else real_write(self, *a, **k))
    before = snapshot(store)
    first = sharing.push(store, f"memory://ro/{tmp_path.name}")
    again = sharing.push(store, f"memory://ro/{tmp_path.name}")  # the same dataset (a stable id), nothing to send
    assert again.dataset_id == first.dataset_id and again.sent_files == 0
    assert snapshot(store) == before and not (store / ".gbuf").exists()


def test_manifest_records_the_bytes_sent_even_with_a_stale_cache(source, tmp_path, monkeypatch):
    store = copy_store(source, tmp_path / "store.zarr")
    sharing.push(store, str(tmp_path / "a"))
    stale = {rel: entry[4] for rel, entry in sharing_local.HashCache(store).files.items()}
    rel = "synthetic_001/lr/geom32/c/1/0/0/0"
    changed = bytearray((store / rel).read_bytes())
    changed[-20] ^= 0x01
    (store / rel).write_bytes(bytes(changed))
    # The cache wrongly claims every file is as before: it may decide what to skip, never what is recorded.
    monkeypatch.setattr(sharing_local.HashCache, "lookup", lambda self, r, st: stale.get(r))
    sharing.push(store, str(tmp_path / "b"))
    manifest = json.loads((tmp_path / "b" / sharing.MANIFEST).read_text())
    assert manifest["files"][rel]["sha256"] == sharing.sha256(bytes(changed)) != stale[rel]
    for r, entry in manifest["files"].items():
        assert sharing.sha256((tmp_path / "b" / r).read_bytes()) == entry["sha256"], r


def test_push_refuses_symlinks_out_of_the_store(source, tmp_path):
    store = copy_store(source, tmp_path / "store.zarr")
    dest = tmp_path / "dest"
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the dataset")
    link = store / "synthetic_000" / "notes.txt"
    link.symlink_to(secret)
    with pytest.raises(GbufError, match=r"synthetic_000/notes.txt: a symlink to .*secret.txt, outside the store; "
                                        r"refused") as err:
        sharing.push(store, str(dest))
    assert "\n" not in str(err.value) and not dest.exists()
    link.unlink()
    (store / "synthetic_000" / "escape").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(GbufError, match="escape: a symlink to .*, outside the store; refused"):
        sharing.push(store, str(dest))
    (store / "synthetic_000" / "escape").unlink()
    (store / "synthetic_000" / "loop").symlink_to(store / "synthetic_000", target_is_directory=True)
    with pytest.raises(GbufError, match="a second time through a symlink .*refused"):
        sharing.push(store, str(dest))
    (store / "synthetic_000" / "loop").unlink()
    assert not dest.exists()
    # A link that stays inside the store is pushed as the file it names.
    (store / "synthetic_000" / "alias.json").symlink_to(store / "synthetic_000" / "zarr.json")
    sharing.push(store, str(dest))
    alias = dest / "synthetic_000" / "alias.json"
    assert not alias.is_symlink() and alias.read_bytes() == (store / "synthetic_000" / "zarr.json").read_bytes()


def test_push_readback_and_what_is_checked_without_it(s3, source, tmp_path, monkeypatch):
    import s3fs

    url = f"s3://{BUCKET}/readback/data.zarr"
    rel = "synthetic_000/lr/geom32/c/1/0/0/0"
    real = s3fs.S3FileSystem._pipe_file

    async def garble(self, path, data, *args, **kwargs):  # same size, one bit flipped on the way
        if path.endswith(rel):
            data = bytes(data[:-1]) + bytes([data[-1] ^ 1])
        return await real(self, path, data, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", garble)
    with pytest.raises(GbufError, match=f"readback/data.zarr/{re.escape(rel)}: arrived corrupted"):
        sharing.push(source, url, storage_options=s3, readback=True)
    # Without --readback the destination is checked by size only (as documented): the push
    # completes, and the corruption is caught where every object is hashed again, on pull.
    sharing.push(source, url, storage_options=s3)
    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", real)
    with pytest.raises(GbufError, match=f"{re.escape(rel)}: arrived corrupted .*sequence synthetic_000, group lr"):
        sharing.pull(url, tmp_path / "pulled.zarr", storage_options=s3)
    repaired = sharing.push(source, url, storage_options=s3, readback=True, force=True)
    assert repaired.sent_files == repaired.files


def test_large_objects_are_streamed(s3, source, tmp_path, http_server, monkeypatch):
    """Objects above the one-request size are streamed in blocks, hashed on the way, both directions."""
    monkeypatch.setattr(transport, "WHOLE_MAX", 1000)
    monkeypatch.setattr(transport, "REMOTE_BLOCK", 4096)
    url = f"s3://{BUCKET}/streamed/data.zarr"
    sharing.push(source, url, storage_options=s3, readback=True)
    local = tmp_path / "from-s3.zarr"
    sharing.pull(url, local, storage_options=s3)
    assert content_files(local) == content_files(source)
    site = tmp_path / "site" / "data.zarr"
    sharing.push(source, str(site))
    rel = "synthetic_001/hr/geom32/c/0/0/0/0"
    good = (site / rel).read_bytes()
    (site / rel).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    base = http_server(tmp_path / "site")
    with pytest.raises(GbufError, match=f"{re.escape(rel)}: arrived corrupted .*sequence synthetic_001, group hr"):
        sharing.pull(f"{base}/data.zarr", tmp_path / "from-http.zarr")
    assert not list((tmp_path / "from-http.zarr").rglob("*.part"))
    (site / rel).write_bytes(good)
    got = sharing.pull(f"{base}/data.zarr", tmp_path / "from-http.zarr")
    assert got.received_files >= 1 and content_files(tmp_path / "from-http.zarr") == content_files(source)


def test_pull_fetches_a_damaged_local_file_again(source, tmp_path):
    pushed = tmp_path / "pushed"
    sharing.push(source, str(pushed))
    local = tmp_path / "local.zarr"
    sharing.pull(str(pushed), local)
    rel = "synthetic_000/hr/geom16/c/1/0/0/0"
    damaged = bytearray((local / rel).read_bytes())
    damaged[7] ^= 0x10
    (local / rel).write_bytes(bytes(damaged))  # same size: only its hash tells
    # Changed since pull wrote it (damage or local work, pull cannot tell): refused, kept as it is.
    with pytest.raises(GbufError, match=f"{re.escape(rel)}: changed locally since pull wrote it.*--force"):
        sharing.pull(str(pushed), local)
    assert (local / rel).read_bytes() == bytes(damaged)
    again = sharing.pull(str(pushed), local, force=True)
    assert again.received_files == 1 and again.skipped_files == again.files - 1
    assert (local / rel).read_bytes() == (pushed / rel).read_bytes()
    # The pulled copy pushes back as the same dataset (its manifest names it), sending only its own
    # card (titled after its folder); every other file's hash was cached by the pull.
    back = sharing.push(local, str(pushed))
    assert back.sent_files == 1 and back.skipped_files == back.files - 1


def test_pull_without_a_manifest_says_why(source, tmp_path):
    with pytest.raises(GbufError, match="no gbuf-manifest.json: not a pushed gbuf store .*never pushed can be "
                                        "read in place"):
        sharing.pull(str(source), tmp_path / "a.zarr")  # a store, but never pushed
    pushed = tmp_path / "pushed"
    sharing.push(source, str(pushed))
    manifest = (pushed / sharing.MANIFEST).read_text()
    (pushed / sharing.MANIFEST).unlink()
    (pushed / sharing.JOURNAL).write_text(manifest)  # as an interrupted push leaves it
    with pytest.raises(GbufError, match="no gbuf-manifest.json: its push is unfinished .*rerun the push"):
        sharing.pull(str(pushed), tmp_path / "b.zarr")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def _counting_store(url, s3, cache):
    """A cached store over ``url`` that records every request its remote store serves."""
    from gbuf.datasets import remote_store

    store = remote_store.open_zarr_store(url, read_only=True, storage_options=s3, cache_dir=cache)
    requests = []
    inner_get = store._store.get

    async def counting(key, prototype, byte_range=None):
        requests.append((key, byte_range))
        return await inner_get(key, prototype, byte_range)

    store._store.get = counting
    return store, requests


def test_cache_serves_ranges_from_one_local_copy_per_version(s3, tmp_path, monkeypatch):
    import os

    import zarr

    from gbuf.datasets import remote_store

    # Wide enough that a shard holds several inner chunks (zarr then asks for byte ranges).
    wide = make_synthetic_store(tmp_path / "wide.zarr", frames=8, height=32, width=400, frames_per_shard=4)
    url = f"s3://{BUCKET}/cached/data.zarr"
    sharing.push(wide, url, storage_options=s3)
    cache = tmp_path / "cache"
    store, requests = _counting_store(url, s3, cache)
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(remote_store.os, "pread", lambda fd, n, off: reads.append(n) or real_pread(fd, n, off))
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if cache in self.parents:
            pytest.fail(f"whole cached file read for a range: {self}")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    remote = zarr.open_group(store, mode="r")["synthetic_000/hr/color"]
    local = zarr.open_group(str(wide), mode="r")["synthetic_000/hr/color"]
    for t in (5, 6, 7, 5):
        np.testing.assert_array_equal(remote[t, :16, :16], local[t, :16, :16])
    key = "synthetic_000/hr/color/c/1/0/0/0"
    assert [(k, r) for k, r in requests if "/c/" in k] == [(key, None)]  # the shard fetched whole, once
    assert len(reads) >= 4 and max(reads) < (wide / key).stat().st_size / 2  # then just the ranges asked for
    monkeypatch.undo()
    cached = [p for p in cache.rglob("*") if p.is_file()]
    assert [p.name for p in cached] == [f"0.sha256-{sharing.sha256((wide / key).read_bytes())}"]

    # Another dataset pushed over the same URL: a new store on the same cache serves the new bytes.
    other = make_synthetic_store(tmp_path / "other.zarr", frames=8, height=32, width=400, frames_per_shard=4,
                                 seed=11)
    sharing.push(other, url, storage_options=s3, force=True)
    fresh, _ = _counting_store(url, s3, cache)
    got = zarr.open_group(fresh, mode="r")["synthetic_000/hr/color"][6]
    np.testing.assert_array_equal(got, zarr.open_group(str(other), mode="r")["synthetic_000/hr/color"][6])
    assert not np.array_equal(got, local[6])

    # An object that arrives different from the manifest is refused, not cached.
    fs = s3fs_for(s3)
    bad_key = "synthetic_000/lr/color/c/0/0/0/0"
    good = fs.cat_file(f"{BUCKET}/cached/data.zarr/{bad_key}")
    fs.pipe_file(f"{BUCKET}/cached/data.zarr/{bad_key}", good[:-1] + bytes([good[-1] ^ 1]))
    third, _ = _counting_store(url, s3, tmp_path / "cache3")
    with pytest.raises(GbufError, match=f"{re.escape(bad_key)}: does not match its sha256"):
        zarr.open_group(third, mode="r")["synthetic_000/lr/color"][0]
    assert not [p for p in (tmp_path / "cache3").rglob("*") if p.is_file()]


def test_cache_without_manifest_is_keyed_by_etag(s3, source, tmp_path):
    import zarr

    url = f"s3://{BUCKET}/etag/data.zarr"
    sharing.push(source, url, storage_options=s3)
    fs = s3fs_for(s3)
    fs.rm(f"{BUCKET}/etag/data.zarr/{sharing.MANIFEST}")
    key = "synthetic_000/lr/color/c/0/0/0/0"
    cache = tmp_path / "cache"
    store, _ = _counting_store(url, s3, cache)
    first = zarr.open_group(store, mode="r")["synthetic_000/lr/color"][1]
    assert [p.name.split(".")[1][:2] for p in cache.rglob("*") if p.is_file()] == ["v-"]
    # The object is replaced by one of the same size: its ETag changes, so it is fetched again.
    other = make_synthetic_store(tmp_path / "other.zarr", sequences=1, frames=8, height=32, width=48,
                                 frames_per_shard=4, seed=5)
    replacement = (other / key).read_bytes()
    fs.pipe_file(f"{BUCKET}/etag/data.zarr/{key}", replacement)
    fresh, requests = _counting_store(url, s3, cache)
    second = zarr.open_group(fresh, mode="r")["synthetic_000/lr/color"][1]
    np.testing.assert_array_equal(second, zarr.open_group(str(other), mode="r")["synthetic_000/lr/color"][1])
    assert not np.array_equal(first, second) and (key, None) in requests


@pytest.fixture()
def http_server(tmp_path):
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_pull_over_http(source, tmp_path, http_server):
    pushed = tmp_path / "site" / "data.zarr"
    result = CliRunner().invoke(cli, ["dataset", "push", str(source), str(pushed), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    base = http_server(tmp_path / "site")
    local = tmp_path / "pulled.zarr"
    result = CliRunner().invoke(cli, ["dataset", "pull", f"{base}/data.zarr", str(local), "-j", "4",
                                      "--frame-check"])
    assert result.exit_code == 0, result.output
    assert "(sha256 checked)" in result.output and "32 frame(s) verified" in result.output
    assert content_files(local) == content_files(source)
    with pytest.raises(GbufError, match="no gbuf-manifest.json"):
        sharing.pull(f"{base}/nothing-here", tmp_path / "none.zarr")


@pytest.mark.slow
def test_read_directly_from_s3_with_cache(s3, source, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    url = f"s3://{BUCKET}/direct/data.zarr"
    sharing.push(source, url, storage_options=s3)
    summary = gd.info(url, storage_options=s3)
    assert set(summary["sequences"]) == {"synthetic_000", "synthetic_001"}
    assert summary["sequences"]["synthetic_000"]["resolutions"]["lr"]["frames"] == 8
    report = gd.verify(url, storage_options=s3)
    assert report.ok and report.frames_checked == 32
    remote = gd.open(url, storage_options=s3)["synthetic_001"]["hr"].read("motion", t=slice(2, 6))
    local = gd.open(source)["synthetic_001"]["hr"].read("motion", t=slice(2, 6))
    np.testing.assert_array_equal(remote, local)

    # CLI info on the URL with options and the cache from the environment.
    cache = tmp_path / "cache"
    monkeypatch.setenv("GBUF_STORAGE_OPTIONS", json.dumps(s3))
    monkeypatch.setenv("GBUF_CACHE_DIR", str(cache))
    result = CliRunner().invoke(cli, ["dataset", "info", url])
    assert result.exit_code == 0 and "synthetic_001" in result.output, result.output
    result = CliRunner().invoke(cli, ["dataset", "verify", url])
    assert result.exit_code == 0, result.output

    # The crop loader in two DataLoader worker processes reads the same crops as locally.
    remote_ds = gd.CropDataset(url, frames=3, patch=16, length=6, seed=3)
    local_ds = gd.CropDataset(str(source), frames=3, patch=16, length=6, seed=3)
    loader = torch.utils.data.DataLoader(remote_ds, batch_size=3, num_workers=2)
    got = [b for b in loader]
    want = [b for b in torch.utils.data.DataLoader(local_ds, batch_size=3, num_workers=0)]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=0, atol=0)
    cached = [p for p in cache.rglob("*") if p.is_file()]
    assert cached and all("/c/" in p.as_posix() for p in cached)  # shards cached, metadata not
    assert not [p for p in cached if p.name.endswith(".part")]


def test_card(source, tmp_path):
    store = make_synthetic_store(tmp_path / "card.zarr", sequences=1, frames=4, height=32, width=48)
    result = CliRunner().invoke(cli, ["dataset", "card", str(store), "--license", "CC-BY-4.0"])
    assert result.exit_code == 0, result.output
    text = (store / "README.md").read_text()
    assert gd.open(store).attrs["license"] == "CC-BY-4.0"
    for needle in ("License: CC-BY-4.0", "| synthetic_000 | 4 | 24 | hr | 48x32 | x1 |",
                   "| synthetic_000 | 4 | 24 | lr | 12x8 | x4 |", "planar camera Z", "+inf",
                   "pixels of the group's own resolution", "y down", "diffuse colour + glossy colour",
                   "gbuf 0.", "import gbuf.datasets as gd", 'gd.open("card.zarr")',
                   "Efficient Video Super-Resolution for Real-time Rendering with Decoupled G-buffer Guidance",
                   "CVPR", "2025"):
        assert needle in text, needle
    # The card lives beside the zarr hierarchy: open/verify/sequences ignore it.
    assert gd.open(store).sequences == ["synthetic_000"]
    assert gd.verify(store).ok
    # The three loading lines run.
    code = text.split("```python\n")[1].split("```")[0].replace('"card.zarr"', repr(str(store)))
    scope: dict = {}
    exec(code, scope)
    assert scope["lr"]["image"].shape == (4, 8, 12, 3)
    result = CliRunner().invoke(cli, ["dataset", "card", str(tmp_path)])
    assert result.exit_code == 2 and "gbuf: error" in result.output


def _one_line_cli_error(args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _write_sequence(store: Path, name: str, frames: int = 4, height: int = 32, width: int = 48) -> None:
    """A sequence of one's own, written into ``store`` as a render would (SequenceWriter)."""
    from gbuf.datasets import format as fmt
    from gbuf.datasets.synthetic import synthetic_frame

    specs = {fmt.HR: (height, width, list(fmt.RDG_BUFFERS)), fmt.LR: (height // 4, width // 4, list(fmt.RDG_BUFFERS))}
    with gd.SequenceWriter(store, name, frames, specs, sequence_attrs={"fps": 24},
                           resolution_attrs={g: {"image_encoding": "linear"} for g in specs}) as writer:
        for t in range(writer.next_frame, frames):
            writer.append(synthetic_frame(t, height, width, 4, (1.0, 0.5), 3, fmt.RDG_BUFFERS))


def _edit_attrs(path: Path, **extra) -> None:
    meta = json.loads(path.read_text())
    meta["attributes"]["gbuf"].update(extra)
    path.write_text(json.dumps(meta))


def test_repull_keeps_local_work_and_refuses_to_overwrite_local_changes(source, tmp_path):
    """Issue 13, case 3: pull manages only what pulls wrote; local work is never deleted or overwritten."""
    import shutil

    from gbuf.datasets.degrade.api import degrade_store

    src = copy_store(source, tmp_path / "src.zarr")
    pushed = tmp_path / "pushed"
    sharing.push(src, str(pushed))
    local = tmp_path / "local.zarr"
    sharing.pull(str(pushed), local)
    assert (local / ".gbuf" / "pulled.json").is_file()
    # Local work: a sequence rendered into the pulled store and a group degraded into it.
    _write_sequence(local, "mine")
    assert degrade_store(local, "bicubic", scale=2, name="lr_mine", sequences=["synthetic_000"]) \
        == [("synthetic_000", "lr_mine")]
    mine = {rel: data for rel, data in content_files(local).items()
            if rel.startswith("mine/") or rel.startswith("synthetic_000/lr_mine/")}
    assert len(mine) > 10
    result = CliRunner().invoke(cli, ["dataset", "pull", str(pushed), str(local)])
    assert result.exit_code == 0, result.output
    assert {rel: data for rel, data in content_files(local).items() if rel in mine} == mine
    assert gd.verify(local).ok and "mine" in gd.open(local).sequences

    # The dataset drops a sequence: the files pull wrote for it go, local work stays. A copy
    # pulled before the record existed (no pulled.json) is described by its local manifest.
    (local / ".gbuf" / "pulled.json").unlink()
    shutil.rmtree(src / "synthetic_001")
    sharing.push(src, str(pushed))
    again = sharing.pull(str(pushed), local)
    assert again.removed_files > 0 and not (local / "synthetic_001").exists()
    assert {rel: data for rel, data in content_files(local).items() if rel in mine} == mine

    # A pulled file changed locally, and changed in the source too: refused, nothing written.
    rel = "synthetic_000/zarr.json"
    _edit_attrs(local / rel, note="mine")
    _edit_attrs(src / rel, note="the source's")
    sharing.push(src, str(pushed))
    before = snapshot(local)
    line = _one_line_cli_error(["dataset", "pull", pushed, local])
    assert f"{rel}: changed locally since pull wrote it" in line and "--force" in line
    assert snapshot(local) == before
    # A file of one's own where the dataset now has one of the same name: refused as well.
    (src / "notes").mkdir()
    (src / "notes" / "a.txt").write_text("the source's")
    sharing.push(src, str(pushed))
    (local / "notes").mkdir()
    (local / "notes" / "a.txt").write_text("mine")
    with pytest.raises(GbufError, match="(notes/a.txt|synthetic_000/zarr.json): .*refusing to overwrite"):
        sharing.pull(str(pushed), local)
    assert (local / "notes" / "a.txt").read_text() == "mine"
    # --force overwrites them with the source's, and still leaves local work alone.
    result = CliRunner().invoke(cli, ["dataset", "pull", str(pushed), str(local), "--force"])
    assert result.exit_code == 0, result.output
    assert (local / rel).read_bytes() == (pushed / rel).read_bytes()
    assert (local / "notes" / "a.txt").read_text() == "the source's"
    assert {rel: data for rel, data in content_files(local).items() if rel in mine} == mine
    assert sharing.pull(str(pushed), local).received_files == 0


def test_push_refuses_its_own_store_inside_or_around_it(source, tmp_path):
    """Issue 13, case 10: a push into its source, a subfolder of it or a folder holding it is refused."""
    src = copy_store(source, tmp_path / "box" / "src.zarr")
    before = snapshot(src)
    for dest, why in ((src / "sub", "is inside the store"), (f"file://{src}/sub/deeper", "is inside the store"),
                      (src, "is the store"), (tmp_path / "box", "holds the store"),
                      (f"file://{tmp_path}", "holds the store")):
        with pytest.raises(GbufError, match=why):
            sharing.push(src, str(dest), force=True)
        with pytest.raises(GbufError, match=why):
            sharing.push(src, str(dest), license="CC0-1.0")  # refused before the license is written
    assert why in _one_line_cli_error(["dataset", "push", src, tmp_path, "--force"])
    assert snapshot(src) == before and not (src / "sub").exists() and not (src / ".gbuf").exists()
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["src.zarr"]
    # The same for a pull whose source and local folder overlap.
    pushed = tmp_path / "pushed"
    sharing.push(src, str(pushed))
    with pytest.raises(GbufError, match="holds the store"):
        sharing.pull(str(pushed), pushed / "copy")
    assert not (pushed / "copy").exists()


def test_a_manifest_of_an_unknown_version_is_refused(source, tmp_path):
    """Issue 13, case 13: a manifest of version 99 (or of no version) is refused in one line, not read."""
    dest = tmp_path / "pushed"
    sharing.push(source, str(dest))
    manifest = json.loads((dest / sharing.MANIFEST).read_text())
    for version, shown in ((99, "99"), ("1", "'1'"), (None, "None"), (0, "0")):
        (dest / sharing.MANIFEST).write_text(json.dumps(dict(manifest, version=version)))
        with pytest.raises(GbufError, match=f"manifest version {re.escape(shown)}; this gbuf reads version 1"):
            sharing.pull(str(dest), tmp_path / "out.zarr")
    (dest / sharing.MANIFEST).write_text(json.dumps(dict(manifest, version=99)))
    assert "manifest version 99" in _one_line_cli_error(["dataset", "pull", dest, tmp_path / "out.zarr"])
    assert not (tmp_path / "out.zarr").exists()
    # The push to it refuses too (it reads the old manifest to know what is there).
    with pytest.raises(GbufError, match="manifest version 99"):
        sharing.push(source, str(dest))


def test_pull_into_a_folder_it_cannot_write_is_one_line(source, tmp_path, monkeypatch):
    """Issue 13, case 12: a read-only output folder gave a traceback in pull."""
    import errno
    import os

    pushed = tmp_path / "pushed"
    sharing.push(source, str(pushed))

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "mkdir", read_only)  # (the tests may run as root, who ignores chmod)
    with pytest.raises(GbufError, match=r"ro/d.zarr: cannot write the pulled copy here \(PermissionError"):
        sharing.pull(str(pushed), tmp_path / "ro" / "d.zarr")


def test_a_corrupted_metadata_file_is_refused_at_once(source, tmp_path):
    """A damaged zarr.json at the source is named as soon as it arrives (the message of a damaged chunk
    waits for the metadata to be in; one of a damaged metadata file waited for itself, 60 s)."""
    import time

    site = tmp_path / "site" / "data.zarr"
    sharing.push(source, str(site))
    rel = "synthetic_000/hr/zarr.json"
    good = (site / rel).read_bytes()
    (site / rel).write_bytes(good[:-2] + bytes([good[-2] ^ 1]) + good[-1:])
    started = time.monotonic()
    with pytest.raises(GbufError, match=f"{re.escape(rel)}: arrived corrupted"):
        sharing.pull(str(site), tmp_path / "pulled.zarr", jobs=1)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "pulled.zarr" / rel).exists()
