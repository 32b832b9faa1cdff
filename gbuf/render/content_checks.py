"""Content checks of rendered frames: black frames, missing textures, NaN/inf, clipping, a camera
inside geometry, a sequence without motion.

A render that "works" can still be useless as training data: an unlit scene renders black,
a missing image texture renders Blender's magenta, a camera path through a wall sees the
inside of a mesh. These checks measure every HR frame as it is rendered (``measure_frame``,
pure numpy on the buffers already in memory), summarise the whole sequence
(``summarise``), log one warning per failed check and record the summary in the sequence's
attrs under ``fmt.CONTENT_CHECKS_KEY`` (docs/format.md, "Content checks"). The checks only
warn; nothing is refused.

The camera-inside-geometry check cannot use the stored normals: Cycles flips the normal of a
back face towards the camera (measured on 5.3: a camera inside a cube stores normals that face
it), so it casts rays from the camera centre in bpy instead (``inside_fractions``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np

_log = logging.getLogger(__name__)

#: Near-black: the 99th percentile over pixels of the brightest channel (linear) is below this.
#: BlenderProc's unlit example scenes render at a maximum of 0.05.
NEAR_BLACK_P99 = 0.05
#: Missing texture: more than this fraction of the pixels are Blender's magenta (below).
MAGENTA_FRACTION = 0.01
#: A pixel is magenta when its green is at most this fraction of its brightest channel and red and
#: blue are both at least ``1 - MAGENTA_TOLERANCE`` of it (any brightness: textures are lit).
MAGENTA_TOLERANCE = 0.1
#: ... and its brightest channel is above this (dark pixels have no reliable hue).
MAGENTA_MIN_LEVEL = 0.01
#: Clipped: more than this fraction of the pixels have a channel >= 1.0 (linear).
CLIPPED_FRACTION = 0.05
#: Camera inside geometry: more than this fraction of the camera's probe rays that hit anything
#: hit the back of a face (the camera is inside a closed mesh, or behind a one-sided wall).
INSIDE_FRACTION = 0.5
#: Probe rays cast from the camera centre per frame (directions spread evenly over the sphere).
INSIDE_RAYS = 32
#: No motion: the largest |motion| over every pixel of every frame is below this (pixels).
NO_MOTION_PX = 0.01

THRESHOLDS = {"near_black_p99": NEAR_BLACK_P99, "magenta_fraction": MAGENTA_FRACTION,
              "magenta_tolerance": MAGENTA_TOLERANCE, "clipped_fraction": CLIPPED_FRACTION,
              "inside_fraction": INSIDE_FRACTION, "no_motion_px": NO_MOTION_PX}

#: Per-frame checks, in report order: name -> (what the warning calls a flagged frame).
FRAME_CHECKS = {
    "near_black": f"near-black (99th percentile of the image below {NEAR_BLACK_P99})",
    "magenta": f"with missing textures (over {MAGENTA_FRACTION:.0%} of pixels Blender's magenta)",
    "nonfinite": "with NaN or inf values (depth's +inf background excepted)",
    "clipped": f"clipped (over {CLIPPED_FRACTION:.0%} of pixels >= 1.0)",
    "inside_geometry": f"with the camera inside geometry (over {INSIDE_FRACTION:.0%} of probe rays hit back faces)",
}
#: Per-frame measures kept in the attrs (one list per field, one value per frame).
MEASURES = ("image_max", "image_p99", "magenta_fraction", "clipped_fraction", "nonfinite", "motion_max_px",
            "inside_fraction")


@dataclasses.dataclass
class FrameMeasures:
    """What the checks measure on one frame (``None``: not measured, e.g. no motion buffer)."""

    image_max: float
    image_p99: float
    magenta_fraction: float
    clipped_fraction: float
    nonfinite: int                       # non-finite values over every buffer (depth's +inf excepted)
    motion_max_px: float | None = None
    inside_fraction: float | None = None

    def flags(self) -> dict[str, bool]:
        return {"near_black": self.image_p99 < NEAR_BLACK_P99,
                "magenta": self.magenta_fraction > MAGENTA_FRACTION,
                "nonfinite": self.nonfinite > 0,
                "clipped": self.clipped_fraction > CLIPPED_FRACTION,
                "inside_geometry": self.inside_fraction is not None and self.inside_fraction > INSIDE_FRACTION}


def _nonfinite(name: str, values: np.ndarray) -> int:
    if name == "depth":  # +inf is the documented background of depth
        return int(np.count_nonzero(np.isnan(values) | np.isneginf(values)))
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def measure_frame(buffers: dict[str, np.ndarray], inside_fraction: float | None = None) -> FrameMeasures:
    """The measures of one frame: ``{buffer: (H, W, C) array}`` (at least ``image``).

    ``inside_fraction``: the frame's share of back-face hits (``inside_fraction``), if probed.
    """
    image = np.asarray(buffers["image"], dtype=np.float32)
    nonfinite = sum(_nonfinite(name, np.asarray(values)) for name, values in buffers.items())
    image = np.where(np.isfinite(image), image, 0.0)
    peak = image.max(axis=-1)                      # brightest channel per pixel
    pixels = peak.size
    p99 = float(np.percentile(peak, 99.0)) if pixels else 0.0
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    magenta = ((peak > MAGENTA_MIN_LEVEL) & (green <= MAGENTA_TOLERANCE * peak)
               & (np.minimum(red, blue) >= (1.0 - MAGENTA_TOLERANCE) * peak))
    motion = None
    if "motion" in buffers:
        m = np.asarray(buffers["motion"], dtype=np.float32)
        length = np.hypot(m[..., 0], m[..., 1])
        length = length[np.isfinite(length)]
        motion = float(length.max()) if length.size else 0.0
    return FrameMeasures(image_max=float(peak.max()) if pixels else 0.0, image_p99=p99,
                         magenta_fraction=float(np.count_nonzero(magenta)) / max(pixels, 1),
                         clipped_fraction=float(np.count_nonzero(peak >= 1.0)) / max(pixels, 1),
                         nonfinite=int(nonfinite), motion_max_px=motion,
                         inside_fraction=None if inside_fraction is None else float(inside_fraction))


def backface_fraction(directions: np.ndarray, normals: np.ndarray, hits: np.ndarray) -> float | None:
    """Share of the rays that hit something whose hit face points away from the ray's origin.

    ``directions``, ``normals``: (N, 3) ray directions and geometric face normals at the hits;
    ``hits``: (N,) bool. None when no ray hits anything (an open sky: not inside).
    """
    hits = np.asarray(hits, dtype=bool)
    if not hits.any():
        return None
    facing_away = np.einsum("ij,ij->i", np.asarray(directions, float), np.asarray(normals, float)) > 0.0
    return float(np.count_nonzero(facing_away & hits)) / float(np.count_nonzero(hits))


def sphere_directions(count: int = INSIDE_RAYS) -> np.ndarray:
    """(count, 3) unit vectors spread evenly over the sphere (a Fibonacci lattice)."""
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def inside_fraction(scene, camera) -> float | None:
    """``backface_fraction`` of ``INSIDE_RAYS`` rays cast from the camera centre at the scene's current frame (bpy)."""
    import bpy
    from mathutils import Vector

    directions = sphere_directions()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    origin = camera.evaluated_get(depsgraph).matrix_world.translation
    clip = float(camera.data.clip_end)
    normals, hits = np.zeros_like(directions), np.zeros(len(directions), dtype=bool)
    for k, d in enumerate(directions):
        hit, _, normal, _, _, _ = scene.ray_cast(depsgraph, origin, Vector(d), distance=clip)
        hits[k] = hit
        if hit:
            normals[k] = tuple(normal)
    return backface_fraction(directions, normals, hits)


def inside_fraction_at(scene, camera, frame: int) -> float | None:
    """``inside_fraction`` at Blender frame ``frame`` (the scene's frame is restored after)."""
    current = scene.frame_current
    try:
        scene.frame_set(frame)
        return inside_fraction(scene, camera)
    finally:
        scene.frame_set(current)


@dataclasses.dataclass
class ContentChecks:
    """The checks of a whole sequence: what ``summarise`` returns and the attrs record."""

    checked_frames: int
    flagged: dict[str, list[int]]          # per-frame check -> frame indices (0-based, store order)
    no_motion: bool | None                 # None: no motion buffer to check
    measures: dict[str, list]              # MEASURES -> one value per frame
    warnings: list[str]

    def to_attrs(self) -> dict:
        return {"checked_frames": self.checked_frames, "thresholds": dict(THRESHOLDS), "frames": self.flagged,
                "no_motion": self.no_motion, "measures": self.measures, "warnings": self.warnings}


def _frame_list(frames: list[int], most: int = 8) -> str:
    shown = ", ".join(str(t) for t in frames[:most])
    return shown + (f", ... ({len(frames) - most} more)" if len(frames) > most else "")


def summarise(measures: list[FrameMeasures]) -> ContentChecks:
    """The sequence's checks from the measures of each of its frames, in order."""
    flagged: dict[str, list[int]] = {name: [] for name in FRAME_CHECKS}
    for t, m in enumerate(measures):
        for name, bad in m.flags().items():
            if bad:
                flagged[name].append(t)
    warnings = []
    for name, what in FRAME_CHECKS.items():
        frames = flagged[name]
        if frames:
            count = "every one" if len(frames) == len(measures) else f"{len(frames)}"
            warnings.append(f"{count} of {len(measures)} frames {what}: frames {_frame_list(frames)}")
    motion = [m.motion_max_px for m in measures]
    no_motion = None
    if len(measures) >= 2 and all(v is not None for v in motion):
        no_motion = max(motion) < NO_MOTION_PX
        if no_motion:
            warnings.append(f"no motion at all: the largest motion over all {len(measures)} frames is "
                            f"{max(motion):.3g} px (below {NO_MOTION_PX} px); the camera and the scene stand still")
    columns = {name: [getattr(m, name) for m in measures] for name in MEASURES}
    return ContentChecks(checked_frames=len(measures), flagged=flagged, no_motion=no_motion, measures=columns,
                         warnings=warnings)


def first_warning(measures: FrameMeasures, t: int, seen: set[str]) -> str | None:
    """A warning for the first frame (of this render) that fails a check not failed before, else None."""
    new = [name for name, bad in measures.flags().items() if bad and name not in seen]
    seen.update(new)
    if not new:
        return None
    return f"frame {t}: " + "; ".join(FRAME_CHECKS[name] for name in new)


def check_sequence(output: str, sequence: str, measured: dict[int, FrameMeasures],
                   probe: Callable[[int], float | None] | None = None) -> ContentChecks | None:
    """Summarise every frame of ``sequence`` in the local store ``output``, log and record it.

    ``measured``: frame index -> measures of the frames this render measured in memory; the
    others (rendered by an earlier, interrupted call) are read back from the store, which costs
    one read of just those frames and nothing at all for a render that was not interrupted.
    ``probe(t)``: the ``inside_fraction`` of frame t, for the frames read back (the render probes
    each frame it renders while the scene is at that frame, so only a resume pays a frame change).
    Returns None (and records nothing) while the sequence still lacks frames (another block's),
    or when this call measured nothing and the sequence has its record already.
    """
    import gbuf.datasets as gd
    from gbuf.datasets import format as fmt

    seq = gd.open(output, mode="r")[sequence]
    recorded = seq.attrs.get(fmt.CONTENT_CHECKS_KEY)
    if not measured and recorded is not None:
        return None  # a rerun of a complete sequence: rendered nothing, its record stands
    res = seq[fmt.HR]
    done = res.complete_frames()
    if not done.all():
        return None
    measures = []
    for t in range(res.planned_frames):
        if t not in measured:
            frame = res.read_many(res.buffers, t=slice(t, t + 1))
            measured[t] = measure_frame({b: v[0] for b, v in frame.items()},
                                        inside_fraction=None if probe is None else probe(t))
        measures.append(measured[t])
    checks = summarise(measures)
    record(output, sequence, checks)
    for line in checks.warnings:
        _log.warning("%s/%s: %s", output, sequence, line)
    return checks


def record(output: str, sequence: str, checks: ContentChecks) -> None:
    """Put ``checks`` into the sequence's attrs (``fmt.CONTENT_CHECKS_KEY``), validated as a reader will."""
    from gbuf.datasets import format as fmt
    from gbuf.datasets.store import local_path
    from gbuf.datasets.zarr_backend import zarr

    group = zarr().open_group(str(local_path(output)), mode="r+")[sequence]
    attrs = dict(group.attrs[fmt.ATTRS_KEY])
    attrs[fmt.CONTENT_CHECKS_KEY] = checks.to_attrs()
    fmt.check_sequence_attrs(attrs, f"{output}/{sequence}/zarr.json")
    group.attrs[fmt.ATTRS_KEY] = attrs
