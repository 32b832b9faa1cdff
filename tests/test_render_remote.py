"""``gbuf render ... -o s3://...``: a local working store, pushed to the URL when the render is complete.

Against the moto S3 server of conftest.py (credentials checked). The real CLI runs
in subprocesses (each render its own bpy); credentials come from
``GBUF_STORAGE_OPTIONS``, as for ``gbuf dataset push``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

import gbuf.datasets as gd
from gbuf.errors import GbufError
from gbuf.render import publish

pytest.importorskip("s3fs", reason="gbuf[share] not installed (s3fs)")
pytest.importorskip("moto.server", reason="gbuf[share] not installed (moto[server])")

S3_BUCKET = "gbuf-data"  # made by the s3 fixture (conftest.py)
TINY = ["--resolution", "64x36", "--scale", "4", "--samples", "1", "--no-denoise", "--frames", "1:2"]
CREDENTIAL_ERROR = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "AccessDenied")


def _env(options: dict, cache) -> dict:
    return {"GBUF_STORAGE_OPTIONS": json.dumps(options), "GBUF_CACHE_DIR": str(cache)}


def _objects(s3, prefix: str) -> dict[str, int]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    try:
        return {p: i["size"] for p, i in fs.find(f"{S3_BUCKET}/{prefix}", detail=True).items()}
    except FileNotFoundError:
        return {}


def _error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gbuf: error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.blender
def test_render_to_s3_publishes_a_verified_store_and_a_rerun_sends_nothing(s3, tmp_path, monkeypatch, gbuf_cli):
    pytest.importorskip("bpy")
    url = f"s3://{S3_BUCKET}/rr-render/ds"
    env = _env(s3, tmp_path / "cache")
    monkeypatch.setenv("GBUF_CACHE_DIR", str(tmp_path / "cache"))
    work = publish.work_store_for(url)
    assert work == (tmp_path / "cache" / "render" / work.parent.name / "ds").resolve()

    first = gbuf_cli("render", "-o", url, *TINY, env=env, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout.strip().splitlines()
    assert out[0] == f"{work}/default: rendered 2 of 2 frames in " + out[0].split(" in ")[1]
    assert out[-1].startswith(f"pushed {url}: ") and ", 0 already there;" in out[-1]
    assert out[-1].endswith(f"working store {work} kept")
    assert (work / "zarr.json").is_file()                       # the resume point stays
    sent = _objects(s3, "rr-render/ds")
    assert f"{S3_BUCKET}/rr-render/ds/gbuf-manifest.json" in sent and f"{S3_BUCKET}/rr-render/ds/README.md" in sent

    verified = gbuf_cli("dataset", "verify", url, env=env, timeout=120)     # read remotely
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A rerun renders nothing and sends nothing.
    again = gbuf_cli("render", "-o", url, *TINY, env=env, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout.strip().splitlines()
    assert lines[0] == f"{work}/default: already complete (2 frames)"
    assert lines[-1].startswith(f"pushed {url}: 0 file(s), 0 B sent, ") and "; 0 already there" not in lines[-1]
    assert _objects(s3, "rr-render/ds") == sent

    # --no-keep-work: what the push sent is read back, then the working store goes.
    gone = gbuf_cli("render", "-o", url, *TINY, "--no-keep-work", "--quiet", env=env, timeout=240)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert gone.stdout.strip().splitlines()[-1].endswith(f"working store {work} removed (what was sent read "
                                                        f"back and checked)")
    assert not work.exists() and not work.parent.exists()
    # Without its working store, a render would start another dataset there: refused before rendering.
    refused = gbuf_cli("render", "-o", url, *TINY, env=env, timeout=120)
    line = _error_line(refused)
    assert "already holds a gbuf dataset" in line and f"gbuf dataset pull {url} {work}" in line
    assert not work.exists()


def test_destination_problems_fail_before_rendering(s3, tmp_path, gbuf_cli):
    """Wrong credentials, an unreachable endpoint, a missing bucket, a non-gbuf folder: one line, fast."""
    url = f"s3://{S3_BUCKET}/rr-creds/ds"
    cache = tmp_path / "cache"
    started = time.perf_counter()
    wrong = gbuf_cli("render", "-o", url, *TINY, env=_env({**s3, "secret": "not-the-secret"}, cache),
                     timeout=120)
    seconds = time.perf_counter() - started
    line = _error_line(wrong)
    assert line.startswith(f"gbuf: error: {url}: reading the destination failed (") and any(
        e in line for e in CREDENTIAL_ERROR), line
    assert not cache.exists() and wrong.stdout == ""            # no working store, nothing rendered
    assert seconds < 30, seconds                                # (a render of even one frame starts bpy)

    unreachable = {**s3, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    line = _error_line(gbuf_cli("render", "-o", url, *TINY, env=_env(unreachable, cache), timeout=120))
    assert "reading the destination failed" in line and "onnect" in line, line

    line = _error_line(gbuf_cli("render", "-o", "s3://no-such-bucket-gbuf/ds", *TINY, env=_env(s3, cache),
                                timeout=120))
    assert "bucket 'no-such-bucket-gbuf' does not exist" in line, line

    import s3fs

    s3fs.S3FileSystem(**s3).pipe_file(f"{S3_BUCKET}/rr-other/notes.txt", b"not a dataset")
    line = _error_line(gbuf_cli("render", "-o", f"s3://{S3_BUCKET}/rr-other", *TINY, env=_env(s3, cache),
                                timeout=120))
    assert "not empty and not a gbuf push destination" in line, line
    assert not cache.exists()

    # --work-dir / --no-keep-work belong to a URL output.
    line = _error_line(gbuf_cli("render", "-o", str(tmp_path / "local.zarr"), "--work-dir", str(tmp_path / "w"),
                                timeout=60))
    assert "for -o URL" in line


@pytest.mark.slow
@pytest.mark.blender
def test_blocks_push_nothing_and_ray_publishes_once(s3, tmp_path, gbuf_cli):
    """--plan/--block write the working store only (no access to the URL needed); --ray pushes at the end."""
    pytest.importorskip("bpy")
    pytest.importorskip("ray", reason="ray is not installed (pip install 'gbuf[share]')")
    url = f"s3://{S3_BUCKET}/rr-blocks/ds"
    work = tmp_path / "work.zarr"
    args = ["-o", url, "--work-dir", str(work), *TINY, "--frames-per-shard", "1"]
    # Block tasks need no credentials: give them wrong ones.
    no_access = _env({**s3, "secret": "not-the-secret"}, tmp_path / "cache")
    for extra, what in ((["--plan"], "the plan"), (["--block", "0"], "block 0")):
        proc = gbuf_cli("render", *args, "--quiet", *extra, env=no_access, timeout=240)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        note = proc.stderr.strip().splitlines()[-1]
        assert note.startswith(f"note: {what} of default is in the working store {work}; ") and \
            f"gbuf dataset push {work} {url}" in note, note
    assert _objects(s3, "rr-blocks/ds") == {}                     # the destination is untouched

    proc = gbuf_cli("render", *args, "--quiet", "--ray", env=_env(s3, tmp_path / "cache"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "default: 1 block task(s) run, 1 already complete, 4 frames verified" in lines[-2], lines
    assert lines[-1].startswith(f"pushed {url}: ") and lines[-1].endswith(f"working store {work} kept")
    verified = gbuf_cli("dataset", "verify", url, env=_env(s3, tmp_path / "cache"), timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_library_render_to_a_url_as_the_cli_does(s3, tmp_path, monkeypatch):
    """``gbuf.render.render(scene, "s3://...")``: the working store, the destination check, one push.

    The frames come from a stand-in for the render loop (a synthetic store, no bpy): what is
    checked here is the orchestration around it.
    """
    from gbuf.datasets.synthetic import make_synthetic_store
    from gbuf.render import pipeline, render

    calls = []

    def fake_render(scene, output, **options):
        calls.append((scene, output, options))
        make_synthetic_store(output, frames=4, height=16, width=24)     # resumable: a rerun writes nothing
        return pipeline.RenderResult(output=str(output), sequence="synthetic_000", num_frames=4, rendered=4,
                                     resumed_from=0, seconds=0.1)

    monkeypatch.setattr(pipeline, "render", fake_render)
    url = f"s3://{S3_BUCKET}/rr-library/ds"
    work = tmp_path / "work.zarr"
    reported = []
    result = render(None, url, resolution=(64, 36), samples=1, frames=(1, 4), work_dir=work, storage_options=s3,
                    progress=lambda label, done, total: reported.append((label, done, total)))
    assert [(scene, str(out)) for scene, out, _ in calls] == [(None, str(work))]
    assert calls[0][2]["resolution"] == (64, 36) and calls[0][2]["samples"] == 1 and calls[0][2]["frames"] == (1, 4)
    assert result.output == str(work) and result.published.url == url and result.published.work_store == str(work)
    pushed = result.published.push
    assert pushed.sent_files == pushed.files > 3 and pushed.skipped_files == 0 and not result.published.work_removed
    assert reported[-1] == ("push", pushed.sent_bytes, pushed.sent_bytes)
    assert gd.verify(url, storage_options=s3).ok

    again = render(None, url, resolution=(64, 36), samples=1, frames=(1, 4), work_dir=work, storage_options=s3)
    assert again.published.push.sent_files == 0 and again.published.push.skipped_files == pushed.files

    # A local output is the store itself: nothing published.
    local = render(None, tmp_path / "local.zarr", resolution=(64, 36), samples=1)
    assert local.published is None and local.output == str(tmp_path / "local.zarr")
    with pytest.raises(GbufError, match="for -o URL"):
        render(None, tmp_path / "local.zarr", work_dir=tmp_path / "w")

    # A failed or interrupted render pushes nothing, and says where the frames are.
    other = f"s3://{S3_BUCKET}/rr-library-failed/ds"
    note = re.escape(f"(nothing pushed to {other}; the working store is {tmp_path / 'failed.zarr'})")
    for error, message in ((GbufError("card.blend: frame 3 (hr): render failed"), r"render failed " + note),
                           (KeyboardInterrupt(), r"^interrupted " + note + "; rerun the same command")):
        def failing(scene, output, error=error, **options):
            raise error

        monkeypatch.setattr(pipeline, "render", failing)
        with pytest.raises(GbufError, match=message):
            render(None, other, work_dir=tmp_path / "failed.zarr", storage_options=s3)
    assert _objects(s3, "rr-library-failed/ds") == {}
