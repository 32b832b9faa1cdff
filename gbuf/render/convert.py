"""Blender's passes -> gbuf buffers (no bpy here).

Facts measured on Blender 5.0.1 and again on 5.3.0 Cycles (``tests/test_render_conventions.py``
checks them on real renders):

* ``Vector`` XY is the displacement of the surface seen at a pixel to where it
  was in the previous frame, ZW minus the displacement to the next frame, in
  pixels of the render, y up. It is averaged over the samples that hit a surface;
  pixels that see only the world (background) get 0, even when the camera turns.
  gbuf motion is ``(X, -Y)``; background pixels get the camera's own motion for
  points at infinity (``camera_background_motion``), which is what Vector would
  say for a sky infinitely far away.
* ``Depth`` is planar camera Z (along the view axis), 1e10 where no surface:
  gbuf stores +inf there.
* ``Normal`` is world space, averaged over samples (shorter than 1 at edges, 0 on
  the background): gbuf stores it normalised, 0 where no surface.
* ``Combined`` is linear, premultiplied; with a transparent film (asked for when
  the ``alpha`` buffer is) the world seen directly is in ``Environment`` and the
  image is their sum, so the image is the same with or without ``alpha``.
"""

from __future__ import annotations

import numpy as np

#: What Cycles writes in Depth where a pixel sees no surface.
BACKGROUND_DEPTH = 1e10

#: EXR layers each gbuf buffer is made from.
LAYERS = {
    "image": ("Combined",),
    "depth": ("Depth",),
    "normal": ("Normal",),
    "motion": ("Vector", "Depth"),
    "brdf": ("Diffuse Color", "Glossy Color"),
    "diffuse_color": ("Diffuse Color",),
    "glossy_color": ("Glossy Color",),
    "emission": ("Emission",),
    "alpha": ("Combined",),
}


def background_mask(depth_layer: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose Depth says no surface was hit."""
    return depth_layer[..., 0] >= BACKGROUND_DEPTH * 0.5


def to_buffers(layers: dict[str, np.ndarray], buffers, *, transparent: bool = False,
               cameras: tuple[np.ndarray, np.ndarray] | None = None,
               where: str = "render") -> dict[str, np.ndarray]:
    """Convert one render's passes (``exr.read_layers``) into ``{buffer: (H, W, C) array}``.

    ``transparent``: the film was transparent (for ``alpha``); the world seen
    directly is added back from ``Environment``. ``cameras``: the view-projection
    matrices of frame t and t-1 (perspective), to give pixels where Vector has
    nothing (no surface) the motion of points at infinity.
    """
    from gbuf.errors import GbufError

    def layer(name):
        try:
            return layers[name]
        except KeyError:
            raise GbufError(f"{where}: the render lacks the {name!r} pass "
                            f"(has: {', '.join(sorted(layers))})") from None

    out: dict[str, np.ndarray] = {}
    for name in buffers:
        if name == "image":
            rgb = layer("Combined")[..., :3]
            if transparent:
                rgb = rgb + layer("Environment")[..., :3]
            out[name] = rgb
        elif name == "alpha":
            out[name] = layer("Combined")[..., 3:4]
        elif name == "depth":
            depth = layer("Depth")[..., :1].copy()
            depth[depth >= BACKGROUND_DEPTH * 0.5] = np.inf
            out[name] = depth
        elif name == "normal":
            out[name] = unit_normals(layer("Normal")[..., :3])
        elif name == "motion":
            out[name] = motion_from_vector(layer("Vector"), background_mask(layer("Depth")), cameras)
        elif name == "brdf":
            out[name] = layer("Diffuse Color")[..., :3] + layer("Glossy Color")[..., :3]
        elif name == "diffuse_color":
            out[name] = layer("Diffuse Color")[..., :3]
        elif name == "glossy_color":
            out[name] = layer("Glossy Color")[..., :3]
        elif name == "emission":
            out[name] = layer("Emission")[..., :3]
        else:
            raise GbufError(f"{where}: no conversion for buffer {name!r}")
    return out


def unit_normals(normal: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    safe = np.where(length > 1e-6, length, 1.0)
    return np.where(length > 1e-6, normal / safe, 0.0).astype(np.float32)


def motion_from_vector(vector: np.ndarray, background: np.ndarray,
                       cameras: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """gbuf motion (t -> t-1, x right, y down) from Blender's Vector pass (XY: to t-1, y up).

    With ``cameras`` (view-projections of t and t-1), pixels where Cycles wrote
    nothing (pure background, Vector exactly zero) get the camera's motion at infinity.
    """
    motion = np.stack([vector[..., 0], -vector[..., 1]], axis=-1).astype(np.float32)
    motion[motion == 0] = 0.0   # no -0.0 from the negation: keeps stored bytes canonical
    if cameras is not None:
        empty = background & np.all(vector == 0, axis=-1)
        if empty.any():
            height, width = empty.shape
            motion[empty] = camera_background_motion(cameras[0], cameras[1], width, height, only=empty)
    return motion


def pixel_centres_ndc(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """NDC coordinates (x right, y up, -1..1 across the image) of every pixel centre."""
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width * 2.0 - 1.0
    ys = 1.0 - (np.arange(height, dtype=np.float64) + 0.5) / height * 2.0
    return np.meshgrid(xs, ys, indexing="xy")


def camera_background_motion(view_projection: np.ndarray, previous_view_projection: np.ndarray,
                             width: int, height: int, only: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 2) gbuf motion of points infinitely far away, from two perspective cameras.

    ``only``: an (H, W) mask; then just those pixels' motion, as (N, 2).

    ``view_projection``: 4x4 projection @ world-to-camera of frame t, and of frame
    t-1. A point at infinity has w = 0, so only the cameras' rotations (and lens)
    move it, not their translations. Pixels whose direction is behind the previous
    camera get 0.
    """
    nx, ny = pixel_centres_ndc(width, height)
    if only is not None:
        nx, ny = nx[only], ny[only]
    inverse = np.linalg.inv(np.asarray(view_projection, dtype=np.float64))
    def unproject(z):
        clip = np.stack([nx, ny, np.full_like(nx, z), np.ones_like(nx)], axis=-1)
        world = clip @ inverse.T
        return world[..., :3] / world[..., 3:4]
    direction = unproject(1.0) - unproject(-1.0)       # near -> far along each pixel's ray
    homogeneous = np.concatenate([direction, np.zeros_like(direction[..., :1])], axis=-1)
    clip = homogeneous @ np.asarray(previous_view_projection, dtype=np.float64).T
    w = clip[..., 3]
    visible = w > 1e-12
    safe_w = np.where(visible, w, 1.0)
    px = (clip[..., 0] / safe_w + 1.0) / 2.0 * width
    py = (1.0 - clip[..., 1] / safe_w) / 2.0 * height
    x0 = (nx + 1.0) / 2.0 * width
    y0 = (1.0 - ny) / 2.0 * height
    motion = np.stack([px - x0, py - y0], axis=-1)
    motion[~visible] = 0.0
    # Float round-off of a still camera is not motion: keep it exactly zero.
    motion[np.abs(motion) < 1e-6] = 0.0
    return motion.astype(np.float32)


#: Blender camera axes (x right, y up, looking down -z) -> OpenCV camera axes (x right, y down, +z).
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_intrinsics(projection: np.ndarray, width: int, height: int) -> np.ndarray:
    """3x3 K in pixels of a ``width`` x ``height`` image, OpenCV axes, from Blender's projection matrix.

    Pixel coordinates are continuous, pixel (y, x) spanning [x, x+1) x [y, y+1). Written as the
    map clip -> pixel composed with the projection and the axis flip, so sensor fit, lens shift
    and pixel aspect all come from Blender's own ``calc_matrix_camera``. Perspective: pixel ~ K @ X.
    Orthographic (the projection's last row is (0, 0, 0, 1)): pixel = K @ (x, y, 1), an affine map.
    """
    to_pixels = np.array([[width / 2.0, 0.0, 0.0, width / 2.0],
                          [0.0, -height / 2.0, 0.0, height / 2.0],
                          [0.0, 0.0, 0.0, 1.0]])
    full = to_pixels @ np.asarray(projection, dtype=np.float64) @ BLENDER_TO_OPENCV
    if is_orthographic(projection):
        return np.stack([full[0, [0, 1, 3]], full[1, [0, 1, 3]], [0.0, 0.0, 1.0]])
    return full[:, :3]


def is_orthographic(projection: np.ndarray) -> bool:
    return bool(abs(np.asarray(projection)[3, 3]) > 0.5)


def world_to_camera(camera_to_world: np.ndarray) -> np.ndarray:
    """4x4 Blender world -> OpenCV camera axes, from a camera's (normalised) ``matrix_world``."""
    return BLENDER_TO_OPENCV @ np.linalg.inv(np.asarray(camera_to_world, dtype=np.float64))
