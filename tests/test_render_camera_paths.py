"""Generated camera paths (``--camera flythrough|walk``, ``gbuf.render.camera_paths``).

A closed room (floor, four walls, a ceiling, two boxes) is built here with bpy and exported as
.glb and .fbx, then rendered through the importers with ``flythrough`` and ``walk`` at a tiny
size. Checked: motion is the reprojection of depth with the stored cameras of t and t-1 (the
scene is static); every pixel's surface is at least about the set clearance away; the same
(file, seed, clip) gives the same stored keyframes, another clip another path, and rendering
again gives the same camera data and frames; a scene with no free space fails in one line with
nothing written. The maths without bpy (hashing, spline, constant speed, turn limit, rotations,
a path through an analytic room) is checked first, and so are the rules that keep a path where
the content is (region of interest without ground planes, height over the ground, the start's
floor, staying indoors, start preferences) on analytic scenes of boxes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gbuf.errors import GbufError
from gbuf.render import camera_paths as cp

SIZE = (96, 54)
SCALE = 2
OPTIONS = {"resolution": SIZE, "scale": SCALE, "samples": 1, "denoise": False, "quiet": True, "frames": (1, 3),
           "passes": "image,depth,motion"}
ROOM = (8.0, 6.0, 3.0)                # inside: x, y, z (m)
WALL = 0.2


# ----------------------------------------------------------------------------- maths, no bpy


def test_hash_random_is_a_pure_function_of_its_inputs():
    first = cp.HashRandom("flythrough", "ab" * 32, 0, 0)
    a = [first.random() for _ in range(3)]
    draw = cp.HashRandom("flythrough", "ab" * 32, 0, 0)
    assert [draw.random() for _ in range(20)][:3] == a
    for other in (("walk", "ab" * 32, 0, 0), ("flythrough", "cd" * 32, 0, 0), ("flythrough", "ab" * 32, 1, 0),
                  ("flythrough", "ab" * 32, 0, 1)):
        assert cp.HashRandom(*other).random() != a[0]
    numbers = [draw.random() for _ in range(200)]
    assert all(0.0 <= u < 1.0 for u in numbers) and 0.4 < np.mean(numbers) < 0.6


def test_spline_passes_through_its_points_and_is_sampled_at_constant_speed():
    points = np.array([[0, 0, 0], [3, 0, 0], [4, 3, 0.5], [2, 5, 1.0], [-1, 4, 1.0]], dtype=float)
    curve = cp.catmull_rom(points, samples_per_segment=64)
    for q in points:
        assert np.min(np.linalg.norm(curve - q, axis=1)) < 1e-9
    step = 0.1
    samples = cp.sample_at_lengths(curve, np.arange(60) * step)
    gaps = np.linalg.norm(np.diff(samples, axis=0), axis=1)
    assert np.allclose(gaps, step, rtol=2e-3), (gaps.min(), gaps.max())


def test_turn_rate_is_limited_and_goes_the_short_way():
    target = np.array([0.0, 0.0, math.radians(170), math.radians(170), math.radians(-170)])
    out = cp.limit_rate(target, math.radians(10))
    assert np.all(np.abs(np.diff(out)) <= math.radians(10) + 1e-12)
    assert out[2] == pytest.approx(math.radians(10))
    # From 30 deg towards -170 (= 190): the short way round is up through 180.
    wrap = cp.limit_rate(np.array([math.radians(175), math.radians(-175)]), math.radians(20))
    assert wrap[1] == pytest.approx(math.radians(185))


@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (90.0, 0.0), (200.0, 20.0), (-45.0, -30.0)])
def test_look_quaternion_looks_where_asked(yaw, pitch):
    w, x, y, z = cp.look_quaternion(math.radians(yaw), math.radians(pitch))
    # Rotate the camera's view axis (-Z) and up axis (+Y) by the quaternion.
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    view, up = rot @ [0, 0, -1], rot @ [0, 1, 0]
    np.testing.assert_allclose(view, cp.direction(math.radians(yaw), math.radians(pitch)), atol=1e-12)
    right = np.cross(view, up)
    assert abs(right[2]) < 1e-12 and up[2] > 0     # no roll, upright


def test_units_follow_the_unit_scale_and_odd_sizes():
    assert cp.units_per_metre(1.0, 30.0) == 1.0
    assert cp.units_per_metre(0.01, 3000.0) == pytest.approx(100.0)    # units of 1 cm, a 30 m level
    assert cp.units_per_metre(1.0, 20000.0) == pytest.approx(100.0)    # no unit set, 20000 units: cm
    assert cp.units_per_metre(1.0, 1.0) == pytest.approx(0.25)         # a 1 m model


def _room_caster(lo, hi, boxes=()):
    """Ray casts inside an analytic room (walls facing in) with solid boxes (faces out); plain floats."""

    def slab(o, d, blo, bhi):
        tmin, tmax = -math.inf, math.inf
        for k in range(3):
            if abs(d[k]) < 1e-15:
                if not blo[k] <= o[k] <= bhi[k]:
                    return math.inf, -math.inf
                continue
            t1, t2 = (blo[k] - o[k]) / d[k], (bhi[k] - o[k]) / d[k]
            tmin, tmax = max(tmin, min(t1, t2)), min(tmax, max(t1, t2))
        return tmin, tmax

    def face_normal(q, blo, bhi, outward):
        axis = min(range(3), key=lambda k: min(abs(q[k] - blo[k]), abs(q[k] - bhi[k])))
        sign = -1.0 if abs(q[axis] - blo[axis]) < abs(q[axis] - bhi[axis]) else 1.0
        normal = [0.0, 0.0, 0.0]
        normal[axis] = sign if outward else -sign
        return tuple(normal)

    def cast(origin, d, distance):
        best = None
        # The room's walls face in: from inside, the exit point of its box; from outside, the
        # entry point, seen from behind.
        tmin, tmax = slab(origin, d, lo, hi)
        t = tmax if tmin < 0 else tmin
        if tmin <= tmax and 0 <= t <= distance:
            q = [o + t * v for o, v in zip(origin, d)]
            best = (t, face_normal(q, lo, hi, outward=False))
        for blo, bhi in boxes:
            tmin, tmax = slab(origin, d, blo, bhi)
            if tmin <= tmax and tmax >= 0:
                t = tmax if tmin < 0 else tmin
                if t <= distance and (best is None or t < best[0]):
                    q = [o + t * v for o, v in zip(origin, d)]
                    best = (t, face_normal(q, blo, bhi, outward=True))
        return best

    return cast


def test_flythrough_and_walk_in_an_analytic_room():
    lo, hi = (-4.0, -3.0, 0.0), (4.0, 3.0, 3.0)
    boxes = [((0.5, 0.5, 0.0), (1.5, 1.5, 1.0)), ((-2.4, -1.4, 0.0), (-1.6, -0.6, 1.6))]
    cast = _room_caster(lo, hi, boxes)
    box = cp.Box(lo, hi)
    for kind in ("flythrough", "walk"):
        make = cp.flythrough_path if kind == "flythrough" else cp.walk_path
        a = make(cast, box, "ab" * 32, 3, 0, 1, 48, 24.0, 1.0, "room")
        assert a == make(cast, box, "ab" * 32, 3, 0, 1, 48, 24.0, 1.0, "room")
        assert a.locations != make(cast, box, "ab" * 32, 3, 1, 1, 48, 24.0, 1.0, "room").locations
        assert len(a.locations) == len(a.rotations) == 50 and a.first_frame == 0
        locs = np.array(a.locations)
        steps = np.linalg.norm(np.diff(locs, axis=0), axis=1)
        p = a.parameters
        if kind == "flythrough":
            clearance = p["clearance"]
            # Constant speed along the curve: chords between frames shorten only in tight turns.
            assert np.median(steps) == pytest.approx(p["speed"] / 24.0, rel=1e-3)
            assert np.all(steps <= p["speed"] / 24.0 * 1.0001) and np.all(steps >= 0.9 * p["speed"] / 24.0)
        else:
            clearance = p["radius"] * math.cos(math.pi / 8)
            assert steps.max() <= p["speed"] / 24.0 * 1.0001 and steps.sum() > 0.5 * p["speed"] * 48 / 24
            for q in locs:      # on the floor or on a box top
                assert min(abs(q[2] - p["eye_height"] - floor) for floor in (0.0, 1.0, 1.6)) < 1e-9, q
        for q in locs:   # inside the room, outside the boxes, the clearance kept (to the probes' spacing)
            assert np.all(q - lo >= 0.8 * clearance) and np.all(hi - q >= 0.8 * clearance), (kind, q)
            for blo, bhi in boxes:
                gap = np.maximum(np.maximum(np.array(blo) - q, q - np.array(bhi)), 0.0)
                assert np.linalg.norm(gap) >= 0.8 * clearance, (kind, q)
        # Turn rates: the yaw between frames (from the view direction) within the limit.
        views = [_view(q) for q in a.rotations]
        yaws = np.unwrap([math.atan2(v[1], v[0]) for v in views])
        limit = p["max_yaw_rate"] if kind == "flythrough" else p["avoid_yaw_rate"]
        assert np.abs(np.diff(yaws)).max() <= math.radians(limit) / 24.0 * 1.6 + 1e-9


def _view(q):
    w, x, y, z = q
    return np.array([-(2 * (x * z + w * y)), -(2 * (y * z - w * x)), -(1 - 2 * (x * x + y * y))])


def test_a_room_with_no_free_space_is_one_line():
    # A solid block filling its bounds: every point inside sees the backs of its faces.
    lo, hi = (-2.0, -2.0, 0.0), (2.0, 2.0, 4.0)
    cast = _room_caster((-50, -50, -50), (50, 50, 50), [(lo, hi)])
    for make, what in ((cp.flythrough_path, "no free space"), (cp.walk_path, "no ground")):
        with pytest.raises(GbufError, match=what) as err:
            make(cast, cp.Box(lo, hi), "ab" * 32, 0, 0, 1, 3, 24.0, 1.0, "block.glb")
        assert "\n" not in str(err.value) and str(err.value).startswith("block.glb: ")


def test_stored_path_round_trips():
    cast = _room_caster((-4.0, -3.0, 0.0), (4.0, 3.0, 3.0))
    path = cp.flythrough_path(cast, cp.Box((-4.0, -3.0, 0.0), (4.0, 3.0, 3.0)), "ab" * 32, 0, 2, 5, 9, 24.0, 1.0,
                              "room")
    import json

    assert cp.CameraPath.from_attrs(json.loads(json.dumps(path.to_attrs()))) == path


# ------------------------------------------------------ staying where the content is, no bpy

SKY = ((-1e4, -1e4, -1e4), (1e4, 1e4, 1e4))     # an enclosing "room" too far away for any ray to reach
GROUND = ((-60.0, -60.0, -0.2), (60.0, 60.0, 0.0))


def _hall():
    """Solid boxes: a hall (interior x 0..8, y 0..6, z 0..3, a 3 m doorway in its front wall)."""
    return [((-0.2, -0.2, 0.0), (3.0, 0.0, 3.0)), ((6.0, -0.2, 0.0), (8.2, 0.0, 3.0)),   # front, the door
            ((3.0, -0.2, 2.5), (6.0, 0.0, 3.0)),                                         # the lintel
            ((-0.2, 6.0, 0.0), (8.2, 6.2, 3.0)),                                         # back
            ((-0.2, 0.0, 0.0), (0.0, 6.0, 3.0)), ((8.0, 0.0, 0.0), (8.2, 6.0, 3.0)),     # sides
            ((-0.2, -0.2, 3.0), (8.2, 6.2, 3.2))]                                        # roof


def _fly(boxes, roi, box, clip=0, frames=72):
    cast = _room_caster(*SKY, boxes)
    return cp.flythrough_path(cast, box, "cd" * 32, 0, clip, 1, frames, 24.0, 1.0, "scene", roi=roi), cast


def test_content_box_leaves_out_ground_planes_only():
    blocks = [cp.Box((0, 0, 0), (4, 4, 6)), cp.Box((10, -2, 0), (12, 2, 3))]
    ground = cp.Box((-60, -60, -0.1), (60, 60, 0))
    # The ground plane is left out; the rest, 3 units wider on x and y, stays within all of it.
    assert cp.content_box(blocks + [ground], 3.0) == cp.Box((-3, -5, 0), (15, 7, 6))
    # A floor as wide as the rooms on it is content; so is everything in an all-flat scene.
    floor = cp.Box((-0.5, -2.5, -0.1), (12.5, 4.5, 0))
    assert cp.content_box(blocks + [floor], 3.0) == cp.Box((-0.5, -2.5, -0.1), (12.5, 4.5, 6))
    assert cp.content_box([ground, cp.Box((0, 0, 2), (1, 1, 2))], 3.0) == cp.Box((-60, -60, -0.1), (60, 60, 2))


def test_ground_ceiling_and_the_confinement_rules():
    cast = _room_caster(*SKY, [GROUND, ((2.0, -1.0, 0.0), (4.0, 1.0, 1.0)), ((-1.0, -1.0, 2.5), (1.0, 1.0, 2.7))])
    assert cp.height_above_ground(cast, (0.0, 0.0, 1.5), 3.0) == pytest.approx(1.5)
    assert cp.height_above_ground(cast, (0.0, 0.0, 1.5), 1.0) is None            # too far down
    assert cp.height_above_ground(cast, (0.0, 0.0, -0.1), 3.0) is None           # inside the ground slab
    assert cp.height_above_ground(cast, (0.0, 0.0, -1.0), 30.0) is None          # under it: its underside
    assert cp.height_above_ground(cast, (3.0, 0.0, 1.5), 3.0) == pytest.approx(0.5)   # a box top is ground
    assert cp.has_ceiling(cast, (0.0, 0.0, 1.5), 2.0) and not cp.has_ceiling(cast, (3.0, 0.0, 1.5), 50.0)
    box = cp.Box((-5.0, -5.0, -1.0), (5.0, 5.0, 5.0))
    rules = cp.Confinement(box=box, floor=0.0, max_height=2.0, indoors=False, ceiling_reach=6.0)
    assert rules.allows(cast, (0.0, 0.0, 1.5)) and rules.allows(cast, (3.0, 0.0, 2.9))   # 1.9 over the box
    assert not rules.allows(cast, (-3.0, 0.0, 2.5))          # too high over the ground
    assert not rules.allows(cast, (6.0, 0.0, 1.0))           # outside the box
    raised = dataclasses.replace(rules, floor=1.0)           # the start's floor was the box top
    assert raised.allows(cast, (3.0, 0.0, 1.5)) and not raised.allows(cast, (0.0, 0.0, 0.9))
    indoors = dataclasses.replace(rules, indoors=True)
    assert indoors.allows(cast, (0.0, 0.0, 1.5)) and not indoors.allows(cast, (-3.0, 0.0, 1.5))


def test_starts_prefer_low_then_enclosed_then_surrounded():
    # score: (low, enclosed, ring, surrounded, room)
    roof, street, hall, corner = (1.0, 0, 9), (2.0, 0, 1), (3.0, 0, 1), (4.0, 0, 1)
    assert cp._choose_start([((0, 1, 16, 26, 9.0), roof), ((1, 0, 8, 10, 2.0), street)]) == street
    assert cp._choose_start([((1, 0, 16, 26, 9.0), street), ((1, 1, 9, 12, 1.0), hall)]) == hall
    assert cp._choose_start([((1, 0, 9, 20, 9.0), corner), ((1, 0, 15, 14, 2.0), street)]) == street
    assert cp._choose_start([((1, 0, 15, 14, 2.0), street), ((1, 0, 14, 17, 5.0), corner)]) == corner


def test_a_flythrough_that_starts_indoors_stays_indoors():
    # A hall with a wide door among blocks on a large ground plane: started inside, every frame
    # stays under the roof; over 6 s at 3 m/s it would otherwise leave through the door.
    boxes = [GROUND, *_hall(), ((12.0, 0.0, 0.0), (16.0, 6.0, 6.0)), ((-10.0, -8.0, 0.0), (-5.0, -3.0, 5.0))]
    roi = cp.content_box([cp.Box(lo, hi) for lo, hi in boxes], 3.0)
    box = cp.Box(GROUND[0], (60.0, 60.0, 6.0))
    path, cast = _fly(boxes, roi, box, frames=144)
    assert path.parameters["indoors"] is True and path.parameters["max_height"] == 3.0
    locs = np.array(path.locations)
    assert np.all((locs[:, :2] > -0.2) & (locs[:, :2] < [8.2, 6.2])), (locs.min(0), locs.max(0))
    assert all(cp.has_ceiling(cast, tuple(q), 3.5) for q in locs)
    assert np.linalg.norm(np.diff(locs, axis=0), axis=1).sum() > 15.0             # it did fly


@pytest.mark.parametrize("clip", [0, 1])
def test_an_open_flythrough_stays_near_the_content_and_low(clip):
    # Blocks in the middle of a 120 m ground plane: the path stays among them (the content's
    # bounds, 3 m wider), at most max_height over the ground, never under the start's floor.
    blocks = [((0.0, 0.0, 0.0), (4.0, 4.0, 8.0)), ((8.0, -3.0, 0.0), (11.0, 5.0, 6.0)),
              ((2.0, 9.0, 0.0), (9.0, 12.0, 10.0)), ((5.0, 4.5, 0.0), (6.0, 5.5, 1.0))]
    boxes = [GROUND, *blocks]
    roi = cp.content_box([cp.Box(lo, hi) for lo, hi in boxes], 3.0)
    assert roi == cp.Box((-3.0, -6.0, 0.0), (14.0, 15.0, 10.0))
    path, cast = _fly(boxes, roi, cp.Box(GROUND[0], (60.0, 60.0, 10.0)), clip)
    p = path.parameters
    assert p["indoors"] is False
    for q in path.locations:
        assert roi.contains(q), q
        assert q[2] >= 0.9 * p["clearance"] - 1e-9, q
        below = cp.height_above_ground(cast, q, 20.0)
        assert below is not None and below <= p["max_height"] + 1e-6, (q, below)


def test_a_floating_corridor_is_flown_inside_not_under_or_out_of():
    # A corridor hanging in space (floor, walls, ceiling; both ends open) with a pipe below it
    # that stretches the bounds: no frame is under the floor, beside the corridor or past its
    # ends, where there is no ground below.
    tube = [((-10.0, -2.2, -0.2), (10.0, 2.2, 0.0)), ((-10.0, -2.2, 3.0), (10.0, 2.2, 3.2)),
            ((-10.0, -2.2, 0.0), (10.0, -2.0, 3.0)), ((-10.0, 2.0, 0.0), (10.0, 2.2, 3.0)),
            ((-14.0, -0.1, -4.0), (14.0, 0.1, -3.8))]
    roi = cp.content_box([cp.Box(lo, hi) for lo, hi in tube], 3.0)
    for clip in (0, 1):
        path, cast = _fly(tube, roi, roi, clip, frames=120)
        locs = np.array(path.locations)
        assert np.all(locs[:, 2] > 0.0) and np.all(locs[:, 2] < 3.0), (locs.min(0), locs.max(0))
        assert np.all(np.abs(locs[:, 1]) < 2.0) and np.all(np.abs(locs[:, 0]) < 10.0), (locs.min(0), locs.max(0))


@pytest.mark.parametrize("clip", [0, 1, 2])
def test_a_model_alone_in_space_is_still_flown_round(clip):
    # Nothing to fly over but the model's own 2 x 2 top: the flythrough falls back to keeping
    # only the clearance and the box (as before these rules) rather than failing.
    boxes = [((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))]
    box = cp.Box((-6.0, -6.0, -4.0), (6.0, 6.0, 4.0))
    path, _ = _fly(boxes, box, box, clip, frames=48)
    assert path.parameters["grounded"] is False and len(path.locations) == 50
    assert all(box.contains(q) for q in path.locations)


# ------------------------------------------------------------------------------ rendered, bpy


def _room(solid: bool = False):
    import bpy

    import render_helpers as rh

    bpy.ops.wm.read_factory_settings(use_empty=True)
    colours = iter([(0.8, 0.8, 0.8), (0.9, 0.9, 1.0), (0.8, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.3, 0.8),
                    (0.8, 0.7, 0.2), (0.9, 0.4, 0.1), (0.6, 0.2, 0.7)])

    def coloured(obj):
        # A plain colour per surface (what both exporters carry), lit by a lamp in the room.
        mat = bpy.data.materials.new(f"m{len(bpy.data.materials)}")
        mat.diffuse_color = (*next(colours), 1.0)
        mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = mat.diffuse_color
        obj.data.materials.append(mat)
        return obj

    def block(size, location):
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, scale=size)
        coloured(bpy.context.object)

    if solid:
        block((4.0, 4.0, 4.0), (0.0, 0.0, 2.0))
        return
    x, y, z = ROOM
    coloured(rh.add_plane(1.0)).scale = (x, y, 1.0)
    # The ceiling faces down, into the room.
    coloured(rh.add_plane(1.0, location=(0.0, 0.0, z), rotation_deg=(180.0, 0.0, 0.0))).scale = (x, y, 1)
    block((x + 2 * WALL, WALL, z), (0.0, (y + WALL) / 2, z / 2))
    block((x + 2 * WALL, WALL, z), (0.0, -(y + WALL) / 2, z / 2))
    block((WALL, y, z), ((x + WALL) / 2, 0.0, z / 2))
    block((WALL, y, z), (-(x + WALL) / 2, 0.0, z / 2))
    block((1.0, 1.0, 1.0), (1.0, 1.0, 0.5))
    block((0.8, 0.8, 1.6), (-2.0, -1.0, 0.8))
    for obj in bpy.context.scene.objects:
        obj.select_set(True)
    bpy.ops.object.transform_apply(location=False, rotation=True, scale=True)
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", type="POINT"))
    lamp.data.energy = 400.0
    lamp.location = (0.5, -0.5, z - 0.4)
    bpy.context.scene.collection.objects.link(lamp)


def _export(tmp, kind, solid=False):
    import bpy

    _room(solid)
    path = tmp / f"{'block' if solid else 'room'}.{kind}"
    if kind == "glb":
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", export_lights=True)
    else:
        bpy.ops.export_scene.fbx(filepath=str(path))
    return path


@pytest.fixture(scope="module")
def room_files(tmp_path_factory):
    pytest.importorskip("bpy")
    tmp = tmp_path_factory.mktemp("room")
    return {kind: _export(tmp, kind) for kind in ("glb", "fbx")}


@pytest.fixture(scope="module")
def rendered(room_files, tmp_path_factory):
    """(kind, mode) -> the sequence rendered into its own store (rendered on first use)."""
    import gbuf.datasets as gd
    from gbuf.render import render

    tmp = tmp_path_factory.mktemp("room_renders")
    cache = {}

    def get(kind, mode, again=False):
        key = (kind, mode, again)
        if key not in cache:
            out = tmp / f"{kind}-{mode}{'-again' if again else ''}.zarr"
            render(room_files[kind], out, camera=mode, **OPTIONS)
            ds = gd.open(out)
            cache[key] = ds[ds.sequences[0]]
        return cache[key]

    return get


CASES = [("glb", "flythrough"), ("glb", "walk"), ("fbx", "flythrough"), ("fbx", "walk")]


@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", CASES)
def test_motion_is_reprojected_depth(rendered, kind, mode):
    from test_render_camera import TOLERANCE_PX, _smooth_surface, reprojected_motion

    seq = rendered(kind, mode)
    assert seq.attrs["camera_path"]["kind"] == mode
    for group in ("hr", "lr"):
        res = seq[group]
        cam = res.read_camera()
        data = res.read_many(["depth", "motion"])
        assert not cam["cut"].any()
        for t in range(1, res.num_frames):
            depth = data["depth"][t, ..., 0].astype(np.float64)
            assert np.isfinite(depth).all()          # a closed room: every pixel sees a surface
            mask = _smooth_surface(depth)
            # Smooth-surface pixels 2 px from any edge: fewer at LR (48 x 27), where edges are wide.
            assert mask.mean() > (0.3 if group == "hr" else 0.1), (group, t, float(mask.mean()))
            expected = reprojected_motion(depth, cam, t)
            if group == "hr":
                assert np.abs(expected[mask]).max() > 0.5      # the camera did move
            error = np.abs(data["motion"][t].astype(np.float64) - expected)[mask]
            assert error.max() <= TOLERANCE_PX, (group, t, float(error.max()))


@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", CASES)
def test_camera_keeps_its_distance_from_surfaces(rendered, kind, mode):
    seq = rendered(kind, mode)
    params = seq.attrs["camera_path"]["parameters"]
    res = seq["hr"]
    cam = res.read_camera()
    depth = res.read("depth")[..., 0].astype(np.float64)
    height, width = depth.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for t in range(res.num_frames):
        rays = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(cam["K"][t]).T
        distance = depth[t] * np.linalg.norm(rays, axis=-1)      # planar depth -> along the ray
        centre = cam["world_to_camera"][t]
        eye = -centre[:3, :3].T @ centre[:3, 3]
        if mode == "flythrough":
            bound = 0.75 * params["clearance"]
        else:
            bound = 0.85 * params["radius"]
            # Eye height above the floor (z = 0) or a box top the walker stepped onto.
            assert min(abs(eye[2] - params["eye_height"] - floor) for floor in (0.0, 1.0, 1.6)) < 1e-4, eye
        assert distance.min() >= bound, (t, float(distance.min()), bound)
        assert depth[t][height // 2, width // 2] >= bound
        assert np.all(np.abs(eye[:2]) < np.array(ROOM[:2]) / 2) and 0 < eye[2] < ROOM[2]   # in the room


@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", [("glb", "flythrough"), ("fbx", "walk")])
def test_the_stored_path_renders_again_identically(rendered, kind, mode):
    a, b = rendered(kind, mode), rendered(kind, mode, again=True)
    assert a.attrs["camera_path"] == b.attrs["camera_path"]
    keys = a.attrs["camera_path"]["keyframes"]
    assert len(keys["location"]) == len(keys["rotation_quaternion"]) == OPTIONS["frames"][1] + 2
    for group in ("hr", "lr"):
        ca, cb = a[group].read_camera(), b[group].read_camera()
        for field in ca:
            np.testing.assert_array_equal(ca[field], cb[field])
        for name in ("image", "depth", "motion"):
            np.testing.assert_array_equal(a[group].read(name), b[group].read(name))


@pytest.mark.slow
def test_stored_keyframes_are_the_rendered_camera(rendered):
    seq = rendered("glb", "flythrough")
    path = cp.CameraPath.from_attrs(seq.attrs["camera_path"])
    cam = seq["hr"].read_camera()
    for t in range(seq["hr"].num_frames):
        w2c = cam["world_to_camera"][t]
        eye = -w2c[:3, :3].T @ w2c[:3, 3]
        np.testing.assert_allclose(eye, path.locations[t + 1], atol=1e-5)   # keyframe 0 is frame start - 1
        view = w2c[2, :3]          # OpenCV +z: the viewing direction in world axes
        np.testing.assert_allclose(view, _view(path.rotations[t + 1]), atol=1e-5)


@pytest.mark.slow
def test_clips_are_sequences_with_their_own_paths(room_files, rendered, tmp_path):
    import gbuf.datasets as gd
    from gbuf.render import make_settings, render_scenes
    from gbuf.fileio import file_sha256
    from gbuf.render.scenefiles import import_scene

    settings = make_settings(resolution=(64, 36), scale=2, samples=1, denoise=False, passes="image,depth")
    run = render_scenes([room_files["glb"]], tmp_path / "clips.zarr", settings, frames=(1, 3), quiet=True,
                        camera="flythrough", clips=2)
    assert [r.sequence for r in run.results] == ["room-clip0", "room-clip1"]
    ds = gd.open(tmp_path / "clips.zarr")
    paths = [ds[name].attrs["camera_path"] for name in ("room-clip0", "room-clip1")]
    assert [p["clip"] for p in paths] == [0, 1]
    assert paths[0]["keyframes"] != paths[1]["keyframes"]
    # Clip 0 is the path of a one-clip render (a function of file, seed and clip, not of the size).
    assert paths[0]["keyframes"] == rendered("glb", "flythrough").attrs["camera_path"]["keyframes"]
    # ... and made again here, from the file, the seed and the clip alone.
    scene = import_scene(room_files["glb"])
    again = cp.make_path("flythrough", scene, file_sha256(room_files["glb"]), 0, 1, 1, 3, "room")
    assert again.to_attrs()["keyframes"] == paths[1]["keyframes"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, mode, message", [("glb", "flythrough", "no free space"),
                                                 ("fbx", "walk", "no ground")])
def test_no_free_space_is_one_line_and_writes_nothing(tmp_path, kind, mode, message):
    pytest.importorskip("bpy")
    from gbuf.render import render

    path = _export(tmp_path, kind, solid=True)
    out = tmp_path / "out.zarr"
    with pytest.raises(GbufError, match=message) as err:
        render(path, out, camera=mode, **OPTIONS)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not out.exists()


@pytest.mark.slow
def test_cli_no_free_space_exits_2(tmp_path):
    pytest.importorskip("bpy")
    from click.testing import CliRunner

    from gbuf.cli import main

    path = _export(tmp_path, "glb", solid=True)
    result = CliRunner().invoke(main, ["render", str(path), "-o", str(tmp_path / "o.zarr"), "--resolution", "64x36",
                                       "--scale", "2", "--quiet", "--camera", "flythrough", "--clips", "2"])
    assert result.exit_code == 2, result.output
    assert "no free space" in result.output
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.slow
def test_a_blend_built_from_a_recipe_is_identified_by_recipe_and_seed(tmp_path):
    """Two .blend files of one recipe build differ in bytes, not in their paths (the recipe's marks)."""
    pytest.importorskip("bpy")
    import bpy

    import gbuf.datasets as gd
    import render_helpers as rh
    from gbuf.render import render

    files = []
    for k, marked in enumerate((True, True, False)):
        _room()
        scene = bpy.context.scene
        scene.render.fps = 24
        if marked:
            scene["gbuf_recipe"], scene["gbuf_seed"] = "room", 3
        bpy.data.texts.new(f"build {k}")          # other bytes, the same scene
        files.append(rh.save(tmp_path / f"room{k}.blend"))
    paths = []
    for k, path in enumerate(files):
        render(path, tmp_path / f"out{k}.zarr", camera="flythrough", **{**OPTIONS, "frames": (1, 1)})
        ds = gd.open(tmp_path / f"out{k}.zarr")
        paths.append(ds[ds.sequences[0]].attrs["camera_path"])
    assert paths[0]["identity"] == paths[1]["identity"] == "recipe:room:3"
    assert paths[0]["keyframes"] == paths[1]["keyframes"]
    assert paths[2]["identity"] != "recipe:room:3" and paths[2]["keyframes"] != paths[0]["keyframes"]


@pytest.mark.slow
def test_auto_gives_a_blend_without_a_camera_a_flythrough(tmp_path, caplog):
    """``auto``: a .blend with a camera keeps it (tests/test_render_cli.py); one without any gets a
    flythrough with a warning (``keep`` refuses it)."""
    pytest.importorskip("bpy")
    import logging

    import gbuf.datasets as gd
    import render_helpers as rh
    from gbuf.render import render

    _room()
    path = rh.save(tmp_path / "room.blend")
    with caplog.at_level(logging.WARNING):
        render(path, tmp_path / "out.zarr", **{**OPTIONS, "frames": (1, 1)})
    assert "has no active camera; rendering with a flythrough camera" in caplog.text
    assert gd.open(tmp_path / "out.zarr")["room"].attrs["camera_path"]["kind"] == "flythrough"
    with pytest.raises(GbufError, match="no active camera"):
        render(path, tmp_path / "keep.zarr", camera="keep", **{**OPTIONS, "frames": (1, 1)})
