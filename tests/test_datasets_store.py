"""The store: bit-exact round trips, resumable writer, bad input, verify."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gbuf.datasets as gd
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from tests.conftest import run_gbuf


def _random_frame(rng, h, w, buffers):
    out = {}
    for b in buffers:
        spec = fmt.BUFFERS[b]
        data = rng.normal(size=(h, w, spec.channels)) * 3
        if b == "depth":
            data = np.abs(data) + 0.1
            data[0, :3] = np.inf  # background
        out[b] = data.astype(spec.dtype)
    return out


def test_round_trip_every_buffer_is_bit_exact(tmp_path):
    rng = np.random.default_rng(1)
    buffers = list(fmt.BUFFERS)
    frames = [{"hr": _random_frame(rng, 24, 40, buffers), "lr": _random_frame(rng, 6, 10, buffers)}
              for _ in range(7)]
    with gd.SequenceWriter(tmp_path / "d.zarr", "s", 7, {"hr": (24, 40, buffers), "lr": (6, 10, buffers)},
                           frames_per_shard=4) as w:
        for f in frames:
            w.append(f)
    ds = gd.open(tmp_path / "d.zarr")
    for g in ("hr", "lr"):
        res = ds["s"][g]
        assert res.attrs["complete"] and res.num_frames == 7
        for b in buffers:
            got = res.read(b)
            want = np.stack([f[g][b] for f in frames])
            assert got.dtype == np.dtype(fmt.BUFFERS[b].dtype)
            assert got.tobytes() == want.tobytes(), b
        # a crop reads the same bytes as the whole
        crop = res.read_many(["image", "depth"], t=slice(2, 6), y=slice(1, 5), x=slice(3, 9))
        assert np.array_equal(crop["depth"], np.stack([f[g]["depth"] for f in frames])[2:6, 1:5, 3:9])
    assert ds["s"]["lr"].scale == 4
    # arrays carry dimension names; a finished store keeps no writer state
    arr = ds["s"]["hr"].array("color")
    assert tuple(arr.metadata.dimension_names) == fmt.DIMENSION_NAMES
    assert not (tmp_path / "d.zarr" / ".gbuf").exists()


def test_shards_hold_whole_frames_and_stats_are_recorded(tmp_path):
    gd_path = tmp_path / "d.zarr"
    from gbuf.datasets.synthetic import make_synthetic_store

    make_synthetic_store(gd_path, frames=9, frames_per_shard=4)
    res = gd.open(gd_path)["synthetic_000"]["hr"]
    arr = res.array("color")
    assert arr.shards[0] == 4 and arr.shards[1] >= res.height and arr.shards[2] >= res.width
    depth = res.read("depth")
    stats = res.frame_stats()["depth"]
    assert stats[3] == [float(depth[3].min()), float(depth[3].max())]


def test_writer_refuses_mismatched_frames(tmp_path):
    w = gd.SequenceWriter(tmp_path / "d.zarr", "s", 3, {"hr": (8, 8, ["image"]), "lr": (2, 2, ["image"])})
    with pytest.raises(GbufError, match="shape"):
        w.append({"hr": {"image": np.zeros((8, 8, 3))}, "lr": {"image": np.zeros((3, 2, 3))}})
    with pytest.raises(GbufError, match="lacks buffer"):
        w.append({"hr": {}, "lr": {"image": np.zeros((2, 2, 3))}})
    assert w.next_frame == 0  # nothing was counted


def test_hr_not_scale_times_lr_is_refused(tmp_path):
    with pytest.raises(GbufError, match="not HR size"):
        gd.SequenceWriter(tmp_path / "d.zarr", "s", 3, {"hr": (64, 64, ["image"]), "lr": (15, 16, ["image"])})


def test_open_rejects_non_stores(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GbufError, match="not a gbuf store"):
        gd.open(tmp_path / "empty")
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(GbufError, match="not a gbuf store"):
        gd.open(tmp_path / "plain.zarr")
    with pytest.raises(GbufError, match="no such dataset"):
        gd.open(tmp_path / "missing.zarr")
    # the writer refuses to write into a folder that is not a store, and leaves it alone
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GbufError, match="not a gbuf store"):
        gd.SequenceWriter(tmp_path / "mine", "s", 2, {"hr": (8, 8, ["image"])})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _synthetic(tmp_path, **kw):
    from gbuf.datasets.synthetic import make_synthetic_store

    return make_synthetic_store(tmp_path / "syn.zarr", **kw)


def test_verify_catches_a_flipped_byte(tmp_path):
    path = _synthetic(tmp_path, frames=8, frames_per_shard=4)
    assert gd.verify(path).ok
    shard = path / "synthetic_000" / "hr" / "color" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40
    shard.write_bytes(bytes(data))
    report = gd.verify(path)
    assert not report.ok
    text = "\n".join(map(str, report.problems))
    assert "synthetic_000/hr" in text
    bad_frames = {int(p.message.split()[1].rstrip(":")) for p in report.problems if p.message.startswith("frame")}
    assert bad_frames and bad_frames <= {4, 5, 6, 7}
    proc = run_gbuf("dataset", "verify", path)
    assert proc.returncode == 2
    assert "frame" in proc.stderr and "synthetic_000/hr" in proc.stderr


def test_verify_reports_frame_count_and_missing_array(tmp_path):
    path = _synthetic(tmp_path, frames=4)
    meta_path = path / "synthetic_000" / "lr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    import shutil

    shutil.rmtree(path / "synthetic_000" / "lr" / "geom32")
    report = gd.verify(path)
    assert any("missing array 'geom32'" in str(p) for p in report.problems)
    meta["attributes"]["gbuf"]["num_frames"] = 5
    meta_path.write_text(json.dumps(meta))
    assert any("frames" in str(p) for p in gd.verify(path).problems)


def test_cli_info_and_bad_input_are_one_line(tmp_path):
    path = _synthetic(tmp_path, frames=4)
    proc = run_gbuf("dataset", "info", path, check=True)
    assert "synthetic_000" in proc.stdout and "96x64" in proc.stdout and "depth" in proc.stdout
    proc = run_gbuf("dataset", "info", tmp_path / "nope.zarr")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.zarr" in proc.stderr


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import gbuf.datasets as gd
    from gbuf.datasets.synthetic import synthetic_frame
    path, n = sys.argv[1], int(sys.argv[2])
    w = gd.SequenceWriter(path, "seq", n, {"hr": (32, 48, ["image", "depth", "motion"]),
                                           "lr": (8, 12, ["image", "depth", "motion"])}, frames_per_shard=4)
    print("start", w.next_frame, flush=True)
    for t in range(w.next_frame, n):
        frame = synthetic_frame(t, 32, 48, 4, buffers=["image", "depth", "motion"])
        time.sleep(0.15)  # a slow 'render': the kill lands between or during frames
        w.append(frame)
        print("done", t, flush=True)
    w.close()
""")


def test_sigkill_mid_write_then_resume_gives_every_frame_once(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    path = tmp_path / "k.zarr"
    n = 11
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(n)], stdout=subprocess.PIPE, text=True)
    done = []
    for line in proc.stdout:
        if line.startswith("done"):
            done.append(int(line.split()[1]))
        if len(done) == 6:  # frames 0-3 in a shard, 4-5 staged; kill during frame 6
            time.sleep(0.05)
            proc.kill()
            break
    proc.wait()
    res = gd.open(path)["seq"]["hr"]
    complete = res.num_frames
    assert complete >= 6
    from gbuf.datasets.synthetic import synthetic_frame

    got = res.read("image", t=slice(0, 6))
    want = np.stack([synthetic_frame(t, 32, 48, 4, buffers=["image"])["hr"]["image"] for t in range(6)])
    assert np.array_equal(got, want.astype(np.float16))
    out = subprocess.run([sys.executable, str(script), str(path), str(n)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[0] == f"start {complete}"
    written = [int(x.split()[1]) for x in out.stdout.splitlines() if x.startswith("done")]
    assert written == list(range(complete, n))  # no duplicate, no gap
    ds = gd.open(path)
    assert gd.verify(path).ok
    for g in ("hr", "lr"):
        full = ds["seq"][g].read("image")
        want = np.stack([synthetic_frame(t, 32, 48, 4, buffers=["image"])[g]["image"] for t in range(n)])
        assert np.array_equal(full, want.astype(np.float16))


def test_import_gbuf_loads_neither_torch_nor_bpy():
    code = ("import sys, gbuf, gbuf.cli, gbuf.datasets, gbuf.train.models; "
            "print('torch' in sys.modules, 'bpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_command_has_help():
    top = run_gbuf("--help", check=True).stdout
    for name in ("render", "scene", "degrade", "train", "eval", "bench", "export", "upscale", "dataset"):
        assert name in top
    sub = run_gbuf("dataset", "--help", check=True).stdout
    for name in ("info", "verify", "import-folder", "export", "push", "pull", "card", "preview"):
        assert name in sub
        run_gbuf("dataset", name, "--help", check=True)


def test_resume_accepts_the_buffer_set_in_any_order(tmp_path):
    from gbuf.datasets.synthetic import synthetic_frame

    bufs = ["image", "brdf", "normal", "depth"]
    frames = [synthetic_frame(t, 16, 16, 4, buffers=bufs) for t in range(5)]
    w = gd.SequenceWriter(tmp_path / "d.zarr", "s", 5, {"hr": (16, 16, bufs), "lr": (4, 4, bufs)}, frames_per_shard=2)
    for f in frames[:3]:
        w.append(f)
    shuffled = ["depth", "normal", "image", "brdf"]
    w2 = gd.SequenceWriter(tmp_path / "d.zarr", "s", 5, {"hr": (16, 16, shuffled), "lr": (4, 4, shuffled)})
    assert w2.next_frame == 3
    for f in frames[3:]:
        w2.append(f)
    res = gd.open(tmp_path / "d.zarr")["s"]["hr"]
    for b in bufs:
        want = np.stack([f["hr"][b] for f in frames]).astype(fmt.BUFFERS[b].dtype)
        assert np.array_equal(res.read(b), want), b
    with pytest.raises(GbufError, match="another shape or buffer"):
        gd.SequenceWriter(tmp_path / "d.zarr", "s", 5, {"hr": (16, 16, ["image"])})


def test_writer_refuses_urls_instead_of_making_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GbufError, match="URL"):
        gd.SequenceWriter("s3://bucket/d.zarr", "s", 2, {"hr": (8, 8, ["image"])})
    assert not (tmp_path / "s3:").exists()
