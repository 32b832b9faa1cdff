"""``normalize="rdg-official"``: the official RDG loader's depth formula, sky (1e10) included."""

from __future__ import annotations

import numpy as np
import pytest

import gbuf.datasets as gd
from gbuf.datasets import format as fmt
from gbuf.datasets.synthetic import synthetic_frame
from gbuf.datasets.writer import SequenceWriter

FRAMES, H, W = 3, 32, 48


def official_depth(raw_frame: np.ndarray) -> np.ndarray:
    """The formula of the official loader, written from its description: the Depth EXR as Blender
    writes it (background 1e10, float32), channel 0, minus the file's minimum, over its range."""
    image = np.where(np.isfinite(raw_frame), raw_frame, 1e10).astype(np.float32)
    return (image[..., :1] - np.min(image)) / (np.max(image) - np.min(image))


@pytest.fixture(scope="module")
def sky_store(tmp_path_factory):
    """Frames 0 and 2 see sky (+inf depth) in the top rows (HR rows 0..7: LR rows 0..1); frame 1 none."""
    path = tmp_path_factory.mktemp("sky") / "sky.zarr"
    specs = {fmt.HR: (H, W, list(fmt.RDG_BUFFERS)), fmt.LR: (H // 4, W // 4, list(fmt.RDG_BUFFERS))}
    attrs = {g: {"image_encoding": "linear", "kind": "synthetic"} for g in specs}
    with SequenceWriter(path, "sky", FRAMES, specs, sequence_attrs={"fps": 24}, resolution_attrs=attrs) as writer:
        for t in range(FRAMES):
            frame = synthetic_frame(t, H, W, 4)
            if t != 1:
                frame[fmt.HR]["depth"] = frame[fmt.HR]["depth"].copy()
                frame[fmt.HR]["depth"][:8] = np.inf
                frame[fmt.LR]["depth"] = frame[fmt.LR]["depth"].copy()
                frame[fmt.LR]["depth"][:2] = np.inf
            writer.append(frame)
    return path


def test_official_depth_matches_the_formula_on_whole_frames_and_crops(sky_store):
    raw = gd.open(sky_store)["sky"][fmt.LR].read("depth")
    whole = gd.SequenceDataset(sky_store, normalize="rdg-official", hr_buffers=())[0]["depth"].numpy()
    gbuf_rdg = gd.SequenceDataset(sky_store, normalize="rdg", hr_buffers=())[0]["depth"].numpy()
    for t in range(FRAMES):
        expected = official_depth(raw[t]).transpose(2, 0, 1)
        np.testing.assert_array_equal(whole[t], expected)
    # with sky: surfaces crushed to ~0 by the official form, spread over [0, 1] by gbuf's default
    assert whole[0][:, 2:].max() < 1e-9 and whole[0][:, :2].min() == 1.0
    assert gbuf_rdg[0][:, 2:].max() == pytest.approx(1.0) and gbuf_rdg[0][:, :2].min() == 1.0
    # without sky the two are the same formula
    np.testing.assert_allclose(whole[1], gbuf_rdg[1], atol=1e-6)

    # every crop, with sky in it or not, is normalised as its whole frame (the range is the frame's)
    crops = gd.CropDataset(sky_store, frames=FRAMES, patch=16, normalize="rdg-official", hr_buffers=(),
                           length=8, seed=3)
    for i in range(len(crops)):
        _, t0, y0, x0 = crops.crop_at(i)
        got = crops[i]["depth"].numpy()
        for k in range(FRAMES):
            expected = official_depth(raw[t0 + k])[y0:y0 + 4, x0:x0 + 4].transpose(2, 0, 1)
            np.testing.assert_array_equal(got[k], expected)


def test_official_is_a_training_option_and_other_names_are_refused(sky_store):
    from gbuf.errors import GbufError
    from gbuf.train import config as cfg

    c = cfg.TrainConfig()
    c.data.normalize = "rdg-official"
    c.validate()
    c.data.normalize = "official"
    with pytest.raises(GbufError, match="data.normalize must be 'rdg', 'rdg-official' or 'none'"):
        c.validate()
    with pytest.raises(GbufError, match="unknown normalisation"):
        gd.CropDataset(sky_store, normalize="official")
