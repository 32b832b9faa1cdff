"""Nothing lost: kills, full disks, damaged files and concurrent writers never cost data or give tracebacks.

Each test is one finding of the "Nothing lost" issue and fails on the code before it
(commit a302232): a render that could never finish, staging temp files read as frames,
missing shards read as zeros, metadata tracebacks, a half-deleted group after a killed
``degrade --overwrite``, structural damage that verify passed, two writers of one
sequence, names that broke the store, tracebacks for ordinary OS errors, symbolic links
followed out of the store, and ``file://`` URLs refused.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gbuf.datasets as gd
from gbuf.datasets import writer as writer_mod
from gbuf.datasets.synthetic import make_synthetic_store, synthetic_frame
from gbuf.errors import GbufError
from tests.conftest import run_gbuf

BUFS = ["image", "depth", "normal", "motion", "brdf"]
SPECS = {"hr": (16, 24, BUFS), "lr": (4, 6, BUFS)}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def _frame(t):
    return synthetic_frame(t, 16, 24, 4, buffers=BUFS)


def _write(path, frames, n=None, fps=2, **kw):
    w = gd.SequenceWriter(path, "s", n or frames, SPECS, frames_per_shard=fps, **kw)
    for t in range(w.next_frame, frames):
        w.append(_frame(t))
    return w


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("gbuf: error:") or "problem(s)" in line for line in lines), proc.stderr
    return proc.stderr


def _store(tmp_path, name="d.zarr", **kw):
    kw = {"frames": 6, "frames_per_shard": 2, "height": 16, "width": 24, **kw}
    return make_synthetic_store(tmp_path / name, **kw)


# -- 1. a render that could never finish --------------------------------------------------------
def test_a_kill_between_staging_and_marker_is_finished_by_the_rerun(tmp_path, monkeypatch):
    path = tmp_path / "k.zarr"

    def killed(self, name, shard, *rest):
        raise Killed

    monkeypatch.setattr(writer_mod.SequenceWriter, "_commit_shard", killed)
    w = gd.SequenceWriter(path, "s", 2, SPECS, frames_per_shard=2)
    w.append(_frame(0))
    with pytest.raises(Killed):
        w.append(_frame(1))  # frames 0 and 1 are staged, shard 0 has no marker
    monkeypatch.undo()
    del w  # the killed process: gone (its lock with it)
    gc.collect()
    state = path / ".gbuf" / "s"
    assert {p.name for p in (state / "lr" / "staging").iterdir()} == {"000000.npz", "000001.npz"}
    assert not (state / "hr" / "shards" / "0.json").exists()
    assert not gd.verify(path).ok  # staged frames are not a finished store
    # The rerun (what `gbuf render` does: open the writer, nothing left to render, close) finishes it.
    with gd.SequenceWriter(path, "s", 2, SPECS, frames_per_shard=2) as w2:
        assert w2.complete
    ds = gd.open(path)
    for g in ("hr", "lr"):
        assert ds["s"][g].attrs["complete"]
        want = np.stack([_frame(t)[g]["image"] for t in range(2)]).astype(np.float16)
        assert np.array_equal(ds["s"][g].read("image"), want)
    report = gd.verify(path)
    assert report.ok and report.frames_checked == 4  # 2 frames in each of 2 groups
    assert not (path / ".gbuf").exists()


def test_a_kill_before_one_groups_marker_in_a_longer_sequence_resumes_without_gap(tmp_path, monkeypatch):
    path = tmp_path / "k.zarr"
    calls = []

    def second_commit_killed(self, name, shard, *rest, _real=writer_mod.SequenceWriter._commit_shard):
        calls.append((name, shard))
        if len(calls) == 2:
            raise Killed  # hr's shard 0 is written, lr's is not
        return _real(self, name, shard, *rest)

    monkeypatch.setattr(writer_mod.SequenceWriter, "_commit_shard", second_commit_killed)
    w = gd.SequenceWriter(path, "s", 5, SPECS, frames_per_shard=2)
    w.append(_frame(0))
    with pytest.raises(Killed):
        w.append(_frame(1))
    monkeypatch.undo()
    del w
    gc.collect()
    w2 = _write(path, 5)
    w2.close()
    ds = gd.open(path)
    assert ds["s"]["hr"].attrs["complete"] and ds["s"]["lr"].attrs["complete"]
    assert gd.verify(path).ok
    res = ds["s"]["lr"]
    want = np.stack([_frame(t)["lr"]["depth"] for t in range(5)]).astype(np.float32)
    assert np.array_equal(res.read("depth"), want)


def test_a_full_disk_during_degrade_is_one_line_and_the_rerun_finishes(tmp_path, monkeypatch):
    from gbuf.datasets.degrade.api import degrade_store

    path = _store(tmp_path)
    clean = _store(tmp_path, "clean.zarr")
    degrade_store(clean, "bicubic")
    real = writer_mod._atomic_write_bytes

    def full(p, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "_atomic_write_bytes", full)  # the shard marker cannot be written
    with pytest.raises(GbufError, match="No space left on device"):
        degrade_store(path, "bicubic")
    monkeypatch.setattr(writer_mod, "_atomic_write_bytes", real)
    assert degrade_store(path, "bicubic") == [("synthetic_000", "lr_bicubic_x4")]
    assert gd.verify(path).ok
    got = gd.open(path)["synthetic_000"]["lr_bicubic_x4"]
    want = gd.open(clean)["synthetic_000"]["lr_bicubic_x4"]
    assert got.attrs["complete"]
    for b in got.buffers:
        assert np.array_equal(got.read(b), want.read(b)), b


def test_a_file_size_limit_in_the_cli_is_one_line_and_the_rerun_resumes(tmp_path):
    import resource

    path = make_synthetic_store(tmp_path / "big.zarr", frames=4, frames_per_shard=2, height=128, width=128)

    def small_files():
        # Every write past 12 KiB fails with EFBIG, like a full disk: metadata fits, frames do not.
        resource.setrlimit(resource.RLIMIT_FSIZE, (12 * 1024, 12 * 1024))

    proc = subprocess.run([sys.executable, "-m", "gbuf", "degrade", str(path), "--bicubic"], capture_output=True,
                          text=True, preexec_fn=small_files, timeout=300)
    assert "cannot write" in _one_line_error(proc)
    run_gbuf("degrade", path, "--bicubic", check=True)
    assert gd.verify(path).ok and gd.open(path)["synthetic_000"]["lr_bicubic_x4"].attrs["complete"]


# -- 2. staging temp files read as frames --------------------------------------------------------
def test_staging_temp_files_are_never_taken_for_frames(tmp_path):
    path = tmp_path / "t.zarr"
    w = _write(path, 3, n=6, fps=4)  # frames 0-2 staged
    staging = path / ".gbuf" / "s" / "hr" / "staging"
    (staging / ".000003.tmp4242.npz").write_bytes(b"half a frame")   # what older writers left
    (staging / ".000003.npz.4242.tmp").write_bytes(b"half a frame")  # what this writer would leave
    (staging / "notes.npz").write_bytes(b"a stray")
    del w
    gc.collect()
    res = gd.open(path)["s"]["hr"]
    assert res.num_frames == 3 and res.staged_frames() == {0, 1, 2}
    assert res.read("image", t=slice(0, 3)).shape == (3, 16, 24, 3)
    report = gd.verify(path)  # incomplete, but no crash
    assert not report.ok and any("staged" in p.message for p in report.problems)
    gd.info(path)
    w2 = _write(path, 6, fps=4)
    assert w2.complete and gd.verify(path).ok


# -- 4. missing shards read as zeros ------------------------------------------------------------
def test_a_missing_shard_is_an_error_in_every_reader(tmp_path):
    from gbuf.datasets.degrade.api import degrade_store
    from gbuf.datasets.hdf5 import export_hdf5
    from gbuf.datasets.loader import CropDataset, SequenceDataset

    path = _store(tmp_path)
    (path / "synthetic_000" / "hr" / "color" / "c" / "1" / "0" / "0" / "0").unlink()   # frames 2-3 of hr image
    res = gd.open(path)["synthetic_000"]["hr"]
    assert res.read("image", t=slice(0, 2)).any()        # other shards still read
    with pytest.raises(GbufError, match="frame 2: color shard .* is missing"):
        res.read("image", t=slice(1, 4))
    with pytest.raises(GbufError, match="frame 2"):
        res.read("image", t=2, y=slice(3, 9), x=slice(0, 5))  # a crop of it too
    crops = CropDataset(path, frames=6, patch=16, lr_buffers=["image"], length=2)
    with pytest.raises(GbufError, match="missing"):
        crops[0]
    with pytest.raises(GbufError, match="missing"):
        SequenceDataset(path, lr_buffers=["image"])[0]
    with pytest.raises(GbufError, match="missing"):
        degrade_store(path, "bicubic")
    with pytest.raises(GbufError, match="missing"):
        export_hdf5(path, tmp_path / "out.h5")
    report = gd.verify(path)
    assert any("frames 2-3: color shard" in str(p) and "missing" in str(p) for p in report.problems)


def test_a_truncated_shard_stops_eval_and_train_with_one_line(tmp_path):
    from gbuf.train import trainer
    from tests.train_helpers import tiny_config

    path = make_synthetic_store(tmp_path / "t.zarr", sequences=1, frames=6, height=64, width=96, frames_per_shard=2)
    shard = path / "synthetic_000" / "lr" / "color" / "c" / "1" / "0" / "0" / "0"   # frames 2-3 of the LR image
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    proc = run_gbuf("eval", "bicubic", "--data", path, "--vmaf", "off", env={"GBUF_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gbuf: error: ") and "frame 2: color bytes fail their checksum" in last
    config = tiny_config(path, tmp_path / "run", frames=6, patch=32, batch=1, iters=3)
    with pytest.raises(GbufError, match="frame [23]: color"):
        trainer.train(config)


def test_an_all_zero_shard_that_the_codec_never_wrote_still_reads_as_zeros(tmp_path):
    path = tmp_path / "z.zarr"
    w = gd.SequenceWriter(path, "s", 4, {"hr": (8, 8, ["image"])}, frames_per_shard=2)
    for t in range(4):
        w.append({"hr": {"image": np.full((8, 8, 3), 0.0 if t < 2 else 0.5, np.float16)}})
    res = gd.open(path)["s"]["hr"]
    assert not res.read("image", t=slice(0, 2)).any()
    assert gd.verify(path).ok


def test_bytes_that_fail_their_checksum_are_an_error(tmp_path):
    path = _store(tmp_path)
    shard = path / "synthetic_000" / "lr" / "geom16" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 4] ^= 0x10
    shard.write_bytes(bytes(data))
    res = gd.open(path)["synthetic_000"]["lr"]
    with pytest.raises(GbufError, match=r"frame [45]: geom16"):
        res.read("normal", t=slice(3, 6), y=slice(0, 2), x=slice(0, 2))
    assert np.array_equal(res.read("image"), res.read("image"))  # other packs are untouched


def test_whole_frames_of_a_store_without_chunk_checksums_are_checked_against_the_attrs(tmp_path, monkeypatch):
    from zarr.codecs import BloscCodec

    monkeypatch.setattr(writer_mod, "_compressor", lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")])
    path = _store(tmp_path)
    monkeypatch.undo()
    import zarr

    arr = zarr.open_group(str(path), mode="r+")["synthetic_000"]["hr"]["geom32"]
    arr[2:4] = np.asarray(arr[2:4]) + 1  # decodes fine, but is not what was written
    res = gd.open(path)["synthetic_000"]["hr"]
    assert res.read("depth", t=slice(0, 2)).shape[0] == 2
    with pytest.raises(GbufError, match="frame 2: geom32 bytes fail their checksum"):
        res.read("depth", t=slice(0, 4))
    assert any("frame 2: geom32 checksum mismatch" in str(p) for p in gd.verify(path).problems)


# -- 5. damaged metadata below the root --------------------------------------------------------
def _garble(path):
    path.write_text("{not json")


def _edit(rel, change):
    def apply(root):
        doc = json.loads((root / rel).read_text())
        change(doc)
        (root / rel).write_text(json.dumps(doc))
    return apply


def _set_gbuf(group, key, value):
    return _edit(f"synthetic_000/{group}/zarr.json", lambda d: d["attributes"]["gbuf"].__setitem__(key, value))


def _codec(doc):
    doc["codecs"][0]["configuration"]["codecs"][1]["name"] = "no-such-codec"


DAMAGE = {
    "sequence zarr.json garbled": (lambda root: _garble(root / "synthetic_000" / "zarr.json"), "synthetic_000/zarr.json"),
    "group zarr.json garbled": (lambda root: _garble(root / "synthetic_000" / "lr" / "zarr.json"),
                                "synthetic_000/lr/zarr.json"),
    "array zarr.json garbled": (lambda root: _garble(root / "synthetic_000" / "hr" / "color" / "zarr.json"),
                                "synthetic_000/hr/color/zarr.json"),
    "checksums of the wrong type": (_set_gbuf("hr", "checksums", "crc"), "checksums"),
    "an unknown pack": (_edit("synthetic_000/lr/zarr.json",
                              lambda d: d["attributes"]["gbuf"]["buffers"]["depth"].__setitem__("pack", "geom64")),
                        "buffers.depth.pack"),
    "attrs.gbuf a list": (_edit("synthetic_000/hr/zarr.json", lambda d: d["attributes"].__setitem__("gbuf", [1])),
                          "synthetic_000/hr/zarr.json"),
    "frames_per_shard 0": (_set_gbuf("lr", "frames_per_shard", 0), "frames_per_shard"),
    "an unknown codec": (_edit("synthetic_000/lr/geom32/zarr.json", _codec), "no-such-codec"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_metadata_is_one_line_naming_the_file_and_field(tmp_path, case):
    from gbuf.datasets.degrade.api import degrade_store
    from gbuf.datasets.loader import CropDataset

    damage, named = DAMAGE[case]
    path = _store(tmp_path)
    damage(path)

    def only_gbuf_errors(call):
        try:
            call()
        except GbufError as err:
            assert "\n" not in str(err)
            return str(err)
        return ""

    messages = [
        only_gbuf_errors(lambda: gd.info(path)),
        only_gbuf_errors(lambda: [gd.open(path)[s][r].read_many(gd.open(path)[s][r].buffers)
                                  for s in gd.open(path).sequences for r in gd.open(path)[s].resolutions]),
        only_gbuf_errors(lambda: CropDataset(path, frames=2, patch=8, length=4)[0]),
        only_gbuf_errors(lambda: degrade_store(path, "bicubic")),
        only_gbuf_errors(lambda: gd.SequenceWriter(path, "synthetic_000", 6, {"hr": (16, 24, BUFS)}).close()),
    ]
    assert any(named in m for m in messages), messages
    report = gd.verify(path)
    assert not report.ok
    assert any(named in str(p) for p in report.problems), report.problems
    assert named in _one_line_error(run_gbuf("dataset", "verify", path))
    assert named in _one_line_error(run_gbuf("dataset", "info", path))


# -- 6. a killed degrade --overwrite ------------------------------------------------------------
def test_a_killed_degrade_overwrite_leaves_the_old_group_whole(tmp_path, monkeypatch):
    from gbuf.datasets.degrade.api import degrade_store

    path = _store(tmp_path)
    degrade_store(path, "bicubic", name="lr_x4")
    old = {b: gd.open(path)["synthetic_000"]["lr_x4"].read(b) for b in BUFS}
    calls = []

    def killed_on_second_shard(self, name, shard, *rest, _real=writer_mod.SequenceWriter._commit_shard):
        calls.append(shard)
        if len(calls) == 2:
            raise Killed
        return _real(self, name, shard, *rest)

    monkeypatch.setattr(writer_mod.SequenceWriter, "_commit_shard", killed_on_second_shard)
    with pytest.raises(Killed):
        degrade_store(path, "gaussian", name="lr_x4", overwrite=True)
    monkeypatch.undo()
    seq = gd.open(path)["synthetic_000"]
    assert seq.resolutions == ["hr", "lr", "lr_x4"]  # the replacement being built is not listed
    res = seq["lr_x4"]
    assert res.attrs["complete"] and res.attrs["method"] == "bicubic"
    for b in BUFS:
        assert np.array_equal(res.read(b), old[b]), b
    assert gd.verify(path).ok
    # The rerun resumes the replacement and swaps it in.
    degrade_store(path, "gaussian", name="lr_x4", overwrite=True)
    res = gd.open(path)["synthetic_000"]["lr_x4"]
    assert res.attrs["complete"] and res.attrs["method"] == "gaussian"
    assert not np.array_equal(res.read("image"), old["image"])
    assert sorted(p.name for p in (path / "synthetic_000").iterdir()) == ["hr", "lr", "lr_x4", "zarr.json"]
    assert gd.verify(path).ok and not (path / ".gbuf").exists()


# -- 8. structural damage that verify passed -----------------------------------------------------
def test_verify_names_a_deleted_group_zarr_json(tmp_path):
    path = _store(tmp_path)
    (path / "synthetic_000" / "lr" / "zarr.json").unlink()
    report = gd.verify(path)
    assert not report.ok
    assert any("synthetic_000/lr" in str(p) and "zarr.json" in str(p) for p in report.problems)


def test_verify_catches_tampered_stats(tmp_path):
    path = _store(tmp_path)
    meta_path = path / "synthetic_000" / "hr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    lo, hi = meta["attributes"]["gbuf"]["stats"]["depth"][3]
    meta["attributes"]["gbuf"]["stats"]["depth"][3] = [lo, hi + 1.0]
    meta_path.write_text(json.dumps(meta))
    problems = [str(p) for p in gd.verify(path).problems]
    assert any("frame 3: stats of depth" in p for p in problems), problems


def test_verify_and_readers_refuse_a_group_without_image(tmp_path):
    path = _store(tmp_path)
    meta_path = path / "synthetic_000" / "lr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["gbuf"]["buffers"]["image"]
    meta_path.write_text(json.dumps(meta))
    problems = [str(p) for p in gd.verify(path).problems]
    assert any("synthetic_000/lr" in p and "image" in p for p in problems), problems
    with pytest.raises(GbufError, match="image"):
        gd.open(path)["synthetic_000"]["lr"]


# -- 9. two writers of one sequence -------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    import gbuf.datasets as gd
    from gbuf.datasets.synthetic import synthetic_frame
    bufs = ["image", "depth", "normal", "motion", "brdf"]
    rng = None if sys.argv[2] == "all" else tuple(map(int, sys.argv[2].split(":")))
    w = gd.SequenceWriter(sys.argv[1], "s", 8, {"hr": (16, 24, bufs), "lr": (4, 6, bufs)}, frames_per_shard=2,
                          frame_range=rng)
    w.append(synthetic_frame(w.next_frame, 16, 24, 4, buffers=bufs))
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(tmp_path, path, frames="all"):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(path), frames], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path):
    path = tmp_path / "two.zarr"
    gd.SequenceWriter(path, "s", 8, SPECS, frames_per_shard=2).close()  # arrays with their final shape
    proc = _holder(tmp_path, path)
    try:
        with pytest.raises(GbufError, match=f"being written by PID {proc.pid}"):
            gd.SequenceWriter(path, "s", 8, SPECS)
        with pytest.raises(GbufError, match=f"PID {proc.pid}"):
            gd.SequenceWriter(path, "s", 8, SPECS, frame_range=(4, 8))  # its frames overlap the holder's
        _one_line_error(run_gbuf("degrade", path, "--bicubic"))  # HR is not finished: refused, one line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (path / ".gbuf" / "s" / "writer-0-8.lock").exists()  # a kill leaves the lock behind
    w = _write(path, 8)                                           # stale (dead PID): taken over
    assert w.complete
    assert gd.verify(path).ok and not (path / ".gbuf").exists()


def test_block_writers_of_disjoint_frames_run_side_by_side(tmp_path):
    path = tmp_path / "blocks.zarr"
    gd.SequenceWriter(path, "s", 8, SPECS, frames_per_shard=2).close()
    proc = _holder(tmp_path, path, "0:4")
    try:
        with gd.SequenceWriter(path, "s", 8, SPECS, frame_range=(4, 8)) as w:
            for t in range(4, 8):
                w.append(_frame(t))
        with pytest.raises(GbufError, match="being written"):
            gd.SequenceWriter(path, "s", 8, SPECS)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with gd.SequenceWriter(path, "s", 8, SPECS, frame_range=(0, 4)) as w:
        for t in range(w.next_frame, 4):
            w.append(_frame(t))
    assert gd.verify(path).ok


# -- 11. names that broke the store --------------------------------------------------------------
@pytest.mark.parametrize("name", ["bad\udcffname", "x" * 300, ".hidden", "a\nb"])
def test_bad_sequence_names_are_refused_before_anything_is_written(tmp_path, name):
    path = tmp_path / "n.zarr"
    with pytest.raises(GbufError, match="name"):
        gd.SequenceWriter(path, name, 2, SPECS)
    assert not path.exists()


# -- 12/13. OS errors, odd arguments, symbolic links -------------------------------------------------
def test_a_read_only_folder_and_a_file_as_output_are_one_line(tmp_path, monkeypatch):
    from gbuf.datasets.degrade.api import degrade_folder

    target = tmp_path / "file.zarr"
    target.write_text("not a folder")
    with pytest.raises(GbufError, match="is a file"):
        gd.SequenceWriter(target, "s", 2, SPECS)
    frames = tmp_path / "frames"
    frames.mkdir()
    from gbuf.datasets.folder import write_png

    write_png(frames / "000.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(GbufError, match="is a file"):
        degrade_folder(frames, target, "bicubic", overwrite=True)
    assert target.read_text() == "not a folder"

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "mkdir", read_only)   # (the tests may run as root, who ignores chmod)
    with pytest.raises(GbufError, match="Permission denied"):
        gd.SequenceWriter(tmp_path / "ro" / "d.zarr", "s", 2, SPECS)
    with pytest.raises(GbufError, match="Permission denied"):
        degrade_folder(frames, tmp_path / "ro" / "out", "bicubic")


def test_frames_per_shard_zero_is_refused(tmp_path):
    for bad in (0, -2, 1.5):
        with pytest.raises(GbufError, match="frames per shard"):
            gd.SequenceWriter(tmp_path / "d.zarr", "s", 4, SPECS, frames_per_shard=bad)
    assert not (tmp_path / "d.zarr").exists()


def test_verify_and_info_do_not_follow_links_out_of_the_store(tmp_path):
    path = _store(tmp_path)
    shard = path / "synthetic_000" / "hr" / "color" / "c" / "0" / "0" / "0" / "0"
    outside = tmp_path / "elsewhere.bin"
    shutil.copyfile(shard, outside)
    shard.unlink()
    shard.symlink_to(outside)
    report = gd.verify(path)
    assert not report.ok
    assert any("symbolic link" in str(p) and "outside the store" in str(p) for p in report.problems)
    summary = gd.info(path)
    assert list(summary["links_outside"]) == ["synthetic_000/hr/color/c/0/0/0/0"]
    proc = run_gbuf("dataset", "info", path, check=True)
    assert "symbolic link(s) out of the store ignored" in proc.stdout


# -- 15. file:// URLs, and two degradations at once -----------------------------------------------
def test_file_urls_are_local_paths_everywhere(tmp_path):
    from gbuf.datasets.loader import CropDataset

    url = (tmp_path / "u.zarr").as_uri()
    w = gd.SequenceWriter(url, "s", 4, SPECS, frames_per_shard=2)
    for t in range(4):
        w.append(_frame(t))
    assert gd.open(url)["s"]["hr"].num_frames == 4
    assert gd.verify(url).ok
    assert gd.info(url)["sequences"]["s"]["resolutions"]["hr"]["frames"] == 4
    assert CropDataset(url, frames=2, patch=8, length=1)[0]["hr_image"].shape == (2, 3, 8, 8)
    assert "OK" in run_gbuf("dataset", "verify", url, check=True).stdout
    assert "s: 4 frames" in run_gbuf("dataset", "info", url, check=True).stdout


def test_two_methods_at_once_are_refused(tmp_path):
    path = _store(tmp_path)
    err = _one_line_error(run_gbuf("degrade", path, "--bicubic", "--realworld"))
    assert "--bicubic and --realworld" in err
    assert gd.open(path)["synthetic_000"].resolutions == ["hr", "lr"]


def test_crops_need_the_frames_in_hr_too(tmp_path):
    """Found by the fuzz: an HR group with fewer complete frames than its LR group was a ValueError."""
    from gbuf.datasets.loader import CropDataset

    path = tmp_path / "p.zarr"
    w = _write(path, 6, n=7, fps=4)          # shard 0 written, frames 4-5 staged
    del w
    gc.collect()
    (path / ".gbuf" / "s" / "hr" / "shards" / "0.json").unlink()   # HR now holds frames 4-5 only
    with pytest.raises(GbufError, match="no sequence has 2 frames"):
        CropDataset(path, frames=2, patch=8, length=2)
    assert CropDataset(path, frames=2, patch=8, length=2, hr_buffers=())[0]["image"].shape == (2, 3, 2, 2)
