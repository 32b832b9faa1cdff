"""push / pull / card / remote reading against real servers on loopback.

An S3 server (moto's standalone server, with IAM credential checking switched on)
and a plain ``http.server`` are started by the tests and stopped after.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gbuf.datasets as gd
from gbuf.cli import main as cli
from gbuf.datasets import sharing
from gbuf.datasets.synthetic import make_synthetic_store
from gbuf.errors import GbufError

pytest.importorskip("s3fs", reason="gbuf[share] not installed (s3fs)")
moto_server = pytest.importorskip("moto.server", reason="gbuf[share] not installed (moto[server])")

BUCKET = "gbuf-data"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 that checks credentials; yields good storage options."""
    import boto3
    from moto import settings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        # Bootstrap a user with a key without auth, then switch credential checking on.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="gbuf")
        policy = iam.create_policy(PolicyName="gbuf-all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        iam.attach_user_policy(UserName="gbuf", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="gbuf")["AccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        good = {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
                "skip_instance_cache": True}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=good["key"],
                     aws_secret_access_key=good["secret"]).create_bucket(Bucket=BUCKET)
        yield good
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


def s3fs_for(options):
    import s3fs

    return s3fs.S3FileSystem(**options)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "data.zarr"
    return make_synthetic_store(path, sequences=2, frames=8, height=32, width=48, frames_per_shard=4)


def content_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != sharing.MANIFEST}


def test_push_pull_s3_roundtrip_incremental(s3, source, tmp_path):
    url = f"s3://{BUCKET}/roundtrip/data.zarr"
    first = sharing.push(source, url, jobs=4, storage_options=s3)
    assert first["sent_files"] == first["files"] > 10 and first["skipped_files"] == 0
    assert (source / "README.md").is_file()  # push regenerates the card
    again = sharing.push(source, url, jobs=4, storage_options=s3)
    assert again["sent_files"] == 0 and again["sent_bytes"] == 0 and again["skipped_files"] == first["files"]
    fs = s3fs_for(s3)
    assert fs.exists(f"{BUCKET}/roundtrip/data.zarr/{sharing.MANIFEST}")
    assert not fs.exists(f"{BUCKET}/roundtrip/data.zarr/{sharing.JOURNAL}")

    local = tmp_path / "pulled.zarr"
    got = sharing.pull(url, local, jobs=4, storage_options=s3)
    assert got["received_files"] == first["files"] and got["frames_verified"] > 0
    assert content_files(local) == content_files(source)
    assert gd.verify(local).ok
    assert sharing.pull(url, local, jobs=4, storage_options=s3)["received_files"] == 0


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
    assert rerun["skipped_files"] == len(uploaded) == 5
    assert rerun["sent_files"] == rerun["files"] - 5
    local = tmp_path / "pulled.zarr"
    sharing.pull(url, local, storage_options=s3)
    assert content_files(local) == content_files(source)


def test_interrupted_pull_resumes(source, tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    pushed = tmp_path / "pushed"
    total = sharing.push(source, str(pushed))["files"]
    real = LocalFileSystem.cat_file
    fetched = []

    def flaky(self, path, *args, **kwargs):
        if len(fetched) >= 7 and not path.endswith(sharing.MANIFEST):
            raise ConnectionResetError("connection reset")
        fetched.append(path)
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "cat_file", flaky)
    local = tmp_path / "pulled.zarr"
    with pytest.raises(GbufError, match="pull failed .*connection reset"):
        sharing.pull(str(pushed), local, jobs=1)
    assert not (local / sharing.MANIFEST).exists()  # unfinished, and says so
    monkeypatch.setattr(LocalFileSystem, "cat_file", real)
    rerun = sharing.pull(str(pushed), local, jobs=2)
    assert rerun["skipped_files"] == 6 and rerun["received_files"] == total - 6  # 7 reads = manifest + 6 files
    assert content_files(local) == content_files(source) and (local / sharing.MANIFEST).is_file()
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
    with pytest.raises(GbufError, match=r"synthetic_001/hr: frame [4-7]: color"):
        sharing.pull(url, local, storage_options=s3)
    assert not (local / sharing.MANIFEST).exists()
    # Repaired at the source: the rerun fetches the one object again and verifies.
    fs.pipe_file(key, good)
    manifest["files"]["synthetic_001/hr/color/c/1/0/0/0"]["sha256"] = sharing.sha256(good)
    fs.pipe_file(f"{BUCKET}/corrupt/data.zarr/{sharing.MANIFEST}", json.dumps(manifest).encode())
    assert sharing.pull(url, local, storage_options=s3)["received_files"] == 1


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
    assert replaced["removed_files"] > 0  # the first dataset's second sequence is gone
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
    result = CliRunner().invoke(cli, ["dataset", "pull", f"{base}/data.zarr", str(local), "-j", "4"])
    assert result.exit_code == 0, result.output
    assert "frame(s) verified" in result.output
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
    remote_ds = gd.CropDataset(url, frames=3, patch=4, length=6, seed=3)
    local_ds = gd.CropDataset(str(source), frames=3, patch=4, length=6, seed=3)
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
