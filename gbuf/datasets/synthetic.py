"""A synthetic G-buffer sequence with exact ground truth, for tests, demos and benchmarks.

A procedural texture on a tilted plane slides across the view at a constant
velocity, so every buffer has a closed form: the motion is exact (the content
moves by ``velocity`` HR pixels per frame, so motion = -velocity in the gbuf
convention), depth is a known linear ramp, normals are constant, and LR is the
exact box average of HR. No Blender needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gbuf.datasets import format as fmt


def texture(xs: np.ndarray, ys: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth, detailed RGB pattern in [0, 1] at continuous coordinates (HR pixels)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(xs.shape + (3,), dtype=np.float64)
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.uniform(0.02, 0.25, size=2) * rng.choice([-1, 1], size=2)
            phase = rng.uniform(0, 2 * np.pi)
            out[..., c] += np.sin(fx * xs + fy * ys + phase)
    return (out / 8.0 + 0.5).clip(0.0, 1.0)


def box_downsample(x: np.ndarray, scale: int) -> np.ndarray:
    h, w = x.shape[0] // scale, x.shape[1] // scale
    return x[:h * scale, :w * scale].reshape(h, scale, w, scale, -1).mean(axis=(1, 3))


def synthetic_frame(t: int, height: int, width: int, scale: int, velocity=(1.5, -0.75), seed: int = 0,
                    buffers=fmt.RDG_BUFFERS) -> dict[str, dict[str, np.ndarray]]:
    """Frame ``t`` at HR ``height x width`` and LR (box average, ``/scale``)."""
    vx, vy = velocity
    # Pixel centres of HR; the content at frame t is the texture shifted by t * velocity.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    src_x, src_y = xs - vx * t, ys - vy * t
    image = texture(src_x, src_y, seed)
    albedo = 0.25 + 0.5 * texture(src_x * 0.5, src_y * 0.5, seed + 1)
    depth = (5.0 + 0.01 * ys)[..., None]  # a plane tilted away from the camera
    normal = np.broadcast_to(np.array([0.0, 0.6, 0.8]), (height, width, 3))
    motion_hr = np.broadcast_to(np.array([-vx, -vy]), (height, width, 2))
    hr = {"image": image, "depth": depth, "normal": normal, "motion": motion_hr, "brdf": albedo,
          "diffuse_color": albedo * 0.8, "glossy_color": albedo * 0.2, "emission": np.zeros_like(image),
          "alpha": np.ones((height, width, 1))}
    lr = {k: box_downsample(v, scale) for k, v in hr.items()}
    lr["motion"] = lr["motion"] / scale
    lr["normal"] = lr["normal"] / np.linalg.norm(lr["normal"], axis=-1, keepdims=True)
    pick = lambda d: {k: np.ascontiguousarray(d[k]) for k in buffers}  # noqa: E731
    return {fmt.HR: pick(hr), fmt.LR: pick(lr)}


def make_synthetic_store(path, *, sequences: int = 1, frames: int = 8, height: int = 64, width: int = 96,
                         scale: int = 4, buffers=fmt.RDG_BUFFERS, seed: int = 0, frames_per_shard=None,
                         velocity=(1.5, -0.75)) -> Path:
    """Write a store of ``sequences`` synthetic sequences (names ``synthetic_000``, ...)."""
    from gbuf.datasets.writer import SequenceWriter

    path = Path(path)
    for s in range(sequences):
        name = f"synthetic_{s:03d}"
        specs = {fmt.HR: (height, width, list(buffers)), fmt.LR: (height // scale, width // scale, list(buffers))}
        attrs = {"fps": 24, "source": "gbuf.datasets.synthetic", "seed": seed + s,
                 "velocity_hr_px_per_frame": list(velocity)}
        res_attrs = {g: {"image_encoding": "linear", "kind": "synthetic"} for g in specs}
        with SequenceWriter(path, name, frames, specs, sequence_attrs=attrs, resolution_attrs=res_attrs,
                            frames_per_shard=frames_per_shard) as writer:
            for t in range(writer.next_frame, frames):
                writer.append(synthetic_frame(t, height, width, scale, velocity, seed + s, buffers))
    return path
