"""Degradation kernels against independent float64 references of their published definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gbuf.datasets import colour
from gbuf.datasets.degrade import config as C
from gbuf.datasets.degrade import kernels as K
from gbuf.datasets.degrade import realworld as R
from gbuf.datasets.degrade.bicubic import imresize, imresize_hwc
from gbuf.datasets.degrade.blur import bd_downsample, bd_kernel
from gbuf.datasets.degrade.video import VideoCompressor, check_codec
from gbuf.errors import GbufError
from tests.matlab_reference import duf_bd, fspecial_gaussian, matlab_bd, matlab_imresize

SIZES = [(37, 53), (36, 52), (17, 16), (9, 11), (5, 3), (64, 65)]


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("scale", [4, 2, 3])
def test_bicubic_equals_matlab_formulas_everywhere(h, w, scale):
    img = np.random.default_rng(h * 100 + w + scale).random((h, w, 3))
    ref = matlab_imresize(img, 1.0 / scale)
    assert ref.shape[:2] == (math.ceil(h / scale), math.ceil(w / scale))
    planar = imresize(torch.from_numpy(img).permute(2, 0, 1), 1.0 / scale).permute(1, 2, 0).numpy()
    hwc = imresize_hwc(torch.from_numpy(img)[None], 1.0 / scale)[0].numpy()
    hwc32 = imresize_hwc(torch.from_numpy(img).float()[None], 1.0 / scale)[0].numpy()
    # Whole image, border rows/columns included.
    assert np.abs(planar - ref).max() <= 1e-12
    assert np.abs(hwc - ref).max() <= 1e-12
    assert np.abs(hwc32 - ref).max() <= 1e-6
    assert np.abs(hwc32[[0, -1]] - ref[[0, -1]]).max() <= 1e-6
    assert np.abs(hwc32[:, [0, -1]] - ref[:, [0, -1]]).max() <= 1e-6


def test_bicubic_non_integer_scales_and_upscaling():
    img = np.random.default_rng(3).random((23, 31))
    for s in (0.4, 1 / 2.5, 2.0, 1.5):
        ref = matlab_imresize(img, s)
        out = imresize(torch.from_numpy(img), s).numpy()
        assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-12, s


def test_bicubic_interior_matches_torch_antialias_but_border_does_not():
    # torch's antialiased bicubic uses the same kernel; only the border rule differs.
    img = np.random.default_rng(4).random((64, 80))
    ours = imresize(torch.from_numpy(img), 0.25).numpy()
    theirs = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(16, 20), mode="bicubic",
                                             antialias=True, align_corners=False)[0, 0].numpy()
    assert np.abs(ours - theirs)[3:-3, 3:-3].max() < 1e-12
    assert np.abs(ours - theirs)[0].max() > 1e-3


def test_bicubic_float16_channels_last_input():
    img = np.random.default_rng(5).random((40, 48, 3)).astype(np.float16)
    out = imresize_hwc(torch.from_numpy(img)[None], 0.25)[0]
    assert out.dtype == torch.float32
    assert np.abs(out.numpy() - matlab_imresize(img.astype(np.float64), 0.25)).max() <= 1e-6


@pytest.mark.parametrize("h,w", [(37, 53), (36, 52), (12, 13), (64, 30)])
@pytest.mark.parametrize("scale", [4, 2])
def test_bd_matlab_variant_matches_definition(h, w, scale):
    img = np.random.default_rng(h + w + scale).random((h, w, 3))
    ref = matlab_bd(img, scale, 1.6)
    out = bd_downsample(torch.from_numpy(img), scale, channels_last=True).numpy()
    assert out.shape == ref.shape == ((h - scale) // scale + 1, (w - scale) // scale + 1, 3)
    assert np.abs(out - ref).max() <= 1e-12
    planar = bd_downsample(torch.from_numpy(img).permute(2, 0, 1).float(), scale).permute(1, 2, 0).numpy()
    assert np.abs(planar - ref).max() <= 1e-6


def test_bd_matlab_kernel_is_fspecial_12x12():
    k = bd_kernel(4)
    assert k.shape == (12, 12)
    assert np.abs(k - fspecial_gaussian(12, 1.6)).max() < 1e-15
    # an even-size kernel centred at floor((k+1)/2): LR pixel i sits at HR 4i + 1.5, its footprint centre
    img = np.zeros((32, 32))
    img[13, 13] = 1.0    # HR pixel 13 = 4*3 + 1: its neighbour 14 is equally far from LR centre 13.5
    out = bd_downsample(torch.from_numpy(img), 4).numpy()
    img2 = np.zeros((32, 32))
    img2[14, 14] = 1.0
    out2 = bd_downsample(torch.from_numpy(img2), 4).numpy()
    assert out[3, 3] == pytest.approx(out2[3, 3], rel=1e-12)


@pytest.mark.parametrize("scale", [4, 3, 2])
def test_bd_duf_variant_matches_definition(scale):
    img = np.random.default_rng(scale).random((37, 45, 3))
    ref = duf_bd(img, scale)
    out = bd_downsample(torch.from_numpy(img), scale, variant="duf", channels_last=True).numpy()
    assert out.shape == ref.shape == (math.ceil(37 / scale), math.ceil(45 / scale), 3)
    assert np.abs(out - ref).max() <= 1e-12
    k = bd_kernel(scale, variant="duf")
    assert k.shape == (13, 13) and abs(k.sum() - 1) < 1e-12


def test_bd_refuses_bad_input():
    x = torch.rand(3, 10, 10)
    with pytest.raises(GbufError, match="smaller than the 12x12"):
        bd_downsample(x, 4)
    with pytest.raises(GbufError, match="even scale"):
        bd_downsample(torch.rand(3, 40, 40), 3)
    with pytest.raises(GbufError, match="integer scale"):
        bd_downsample(torch.rand(3, 40, 40), 2.5, variant="duf")


def _j1(x):
    # Bessel J1 from its integral form (1/pi) int_0^pi cos(t - x sin t) dt; the trapezoid rule on this
    # periodic integrand converges exponentially.
    t = np.linspace(0.0, np.pi, 4001)
    vals = np.cos(t[None, :] - np.asarray(x, dtype=np.float64).reshape(-1, 1) * np.sin(t)[None, :])
    return np.trapezoid(vals, t, axis=1).reshape(np.shape(x)) / np.pi


def test_realworld_kernels_match_their_definitions():
    ax = np.arange(-10, 11, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax, indexing="xy")
    # anisotropic Gaussian, sigma_x = 3 along columns, sigma_y = 0.5 along rows, then rotated by 90 degrees
    k = K.gaussian_family_kernel("aniso", 21, 3.0, 0.5, 0.0)
    want = np.exp(-0.5 * (xx**2 / 9.0 + yy**2 / 0.25))
    assert np.abs(k - want / want.sum()).max() < 1e-15
    k90 = K.gaussian_family_kernel("aniso", 21, 3.0, 0.5, math.pi / 2)
    assert np.abs(k90 - k.T).max() < 1e-12
    # generalized and plateau with beta, isotropic ignores sigma_y/theta
    q = (xx**2 + yy**2) / 1.5**2
    g = K.gaussian_family_kernel("generalized_iso", 21, 1.5, 9.0, 1.0, beta=0.7)
    assert np.abs(g - np.exp(-0.5 * q**0.7) / np.exp(-0.5 * q**0.7).sum()).max() < 1e-15
    p = K.gaussian_family_kernel("plateau_iso", 21, 1.5, 1.5, 0.0, beta=1.6)
    assert np.abs(p - (1 / (1 + q**1.6)) / (1 / (1 + q**1.6)).sum()).max() < 1e-15
    # sinc: omega J1(omega r) / (2 pi r), omega^2 / (4 pi) at the centre, normalised
    omega = 2.0
    r = np.sqrt(xx**2 + yy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = omega * _j1(omega * r) / (2 * np.pi * r)
    raw[10, 10] = omega**2 / (4 * np.pi)
    s = K.sinc_kernel(21, omega)
    assert np.abs(s - raw / raw.sum()).max() < 1e-13
    assert (s < 0).any()     # the ringing lobes that make sinc artefacts


def test_poisson_noise_is_basicsr_strength_not_mmagic():
    # A ramp with 256 distinct 8-bit levels: BasicSR scales the rate by 2^ceil(log2 256) = 256, so
    # noise variance at value v is v / 256 (times scale^2); mmagic 1.x's would be 255x smaller.
    ramp = torch.linspace(0.25, 0.75, 129)
    img = ramp.repeat(3, 200, 1)[None]
    img = torch.round(img * 255) / 255
    g = torch.Generator().manual_seed(0)
    out = R.add_noise(img, {"type": "poisson", "gray": False, "scale": [1.0]}, 0, g)
    var = (out - img).var().item()
    levels = torch.unique(img).numel()
    want = img.mean().item() / 2 ** math.ceil(math.log2(levels))
    assert var == pytest.approx(want, rel=0.1)


def test_gray_noise_is_the_same_in_every_channel():
    img = torch.full((1, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(1)
    out = R.add_noise(img, {"type": "gaussian", "gray": True, "sigma": [10.0]}, 0, g)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert (out - img).std().item() == pytest.approx(10 / 255, rel=0.15)
    g = torch.Generator().manual_seed(1)
    colour = R.add_noise(img, {"type": "gaussian", "gray": False, "sigma": [10.0]}, 0, g)
    assert not torch.equal(colour[:, 0], colour[:, 1])


def test_jpeg_is_a_real_deterministic_codec():
    x = torch.rand(1, 3, 48, 64)
    a, b = R.jpeg(x, 30), R.jpeg(x, 30)
    assert torch.equal(a, b)
    assert (R.jpeg(x, 95) - x).abs().mean() < (a - x).abs().mean()
    # decoded values are 8-bit levels
    assert torch.equal(torch.round(a * 255), a * 255)


@pytest.mark.parametrize("codec", ["libx264", "h264", "mpeg4"])
def test_video_compression_round_trip(codec):
    rng = np.random.default_rng(0)
    frames = [(rng.random((18, 31, 3)) * 255).astype(np.uint8) for _ in range(4)]   # odd width

    def run():
        comp = VideoCompressor(codec, 20000)
        for f in frames:
            comp.push(f)
        return list(comp.frames())

    a, b = run(), run()
    assert len(a) == 4 and a[0].shape == (18, 31, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.abs(a[0].astype(int) - frames[0]).mean() > 1     # lossy
    with pytest.raises(GbufError, match="unknown video codec"):
        check_codec("vp9")


def test_srgb_transfer_round_trip():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(colour.srgb_decode(colour.srgb_encode(x)), x, atol=1e-12)
    assert colour.srgb_encode(torch.tensor(0.18, dtype=torch.float64)).item() == pytest.approx(0.4614, abs=1e-3)


def test_plan_rules_discrete_fixed_continuous_walk():
    cfg = C.load().realworld
    n = 30
    for seed in range(12):
        plan = R.sample_plan(cfg, n, R.clip_rng(seed, "clip"))
        assert plan == R.sample_plan(cfg, n, R.clip_rng(seed, "clip"))
        for stage in ("stage1", "stage2"):
            blur = plan[stage]["blur"]
            if blur["applied"]:
                assert blur["size"] in C.KERNEL_SIZES and isinstance(blur["kernel"], str)
                for key, step in (("sigma_x", 0.02), ("sigma_y", 0.02), ("theta", 0.31416), ("omega", 0.0628)):
                    if key in blur:
                        v = np.array(blur[key])
                        assert len(v) == n and np.all(np.abs(np.diff(v)) <= step + 1e-12)
            r = plan[stage]["resize"]
            lo, hi = getattr(cfg, stage).resize.range
            assert r["direction"] in ("up", "down", "keep") and r["mode"] in ("area", "bilinear", "bicubic")
            assert len(r["factor"]) == n and min(r["factor"]) >= lo and max(r["factor"]) <= hi
            q = plan[stage]["jpeg"]["quality"]
            assert all(30 <= v <= 95 and isinstance(v, int) for v in q)
            assert np.all(np.abs(np.diff(q)) <= 3)
        assert plan["stage1"]["video"]["codec"] in ("libx264", "h264", "mpeg4")
        assert 10000 <= plan["final"]["video"]["bitrate"] <= 100000
    assert R.sample_plan(cfg, n, R.clip_rng(0, "a")) != R.sample_plan(cfg, n, R.clip_rng(0, "b"))


def test_realworld_clip_is_deterministic_and_sized():
    cfg = C.load().realworld
    frames = [np.random.default_rng(t).random((72, 96, 3)).astype(np.float32) for t in range(4)]
    outs = []
    for seed in (5, 5, 6):
        plan = R.sample_plan(cfg, 4, R.clip_rng(seed, "c"))
        outs.append(list(R.degrade_clip(iter(frames), plan, 4, seed=seed, key="c")))
    assert all(o.shape == (18, 24, 3) for o in outs[0])
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))
    # 8-bit quantised display values
    assert np.array_equal(np.round(outs[0][0] * 255), outs[0][0] * 255)


def test_config_files_override_and_reject_unknown_keys(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[gaussian]\nvariant = "duf"\n[realworld.stage1.noise]\ngaussian_sigma = [1, 15]\n')
    cfg = C.load(toml)
    assert cfg.gaussian.variant == "duf" and cfg.realworld.stage1.noise.gaussian_sigma == [1, 15]
    assert cfg.realworld.stage2.noise.gaussian_sigma == [1.0, 25.0]
    yaml = tmp_path / "c.yaml"
    yaml.write_text("realworld:\n  video:\n    enabled: false\n")
    assert C.load(yaml).realworld.video.enabled is False
    bad = tmp_path / "bad.toml"
    bad.write_text("[realworld.stage1.noise]\ngausian_sigma = [1, 2]\n")
    with pytest.raises(GbufError, match=r"bad.toml: unknown option realworld.stage1.noise.gausian_sigma \(known"):
        C.load(bad)
    bad.write_text('[realworld.video]\nenabled = "no"\n')
    with pytest.raises(GbufError, match=r"bad.toml: realworld.video.enabled must be true or false, got 'no'"):
        C.load(bad)
    bad.write_text("[realworld.stage1.jpeg]\nquality = [30, 95.5]\n")
    with pytest.raises(GbufError, match=r"bad.toml: realworld.stage1.jpeg.quality\[1\] must be an integer"):
        C.load(bad)
    bad.write_text('[realworld]\ntransfer = "log"\n')
    with pytest.raises(GbufError, match=r"bad.toml: realworld.transfer must be one of srgb, linear, got 'log'"):
        C.load(bad)
    bad.write_text("realworld = 3\n")
    with pytest.raises(GbufError, match=r"bad.toml: realworld must be a table"):
        C.load(bad)
    # Overrides by dotted name (--set and the CLI flags) land over the file; sections merge.
    over = C.load(toml, {"gaussian.sigma": 2, "realworld.stage1.noise": {"gray_prob": 0.0}})
    assert over.gaussian.sigma == 2.0 and isinstance(over.gaussian.sigma, float)
    assert over.gaussian.variant == "duf" and over.realworld.stage1.noise.gray_prob == 0.0
    assert over.realworld.stage1.noise.gaussian_sigma == [1, 15]
    with pytest.raises(GbufError, match=r"options: unknown option gaussian.sigmaa"):
        C.load(None, {"gaussian.sigmaa": 2})
    # A DegradeConfig given to the library is used as the base and left unchanged.
    base = C.DegradeConfig()
    assert C.resolve(base, {"gbuffers.mode": "area"}).gbuffers.mode == "area" and base.gbuffers.mode == "point"
    codec = tmp_path / "codec.yaml"
    codec.write_text("realworld:\n  video:\n    codecs: [vp9]\n    codec_prob: [1.0]\n")
    with pytest.raises(GbufError, match="unknown video codec 'vp9'"):
        C.load(codec)
    probs = tmp_path / "p.toml"
    probs.write_text("[realworld.stage1.resize]\nprob = [0.5, 0.6, 0.1]\n")
    with pytest.raises(GbufError, match="summing to 1"):
        C.load(probs)
