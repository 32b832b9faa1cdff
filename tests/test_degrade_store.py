"""``gbuf degrade`` on stores and folders: groups, attrs, G-buffers, motion, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gbuf.datasets as gd
from gbuf.datasets import colour
from gbuf.datasets.degrade import config as C
from gbuf.datasets.degrade import realworld as R
from gbuf.datasets.degrade.api import degrade_folder, degrade_store
from gbuf.datasets.folder import read_exr, read_png, write_exr, write_png
from gbuf.errors import GbufError
from gbuf.train.ops import backward_warp
from tests.conftest import run_gbuf
from tests.matlab_reference import matlab_bd, matlab_imresize

BUFFERS = ["image", "depth", "normal", "motion", "brdf"]
H, W, T = 64, 96, 4


def _smooth_texture(xs, ys, seed=0):
    # Low frequencies only (<= 0.09 rad per HR pixel), so an LR frame is smooth enough for
    # bilinear warping to be accurate and warp errors measure the motion, not aliasing.
    rng = np.random.default_rng(seed)
    out = np.zeros(xs.shape + (3,))
    for c in range(3):
        for _ in range(3):
            fx, fy = rng.uniform(0.02, 0.09, size=2) * rng.choice([-1, 1], size=2)
            out[..., c] += np.sin(fx * xs + fy * ys + rng.uniform(0, 2 * np.pi))
    return out / 6.0 + 0.5


def shear_frame(t, h=H, w=W):
    """Content in a shear flow: row y moves vx(y) = 1.2 + 0.012 y HR px/frame right, all rows 0.9 up.

    Pixel (y, x) of frame t shows the texture at (x - vx(y0) t, y0) with y0 = y + 0.9 t, and was at
    (x - vx(y0), y - 0.9)... in frame t-1, so motion (t -> t-1) = (-vx(y0), +0.9) in the gbuf convention.
    """
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    vy = -0.9
    y0 = ys - vy * t
    vx = 1.2 + 0.012 * y0
    src_x = xs - vx * t
    image = _smooth_texture(src_x, y0)
    depth = 3.0 + 0.02 * ys + 0.01 * xs
    depth[:3, :5] = np.inf                       # some background
    normal = np.stack([0.1 * np.sin(0.1 * xs), 0.6 + 0 * xs, 0.8 + 0 * xs], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    motion = np.stack([-vx, -vy + 0 * xs], axis=-1)
    brdf = 0.2 + 0.6 * _smooth_texture(src_x * 0.7, y0 * 0.7, seed=1)
    return {"image": image.astype(np.float16), "depth": depth[..., None].astype(np.float32),
            "normal": normal.astype(np.float16), "motion": motion.astype(np.float32),
            "brdf": brdf.astype(np.float16)}


def make_store(path, frames=T, h=H, w=W, sequences=("seq_a",), poison=None):
    for name in sequences:
        with gd.SequenceWriter(path, name, frames, {"hr": (h, w, BUFFERS)},
                               resolution_attrs={"hr": {"kind": "render", "image_encoding": "linear"}}) as wr:
            for t in range(frames):
                f = shear_frame(t, h, w)
                if poison and poison[0] == t:
                    f["image"][poison[1], poison[2], 1] = np.nan
                wr.append({"hr": f})
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("deg") / "d.zarr"
    make_store(path)
    degrade_store(path, "bicubic")
    degrade_store(path, "gaussian")
    degrade_store(path, "gaussian", name="bd_duf", overrides={"gaussian": {"variant": "duf"}})
    degrade_store(path, "bicubic", name="bi_area", overrides={"gbuffers": {"mode": "area"}})
    degrade_store(path, "realworld", seed=7)
    degrade_store(path, "realworld", seed=7, name="rw_again")
    degrade_store(path, "realworld", seed=8, name="rw_other")
    return path


def test_groups_sit_next_to_hr_with_their_recipe(store):
    seq = gd.open(store)["seq_a"]
    assert {"lr_bicubic_x4", "lr_gaussian_x4", "lr_realworld_x4", "bd_duf"} <= set(seq.resolutions)
    res = seq["lr_bicubic_x4"]
    assert (res.height, res.width, res.scale, res.num_frames) == (16, 24, 4, T)
    assert sorted(res.buffers) == sorted(BUFFERS)
    a = res.attrs
    assert a["kind"] == "degraded" and a["method"] == "bicubic" and a["complete"]
    assert a["method_params"]["antialias"] is True and a["image_encoding"] == "linear"
    g = seq["lr_gaussian_x4"].attrs["method_params"]
    assert (g["variant"], g["sigma"], g["kernel_size"]) == ("matlab", 1.6, 12)
    assert seq["bd_duf"].attrs["method_params"]["kernel_size"] == 13
    assert gd.verify(store).ok


def test_bicubic_group_equals_matlab_of_hr(store):
    seq = gd.open(store)["seq_a"]
    hr = seq["hr"].read("image").astype(np.float64)
    lr = seq["lr_bicubic_x4"].read("image")
    ref = np.stack([np.clip(matlab_imresize(f, 0.25), 0, None) for f in hr]).astype(np.float16)
    assert np.abs(lr.astype(np.float64) - ref.astype(np.float64)).max() <= 1e-3   # one float16 step near 1
    assert np.mean(lr == ref) > 0.99


def test_bd_group_equals_definition_of_hr(store):
    seq = gd.open(store)["seq_a"]
    hr = seq["hr"].read("image").astype(np.float64)
    ref = np.stack([matlab_bd(f, 4, 1.6) for f in hr]).astype(np.float16)
    assert np.mean(seq["lr_gaussian_x4"].read("image") == ref) > 0.99


def test_gbuffers_point_sampled_at_lr_centres(store):
    seq = gd.open(store)["seq_a"]
    hr = seq["hr"].read_many(["depth", "normal", "brdf", "motion"])
    lr = seq["lr_bicubic_x4"].read_many(["depth", "normal", "brdf", "motion"])
    # footprint centre 4i + 1.5 -> HR pixel 4i + 2
    idx = 4 * np.arange(16) + 2, 4 * np.arange(24) + 2
    for b in ("depth", "normal", "brdf"):
        assert np.array_equal(lr[b], hr[b][:, idx[0]][:, :, idx[1]]), b
    assert np.allclose(lr["motion"], hr["motion"][:, idx[0]][:, :, idx[1]] / 4)
    duf = seq["bd_duf"].read("depth")
    assert np.array_equal(duf, hr["depth"][:, ::4, ::4])          # DUF samples at 4i
    area = seq["bi_area"].read_many(["depth", "normal", "motion"])
    blocks = hr["depth"].reshape(T, 16, 4, 24, 4, 1)
    finite = np.where(np.isfinite(blocks), blocks, np.nan)
    want = np.nanmean(finite, axis=(2, 4))
    assert np.allclose(area["depth"][:, 1:], want[:, 1:], rtol=1e-6)
    assert np.isfinite(area["depth"][:, 0, 0]).all()               # partly background: mean of the finite part
    assert np.allclose(np.linalg.norm(area["normal"].astype(np.float32), axis=-1), 1, atol=2e-3)
    assert np.allclose(area["motion"], hr["motion"].reshape(T, 16, 4, 24, 4, 2).mean(axis=(2, 4)) / 4, atol=1e-5)


@pytest.mark.parametrize("group", ["lr_bicubic_x4", "lr_gaussian_x4", "bd_duf", "bi_area"])
def test_motion_of_degraded_group_warps_previous_frame_onto_current(store, group):
    res = gd.open(store)["seq_a"][group]
    img = torch.from_numpy(res.read("image").astype(np.float32)).permute(0, 3, 1, 2)
    motion = torch.from_numpy(res.read("motion")).permute(0, 3, 1, 2)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))

    def err(m):
        return (backward_warp(img[:-1], m) - img[1:])[inner].abs().mean().item()

    good = err(motion[1:])
    assert good < 0.25 * err(torch.zeros_like(motion[1:]))       # the motion explains the change
    assert good < 0.25 * err(motion[1:] * 4)                       # and is in LR pixels (divided by 4)
    assert good < 0.5 * err(motion[1:] + torch.tensor([0.5, 0.0]).view(1, 2, 1, 1))
    assert good < 0.004


def test_realworld_is_deterministic_and_records_clip_draws(store):
    seq = gd.open(store)["seq_a"]
    a, b, c = seq["lr_realworld_x4"], seq["rw_again"], seq["rw_other"]
    assert a.read("image").tobytes() == b.read("image").tobytes()
    assert a.read("image").tobytes() != c.read("image").tobytes()
    plan = R.sample_plan(C.load().realworld, T, R.clip_rng(7, "seq_a"))
    assert json.loads(json.dumps(plan)) == a.attrs["clip_draws"]
    assert a.attrs["seed"] == 7 and a.attrs["method"] == "realworld"
    assert a.attrs["method_params"]["settings"]["stage1"]["jpeg"]["quality"] == [30, 95]
    draws = a.attrs["clip_draws"]
    assert len(draws["stage1"]["jpeg"]["quality"]) == T and "codec" in draws["final"]["video"]
    img = a.read("image")
    assert img.shape == (T, 16, 24, 3) and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1.0
    # Linear store: degraded in sRGB-encoded 8-bit space, stored decoded back to linear, so every
    # stored value is the linear value of an 8-bit sRGB level (up to float16 rounding).
    levels = colour.srgb_encode(torch.from_numpy(img.astype(np.float64))).numpy() * 255
    assert np.abs(levels - np.round(levels)).max() < 0.15
    assert a.attrs["method_params"]["settings"]["transfer"] == "srgb"


def test_realworld_transfer_and_white_level():
    from gbuf.datasets.degrade.api import _realworld_in, _realworld_out

    lin = np.array([[[0.0, 0.18, 0.5], [1.0, 2.0, 8.0]]], dtype=np.float32)
    rw = C.RealworldConfig(transfer="srgb", white=1.0)
    enc = _realworld_in(lin, "linear", rw)
    assert enc.max() == pytest.approx(1.0, abs=1e-6) and enc[0, 0, 1] == pytest.approx(0.4614, abs=1e-3)    # highlights clip
    assert np.allclose(_realworld_out(enc, "linear", rw), np.minimum(lin, 1.0), atol=1e-6)
    rw4 = C.RealworldConfig(transfer="srgb", white=4.0)
    back = _realworld_out(_realworld_in(lin, "linear", rw4), "linear", rw4)
    assert np.allclose(back, np.minimum(lin, 4.0), atol=1e-5)                   # headroom kept up to white
    rwl = C.RealworldConfig(transfer="linear", white=1.0)
    assert np.allclose(_realworld_in(lin, "linear", rwl), np.clip(lin, 0, 1))
    # an sRGB-encoded store is already display-referred: no conversion
    assert np.array_equal(_realworld_in(enc, "srgb", rw), enc)


def test_realworld_resume_gives_the_same_bytes(store, tmp_path):
    path = make_store(tmp_path / "r.zarr")

    class Stop(Exception):
        pass

    def stop_after_two(seq, done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        degrade_store(path, "realworld", seed=7, progress=stop_after_two)
    res = gd.open(path)["seq_a"]["lr_realworld_x4"]
    assert not res.attrs.get("complete") and res.num_frames == 2
    with pytest.raises(GbufError, match="already exists"):
        degrade_store(path, "realworld", seed=8)          # another recipe does not resume into it
    degrade_store(path, "realworld", seed=7)
    done = gd.open(path)["seq_a"]["lr_realworld_x4"].read("image")
    assert done.tobytes() == gd.open(store)["seq_a"]["lr_realworld_x4"].read("image").tobytes()


def test_existing_group_refused_unless_overwrite(tmp_path):
    path = make_store(tmp_path / "e.zarr", frames=2)
    degrade_store(path, "bicubic")
    before = gd.open(path)["seq_a"]["lr_bicubic_x4"].read("image")
    with pytest.raises(GbufError, match="lr_bicubic_x4 already exists"):
        degrade_store(path, "bicubic")
    degrade_store(path, "bicubic", overwrite=True, overrides={"gbuffers": {"mode": "area"}})
    after = gd.open(path)["seq_a"]["lr_bicubic_x4"]
    assert after.attrs["gbuffer_sampling"]["mode"] == "area"
    assert np.array_equal(after.read("image"), before)
    with pytest.raises(GbufError, match="cannot be named 'hr'"):
        degrade_store(path, "bicubic", name="hr", overwrite=True)


def test_bad_input_is_refused_before_writing(tmp_path):
    path = make_store(tmp_path / "b.zarr", frames=3, poison=(2, 5, 7))
    with pytest.raises(GbufError, match=r"seq_a/hr/image: NaN at frame 2, pixel \(y=5, x=7\)"):
        degrade_store(path, "bicubic")
    assert gd.open(path)["seq_a"].resolutions == ["hr"]           # nothing written
    for scale, method, match in [(0.5, "bicubic", "scale must be >= 1"), (2.5, "gaussian", "integer scale"),
                                 (2.5, "bicubic", "integer scale"), (3, "bicubic", "not divisible by the scale 3"),
                                 (1, "gaussian", "even scale")]:
        with pytest.raises(GbufError, match=match):
            degrade_store(path, method, scale=scale)
    small = make_store(tmp_path / "s.zarr", frames=1, h=16, w=16)
    with pytest.raises(GbufError, match="smaller than the 21x21 blur kernel"):
        degrade_store(small, "realworld")
    bad_codec = tmp_path / "codec.toml"
    bad_codec.write_text('[realworld.video]\ncodecs = ["theora"]\ncodec_prob = [1.0]\n')
    with pytest.raises(GbufError, match="unknown video codec 'theora'"):
        degrade_store(small, "realworld", config=bad_codec)
    with pytest.raises(GbufError, match="unknown degradation"):
        degrade_store(small, "lanczos")


def test_cli_store_and_errors(tmp_path):
    path = make_store(tmp_path / "c.zarr", frames=2, h=32, w=48)
    ok = run_gbuf("degrade", path, "--gaussian", "--variant", "duf", "--name", "bd", "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    assert "wrote seq_a/bd" in ok.stdout
    assert gd.open(path)["seq_a"]["bd"].attrs["method_params"]["variant"] == "duf"
    again = run_gbuf("degrade", path, "--gaussian", "--variant", "duf", "--name", "bd")
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0]
    none = run_gbuf("degrade", path)
    assert none.returncode == 2 and "--bicubic, --gaussian or --realworld" in none.stderr
    # --set: any setting by its dotted name, type-checked; the flags apply over it
    ok = run_gbuf("degrade", path, "--gaussian", "--set", "gaussian.variant=duf", "--set", "gaussian.sigma=1",
                  "--sigma", "2", "--name", "bd_set", "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    params = gd.open(path)["seq_a"]["bd_set"].attrs["method_params"]
    assert (params["variant"], params["sigma"]) == ("duf", 2.0)
    bad = run_gbuf("degrade", path, "--gaussian", "--set", "gaussian.sigma=wide", "--name", "bd_bad")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "gbuf: error: options: gaussian.sigma must be a number, got 'wide'"]


# -- folders ----------------------------------------------------------------------------------
def test_folder_png_bicubic_round_trip(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    frames = [(rng.random((40, 56, 3)) * 255).astype(np.uint8) for _ in range(3)]
    for i, f in enumerate(frames):
        write_png(src / f"{i:03d}.png", f)
    out = degrade_folder(src, tmp_path / "out", "bicubic")
    for i, f in enumerate(frames):
        got = read_png(out / f"{i:03d}.png")
        want = np.clip(np.rint(matlab_imresize(f / 255.0, 0.25) * 255), 0, 255)
        assert got.shape == (10, 14, 3)
        assert np.abs(got.astype(int) - want).max() <= 1 and np.mean(got == want) > 0.99
    record = json.loads((out / "degrade.json").read_text())
    assert record["method"] == "bicubic" and record["clips"]["in"]["frames"] == 3
    with pytest.raises(GbufError, match="exists and is not empty"):
        degrade_folder(src, out, "bicubic")
    frac = degrade_folder(src, tmp_path / "frac", "bicubic", scale=2.5)
    assert read_png(frac / "000.png").shape == (16, 23, 3)


def test_folder_exr_clips_gaussian(tmp_path):
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    data = {}
    for clip in ("clip_a", "clip_b"):
        (src / clip).mkdir(parents=True)
        for i in range(2):
            f = (rng.random((36, 44, 3)) * 4).astype(np.float16)
            data[clip, i] = f
            write_exr(src / clip / f"{i:04d}.exr", {c: f[..., k] for k, c in enumerate("RGB")})
    out = degrade_folder(src, tmp_path / "out", "gaussian")
    for (clip, i), f in data.items():
        ch = read_exr(out / clip / f"{i:04d}.exr")
        got = np.stack([ch[c] for c in "RGB"], axis=-1)
        assert got.dtype == np.float16 and got.shape == (9, 11, 3)
        want = matlab_bd(f.astype(np.float64), 4, 1.6).astype(np.float16)
        assert np.mean(got == want) > 0.99
    assert set(json.loads((out / "degrade.json").read_text())["clips"]) == {"clip_a", "clip_b"}


def test_folder_realworld_deterministic_and_bad_input(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        write_png(src / f"{i:03d}.png", (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    a = degrade_folder(src, tmp_path / "a", "realworld", seed=3)
    b = degrade_folder(src, tmp_path / "b", "realworld", seed=3)
    for i in range(3):
        assert (a / f"{i:03d}.png").read_bytes() == (b / f"{i:03d}.png").read_bytes()
        assert read_png(a / f"{i:03d}.png").shape == (12, 16, 3)
    draws = json.loads((a / "degrade.json").read_text())["clips"]["in"]["clip_draws"]
    assert draws == json.loads(json.dumps(R.sample_plan(C.load().realworld, 3, R.clip_rng(3, "in"))))
    # NaN in an EXR frame: refused, named, nothing written
    bad = tmp_path / "bad"
    bad.mkdir()
    f = np.ones((24, 24, 3), np.float32)
    f[4, 9, 0] = np.inf
    write_exr(bad / "000.exr", {c: f[..., k] for k, c in enumerate("RGB")})
    with pytest.raises(GbufError, match=r"000.exr: Inf at pixel \(y=4, x=9\)"):
        degrade_folder(bad, tmp_path / "never", "bicubic")
    assert not (tmp_path / "never").exists()
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    write_png(tiny / "000.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(GbufError, match=r"000.png: image 10x10 is smaller than the 12x12 blur kernel"):
        degrade_folder(tiny, tmp_path / "never", "gaussian")

