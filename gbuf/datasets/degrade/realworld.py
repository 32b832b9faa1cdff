"""The Real-ESRGAN second-order degradation, applied to video clips with RealBasicVSR's rules.

Per frame (all on display-referred values in [0, 1])::

    stage 1: blur (Gaussian family or sinc) -> resize (up/down/keep; area/bilinear/bicubic)
             -> Gaussian or Poisson noise (colour or grey) -> JPEG [-> video compression]
    stage 2: blur (prob 0.8)  -> resize (relative to the target LR size) -> noise
             without video:   random order of {JPEG} and {resize to LR size + sinc (prob 0.8)}
             with video:      JPEG, then random order of {video} and {resize to LR size + sinc}
    final:   clip and quantise to 8 bits

Clip rules (RealBasicVSR): every discrete choice (kernel type and size, whether
a stage blurs, resize direction and mode, noise type and grey/colour, codec,
bitrate, final order, whether the sinc applies) is drawn once per clip; every
continuous parameter (sigmas, rotation, betas, sinc cut-off, resize factors,
noise level, JPEG quality) is drawn once per clip and then random-walks per
frame by ``U(-step, step)``, clipped to its range.

Determinism: :func:`sample_plan` draws every parameter up front from a numpy
generator seeded by ``(seed, clip key)``; the noise fields of frame t come from a
torch generator seeded by ``(seed, clip key, t, stage)``, so the output does not
depend on chunking or on which frames were already written. JPEG is a real
libjpeg encode/decode (Pillow); video is a real FFmpeg encode/decode (PyAV).

Settings come as a typed :class:`~gbuf.datasets.degrade.config.RealworldConfig`.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from gbuf.datasets import colour
from gbuf.datasets.degrade import kernels as K
from gbuf.datasets.degrade import star
from gbuf.datasets.degrade.config import RealworldConfig
from gbuf.datasets.degrade.filters import border_index
from gbuf.errors import GbufError

STAGES = ("stage1", "stage2")
#: The largest blur kernel of the defaults; an HR frame must be at least this big.
MAX_KERNEL = 21


# -- the per-clip plan ---------------------------------------------------------------------
def clip_rng(seed: int, key: str) -> np.random.Generator:
    """The parameter generator of one clip: a pure function of (seed, clip key)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


def _walk(rng, start: float, step: float, lo: float, hi: float, n: int) -> list[float]:
    values = [float(start)]
    for _ in range(n - 1):
        values.append(float(np.clip(values[-1] + rng.uniform(-step, step), lo, hi)))
    return values


def _choice(rng, options, probs=None):
    idx = rng.choice(len(options), p=None if probs is None else np.asarray(probs, dtype=np.float64))
    return options[int(idx)]


def _sample_blur(rng, b, walk, n: int) -> dict:
    out = {"applied": bool(rng.uniform() < b.prob)}
    if not out["applied"]:
        return out
    size = int(_choice(rng, b.kernel_sizes))
    out["size"] = size
    if rng.uniform() < b.sinc_prob:
        # Real-ESRGAN: small sinc kernels keep to higher cut-offs.
        lo, hi = (math.pi / 3, math.pi) if size < 13 else (math.pi / 5, math.pi)
        out.update(kernel="sinc", omega=_walk(rng, rng.uniform(lo, hi), walk.omega, lo, hi, n))
        return out
    kind = str(_choice(rng, b.kernel_list, b.kernel_prob))
    out["kernel"] = kind
    lo, hi = b.sigma
    out["sigma_x"] = _walk(rng, rng.uniform(lo, hi), walk.sigma, lo, hi, n)
    if kind.endswith("aniso"):
        out["sigma_y"] = _walk(rng, rng.uniform(lo, hi), walk.sigma, lo, hi, n)
        rlo, rhi = b.rotation
        out["theta"] = _walk(rng, rng.uniform(rlo, rhi), walk.rotation, rlo, rhi, n)
    if kind.startswith(("generalized", "plateau")):
        family = "beta_gaussian" if kind.startswith("generalized") else "beta_plateau"
        blo, bhi = getattr(b, family)
        # Real-ESRGAN: half the clips get beta < 1 (heavier tails), half beta > 1.
        start = rng.uniform(blo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, bhi)
        out["beta"] = _walk(rng, float(np.clip(start, blo, bhi)), getattr(walk, family), blo, bhi, n)
    return out


def _sample_resize(rng, r, step: float, n: int) -> dict:
    direction = str(_choice(rng, ["up", "down", "keep"], r.prob))
    lo, hi = r.range
    start = {"up": lambda: rng.uniform(1.0, hi), "down": lambda: rng.uniform(lo, 1.0), "keep": lambda: 1.0}[direction]()
    mode = str(_choice(rng, r.modes))
    # RealBasicVSR walks the factor over the whole range, whatever the direction.
    return {"direction": direction, "mode": mode, "factor": _walk(rng, start, step, lo, hi, n)}


def _sample_noise(rng, c, walk, n: int) -> dict:
    if rng.uniform() < c.gaussian_prob:
        lo, hi = c.gaussian_sigma
        kind, key, step = "gaussian", "sigma", walk.gaussian_sigma
    else:
        lo, hi = c.poisson_scale
        kind, key, step = "poisson", "scale", walk.poisson_scale
    gray = bool(rng.uniform() < c.gray_prob)
    return {"type": kind, "gray": gray, key: _walk(rng, rng.uniform(lo, hi), step, lo, hi, n)}


def _sample_jpeg(rng, j, step: float, n: int) -> dict:
    lo, hi = j.quality
    q = [int(round(rng.uniform(lo, hi)))]
    for _ in range(n - 1):
        q.append(int(round(float(np.clip(q[-1] + rng.uniform(-step, step), lo, hi)))))
    return {"quality": q}


def _sample_video(rng, v) -> dict:
    codec = str(_choice(rng, v.codecs, v.codec_prob))
    lo, hi = (int(round(b)) for b in v.bitrate)
    return {"codec": codec, "bitrate": int(rng.integers(lo, hi + 1))}


def sample_plan(cfg: RealworldConfig, num_frames: int, rng: np.random.Generator) -> dict:
    """Every random draw of one clip (JSON-serialisable; recorded in the group's attrs)."""
    walk = star.clip_walk(cfg)  # the star preset draws once per clip: no walk
    video = cfg.video.enabled
    plan: dict = {"num_frames": int(num_frames), "video": bool(video)}
    if cfg.preset != "realbasicvsr":
        plan["preset"] = cfg.preset
    for i, stage in enumerate(STAGES, start=1):
        c = getattr(cfg, stage)
        plan[stage] = {
            "blur": _sample_blur(rng, c.blur, walk, num_frames),
            "resize": _sample_resize(rng, c.resize, getattr(walk, f"resize_stage{i}"), num_frames),
            "noise": _sample_noise(rng, c.noise, walk, num_frames),
            "jpeg": _sample_jpeg(rng, c.jpeg, walk.jpeg_quality, num_frames),
        }
        if video and stage == "stage1":
            plan[stage]["video"] = _sample_video(rng, cfg.video)
    f = cfg.final
    final = {"order": "sinc_first" if rng.uniform() < 0.5 else "compress_first",
             "mode": str(_choice(rng, f.modes))}
    sinc = {"applied": bool(rng.uniform() < f.sinc_prob)}
    if sinc["applied"]:
        lo, hi = f.omega
        sinc["size"] = int(_choice(rng, f.kernel_sizes))
        sinc["omega"] = _walk(rng, rng.uniform(lo, hi), walk.omega, lo, hi, num_frames)
    final["sinc"] = sinc
    if video:
        final["video"] = _sample_video(rng, cfg.video)
    plan["final"] = final
    return plan


def frame_params(blur: dict, t: int) -> dict:
    """The kernel parameters of frame t from a blur plan."""
    return {k: v[t] for k, v in blur.items() if isinstance(v, list)}


# -- the operations (torch, (1, 3, H, W) float32 in [0, 1]) --------------------------------
def filter2d(x, kernel: np.ndarray):
    """Correlate every channel with ``kernel`` (odd size), reflect borders (any image size)."""
    import torch
    import torch.nn.functional as F

    k = kernel.shape[0]
    half = k // 2
    _, c, h, w = x.shape
    rows = torch.from_numpy(border_index(np.arange(-half, h + half), h, "reflect")).to(x.device)
    cols = torch.from_numpy(border_index(np.arange(-half, w + half), w, "reflect")).to(x.device)
    padded = x.index_select(2, rows).index_select(3, cols)
    weight = torch.from_numpy(np.ascontiguousarray(kernel)).to(device=x.device, dtype=x.dtype)
    weight = weight.expand(c, 1, k, k).contiguous()
    return F.conv2d(padded, weight, groups=c)


def resize(x, size: tuple[int, int], mode: str):
    import torch.nn.functional as F

    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def add_noise(x, noise: dict, t: int, generator):
    """Gaussian (sigma in 8-bit units) or Poisson noise (BasicSR's formulation), clipped to [0, 1]."""
    import torch

    b, c, h, w = x.shape
    if noise["type"] == "gaussian":
        sigma = noise["sigma"][t] / 255.0
        shape = (b, 1, h, w) if noise["gray"] else (b, c, h, w)
        n = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * sigma
    else:
        # BasicSR: quantise to 8 bits, count the distinct values v, rate = img * 2^ceil(log2 v),
        # noise = Poisson(rate) / 2^ceil(log2 v) - img, scaled by `scale`.
        src = x
        if noise["gray"]:
            weights = torch.tensor([0.2989, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            src = (x * weights).sum(dim=1, keepdim=True)
        q = colour.quantize8(src) / 255.0
        levels = 2.0 ** math.ceil(math.log2(max(int(torch.unique(q).numel()), 1)))
        n = (torch.poisson(q * levels, generator=generator) / levels - q) * noise["scale"][t]
    return torch.clamp(x + n, 0.0, 1.0)


def _hwc_uint8(x) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8 numpy (what Pillow and PyAV take)."""
    return colour.to_uint8(x[0]).permute(1, 2, 0).cpu().numpy()


def from_uint8(u8, device):
    import torch

    return (u8.to(device=device, dtype=torch.float32) / 255.0)[None]


def jpeg(x, quality: int):
    """A real JPEG encode/decode (libjpeg via Pillow: baseline, 4:2:0, standard tables), deterministic."""
    import io

    import torch
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_hwc_uint8(x), mode="RGB").save(
        buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    buf.seek(0)
    with Image.open(buf) as im:
        decoded = np.array(im.convert("RGB"))
    return from_uint8(torch.from_numpy(decoded).permute(2, 0, 1), x.device)


def _blur(x, blur: dict, t: int):
    if not blur["applied"]:
        return x
    return filter2d(x, K.make_kernel(blur["kernel"], blur["size"], frame_params(blur, t)))


def _final_sinc(x, sinc: dict, t: int):
    if not sinc["applied"]:
        return x
    return filter2d(x, K.sinc_kernel(sinc["size"], sinc["omega"][t]))


def _generator(seed: int, key: str, t: int, stage: int, device):
    import torch

    state = np.random.SeedSequence([int(seed), zlib.crc32(key.encode()), int(t), int(stage)])
    g = torch.Generator(device=device)
    g.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1))
    return g


# -- the clip driver -------------------------------------------------------------------------
def check_size(height: int, width: int, scale) -> None:
    if not float(scale).is_integer() or scale < 1:
        raise GbufError(f"--realworld needs an integer scale >= 1, got {scale}")
    if min(height, width) < MAX_KERNEL:
        raise GbufError(f"image {height}x{width} is smaller than the {MAX_KERNEL}x{MAX_KERNEL} blur kernel")
    if min(height, width) < int(scale):
        raise GbufError(f"image {height}x{width} is smaller than the scale {scale}")


def degrade_clip(frames, plan: dict, scale: int, *, seed: int, key: str, device="cpu"):
    """Degrade a clip: ``frames`` yields ``(H, W, 3)`` float arrays in [0, 1] (display-referred).

    Yields the LR frames ``(H // scale, W // scale, 3)`` float32, quantised to
    8 bits, in order. With video compression a stage's whole clip is encoded
    before its first frame comes back, so this is a generator over the clip.
    """
    import torch

    from gbuf.datasets.degrade.video import VideoCompressor

    device = torch.device(device)

    s1, s2, final = plan["stage1"], plan["stage2"], plan["final"]
    video = plan["video"]
    sizes: dict = {}

    def stage1(t, frame):
        x = torch.as_tensor(np.asarray(frame, dtype=np.float32), device=device).permute(2, 0, 1)[None]
        h, w = x.shape[-2:]
        sizes.setdefault("hr", (h, w))
        x = _blur(x, s1["blur"], t)
        f = s1["resize"]["factor"][t]
        x = resize(x, (int(h * f), int(w * f)), s1["resize"]["mode"])
        x = add_noise(x, s1["noise"], t, _generator(seed, key, t, 1, device))
        return jpeg(x, s1["jpeg"]["quality"][t])

    def stage2_head(t, x):
        h, w = sizes["hr"]
        x = _blur(x, s2["blur"], t)
        f = s2["resize"]["factor"][t]
        x = resize(x, (int(h / scale * f), int(w / scale * f)), s2["resize"]["mode"])
        return add_noise(x, s2["noise"], t, _generator(seed, key, t, 2, device))

    def resize_sinc(t, x):
        h, w = sizes["hr"]
        x = resize(x, (h // scale, w // scale), final["mode"])
        return _final_sinc(x, final["sinc"], t)

    def finish(x):
        return (colour.quantize8(x) / 255.0)[0].permute(1, 2, 0).cpu().numpy()

    def through_video(xs, spec):
        # Encode the clip at its first frame's size (RealBasicVSR's encoder rescales later frames).
        comp = VideoCompressor(spec["codec"], spec["bitrate"])
        for x in xs:
            if comp.size is not None and tuple(x.shape[-2:]) != comp.size:
                x = resize(x, comp.size, "bilinear")
            comp.push(_hwc_uint8(x))
        for u8 in comp.frames():
            yield from_uint8(torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1), device)

    stage1_out = (stage1(t, frame) for t, frame in enumerate(frames))
    if video:
        stage1_out = through_video(stage1_out, s1["video"])
    heads = (stage2_head(t, x) for t, x in enumerate(stage1_out))
    if not video or star.codec_last(plan):
        def image_tail(t, x):
            if final["order"] == "sinc_first":
                return jpeg(torch.clamp(resize_sinc(t, x), 0, 1), s2["jpeg"]["quality"][t])
            return resize_sinc(t, jpeg(x, s2["jpeg"]["quality"][t]))

        lr = (image_tail(t, x) for t, x in enumerate(heads))
        if video:  # the star preset: the second codec pass last, on the LR frames (star.py)
            lr = through_video(lr, final["video"])
        for x in lr:
            yield finish(x)
        return
    compressed = (jpeg(x, s2["jpeg"]["quality"][t]) for t, x in enumerate(heads))
    if final["order"] == "sinc_first":
        pre = (torch.clamp(resize_sinc(t, x), 0, 1) for t, x in enumerate(compressed))
        for x in through_video(pre, final["video"]):
            yield finish(x)
    else:
        for t, x in enumerate(through_video(compressed, final["video"])):
            yield finish(resize_sinc(t, x))
