"""Generated camera paths: ``flythrough``, ``walk`` and ``orbit`` (``--camera``, docs/rendering.md).

Each path is a pure function of (the scene file's sha256 or a recipe's identity, the seed,
the clip index) and of the scene's geometry: its random numbers come from sha256 of those
(``HashRandom``), never from global random state, and the geometry is probed by ray casts
(``Caster``: ``bpy`` ``scene.ray_cast`` in a render, any function in a test). What a render
gets is a ``CameraPath``: one location and rotation for every Blender frame from ``start - 1``
to ``end + 1`` (Cycles reads both neighbours of a frame for the Vector pass), stored in the
sequence attrs as ``camera_path`` so the clip can be rendered again exactly (``from_attrs``)
and a resume can compare it.

Lengths are in the scene's units, chosen from defaults in metres (``FLYTHROUGH``, ``WALK``)
times ``units_per_metre`` (the scene's unit scale, and its size where its units cannot be
metres). The maths (hashing to numbers, splines, constant-speed sampling, turn-rate limits,
rotations) needs no bpy; only ``bpy_caster``, ``object_boxes``, ``scene_box``, ``camera_is_animated``
and ``add_path_camera`` touch a scene.

Flythroughs and walks stay where the scene's content is: inside ``content_box`` (the objects'
bounds less ground planes), starting low, enclosed and surrounded where they can
(``_choose_start``); a flythrough also at most ``max_height`` over the ground, never under
the floor it started over, and indoors when it started indoors (``Confinement``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from gbuf.errors import GbufError

_log = logging.getLogger(__name__)

Vec = tuple[float, float, float]
#: ``cast(origin, unit direction, max distance)``: (distance to the first surface, its face
#: normal as the mesh has it, not turned towards the ray), or None when nothing is that close.
Caster = Callable[[Vec, Vec, float], "tuple[float, Vec] | None"]


# ------------------------------------------------------------------------------------- defaults


@dataclasses.dataclass(frozen=True)
class FlythroughDefaults:
    """A free-flying (spectator) game camera; lengths in metres, speeds in m/s, angles in degrees."""

    speed: float = 3.0                 # m/s along the path, constant
    clearance: float = 0.5             # m, the least distance from the camera to any surface
    max_height: float = 3.0            # m, the most above the ground found by a downward ray
    low_level: float = 3.0             # m, starts over ground this near the content's bottom come first
    waypoint_spacing: float = 3.0      # m between spline control points (about one second)
    max_yaw_rate: float = 60.0         # deg/s, turn-rate limit of the view (left/right)
    max_pitch_rate: float = 30.0       # deg/s, the same up/down
    max_pitch: float = 25.0            # deg, the view never looks further up or down
    max_climb: float = 15.0            # deg, the path's own slope between waypoints
    look_ahead: float = 0.75           # s, the view looks at where the path will be then
    look_yaw: float = 12.0             # deg, amplitude of the look-around (left/right)
    look_pitch: float = 5.0            # deg, amplitude of the look-around (up/down)
    look_period: tuple[float, float] = (7.0, 13.0)   # s, periods of the look-around's waves
    horizontal_fov: float = 80.0       # deg


@dataclasses.dataclass(frozen=True)
class WalkDefaults:
    """A first-person walker; lengths in metres, speeds in m/s, angles in degrees."""

    speed: float = 1.4                 # m/s, walking
    acceleration: float = 2.0          # m/s^2, starting and stopping
    eye_height: float = 1.7            # m above the ground found by downward ray casts
    low_level: float = 3.0             # m, starts on ground this near the content's bottom come first
    radius: float = 0.3                # m, the body: kept that far from walls at knee and eye height
    knee_height: float = 0.5           # m, the lower of the two heights walls are looked for at
    max_step: float = 0.45             # m, the largest step up or down; more is a wall or a drop
    foot: float = 0.15                 # m, ground is the highest of 5 downward rays this far apart
    look_ahead: float = 1.5            # m, walls nearer than this ahead make the walker turn
    max_yaw_rate: float = 45.0         # deg/s, turning while walking
    avoid_yaw_rate: float = 90.0       # deg/s, turning away from a wall
    wander: float = 40.0               # deg, amplitude of the slow changes of heading
    wander_period: tuple[float, float] = (12.0, 25.0)   # s
    look_yaw: float = 10.0             # deg, head turns left/right
    look_pitch: float = 4.0            # deg, head up/down (around ``pitch``)
    pitch: float = -3.0                # deg, the view looks slightly down
    look_period: tuple[float, float] = (6.0, 11.0)   # s
    ground_smoothing: float = 0.15     # s, time constant of the eye following steps and slopes
    horizontal_fov: float = 80.0       # deg


FLYTHROUGH = FlythroughDefaults()
WALK = WalkDefaults()

#: Sensor width (mm) of every generated camera; the lens follows from the horizontal view.
SENSOR_MM = 36.0
#: The orbit camera: a 40 degree horizontal view.
ORBIT_LENS_MM = SENSOR_MM / (2.0 * math.tan(math.radians(20.0)))
#: Start points tried inside the scene's bounds before a flythrough or walk gives up.
START_TRIES = 128
#: Whole paths tried (with new random numbers) before a flythrough gives up.
PATH_TRIES = 8
#: Scene extents (m) outside which lengths are rescaled (``units_per_metre``).
CENTIMETRE_EXTENT = 5000.0
MODEL_EXTENT = 4.0


def lens_mm(horizontal_fov_deg: float) -> float:
    return SENSOR_MM / (2.0 * math.tan(math.radians(horizontal_fov_deg) / 2.0))


def units_per_metre(scale_length: float, extent_units: float) -> float:
    """Scene units per metre of the defaults.

    Blender's unit scale says how long a unit is (``scale_length`` m, 1 by default). A scene
    whose largest extent is then over ``CENTIMETRE_EXTENT`` m is taken to be in centimetres
    (an OBJ from an engine that works in cm carries no units); one under ``MODEL_EXTENT`` m is
    a model rather than a level, and every length shrinks with it (extent / MODEL_EXTENT).
    """
    units = 1.0 / (scale_length if scale_length > 0 else 1.0)
    extent_m = extent_units / units
    if extent_m > CENTIMETRE_EXTENT:
        units *= 100.0
    elif 0 < extent_m < MODEL_EXTENT:
        units *= extent_m / MODEL_EXTENT
    return units


# ------------------------------------------------------------------------------ random numbers


class HashRandom:
    """Numbers in [0, 1) from sha256 of ``gbuf-<kind>:<identity>:<seed>:<clip>`` (then ``#1``, ``#2`` ...).

    The first four are those ``orbit_path`` has always used, so orbits stay as they were.
    """

    def __init__(self, kind: str, identity: str, seed: int, clip: int, salt: str = ""):
        self._base = f"gbuf-{kind}:{identity}:{int(seed)}:{int(clip)}{salt}"
        self._block = 0
        self._numbers: list[float] = []

    def random(self) -> float:
        if not self._numbers:
            text = self._base if self._block == 0 else f"{self._base}#{self._block}"
            digest = hashlib.sha256(text.encode()).digest()
            self._numbers = [int.from_bytes(digest[4 * i:4 * i + 4], "little") / 2**32 for i in range(8)]
            self._block += 1
        return self._numbers.pop(0)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()


def waves(rng: HashRandom, amplitude: float, periods: tuple[float, float], times: np.ndarray) -> np.ndarray:
    """Smooth look-around: two sines of periods drawn from ``periods`` (s), peak about ``amplitude``."""
    out = np.zeros_like(times, dtype=np.float64)
    for _ in range(2):
        period = rng.uniform(*periods)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        out += np.sin(2.0 * math.pi * times / period + phase)
    return out * (amplitude / 2.0)


# ------------------------------------------------------------------------------------ geometry


def catmull_rom(points: np.ndarray, samples_per_segment: int = 32) -> np.ndarray:
    """A dense polyline of the centripetal Catmull-Rom spline through ``points`` (N, 3), N >= 2.

    Centripetal (alpha 0.5): no cusps or loops between close control points, so the path
    stays near the straight segments the ray casts checked. Ends: mirrored phantom points.
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        raise ValueError("a spline needs two points")
    p = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = [p[1:2]]
    u = np.linspace(0.0, 1.0, samples_per_segment + 1)[1:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0) ** 0.5, 1e-9)
        t2 = t1 + max(np.linalg.norm(p2 - p1) ** 0.5, 1e-9)
        t3 = t2 + max(np.linalg.norm(p3 - p2) ** 0.5, 1e-9)
        t = t1 + (t2 - t1) * u
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.concatenate(out)


def arc_length(polyline: np.ndarray) -> np.ndarray:
    """Cumulative length along ``polyline`` (N, 3), starting at 0."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(polyline, axis=0), axis=1))])


def sample_at_lengths(polyline: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Points of ``polyline`` at arc lengths ``lengths`` (linear between its vertices; clamped at the end)."""
    s = arc_length(polyline)
    return np.stack([np.interp(lengths, s, polyline[:, k]) for k in range(3)], axis=-1)


def limit_rate(angles: np.ndarray, max_step: float) -> np.ndarray:
    """Follow ``angles`` (radians, a target per frame), turning at most ``max_step`` per frame.

    Targets are unwrapped first, so the follower turns the short way round.
    """
    target = np.unwrap(np.asarray(angles, dtype=np.float64))
    out = np.empty_like(target)
    out[0] = target[0]
    for i in range(1, len(target)):
        out[i] = out[i - 1] + float(np.clip(target[i] - out[i - 1], -max_step, max_step))
    return out


def look_quaternion(yaw: float, pitch: float) -> tuple[float, float, float, float]:
    """(w, x, y, z) rotation of a Blender camera (looks along -Z, up +Y) looking at ``yaw``, ``pitch``.

    ``yaw``: radians from world +X towards +Y; ``pitch``: radians up from the horizon; no roll.
    It is Euler XYZ (90 deg + pitch, 0, yaw - 90 deg): Rz(yaw - 90) @ Rx(90 + pitch).
    """
    half_z = (yaw - math.pi / 2.0) / 2.0
    half_x = (math.pi / 2.0 + pitch) / 2.0
    wz, zz = math.cos(half_z), math.sin(half_z)
    wx, xx = math.cos(half_x), math.sin(half_x)
    return (wz * wx, wz * xx, zz * xx, zz * wx)


def direction(yaw: float, pitch: float = 0.0) -> Vec:
    c = math.cos(pitch)
    return (c * math.cos(yaw), c * math.sin(yaw), math.sin(pitch))


def yaw_pitch(vector) -> tuple[float, float]:
    x, y, z = (float(v) for v in vector)
    return math.atan2(y, x), math.atan2(z, math.hypot(x, y))


def continuous_quaternions(quats) -> list[tuple[float, float, float, float]]:
    """The same rotations with signs chosen so neighbours are close (linear keys then turn the short way)."""
    out = []
    for q in quats:
        q = tuple(float(v) for v in q)
        if out and sum(a * b for a, b in zip(out[-1], q)) < 0:
            q = tuple(-v for v in q)
        out.append(q)
    return out


#: Unit directions to the 26 neighbours of a cube cell: the probes of a clearance test.
_PROBES: tuple[Vec, ...] = tuple(
    tuple(c / math.sqrt(x * x + y * y + z * z) for c in (x, y, z))
    for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0))


def _add(a, b, scale: float = 1.0) -> Vec:
    return (a[0] + scale * b[0], a[1] + scale * b[1], a[2] + scale * b[2])


def clear_of_surfaces(cast: Caster, point: Vec, radius: float) -> bool:
    """No surface within ``radius`` of ``point`` along any of 26 directions."""
    return all(cast(point, d, radius) is None for d in _PROBES)


def inside_solid(cast: Caster, point: Vec, reach: float) -> bool:
    """``point`` sees the backs of surfaces in over a quarter of the 26 directions that meet one.

    A closed mesh's faces point out, so from inside it every ray meets a back face first; a
    level's one-sided shell (walls facing in) seen from outside looks the same. A few back
    faces (a stray one-sided plane seen from behind) are allowed.
    """
    back = hits = 0
    for d in _PROBES:
        hit = cast(point, d, reach)
        if hit is not None:
            hits += 1
            back += sum(n * v for n, v in zip(hit[1], d)) > 0
    return back > 1 and back > hits // 4


def free_distance(cast: Caster, origin: Vec, d: Vec, reach: float) -> float:
    hit = cast(origin, d, reach)
    return reach if hit is None else hit[0]


@dataclasses.dataclass(frozen=True)
class Box:
    lo: Vec
    hi: Vec

    @property
    def extent(self) -> float:
        return max(h - lo for h, lo in zip(self.hi, self.lo))

    @property
    def diagonal(self) -> float:
        return math.dist(self.lo, self.hi)

    def contains(self, p) -> bool:
        return all(lo <= v <= hi for v, lo, hi in zip(p, self.lo, self.hi))

    def point(self, u: Sequence[float]) -> Vec:
        return tuple(lo + (hi - lo) * float(f) for lo, hi, f in zip(self.lo, self.hi, u))


#: A flat object (height under this fraction of its width) wider than ``GROUND_FACTOR`` times
#: the rest of the scene along x or y is a ground plane, not content (``content_box``).
FLAT = 0.05
GROUND_FACTOR = 1.25
#: m (times the units) the region of interest reaches past the content around it.
CONTENT_MARGIN = 3.0


def union(boxes: Sequence[Box]) -> Box:
    return Box(tuple(min(b.lo[k] for b in boxes) for k in range(3)),
               tuple(max(b.hi[k] for b in boxes) for k in range(3)))


def content_box(boxes: Sequence[Box], margin: float) -> Box:
    """Where the scene's content is: the bounds of its objects' boxes less its ground planes,
    ``margin`` wider on x and y (within the bounds of all of them).

    A ground plane (a courtyard's 120 m paving, the 200 m floor under a few props, a plaza's
    paving running on behind its houses) is a flat box (height under ``FLAT`` of its width)
    over ``GROUND_FACTOR`` times as wide, along x or y, as the bounds of the non-flat boxes;
    a floor about as wide as the room on it stays.
    """
    if not boxes:
        raise ValueError("no boxes")
    everything = union(boxes)

    def width(b: Box, k: int) -> float:
        return b.hi[k] - b.lo[k]

    flat = [max(width(b, 0), width(b, 1)) > 0 and width(b, 2) <= FLAT * max(width(b, 0), width(b, 1))
            for b in boxes]
    solid = [b for b, f in zip(boxes, flat) if not f]
    if not solid:
        return everything
    rest = union(solid)
    kept = [b for b, f in zip(boxes, flat)
            if not f or all(width(b, k) <= GROUND_FACTOR * max(width(rest, k), margin) for k in (0, 1))]
    core = union(kept)
    return Box((max(core.lo[0] - margin, everything.lo[0]), max(core.lo[1] - margin, everything.lo[1]), core.lo[2]),
               (min(core.hi[0] + margin, everything.hi[0]), min(core.hi[1] + margin, everything.hi[1]), core.hi[2]))


def height_above_ground(cast: Caster, point: Vec, reach: float) -> float | None:
    """Distance down to the first surface within ``reach`` if it faces up (a floor, the ground,
    a slope, seen from above), else None: nothing below, or the back of a face (under a
    level's floor, or inside a solid)."""
    hit = cast(point, (0.0, 0.0, -1.0), reach)
    if hit is None or hit[1][2] <= 0.0:
        return None
    return hit[0]


def has_ceiling(cast: Caster, point: Vec, reach: float) -> bool:
    """Any surface straight above ``point`` within ``reach``: indoors (a room, a corridor)."""
    return cast(point, (0.0, 0.0, 1.0), reach) is not None


# ------------------------------------------------------------------------------------- the path


@dataclasses.dataclass(frozen=True)
class CameraPath:
    """A generated camera: its keyframes (every Blender frame from ``first_frame``) and how it was made."""

    kind: str                                  # flythrough | walk | orbit
    identity: str                              # the scene file's sha256, or the recipe's identity
    seed: int
    clip: int
    first_frame: int                           # Blender frame of keyframe 0 (the render's start - 1)
    locations: tuple[Vec, ...]                 # scene units, one per frame
    rotations: tuple[tuple[float, float, float, float], ...]   # quaternions (w, x, y, z)
    lens_mm: float
    sensor_mm: float
    clip_start: float
    clip_end: float
    parameters: dict = dataclasses.field(default_factory=dict)  # the mode's settings, in scene units

    def to_attrs(self) -> dict:
        return {"kind": self.kind, "identity": self.identity, "seed": self.seed, "clip": self.clip,
                "first_frame": self.first_frame, "lens_mm": self.lens_mm, "sensor_mm": self.sensor_mm,
                "clip_start": self.clip_start, "clip_end": self.clip_end, "parameters": dict(self.parameters),
                "keyframes": {"location": [list(v) for v in self.locations],
                              "rotation_quaternion": [list(q) for q in self.rotations]}}

    @classmethod
    def from_attrs(cls, attrs: dict) -> CameraPath:
        """The path a sequence's ``camera_path`` attr records (to render the clip again)."""
        keys = attrs["keyframes"]
        return cls(kind=attrs["kind"], identity=attrs.get("identity", ""), seed=int(attrs.get("seed", 0)),
                   clip=int(attrs["clip"]), first_frame=int(attrs["first_frame"]),
                   locations=tuple(tuple(float(c) for c in v) for v in keys["location"]),
                   rotations=tuple(tuple(float(c) for c in q) for q in keys["rotation_quaternion"]),
                   lens_mm=float(attrs["lens_mm"]), sensor_mm=float(attrs.get("sensor_mm", SENSOR_MM)),
                   clip_start=float(attrs["clip_start"]), clip_end=float(attrs["clip_end"]),
                   parameters=dict(attrs.get("parameters") or {}))


# ---------------------------------------------------------------------------------------- orbit


@dataclasses.dataclass(frozen=True)
class OrbitPath:
    """A camera circling ``centre`` at ``distance``, ``elevation_deg`` up, from ``azimuth0_deg``."""

    centre: tuple[float, float, float]
    distance: float
    elevation_deg: float
    azimuth0_deg: float
    degrees_per_frame: float
    lens_mm: float
    clip: int

    def to_attrs(self) -> dict:
        return {"kind": "orbit", **{k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in dataclasses.asdict(self).items()}}

    def pose(self, index: float) -> tuple[Vec, tuple[float, float, float, float]]:
        """(location, rotation (w, x, y, z)) at sequence frame ``index`` (0 = first rendered frame)."""
        azimuth = math.radians(self.azimuth0_deg + self.degrees_per_frame * index)
        elevation = math.radians(self.elevation_deg)
        offset = direction(azimuth, elevation)
        location = _add(self.centre, offset, self.distance)
        # Looking back at the centre: the opposite azimuth, as far down as the camera is up.
        return location, look_quaternion(azimuth + math.pi, -elevation)


def orbit_path(sha256: str, seed: int, clip: int, centre, radius: float, fps: float) -> OrbitPath:
    """The orbit of clip ``clip``: a pure function of (file sha256, seed, clip index), the bounds and fps.

    Elevation 15-40 degrees, any start azimuth, 5-15 degrees per second either way round; the
    bounding sphere spans the image's width (flat scenes seen from above fill it less in height).
    """
    rng = HashRandom("orbit", sha256, seed, clip)
    u = [rng.random() for _ in range(4)]
    distance = radius / math.sin(math.radians(20.0))
    speed = 5.0 + 10.0 * u[2]                        # degrees per second
    turn = 1.0 if u[3] < 0.5 else -1.0
    return OrbitPath(centre=tuple(float(c) for c in centre), distance=float(distance),
                     elevation_deg=15.0 + 25.0 * u[0], azimuth0_deg=360.0 * u[1],
                     degrees_per_frame=turn * speed / float(fps), lens_mm=ORBIT_LENS_MM, clip=int(clip))


def orbit_keyframes(orbit: OrbitPath, identity: str, seed: int, start: int, end: int) -> CameraPath:
    poses = [orbit.pose(frame - start) for frame in range(start - 1, end + 2)]
    params = {k: v for k, v in orbit.to_attrs().items() if k not in ("kind", "clip", "lens_mm")}
    return CameraPath(kind="orbit", identity=identity, seed=int(seed), clip=orbit.clip, first_frame=start - 1,
                      locations=tuple(p for p, _ in poses),
                      rotations=tuple(continuous_quaternions(q for _, q in poses)),
                      lens_mm=orbit.lens_mm, sensor_mm=SENSOR_MM,
                      clip_start=max(orbit.distance * 1e-3, 1e-3), clip_end=orbit.distance * 10.0,
                      parameters=params)


# ----------------------------------------------------------------------------------- flythrough


def _scaled(defaults, units: float, lengths: tuple[str, ...]) -> dict:
    """The defaults as a dict, lengths and speeds in scene units (plus ``units_per_metre``)."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(defaults).items()}
    for k in lengths:
        out[k] = out[k] * units
    out["units_per_metre"] = units
    return out


#: Of the valid start points drawn, how many low ones (``_choose_start``) are compared before one is chosen.
START_CANDIDATES = 8


def _surrounded(cast: Caster, point: Vec, box: Box) -> tuple[int, int, float]:
    """How much scene is around ``point``: (of 16 horizontal rays, those meeting a surface within
    a quarter of the scene's diagonal; the same of the 26 probes; their median free distance)."""
    reach = box.diagonal / 4.0
    ring = sum(free_distance(cast, point, direction(k * math.pi / 8.0), reach) < reach for k in range(16))
    distances = [free_distance(cast, point, d, reach) for d in _PROBES]
    return ring, sum(x < reach for x in distances), float(np.median(distances))


def _choose_start(found: list) -> Vec:
    """Of ``(score, point)`` pairs, score ``(low, enclosed, ring, surrounded, room)``: the low
    ones if any (ground within ``low_level`` of the content's bottom), of those the enclosed
    ones if any (``_enclosed``), of those the ones with walls around them in nearly as many
    horizontal directions as the most (``_surrounded``), then the roomiest of those nearly as
    surrounded as the most.

    Low first: in the street rather than on a roof. Enclosed next: inside the bar rather than
    in the street outside its window. The ring next: in a square among buildings rather than
    in a gap between two of them with the empty ground behind. Surrounded next: the middle
    rather than the empty edge of the ground. Then room: the middle of a corridor or a room
    rather than against a wall. Ties: the first drawn (deterministic).
    """
    for key in (0, 1):
        best = max(score[key] for score, _ in found)
        found = [(score, point) for score, point in found if score[key] == best]
    ring = max(score[2] for score, _ in found)
    found = [(score, point) for score, point in found if score[2] >= ring - 2]
    most = max(score[3] for score, _ in found)
    near = [(score[4], -k, point) for k, (score, point) in enumerate(found) if score[3] >= most - 4]
    return max(near)[2]


def _highest_ground(cast: Caster, point: Vec, depth: float, radius: float) -> float | None:
    """The highest surface facing up under 25 downward rays from ``point`` filling a disc of
    ``radius`` (its height), or None: a floor grating's bars rather than the pit under them."""
    best = None
    for dx, dy in _disc(radius, 25):
        below = height_above_ground(cast, (point[0] + dx, point[1] + dy, point[2]), depth)
        if below is not None and (best is None or point[2] - below > best):
            best = point[2] - below
    return best


def _enclosed(cast: Caster, point: Vec, box: Box) -> bool:
    """Indoors: a surface straight above within the box's height, and walls within a quarter of
    its diagonal in at least 6 of 8 horizontal directions (a room, a corridor; not a porch or
    the street under a balcony)."""
    if not has_ceiling(cast, point, box.hi[2] - box.lo[2] + 1e-6):
        return False
    reach = box.diagonal / 4.0
    return sum(free_distance(cast, point, direction(k * math.pi / 4.0), reach) < reach for k in range(8)) >= 6


def open_yaw(cast: Caster, point: Vec, reach: float, rng: HashRandom, spread_deg: float = 30.0) -> float:
    """A heading (radians) near the horizontal direction of most free space from ``point`` (of 16)."""
    yaws = [k * math.pi / 8.0 for k in range(16)]
    free = [free_distance(cast, point, direction(y), reach) for y in yaws]
    best = yaws[max(range(16), key=lambda k: (free[k], -k))]
    return best + math.radians(rng.uniform(-spread_deg, spread_deg))


@dataclasses.dataclass(frozen=True)
class Confinement:
    """Where a flythrough may go: inside ``box``, at most ``max_height`` above a surface facing
    up below it, never under ``floor`` (the ground under the start), and, if ``indoors`` (the
    start was enclosed), under a ceiling within ``ceiling_reach``."""

    box: Box
    floor: float
    max_height: float
    indoors: bool
    ceiling_reach: float
    grounded: bool = True          # False: the scene has nothing to fly over (a model alone in space)

    def allows(self, cast: Caster, point: Vec) -> bool:
        if not self.box.contains(point):
            return False
        if self.grounded and (point[2] < self.floor or height_above_ground(cast, point, self.max_height) is None):
            return False
        return not self.indoors or has_ceiling(cast, point, self.ceiling_reach)


def _start_point(cast: Caster, box: Box, rng: HashRandom, p: dict, where: str, prefer_enclosed: bool = True,
                 over_ground: bool = True):
    """(start, its ``Confinement``): of the first ``START_CANDIDATES`` random points in ``box``
    that are the clearance away from surfaces, not inside a solid, and ``clearance`` to
    ``max_height`` above the ground below them, the enclosed and most surrounded
    (``_choose_start``). A point is drawn in ``box``, then put at a random height over the
    ground under it (so nearly every point drawn is at a height a flythrough may be at).

    Where no point drawn has ground under it (a model alone in space, nothing to fly over), or
    not ``over_ground``, points are drawn without it, and the confinement keeps only the box
    and the indoors rule (``grounded`` False)."""
    radius, top = p["clearance"], p["max_height"]
    reach = box.diagonal
    depth = box.hi[2] - box.lo[2] + radius
    found: list[tuple[tuple[int, int, int, int, float], Vec]] = []
    grounded = False
    for _ in range(START_TRIES if over_ground else 0):
        q = box.point((rng.random(), rng.random(), rng.random()))
        lift = rng.random()
        below = height_above_ground(cast, q, depth)
        if below is None:
            continue
        grounded = True
        ground = q[2] - below
        q = (q[0], q[1], ground + radius + lift * (top - radius))
        if not box.contains(q) or not clear_of_surfaces(cast, q, radius) or inside_solid(cast, q, reach):
            continue
        if height_above_ground(cast, q, top) is None:       # something else in between: look again
            continue
        inside = prefer_enclosed and _enclosed(cast, q, box)
        low = ground <= box.lo[2] + p["low_level"]
        found.append(((int(low), int(inside)) + _surrounded(cast, q, box), q))
        if sum(score[0] for score, _ in found) >= START_CANDIDATES:       # low ones: a roof is only a fallback
            break
    if not grounded:
        for _ in range(START_TRIES):
            q = box.point((rng.random(), rng.random(), rng.random()))
            if not clear_of_surfaces(cast, q, radius) or inside_solid(cast, q, reach):
                continue
            found.append(((1, int(prefer_enclosed and _enclosed(cast, q, box))) + _surrounded(cast, q, box), q))
            if len(found) >= START_CANDIDATES:
                break
    if not found:
        raise GbufError(f"{where}: flythrough finds no free space: none of {START_TRIES} points inside the "
                        f"scene's bounds is {radius:.3g} units clear of surfaces, outside every solid and at most "
                        f"{top:.3g} units above ground")
    start = _choose_start(found)
    floor = -math.inf
    if grounded:
        # Not above the start itself (a table's edge under the disc, the start beside it).
        floor = min(_highest_ground(cast, start, top + radius, radius / 2.0), start[2])
    inside = prefer_enclosed and _enclosed(cast, start, box)
    return start, Confinement(box=box, floor=floor, max_height=top, indoors=inside,
                              ceiling_reach=box.hi[2] - box.lo[2] + radius, grounded=grounded)


def _flight_box(box: Box, units: float) -> Box:
    """The scene's bounds, made at least 4 m tall: a flat scene (a few props on a floor) is flown over."""
    return Box(box.lo, (box.hi[0], box.hi[1], max(box.hi[2], box.lo[2] + 4.0 * units)))


def _waypoints(cast: Caster, box: Box, rng: HashRandom, start: Vec, length: float, p: dict,
               confine: Confinement | None = None) -> list[Vec]:
    """Control points from ``start``, each segment clear of surfaces by the clearance (and
    ``confine``'s rules kept at its end and two points between), until ``length``.

    A dead end (no clear segment within 100 degrees of the heading) drops the last point and
    tries again from the one before, heading elsewhere, rather than turning back on the spot
    (a spline through A, B, A has a cusp at B). Gives up after ``4 * length / spacing + 16``
    dead ends (the caller then tries other numbers).
    """
    clearance, spacing = p["clearance"], p["waypoint_spacing"]
    max_climb = math.radians(p["max_climb"])
    yaw = open_yaw(cast, start, box.diagonal, rng)
    points, steps = [start], []
    dead_ends = 0
    while sum(steps) < length:
        here = points[-1]
        chosen = None
        # Small turns first (a game camera drifts), then wider ones up to 100 degrees.
        for attempt in range(24):
            spread = math.radians(40.0 + 60.0 * attempt / 23.0)
            cand_yaw = yaw + rng.uniform(-spread, spread)
            pitch = rng.uniform(-max_climb, max_climb)
            d = direction(cand_yaw, pitch)
            step = spacing if attempt < 16 else spacing * 0.5
            if free_distance(cast, here, d, step + clearance) < step + clearance:
                continue
            end = _add(here, d, step)
            # The end and two points between: the spline stays near the segment, so it is
            # then rarely too close (every frame's point is checked again afterwards).
            if box.contains(end) and all(clear_of_surfaces(cast, _add(here, d, step * f), clearance)
                                         and (confine is None or confine.allows(cast, _add(here, d, step * f)))
                                         for f in (1.0, 1.0 / 3.0, 2.0 / 3.0)):
                chosen, yaw = (end, step), cand_yaw
                break
        if chosen is not None:
            points.append(chosen[0])
            steps.append(chosen[1])
            continue
        dead_ends += 1
        if dead_ends > 4 * length / spacing + 16:
            break
        if len(points) > 1:
            points.pop()
            steps.pop()
        if len(points) > 1:
            # Heading on from the point before, as a segment arriving there would: no hairpin.
            yaw = yaw_pitch(_add(points[-1], points[-2], -1.0))[0]
        else:
            yaw = rng.uniform(-math.pi, math.pi)
    return points


def _fit_spline(cast: Caster, points: np.ndarray, lengths: np.ndarray, clearance: float, refinements: int = 6,
                confine: Confinement | None = None):
    """(curve, the points at ``lengths`` along it, lengths) with every point ``clearance`` clear
    (and allowed by ``confine``), or None.

    Where the spline bends too close to a surface, the midpoint of that straight (checked)
    segment becomes a waypoint too, pulling the curve towards it; up to ``refinements`` times.
    """
    per = 32
    for _ in range(refinements + 1):
        curve = catmull_rom(points, per)
        s = arc_length(curve)
        if s[-1] < lengths[-1]:
            return None
        where_at = sample_at_lengths(curve, lengths)
        bad = [i for i, q in enumerate(where_at) if not clear_of_surfaces(cast, tuple(q), clearance)
               or (confine is not None and not confine.allows(cast, tuple(float(c) for c in q)))]
        if not bad:
            return curve, where_at, lengths
        segments = sorted({min(max(int(np.searchsorted(s, lengths[i])) - 1, 0) // per, len(points) - 2)
                           for i in bad})
        for k in reversed(segments):
            points = np.insert(points, k + 1, (points[k] + points[k + 1]) / 2.0, axis=0)
    return None


def flythrough_path(cast: Caster, box: Box, identity: str, seed: int, clip: int, start: int, end: int,
                    fps: float, units: float, where: str, defaults: FlythroughDefaults = FLYTHROUGH,
                    roi: Box | None = None) -> CameraPath:
    """A smooth constant-speed path through the free space of the scene in ``box`` (``roi``, the
    region of its content, ``content_box``, when given: the path stays there; ``box`` still
    sets the far clip distance).

    Confined (``Confinement``) to at most ``max_height`` over the ground below, never below
    the ground under the start, and indoors if the start is enclosed (``_enclosed``, which
    starts are preferred). Of the ``PATH_TRIES``, the first half keeps all of it, the next
    quarter drops the preference for enclosed starts and with it staying indoors (a scene
    whose only roofed places are too tight to fly through), the last quarter the ground rules
    as well (only the box is kept: a scene with little to fly over, such as a model whose top
    is the only surface facing up).

    Waypoints ``waypoint_spacing`` apart, each segment checked by ray casts to keep the
    clearance; a centripetal Catmull-Rom spline through them, sampled at ``speed`` per second;
    every sample is checked again (the spline bends off the segments): where one is too close
    the segment gets its midpoint as a waypoint too (``_fit_spline``), and where that does not
    help the whole path is drawn anew (up to ``PATH_TRIES``). The view looks ``look_ahead``
    seconds along the path, plus a slow look-around, turned at most ``max_yaw_rate`` and
    ``max_pitch_rate``.
    """
    p = _scaled(defaults, units, ("speed", "clearance", "waypoint_spacing", "max_height", "low_level"))
    frames = end - start + 3                    # start - 1 .. end + 1
    step = p["speed"] / fps
    flight = _flight_box(box if roi is None else roi, units)
    head = p["look_ahead"] * p["speed"]
    for attempt in range(PATH_TRIES):
        rng = HashRandom("flythrough", identity, seed, clip, salt="" if attempt == 0 else f"/{attempt}")
        origin, confine = _start_point(cast, flight, rng, p, where, prefer_enclosed=attempt < PATH_TRIES // 2,
                                       over_ground=attempt < PATH_TRIES * 3 // 4)
        points = _waypoints(cast, flight, rng, origin, step * (frames - 1) + head + p["waypoint_spacing"], p,
                            confine)
        if len(points) < 2:
            continue
        fitted = _fit_spline(cast, np.array(points), np.arange(frames) * step, 0.9 * p["clearance"],
                             confine=confine)
        if fitted is None:
            continue
        curve, where_at, lengths = fitted
        total = arc_length(curve)[-1]
        # Looking along the path: at the point look_ahead seconds on (the end of the curve at worst).
        ahead = sample_at_lengths(curve, np.minimum(lengths + head, total))
        view = ahead - where_at
        near_end = np.linalg.norm(view, axis=1) < 1e-6 * max(units, 1e-9)
        view[near_end] = where_at[near_end] - sample_at_lengths(curve, np.maximum(lengths[near_end] - head, 0))
        angles = np.array([yaw_pitch(v) for v in view])
        times = np.arange(frames) / fps
        yaw = np.unwrap(angles[:, 0]) + np.radians(waves(rng, p["look_yaw"], tuple(p["look_period"]), times))
        pitch = angles[:, 1] + np.radians(waves(rng, p["look_pitch"], tuple(p["look_period"]), times))
        pitch = np.clip(pitch, -math.radians(p["max_pitch"]), math.radians(p["max_pitch"]))
        yaw = limit_rate(yaw, math.radians(p["max_yaw_rate"]) / fps)
        pitch = limit_rate(pitch, math.radians(p["max_pitch_rate"]) / fps)
        p["attempt"] = attempt
        p["indoors"] = confine.indoors
        p["grounded"] = confine.grounded
        return _path("flythrough", identity, seed, clip, start, where_at, yaw, pitch, p, box, units)
    raise GbufError(f"{where}: flythrough finds no free space: no path of {frames} frames at {p['speed']:.3g} "
                    f"units/s stays {p['clearance']:.3g} units from surfaces ({PATH_TRIES} tries)")


def _path(kind, identity, seed, clip, start, locations, yaw, pitch, p, box: Box, units: float) -> CameraPath:
    rotations = continuous_quaternions(look_quaternion(float(a), float(b)) for a, b in zip(yaw, pitch))
    return CameraPath(kind=kind, identity=identity, seed=int(seed), clip=int(clip), first_frame=start - 1,
                      locations=tuple(tuple(float(c) for c in q) for q in locations), rotations=tuple(rotations),
                      lens_mm=lens_mm(p["horizontal_fov"]), sensor_mm=SENSOR_MM,
                      # Near: well inside the clearance (nothing is nearer); far: past the scene.
                      clip_start=0.05 * units, clip_end=max(4.0 * box.diagonal, 100.0 * units), parameters=p)


# ----------------------------------------------------------------------------------------- walk


def _ground(cast: Caster, xy, top: float, depth: float, spread: float = 0.0):
    """Height of the ground below (x, y, top) within ``depth``, or None.

    The highest upward-facing surface under 13 downward rays filling a disc of radius
    ``spread`` round (x, y): feet are not points, so a floor grating (or a crack) still holds
    the walker. A sunflower, not a cross: five rays 0.15 m apart along x all fell between
    the bars of a grating with bars every 5 cm, and the walker walked in the pit under it.
    """
    best = None
    for dx, dy in ((0.0, 0.0),) if spread == 0.0 else _disc(spread, 13):
        hit = cast((xy[0] + dx, xy[1] + dy, top), (0.0, 0.0, -1.0), depth)
        if hit is None or hit[1][2] < 0.6:       # nothing, a steep slope, or the underside of something
            if spread == 0.0:
                return None
            continue
        height = top - hit[0]
        best = height if best is None else max(best, height)
        if spread == 0.0:
            break
    return best


def _body_room(cast: Caster, foot: Vec, p: dict) -> float:
    """The nearest wall around the body at knee and eye height (8 horizontal directions), up to 2 radii."""
    reach = 2.0 * p["radius"]
    return min(free_distance(cast, (foot[0], foot[1], foot[2] + h), direction(k * math.pi / 4.0), reach)
               for h in (p["knee_height"], p["eye_height"]) for k in range(8))


def _body_clear(cast: Caster, foot: Vec, p: dict) -> bool:
    """Nothing within ``radius`` around the body at knee and eye height."""
    return _body_room(cast, foot, p) > p["radius"]


def _room_to_walk(cast: Caster, foot: Vec, p: dict) -> bool:
    """Ground under the feet, and within a step all the way to ``look_ahead`` in most of 8
    directions (at the body's radius, half-way and there), with nothing in the way.

    Keeps the walker off small islands (a box top, the end of a rail) where it could only
    turn on the spot.
    """
    if _ground(cast, foot[:2], foot[2] + p["max_step"], 2.0 * p["max_step"], p["foot"]) is None:
        return False
    ok = 0
    for k in range(8):
        d = direction(k * math.pi / 4.0)
        if free_distance(cast, _add(foot, (0.0, 0.0, p["knee_height"])), d, p["look_ahead"]) < p["look_ahead"]:
            continue
        level, fine = foot[2], True
        for x in (p["radius"], p["look_ahead"] / 2.0, p["look_ahead"]):
            ground = _ground(cast, _add(foot, d, x)[:2], level + p["max_step"], 2.0 * p["max_step"], p["foot"])
            if ground is None or abs(ground - level) > p["max_step"]:
                fine = False
                break
            level = ground
        ok += fine
    return ok >= 5


def _disc(radius: float, count: int = 9) -> list[tuple[float, float]]:
    """``count`` offsets filling a disc (a sunflower: no two share a spacing a grid could match)."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    return [(radius * math.sqrt(k / (count - 1)) * math.cos(k * golden),
             radius * math.sqrt(k / (count - 1)) * math.sin(k * golden)) for k in range(count)]


def _walk_start(cast: Caster, box: Box, rng: HashRandom, p: dict, where: str) -> Vec:
    """A foot point on walkable ground with room for the body and to walk, from random points in
    ``box``: of the first ``START_CANDIDATES`` such, the enclosed and most surrounded
    (``_choose_start``, at the eye)."""
    reach = box.diagonal
    found: list[tuple[tuple[int, int, int, int, float], Vec]] = []
    for _ in range(START_TRIES):
        q = box.point((rng.random(), rng.random(), rng.random()))
        if not clear_of_surfaces(cast, q, p["radius"]) or inside_solid(cast, q, reach):
            continue
        ground = _ground(cast, q, q[2], reach, p["foot"])
        if ground is None:
            continue
        foot = (q[0], q[1], ground)
        eye = _add(foot, (0.0, 0.0, p["eye_height"]))
        if eye[2] > box.hi[2] + p["eye_height"] or not _body_clear(cast, foot, p):
            continue
        # Headroom, and nothing between the eye and the feet (the walker is not under a grating
        # or a table): 25 rays up and down over the body, spread so that not all of them can
        # slip between the bars of a grating (9 did, 1.5 cm bars every 5 cm: a walk in the pit).
        up = p["eye_height"] - p["max_step"] + 0.1 * p["eye_height"]
        down = p["eye_height"] - p["max_step"]
        if any(cast((foot[0] + dx, foot[1] + dy, foot[2] + p["max_step"]), (0.0, 0.0, 1.0), up) is not None
               or free_distance(cast, (foot[0] + dx, foot[1] + dy, eye[2]), (0.0, 0.0, -1.0), down) < down
               for dx, dy in _disc(p["radius"] / 2.0, 25)):
            continue
        if inside_solid(cast, eye, reach) or not _room_to_walk(cast, foot, p):
            continue
        low = foot[2] <= box.lo[2] + p["low_level"]
        found.append(((int(low), int(_enclosed(cast, eye, box))) + _surrounded(cast, eye, box), foot))
        if sum(score[0] for score, _ in found) >= START_CANDIDATES:       # low ones: a roof is only a fallback
            break
    if found:
        return _choose_start(found)
    raise GbufError(f"{where}: walk finds no ground: none of {START_TRIES} points inside the scene's bounds has "
                    f"walkable ground below it with {p['eye_height']:.3g} units of headroom and "
                    f"{p['radius']:.3g} units to the walls")


def walk_path(cast: Caster, box: Box, identity: str, seed: int, clip: int, start: int, end: int, fps: float,
              units: float, where: str, defaults: WalkDefaults = WALK, roi: Box | None = None) -> CameraPath:
    """First person at ``eye_height`` above the ground, walking at ``speed``, turning gently.

    Every frame: the heading follows a slow wander, turned at most ``max_yaw_rate`` (a wall or
    a ledge within ``look_ahead`` where the wander points: towards the nearest open heading,
    which becomes the wander's centre, at up to ``avoid_yaw_rate``); the walker slows down
    before walls, moves on only where the step is clear (rays ahead at knee and eye height),
    the body keeps ``radius`` from walls (or gets further from them), and the ground there
    (a downward ray) is within ``max_step`` of the ground here, else it stops and turns. It
    starts in ``roi`` (``content_box``; ``box`` if None) and does not walk out of it (x, y),
    and a walker that starts enclosed (``_enclosed``) does not walk out from under a ceiling.
    """
    p = _scaled(defaults, units, ("speed", "acceleration", "eye_height", "radius", "knee_height", "max_step",
                                  "foot", "look_ahead", "low_level"))
    rng = HashRandom("walk", identity, seed, clip)
    area = box if roi is None else roi
    foot = _walk_start(cast, area, rng, p, where)
    ceiling_reach = area.hi[2] - area.lo[2] + p["eye_height"]
    indoors = _enclosed(cast, (foot[0], foot[1], foot[2] + p["eye_height"]), area)
    p["indoors"] = indoors
    frames = end - start + 3
    dt = 1.0 / fps
    times = np.arange(frames) * dt
    wander = np.radians(waves(rng, p["wander"], tuple(p["wander_period"]), times))
    head_yaw = np.radians(waves(rng, p["look_yaw"], tuple(p["look_period"]), times))
    head_pitch = np.radians(p["pitch"] + waves(rng, p["look_pitch"], tuple(p["look_period"]), times))
    eye = (foot[0], foot[1], foot[2] + p["eye_height"])
    base = open_yaw(cast, eye, box.diagonal, rng) - wander[0]
    heading = base + wander[0]
    speed = p["speed"]       # a clip is a stretch of a longer walk: already walking (unless blocked)
    eye_z = foot[2] + p["eye_height"]
    smooth = 1.0 - math.exp(-dt / p["ground_smoothing"])
    locations, yaws = [], []

    def ahead_free(at: Vec, yaw: float, reach: float) -> float:
        """How far the walker could go along ``yaw``: the nearest wall (knee or eye height) or ledge."""
        d = direction(yaw)
        free = min(free_distance(cast, (at[0], at[1], at[2] + h), d, reach) for h in (p["knee_height"],
                                                                                     p["eye_height"]))
        level = at[2]
        for k in (1, 2, 3):                        # ground every third of the way: steps and drops
            x = reach * k / 3.0
            if x > free:
                break
            g = _ground(cast, (at[0] + d[0] * x, at[1] + d[1] * x), level + p["max_step"], 2.0 * p["max_step"],
                        p["foot"])
            if g is None or abs(g - level) > p["max_step"]:
                return max(x - reach / 3.0, 0.0)
            level = g
        return free

    def step(at: Vec, yaw: float, stride: float):
        """The foot after ``stride`` along ``yaw``, or None: into a wall, off a ledge, or nearer a wall
        than the radius (unless further from it than now: sliding away is always allowed)."""
        if ahead_free(at, yaw, stride + p["radius"]) < stride + p["radius"]:
            return None
        d = direction(yaw)
        nxt = (at[0] + d[0] * stride, at[1] + d[1] * stride)
        if not all(area.lo[k] <= nxt[k] <= area.hi[k] for k in (0, 1)):
            return None
        g = _ground(cast, nxt, at[2] + p["max_step"], 2.0 * p["max_step"], p["foot"])
        if g is None or abs(g - at[2]) > p["max_step"]:
            return None
        if indoors and not has_ceiling(cast, (nxt[0], nxt[1], g + p["eye_height"]), ceiling_reach):
            return None
        foot_next = (nxt[0], nxt[1], g)
        room = _body_room(cast, foot_next, p)
        if room <= p["radius"] and room <= _body_room(cast, at, p):
            return None
        return foot_next

    def open_heading(at: Vec, yaw: float) -> bool:
        # The first stride after a stop and a full one: next to a corner one can pass, the other not.
        return ahead_free(at, yaw, look) >= look and all(
            step(at, yaw, stride) is not None for stride in (p["acceleration"] * dt * dt, p["speed"] * dt))

    look = p["look_ahead"]
    stalled = 0
    for i in range(frames):
        locations.append((foot[0], foot[1], eye_z))
        yaws.append(heading)
        # Turn towards the wander; where that is blocked, towards the nearest open heading
        # around it, which then becomes the wander's new centre (so the choice sticks).
        target = base + wander[min(i + 1, frames - 1)]
        # Standing still for half a second with the heading thought open: look elsewhere.
        if stalled > fps / 2.0 or not open_heading(foot, target):
            stalled = 0
            options = [target + math.radians(s * a) for a in range(15, 181, 15) for s in (1, -1)]
            free = [o for o in options if open_heading(foot, o)]
            best = free[0] if free else max(options, key=lambda o: ahead_free(foot, o, look))
            base += best - target
            target = best
        rate = p["max_yaw_rate"] if ahead_free(foot, heading, look) >= look else p["avoid_yaw_rate"]
        heading += float(np.clip(target - heading, -math.radians(rate) * dt, math.radians(rate) * dt))
        # Move: slow down before walls and ledges, never into them.
        room = ahead_free(foot, heading, look + p["radius"]) - p["radius"]
        wanted = p["speed"] * min(1.0, max(0.0, room) / look)
        speed += float(np.clip(wanted - speed, -p["acceleration"] * dt, p["acceleration"] * dt))
        moved = step(foot, heading, speed * dt) if speed > 0.0 else None
        if moved is None:
            speed = 0.0
            stalled += 1
            continue
        stalled = 0
        foot = moved
        eye_z += (foot[2] + p["eye_height"] - eye_z) * smooth
    yaw = np.array(yaws) + head_yaw
    return _path("walk", identity, seed, clip, start, np.array(locations), yaw, head_pitch, p, box, units)


# ------------------------------------------------------------------------------------ with bpy


def bpy_caster(scene) -> Caster:
    """Ray casts against ``scene``'s evaluated geometry at its current frame."""
    import bpy
    from mathutils import Vector

    depsgraph = bpy.context.evaluated_depsgraph_get()

    def cast(origin, d, distance):
        hit, location, normal, _index, _obj, _matrix = scene.ray_cast(depsgraph, Vector(origin), Vector(d),
                                                                      distance=float(distance))
        if not hit:
            return None
        return (location - Vector(origin)).length, (normal.x, normal.y, normal.z)

    return cast


def object_boxes(scene) -> list[Box]:
    """The world-space bounding box of each of the scene's geometry objects (``scenefiles.GEOMETRY``)."""
    from mathutils import Vector

    from gbuf.render.scenefiles import GEOMETRY

    out = []
    for obj in scene.objects:
        if obj.type in GEOMETRY:
            corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
            out.append(Box(tuple(min(c[k] for c in corners) for k in range(3)),
                           tuple(max(c[k] for c in corners) for k in range(3))))
    return out


def scene_box(scene, where: str) -> Box:
    """The world-space bounding box of the scene's geometry (``scenefiles.GEOMETRY`` objects)."""
    boxes = object_boxes(scene)
    if not boxes:
        raise GbufError(f"{where}: the scene has no geometry to put a camera path in")
    return union(boxes)


def scene_bounds(scene, where: str) -> tuple[tuple[float, float, float], float]:
    """(centre, radius) of the bounding sphere of the scene's bounding box."""
    box = scene_box(scene, where)
    centre = tuple((lo + hi) / 2.0 for lo, hi in zip(box.lo, box.hi))
    return centre, max(box.diagonal / 2.0, 1e-3)


def camera_is_animated(camera) -> bool:
    """Whether ``camera`` (or what it hangs from, or its lens) is keyed, driven or constrained."""
    obj = camera
    while obj is not None:
        anim = obj.animation_data
        if anim is not None and (anim.action is not None or len(anim.drivers) or len(anim.nla_tracks)):
            return True
        if len(obj.constraints):
            return True
        obj = obj.parent
    anim = camera.data.animation_data
    return anim is not None and (anim.action is not None or len(anim.drivers) > 0)


def make_path(kind: str, scene, identity: str, seed: int, clip: int, start: int, end: int,
              where: str) -> CameraPath:
    """The ``kind`` path of clip ``clip`` for frames ``start..end`` of ``scene`` (probed at ``start``)."""
    fps = float(scene.render.fps) / float(scene.render.fps_base)
    if kind == "orbit":
        centre, radius = scene_bounds(scene, where)
        return orbit_keyframes(orbit_path(identity, seed, clip, centre, radius, fps), identity, seed, start, end)
    box = scene_box(scene, where)
    units = units_per_metre(float(scene.unit_settings.scale_length), box.extent)
    current = scene.frame_current
    scene.frame_set(start)
    try:
        cast = bpy_caster(scene)
        # Paths stay where the content is, not over the far reaches of a ground plane.
        roi = content_box(object_boxes(scene), CONTENT_MARGIN * units)
        if kind == "flythrough":
            return flythrough_path(cast, box, identity, seed, clip, start, end, fps, units, where, roi=roi)
        if kind == "walk":
            return walk_path(cast, box, identity, seed, clip, start, end, fps, units, where, roi=roi)
    finally:
        scene.frame_set(current)
    raise GbufError(f"{where}: camera path {kind!r}: expected flythrough, walk or orbit")


def add_path_camera(scene, path: CameraPath, name: str | None = None):
    """A new active camera keyed at every frame of ``path`` (linear keys: each frame is exactly the path)."""
    import bpy

    from gbuf.render.animation import action_fcurves

    name = name or f"gbuf_{path.kind}"
    data = bpy.data.cameras.new(name)
    data.lens = path.lens_mm
    data.sensor_width = path.sensor_mm
    data.sensor_fit = "HORIZONTAL"
    data.clip_start = path.clip_start
    data.clip_end = path.clip_end
    cam = bpy.data.objects.new(name, data)
    scene.collection.objects.link(cam)
    cam.rotation_mode = "QUATERNION"
    for k, (location, rotation) in enumerate(zip(path.locations, path.rotations)):
        cam.location = location
        cam.rotation_quaternion = rotation
        cam.keyframe_insert("location", frame=path.first_frame + k)
        cam.keyframe_insert("rotation_quaternion", frame=path.first_frame + k)
    for fcurve in action_fcurves(cam.animation_data.action):
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"
    scene.camera = cam
    return cam
