"""Crop and sequence loaders: shapes, HR/LR pixel alignment, determinism, workers, RDG normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gbuf.datasets as gd
from gbuf.datasets.colour import srgb_encode
from gbuf.datasets.loader import CropDataset, SequenceDataset
from gbuf.datasets.writer import SequenceWriter
from gbuf.errors import GbufError


@pytest.fixture(scope="module")
def coord_store(tmp_path_factory):
    """HR and LR images hold their own pixel coordinates, so alignment is checkable exactly."""
    path = tmp_path_factory.mktemp("coords") / "c.zarr"
    s, h, w, n = 4, 16, 24, 10
    with SequenceWriter(path, "seq", n, {"hr": (h * s, w * s, ["image", "depth"]),
                                         "lr": (h, w, ["image", "depth", "motion"])}) as wr:
        for t in range(n):
            ys, xs = np.mgrid[0:h * s, 0:w * s]
            hr_img = np.stack([xs, ys, np.full_like(xs, t)], -1).astype(np.float16)
            ys, xs = np.mgrid[0:h, 0:w]
            lr_img = np.stack([xs, ys, np.full_like(xs, t)], -1).astype(np.float16)
            depth_hr = np.full((h * s, w * s, 1), 2.0 + t, np.float32)
            depth_lr = np.full((h, w, 1), 2.0 + t, np.float32)
            depth_lr[0, :] = np.inf
            wr.append({"hr": {"image": hr_img, "depth": depth_hr},
                       "lr": {"image": lr_img, "depth": depth_lr, "motion": np.zeros((h, w, 2))}})
    return path


def test_crops_have_shapes_and_hr_is_pixel_aligned(coord_store):
    ds = CropDataset(coord_store, frames=5, patch=32, lr_buffers=["image", "depth", "motion"],
                     hr_buffers=["image"], length=20, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (5, 3, 8, 8) and item["depth"].shape == (5, 1, 8, 8)
        assert item["motion"].shape == (5, 2, 8, 8) and item["hr_image"].shape == (5, 3, 32, 32)
        assert item["image"].dtype == torch.float32
        lr, hr = item["image"], item["hr_image"]
        # HR pixel (Y, X) belongs to LR pixel (Y // 4, X // 4): the crops cover the same area
        assert torch.equal(hr[:, 0, ::4, ::4], lr[:, 0] * 4) and torch.equal(hr[:, 1, ::4, ::4], lr[:, 1] * 4)
        assert torch.equal(hr[:, 2], lr[:, 2, :1, :1].expand(-1, 32, 32))  # same frames


def test_crops_are_a_pure_function_of_seed_and_index(coord_store):
    a = CropDataset(coord_store, frames=3, patch=32, lr_buffers=["image"], length=5, seed=7)
    b = CropDataset(coord_store, frames=3, patch=32, lr_buffers=["image"], length=5, seed=7)
    c = CropDataset(coord_store, frames=3, patch=32, lr_buffers=["image"], length=5, seed=8)
    assert [a.crop_at(i) for i in range(5)] == [b.crop_at(i) for i in range(5)]
    assert [a.crop_at(i) for i in range(5)] != [c.crop_at(i) for i in range(5)]


def test_crops_work_in_spawned_workers(coord_store):
    ds = CropDataset(coord_store, frames=3, patch=32, lr_buffers=["image"], length=4, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 3, 3, 8, 8)
    assert torch.equal(batches[1]["hr_image"][0], ds[2]["hr_image"])


def test_rdg_normalisation(coord_store, tmp_path):
    from gbuf.datasets.synthetic import make_synthetic_store

    path = make_synthetic_store(tmp_path / "s.zarr", frames=4)
    ds = CropDataset(path, frames=2, patch=32, normalize="rdg", length=3)
    item = ds[0]
    name, t0, y0, x0 = ds.crop_at(0)
    raw = gd.open(path)[name]["lr"]
    img = raw.read("image", t=slice(t0, t0 + 2), y=slice(y0, y0 + 8), x=slice(x0, x0 + 8))
    assert np.allclose(item["image"].numpy(), srgb_encode(img.astype(np.float32)).transpose(0, 3, 1, 2))
    nrm = raw.read("normal", t=slice(t0, t0 + 2), y=slice(y0, y0 + 8), x=slice(x0, x0 + 8))
    assert np.allclose(item["normal"].numpy(), ((nrm.astype(np.float32) + 1) / 2).transpose(0, 3, 1, 2))
    # depth: min-max of the whole frame, not of the crop
    whole = raw.read("depth", t=t0)[0]
    crop = raw.read("depth", t=t0, y=slice(y0, y0 + 8), x=slice(x0, x0 + 8))[0]
    expect = (crop - whole.min()) / (whole.max() - whole.min())
    assert np.allclose(item["depth"][0, 0].numpy(), expect[..., 0], atol=1e-6)
    # background depth (+inf) maps to the far end
    cds = CropDataset(coord_store, frames=1, patch=64, lr_buffers=["depth"], hr_buffers=[], normalize="rdg",
                      length=1)
    assert float(cds[0]["depth"][0, 0, 0, 0]) == 1.0


@pytest.mark.parametrize("normalize", [None, "rdg", "rdg-official"])
def test_cached_crops_are_the_crops_read_from_the_store(tmp_path_factory, normalize):
    from gbuf.datasets.synthetic import make_synthetic_store

    path = make_synthetic_store(tmp_path_factory.mktemp("cache") / "s.zarr", frames=6)
    kwargs = dict(frames=3, patch=32, normalize=normalize, length=24, seed=5)
    read, cached = CropDataset(path, **kwargs), CropDataset(path, cache=True, **kwargs)
    for i in range(len(read)):
        a, b = read[i], cached[i]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (i, key)
    assert cached._memory  # it did hold the frames, and the items above came from memory
    # a crop handed out is a copy: changing it changes neither the cache nor the next crop
    cached[0]["image"].add_(1.0)
    assert torch.equal(cached[0]["image"], read[0]["image"])


def test_sequence_dataset_segments(coord_store):
    ds = SequenceDataset(coord_store, lr_buffers=["image"], segment_frames=4)
    assert [(it[1], it[2]) for it in ds.items] == [(0, 4), (4, 8), (8, 10)]
    item = ds[2]
    assert item["image"].shape == (2, 3, 16, 24) and item["hr_image"].shape == (2, 3, 64, 96)
    assert item["sequence"] == "seq" and item["first_frame"] == 8


def test_missing_buffers_and_short_sequences_are_named(coord_store):
    with pytest.raises(GbufError, match="brdf"):
        CropDataset(coord_store, lr_buffers=["image", "brdf"])
    with pytest.raises(GbufError, match="15 frames"):
        CropDataset(coord_store, frames=15, patch=32, lr_buffers=["image"])


def test_patch_is_the_hr_side_and_must_divide_by_the_scale(coord_store):
    # patch means the HR patch, as gbuf train --patch / data.patch: LR is patch / 4 here
    item = CropDataset(coord_store, frames=2, patch=48, lr_buffers=["image"], length=1)[0]
    assert item["hr_image"].shape[-2:] == (48, 48) and item["image"].shape[-2:] == (12, 12)
    lr_only = CropDataset(coord_store, frames=2, patch=48, lr_buffers=["image"], hr_buffers=[], length=1)[0]
    assert lr_only["image"].shape[-2:] == (12, 12) and "hr_image" not in lr_only
    with pytest.raises(GbufError, match=r"patch 30 \(HR pixels\) is not a multiple of the group's scale 4") as err:
        CropDataset(coord_store, frames=2, patch=30, lr_buffers=["image"])
    assert "\n" not in str(err.value)
    # too large for the LR group (16x24): the message gives the LR size it needed
    with pytest.raises(GbufError, match=r"at least 20x20 \(HR patch 80\)"):
        CropDataset(coord_store, frames=2, patch=80, lr_buffers=["image"])


def test_readme_library_example_runs_on_a_store_shaped_like_the_demo(tmp_path, monkeypatch):
    """The README's python block, as written, on a store of `make demo`'s shape (6 frames,
    HR 320x180, LR x4 80x45, the rendered RDG buffers)."""
    import re
    from pathlib import Path

    from gbuf.datasets.synthetic import make_synthetic_store

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README has one python example"
    monkeypatch.chdir(tmp_path)
    make_synthetic_store(tmp_path / "demo" / "default.zarr", frames=6, height=180, width=320, scale=4)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    # what its comments promise
    assert namespace["depth"].shape == (6, 32, 32, 1)
    item = namespace["item"]
    assert item["image"].shape == (4, 3, 32, 32) and item["hr_image"].shape == (4, 3, 128, 128)
    assert set(item) == {"image", "depth", "normal", "motion", "brdf", "hr_image"}
