"""Image and video quality metrics: PSNR, SSIM, VMAF, LPIPS and the warping error E_warp.

Images come in the network's domain (``(3, H, W)`` tensors, display-referred, in
[0, 1]). PSNR and SSIM follow the RDG test setting (the official test options:
RGB, ``crop_border`` 0): both images are first rounded to 8 bits, as the official
code does when it turns tensors into images, then compared in float64 on the
0..255 scale. SSIM is the usual Wang et al. form (11x11 Gaussian window, sigma
1.5, "valid" filtering, averaged over channels). ``y_channel=True`` compares the
ITU-R BT.601 luma (16..235) instead.

VMAF runs libvmaf through the ffmpeg binary bundled with ``imageio-ffmpeg`` (its
built-in ``vmaf_v0.6.1`` model), fed raw frames through two pipes, so nothing is
written to disk. ``vmaf_available()`` says whether that ffmpeg has libvmaf.

LPIPS (AlexNet variant, v0.1) runs only with weights the user points to; nothing
is downloaded.

E_warp (Lai et al., ECCV 2018) is the mean squared difference between frame t and
frame t-1 warped onto it, over pixels visible in both frames. The warp uses the
dataset's rendered motion vectors; the visibility (occlusion) mask comes from a
forward/backward consistency check. gbuf stores only the backward motion (t ->
t-1), so the forward motion of frame t-1 is made by splatting the backward motion
of frame t onto frame t-1, nearest surface first (by depth); a pixel whose surface
lost that depth test at its destination (it was hidden in frame t-1) or that
leaves the image fails the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

from gbuf.datasets.colour import quantize8
from gbuf.errors import GbufError, error_line

# ---------------------------------------------------------------------------------------------
# 8-bit conversion


def levels8(image):
    """``(..., H, W)`` float in [0, 1] -> float64 tensor of the 8-bit levels 0..255 (clamp, x255, round).

    The rounding runs in float64, whatever ``image``'s dtype, so a metric does not depend on it.
    """
    import torch

    return quantize8(image.detach().to(torch.float64))


def _luma(img255):
    """BT.601 luma (16..235) of a ``(3, H, W)`` RGB image on the 0..255 scale -> ``(1, H, W)``."""
    r, g, b = img255[0], img255[1], img255[2]
    return ((65.481 * r + 128.553 * g + 24.966 * b) / 255.0 + 16.0)[None]


def _prepare(a, b, crop: int, y_channel: bool):
    if a.shape != b.shape:
        raise GbufError(f"metric: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = levels8(a), levels8(b)
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    if y_channel:
        a, b = _luma(a), _luma(b)
    return a, b


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM


def psnr(output, target, crop: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of one ``(3, H, W)`` image in [0, 1] against the target (8-bit, peak 255)."""
    import math

    a, b = _prepare(output, target, crop, y_channel)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_window(device):
    """The 11-tap Gaussian (sigma 1.5), normalised; the 2-D window is its outer product."""
    import torch

    coords = torch.arange(11, dtype=torch.float64, device=device) - 5
    g = torch.exp(-(coords ** 2) / (2 * 1.5 ** 2))
    return g / g.sum()


def _filter_valid(x, g):
    """``x`` (N, 1, H, W) filtered with the separable window, 'valid' region only."""
    # Shifted sums rather than conv2d: float64 convolution on the CPU takes a slow generic path.
    h, w = x.shape[-2] - 10, x.shape[-1] - 10
    taps = [float(v) for v in g]
    rows = x[..., 0:h, :] * taps[0]
    for k in range(1, 11):
        rows.add_(x[..., k:k + h, :], alpha=taps[k])
    out = rows[..., 0:w] * taps[0]
    for k in range(1, 11):
        out.add_(rows[..., k:k + w], alpha=taps[k])
    return out


def ssim(output, target, crop: int = 0, y_channel: bool = False) -> float:
    """SSIM of one ``(3, H, W)`` image in [0, 1] against the target (8-bit, per channel, averaged)."""
    a, b = _prepare(output, target, crop, y_channel)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window(a.device)
    a, b = a[:, None], b[:, None]  # channels as batch: (C, 1, H, W)
    if a.shape[-1] < 11 or a.shape[-2] < 11:
        raise GbufError(f"ssim: images of {a.shape[-2]}x{a.shape[-1]} are smaller than the 11x11 window")
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a ** 2
    var_b = _filter_valid(b * b, window) - mu_b ** 2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean(dim=(1, 2, 3)).mean())


# ---------------------------------------------------------------------------------------------
# E_warp with an occlusion mask from forward/backward consistency


def occlusion_mask(motion, depth=None, alpha: float = 0.01, beta: float = 0.5):
    """Pixels of frame t also visible in frame t-1: ``(H, W)`` bool.

    ``motion``: ``(2, H, W)`` backward motion of frame t (gbuf convention, pixels,
    x right, y down); ``depth``: ``(H, W)`` or ``(1, H, W)`` of frame t (any
    monotonic depth; nearer wins). The forward motion of frame t-1 is the splat of
    ``-motion`` onto the pixels of t-1, nearest surface first; the check is
    Sundaram et al.'s ``|b + f(p + b)|^2 <= alpha (|b|^2 + |f|^2) + beta``.
    Without depth, collisions are resolved arbitrarily, so only motion that leaves
    the image is masked reliably.
    """
    import torch

    _, h, w = motion.shape
    motion = motion.to(torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=motion.device),
                            torch.arange(w, dtype=torch.float64, device=motion.device), indexing="ij")
    qx, qy = xs + motion[0], ys + motion[1]
    inside = (qx > -0.5) & (qx < w - 0.5) & (qy > -0.5) & (qy < h - 0.5) & torch.isfinite(qx) & torch.isfinite(qy)
    qi = torch.round(qy).clamp(0, h - 1).long()
    qj = torch.round(qx).clamp(0, w - 1).long()
    target = (qi * w + qj).reshape(-1)
    inside_flat = inside.reshape(-1)
    if depth is None:
        key = torch.zeros(h * w, dtype=torch.float64, device=motion.device)
    else:
        key = depth.reshape(-1).to(torch.float64).clone()
        key[~torch.isfinite(key)] = torch.finfo(torch.float64).max
    src = torch.arange(h * w, device=motion.device)
    nearest = torch.full((h * w,), torch.inf, dtype=torch.float64, device=motion.device)
    nearest.scatter_reduce_(0, target[inside_flat], key[inside_flat], reduce="amin")
    wins = inside_flat & (key == nearest[target])
    winner = torch.full((h * w,), -1, dtype=torch.long, device=motion.device)
    winner.scatter_reduce_(0, target[wins], src[wins], reduce="amax")
    flat = motion.reshape(2, -1)
    who = winner[target].clamp(min=0)  # every inside pixel splats to its own target, so who >= 0 there
    forward = -flat[:, who]
    diff = ((flat + forward) ** 2).sum(0)
    bound = alpha * ((flat ** 2).sum(0) + (forward ** 2).sum(0)) + beta
    return (inside_flat & (diff <= bound)).reshape(h, w)


def warping_error(previous, current, motion, depth=None) -> tuple[float, float]:
    """E_warp of one frame pair: ``(error, visible fraction)``.

    ``previous``/``current``: ``(3, H, W)`` in [0, 1] (rounded to 8 bits here, like
    PSNR); ``motion``: ``(2, H, W)`` backward motion of the current frame at this
    resolution. The error is the masked mean over pixels of the squared RGB
    distance (summed over channels) between ``current`` and ``previous`` warped.
    """
    import torch

    from gbuf.train.ops import backward_warp

    prev = levels8(previous) / 255.0
    cur = levels8(current) / 255.0
    motion = motion.to(torch.float64)
    warped = backward_warp(prev[None], motion[None])[0]
    mask = occlusion_mask(motion, depth)
    count = int(mask.sum())
    if count == 0:
        return float("nan"), 0.0
    err = ((cur - warped) ** 2).sum(0)
    return float(err[mask].mean()), count / mask.numel()


# ---------------------------------------------------------------------------------------------
# VMAF through the ffmpeg of imageio-ffmpeg


def ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # RuntimeError when no binary is bundled for this platform
        return None


_VMAF_CACHE: dict[str, bool] = {}


def vmaf_available() -> bool:
    """True when the bundled ffmpeg lists the ``libvmaf`` filter."""
    exe = ffmpeg_exe()
    if exe is None:
        return False
    if exe not in _VMAF_CACHE:
        try:
            out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60)
            _VMAF_CACHE[exe] = any(line.split()[1:2] == ["libvmaf"] for line in out.stdout.splitlines())
        except (OSError, subprocess.SubprocessError):
            _VMAF_CACHE[exe] = False
    return _VMAF_CACHE[exe]


class VmafSession:
    """Streams frame pairs into one ``ffmpeg ... libvmaf`` process; ``close()`` returns the scores.

    Frames are ``(H, W, 3)`` uint8 numpy arrays (RGB). Two writer threads feed two
    named pipes, because ffmpeg reads its inputs in turn and a pipe holds less
    than a frame: one thread per input avoids a deadlock.
    """

    def __init__(self, width: int, height: int, fps: float = 24.0, threads: int = 2):
        import queue

        exe = ffmpeg_exe()
        if exe is None or not vmaf_available():
            raise GbufError("vmaf: the ffmpeg of imageio-ffmpeg with libvmaf is not available")
        self._dir = tempfile.TemporaryDirectory(prefix="gbuf-vmaf-")
        d = Path(self._dir.name)
        self._pipes = [d / "distorted.rgb", d / "reference.rgb"]
        for p in self._pipes:
            os.mkfifo(p)
        self._log = d / "vmaf.json"
        size = f"{width}x{height}"
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-r", str(fps)]
        graph = ("[0:v]format=yuv444p[dist];[1:v]format=yuv444p[ref];"
                 f"[dist][ref]libvmaf=log_fmt=json:log_path={self._log}:n_threads={threads}")
        cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *raw, "-i", str(self._pipes[0]),
               *raw, "-i", str(self._pipes[1]), "-lavfi", graph, "-f", "null", "-"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._queues = [queue.Queue(maxsize=4), queue.Queue(maxsize=4)]
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._feed, args=(i,), daemon=True) for i in range(2)]
        for t in self._threads:
            t.start()
        self.frames = 0

    def _feed(self, i: int) -> None:
        try:
            with open(self._pipes[i], "wb") as pipe:
                while True:
                    frame = self._queues[i].get()
                    if frame is None:
                        break
                    pipe.write(frame)
        except BrokenPipeError as err:  # ffmpeg died; close() reports its stderr
            self._errors.append(err)
            while self._queues[i].get() is not None:
                pass

    def add(self, distorted, reference) -> None:
        import numpy as np

        for q, frame in zip(self._queues, (distorted, reference)):
            q.put(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.frames += 1

    def close(self) -> dict:
        """Finish; ``{"mean": float, "frames": [per-frame VMAF, ...]}``."""
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        _, err = self._proc.communicate()
        try:
            if self._proc.returncode != 0 or not self._log.is_file():
                message = err.decode(errors="replace").strip().splitlines()
                raise GbufError(f"vmaf: ffmpeg failed ({message[-1] if message else self._proc.returncode})")
            data = json.loads(self._log.read_text())
            per_frame = [float(f["metrics"]["vmaf"]) for f in data.get("frames", [])]
            mean = float(data["pooled_metrics"]["vmaf"]["mean"])
            return {"mean": mean, "frames": per_frame}
        finally:
            self._dir.cleanup()


# ---------------------------------------------------------------------------------------------
# LPIPS (AlexNet, v0.1) from local weights only

#: File names looked for in an LPIPS weights folder.
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet ImageNet weights
LPIPS_LINEAR_FILE = "alex.pth"  # the LPIPS v0.1 linear layers (lin0..lin4)


class LPIPS:
    """LPIPS distance with the AlexNet backbone, from weights on local disk.

    ``weights``: a folder holding ``alexnet-owt-7be5be79.pth`` (torchvision's
    AlexNet) and ``alex.pth`` (LPIPS v0.1 linear layers, keys ``lin{k}.model.1.weight``).
    Images are ``(3, H, W)`` in [0, 1]; lower is more similar.
    """

    # The LPIPS input scaling (applied to images in [-1, 1]) and the AlexNet ReLU taps.
    _SHIFT = (-0.030, -0.088, -0.188)
    _SCALE = (0.458, 0.448, 0.450)
    _TAPS = (1, 4, 7, 9, 11)

    def __init__(self, weights: str | Path, device="cpu"):
        import torch
        import torchvision

        folder = Path(weights)
        backbone_file, linear_file = folder / LPIPS_BACKBONE_FILE, folder / LPIPS_LINEAR_FILE
        for f in (backbone_file, linear_file):
            if not f.is_file():
                raise GbufError(f"{f}: LPIPS weights file not found (needs {LPIPS_BACKBONE_FILE} and "
                                f"{LPIPS_LINEAR_FILE} in {folder})")
        alexnet = torchvision.models.alexnet(weights=None)
        state = torch.load(backbone_file, map_location="cpu", weights_only=True)
        try:
            alexnet.load_state_dict(state)
        except RuntimeError as err:
            raise GbufError(f"{backbone_file}: not torchvision AlexNet weights ({error_line(err)})") from None
        self.features = alexnet.features[: self._TAPS[-1] + 1].eval().to(device)
        linear = torch.load(linear_file, map_location="cpu", weights_only=True)
        self.linear = []
        for k in range(len(self._TAPS)):
            key = f"lin{k}.model.1.weight"
            if key not in linear:
                raise GbufError(f"{linear_file}: missing {key} (not LPIPS v0.1 alex linear layers)")
            self.linear.append(linear[key].to(device=device, dtype=torch.float32))
        self.device = device
        self.shift = torch.tensor(self._SHIFT, device=device).view(1, 3, 1, 1)
        self.scale = torch.tensor(self._SCALE, device=device).view(1, 3, 1, 1)

    def _taps(self, x):
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                out.append(x)
        return out

    def __call__(self, output, target) -> float:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            a = (levels8(output).float()[None] / 127.5 - 1.0).to(self.device)
            b = (levels8(target).float()[None] / 127.5 - 1.0).to(self.device)
            fa = self._taps((a - self.shift) / self.scale)
            fb = self._taps((b - self.shift) / self.scale)
            total = 0.0
            for xa, xb, lin in zip(fa, fb, self.linear):
                na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += float(F.conv2d((na - nb) ** 2, lin).mean())
            return total
