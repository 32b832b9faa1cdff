"""RDG folder import/export (real PNG and OpenEXR files) and HDF5 export (h5py)."""

from __future__ import annotations

import json

import numpy as np
import OpenEXR
import pytest
from PIL import Image

import gbuf.datasets as gd
from gbuf.datasets.folder import read_exr
from gbuf.errors import GbufError
from tests.conftest import run_gbuf

EXR_HEADER = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}


def _write_exr(path, channels):
    path.parent.mkdir(parents=True, exist_ok=True)
    OpenEXR.File(dict(EXR_HEADER), channels).write(str(path))


def _write_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)


def make_rdg_folder(root, clips=("00", "01"), frames=3, h=16, w=20, scale=4, seed=0):
    """A small tree in the official layout, as the RDG authors' Blender output would be."""
    rng = np.random.default_rng(seed)
    for top, (hh, ww) in (("GT", (h * scale, w * scale)), (f"X{scale}LR", (h, w))):
        for clip in clips:
            base = root / top / clip
            for t in range(frames):
                name = f"{t:03d}"
                _write_png(base / "Image" / f"{name}.png", rng.integers(0, 256, (hh, ww, 3), dtype=np.uint8))
                n = rng.normal(size=(hh, ww, 3))
                n /= np.linalg.norm(n, axis=-1, keepdims=True)
                _write_exr(base / "Normal" / f"{name}.exr", {c: n[..., i].astype(np.float16) for i, c in enumerate("RGB")})
                b = rng.uniform(0, 1, (hh, ww, 3)).astype(np.float16)
                _write_exr(base / "BRDF" / f"{name}.exr", {c: b[..., i] for i, c in enumerate("RGB")})
                d = rng.uniform(1, 30, (hh, ww)).astype(np.float32)
                d[:2] = 1e10  # sky
                _write_exr(base / "Depth" / f"{name}.exr", {"R": d, "G": d, "B": d})
                m = rng.normal(0, 3, (hh, ww, 2)).astype(np.float32)
                _write_exr(base / "Motion" / f"{name}.exr",
                           {"R": m[..., 0], "G": m[..., 1], "B": np.zeros((hh, ww), np.float32)})
    return root


def test_import_then_export_reproduces_the_files(tmp_path):
    src = make_rdg_folder(tmp_path / "rdg")
    run_gbuf("dataset", "import-folder", src, "-o", tmp_path / "d.zarr", check=True)
    ds = gd.open(tmp_path / "d.zarr")
    assert ds.sequences == ["00", "01"]
    lr = ds["01"]["lr"]
    assert (lr.width, lr.height, lr.scale, lr.num_frames) == (20, 16, 4, 3)
    assert set(lr.buffers) == {"image", "normal", "brdf", "depth", "motion"}
    # conventions applied on import: sky depth is +inf, motion y points down
    depth = lr.read("depth", t=1)[0, ..., 0]
    raw = read_exr(src / "X4LR" / "01" / "Depth" / "001.exr")["R"]
    assert np.isinf(depth[:2]).all() and np.array_equal(depth[2:], raw[2:])
    mot = lr.read("motion", t=2)[0]
    raw = read_exr(src / "X4LR" / "01" / "Motion" / "002.exr")
    assert np.array_equal(mot[..., 1], -raw["G"]) and np.array_equal(mot[..., 0], raw["R"])
    assert gd.verify(tmp_path / "d.zarr").ok

    run_gbuf("dataset", "export", tmp_path / "d.zarr", "--folder", tmp_path / "back", check=True)
    originals = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    exported = sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*") if p.is_file())
    assert originals == exported
    for rel in originals:
        a, b = src / rel, tmp_path / "back" / rel
        if rel.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), rel
        else:
            ca, cb = read_exr(a), read_exr(b)
            assert sorted(ca) == sorted(cb), rel
            for c in ca:
                assert ca[c].dtype == cb[c].dtype and ca[c].tobytes() == cb[c].tobytes(), (rel, c)


def test_import_refuses_inconsistent_folders_and_writes_nothing(tmp_path):
    src = make_rdg_folder(tmp_path / "rdg", clips=("00",))
    (src / "X4LR" / "00" / "Normal" / "002.exr").unlink()
    proc = run_gbuf("dataset", "import-folder", src, "-o", tmp_path / "d.zarr")
    assert proc.returncode == 2 and "Normal" in proc.stderr and "2 frames" in proc.stderr
    assert not (tmp_path / "d.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.zarr")]

    src2 = make_rdg_folder(tmp_path / "rdg2", clips=("00",), h=16, w=20)
    img = src2 / "X4LR" / "00" / "Image" / "000.png"
    Image.fromarray(np.zeros((15, 20, 3), np.uint8)).save(img)
    with pytest.raises(GbufError, match="is not GT"):
        from gbuf.datasets.folder import import_folder

        import_folder(src2, tmp_path / "e.zarr")


def test_hdf5_export_reads_back(tmp_path):
    import h5py

    from gbuf.datasets.synthetic import make_synthetic_store

    path = make_synthetic_store(tmp_path / "s.zarr", frames=5)
    run_gbuf("dataset", "export", path, "--h5", tmp_path / "s.h5", check=True)
    ds = gd.open(path)
    with h5py.File(tmp_path / "s.h5", "r") as h5:
        assert json.loads(h5.attrs["gbuf"])["format"] == "gbuf"
        for g in ("hr", "lr"):
            res = ds["synthetic_000"][g]
            assert json.loads(h5["synthetic_000"][g].attrs["gbuf"])["height"] == res.height
            for b in res.buffers:
                got = h5["synthetic_000"][g][b][...]
                assert got.dtype == res.dtype(b) and np.array_equal(got, res.read(b)), (g, b)
    proc = run_gbuf("dataset", "export", path, "--h5", tmp_path / "s.h5")
    assert proc.returncode == 2 and "already exists" in proc.stderr
