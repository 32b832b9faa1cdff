"""gbuf upscale: PNG / EXR frames, a playable MP4 decoded back, the comparison video and crop grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbuf.train import trainer
from train_helpers import synthetic_store, tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale_run")
    store = synthetic_store(root, sequences=1, frames=5)
    result = trainer.train(tiny_config(store, root / "run", iters=1, frames=2, batch=1))
    return store, result.checkpoint


def test_upscale_writes_frames_and_a_playable_video(trained, tmp_path, gbuf_cli):
    import av
    import OpenEXR
    from PIL import Image

    store, ckpt = trained
    out = tmp_path / "out"
    proc = gbuf_cli("upscale", "rdg-s", "--ckpt", ckpt, "--data", store, "--sequence", "synthetic_000", "-o", out,
                    "--video", "--compare", "--exr", "--segment-frames", "3", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    pngs = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:04d}.png" for i in range(5)]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    assert frames[0].shape == (64, 96, 3)

    # the MP4 decodes back: 5 frames of 96x64 H.264 (the briefly trained model's output is dark and
    # nearly still, so the content check below uses the bicubic baseline's moving pictures)
    with av.open(str(out / "synthetic_000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 96, 3)
    assert np.abs(_luma(frames[2]) - _luma(decoded[2])).mean() < 4.0

    # EXR: half-float linear RGB, the PNG's display encoding undone
    with OpenEXR.File(str(out / "exr" / "0002.exr")) as f:
        rgb = f.channels()["RGB"].pixels
    assert rgb.dtype == np.float16 and rgb.shape == (64, 96, 3)
    encoded = np.where(rgb <= 0.0031308, 12.92 * rgb.astype(np.float64),
                       1.055 * np.clip(rgb.astype(np.float64), 0, 1) ** (1 / 2.4) - 0.055)
    assert np.abs(np.round(np.clip(encoded, 0, 1) * 255) - frames[2]).max() <= 1

    # side-by-side comparison (LR bicubic | model | HR) and the crop grid
    with av.open(str(out / "compare.mp4")) as container:
        compare = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(compare) == 5 and compare[0].shape == (64, 3 * 96, 3)
    with Image.open(out / "crops.png") as grid:
        assert grid.size == (3 * 256, 3 * 256)


def _luma(rgb):
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_video_shows_the_frames_in_order(trained, tmp_path):
    import av
    from PIL import Image

    from gbuf.train.upscale import upscale

    store, _ = trained
    result = upscale("bicubic", str(store), "synthetic_000", tmp_path / "b", video=True, device="cpu")
    assert result.frames == 5 and result.video.name == "synthetic_000.mp4"
    frames = [_luma(np.asarray(Image.open(p).convert("RGB"))) for p in result.pngs]
    with av.open(str(result.video)) as container:
        assert float(container.streams.video[0].average_rate) == 24
        decoded = [_luma(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert len(decoded) == 5
    for i, video in enumerate(decoded):
        errors = [np.abs(video - png).mean() for png in frames]
        assert errors[i] < 2.0 and int(np.argmin(errors)) == i, errors


def test_upscale_bad_input(trained, tmp_path, gbuf_cli):
    store, ckpt = trained
    proc = gbuf_cli("upscale", "rdg-s", "--ckpt", ckpt, "--data", store, "--sequence", "nope", "-o", tmp_path / "o")
    assert proc.returncode == 2 and "no sequence 'nope'" in proc.stderr and proc.stderr.count("\n") == 1
    from gbuf.errors import GbufError
    from gbuf.train.upscale import upscale

    with pytest.raises(GbufError, match=r"checkpoint of model rdg-s, not rdg"):
        upscale("rdg", str(store), "synthetic_000", tmp_path / "o", checkpoint=ckpt, device="cpu")
