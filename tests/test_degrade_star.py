"""The ``star`` preset of ``gbuf degrade --realworld``: one draw per clip, the codec pass last
at the LR size, same seed same bytes (clips, stores, the CLI), and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import gbuf.datasets as gd
from gbuf.datasets.degrade import config as C
from gbuf.datasets.degrade import realworld as R
from gbuf.datasets.degrade import video as V
from gbuf.datasets.degrade.api import degrade_store
from gbuf.errors import GbufError
from tests.test_degrade_store import make_store

pytest.importorskip("av", reason="video compression needs PyAV")

SCALE, N = 4, 4


def star(**overrides):
    return C.load(overrides={"realworld.preset": "star", **overrides}).realworld


def frames(n=N, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, size=(h // 8, w // 8, 3))
    return [np.clip(np.kron(base, np.ones((8, 8, 1))) + 0.05 * t, 0, 1).astype(np.float32) for t in range(n)]


def per_frame_lists(plan):
    """Every per-frame list of a plan (the continuous parameters)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list) and len(node) == plan["num_frames"]:
            found.append(node)

    walk(plan)
    return found


def test_one_draw_per_clip():
    for key in ("a", "b", "c", "d"):
        plan = R.sample_plan(star(), 6, R.clip_rng(3, key))
        assert plan["preset"] == "star"
        lists = per_frame_lists(plan)
        assert lists and all(len(set(values)) == 1 for values in lists), plan
    # the default (RealBasicVSR) walks its continuous parameters frame by frame
    default = R.sample_plan(C.load().realworld, 6, R.clip_rng(3, "a"))
    assert "preset" not in default
    assert any(len(set(values)) > 1 for values in per_frame_lists(default))
    # the same clip key and seed draw the same plan; another key another
    assert R.sample_plan(star(), 6, R.clip_rng(3, "a")) == R.sample_plan(star(), 6, R.clip_rng(3, "a"))
    assert R.sample_plan(star(), 6, R.clip_rng(3, "a")) != R.sample_plan(star(), 6, R.clip_rng(3, "b"))


def test_codec_pass_comes_last_at_lr_size(monkeypatch):
    """STAR ends with the codec on the LR frames: the output is exactly what the second encoder
    decoded. The default's second codec pass may come before the final resize."""
    pushed, decoded = [], []
    real_push, real_frames = V.VideoCompressor.push, V.VideoCompressor.frames

    def push(self, frame):
        pushed.append((id(self), frame.shape[:2]))
        return real_push(self, frame)

    def frames_out(self):
        for u8 in real_frames(self):
            decoded.append((id(self), u8.copy()))
            yield u8

    monkeypatch.setattr(V.VideoCompressor, "push", push)
    monkeypatch.setattr(V.VideoCompressor, "frames", frames_out)
    clip = frames()
    h, w = clip[0].shape[:2]
    for preset, cfg in (("star", star()), ("realbasicvsr", C.load().realworld)):
        # a clip whose drawn order puts JPEG before {resize + sinc} and whose stage-2 resize moves
        key = next(k for k in map(str, range(200))
                   if (p := R.sample_plan(cfg, N, R.clip_rng(1, k)))["final"]["order"] == "compress_first"
                   and p["stage2"]["resize"]["direction"] != "keep")
        plan = R.sample_plan(cfg, N, R.clip_rng(1, key))
        pushed.clear()
        decoded.clear()
        out = list(R.degrade_clip(iter(clip), plan, SCALE, seed=1, key=key))
        assert len(out) == N and all(f.shape == (h // SCALE, w // SCALE, 3) for f in out)
        encoders = list(dict.fromkeys(i for i, _ in pushed))
        assert len(encoders) == 2
        last = [size for i, size in pushed if i == encoders[-1]]
        last_decoded = [u8 for i, u8 in decoded if i == encoders[-1]]
        if preset == "star":
            assert all(size == (h // SCALE, w // SCALE) for size in last)
            assert all(np.array_equal(np.round(o * 255).astype(np.uint8), d) for o, d in zip(out, last_decoded))
        else:
            assert all(size != (h // SCALE, w // SCALE) for size in last)


def test_same_seed_same_bytes_and_the_seed_matters():
    clip = frames()
    plan = R.sample_plan(star(), N, R.clip_rng(5, "clip"))
    a = np.stack(list(R.degrade_clip(iter(clip), plan, SCALE, seed=5, key="clip")))
    b = np.stack(list(R.degrade_clip(iter(clip), plan, SCALE, seed=5, key="clip")))
    assert a.tobytes() == b.tobytes()
    other = R.sample_plan(star(), N, R.clip_rng(6, "clip"))
    c = np.stack(list(R.degrade_clip(iter(clip), other, SCALE, seed=6, key="clip")))
    assert a.tobytes() != c.tobytes()
    # without video the preset is Real-ESRGAN's image pipeline, drawn once per clip
    still = R.sample_plan(star(**{"realworld.video.enabled": False}), N, R.clip_rng(5, "clip"))
    assert "video" not in still["stage1"] and all(len(set(v)) == 1 for v in per_frame_lists(still))
    d = np.stack(list(R.degrade_clip(iter(clip), still, SCALE, seed=5, key="clip")))
    assert d.shape == a.shape and d.tobytes() != a.tobytes()


def test_store_and_cli(tmp_path):
    from gbuf.cli import main

    path = make_store(tmp_path / "d.zarr", frames=3, sequences=("seq_a", "seq_b"))
    degrade_store(path, "realworld", seed=2, name="star_a", overrides={"realworld.preset": "star"})
    result = CliRunner().invoke(main, ["degrade", str(path), "--realworld", "--preset", "star", "--seed", "2",
                                       "--name", "star_b"])
    assert result.exit_code == 0, result.output
    ds = gd.open(path)
    for seq in ("seq_a", "seq_b"):
        a, b = ds[seq]["star_a"], ds[seq]["star_b"]
        assert a.read("image").tobytes() == b.read("image").tobytes()
        assert a.attrs["method_params"]["settings"]["preset"] == "star"
        plan = a.attrs["clip_draws"]
        assert plan["preset"] == "star" and all(len(set(v)) == 1 for v in per_frame_lists(plan))
    # two clips, two draws
    assert ds["seq_a"]["star_a"].attrs["clip_draws"] != ds["seq_b"]["star_a"].attrs["clip_draws"]

    result = CliRunner().invoke(main, ["degrade", str(path), "--bicubic", "--preset", "star"])
    assert result.exit_code == 2 and "--preset applies to --realworld only" in result.output
    with pytest.raises(GbufError, match="realworld.preset"):
        C.load(overrides={"realworld.preset": "realesrgan"})
