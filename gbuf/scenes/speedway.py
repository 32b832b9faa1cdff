"""Speedway: a race track at speed, seen through a catch fence.

Cars lap a circular track at 20-45 m/s (one to two metres per frame), wheels
spinning, while the camera, standing in the infield, pans after them; a catch
fence of 4 mm diamond-mesh wires on posts runs round the outside, sponsor
boards in text line the barrier, windmill blades spin and balls bounce at the
track side. Fast motion means large motion vectors, strong disocclusion and
little temporal coherence (the hard case for recurrent upscalers); the fence
is thin, regular geometry that aliases at any resolution.
"""

from __future__ import annotations

import math
import random

import numpy as np

from . import _kit as kit
from . import _parts as parts

DESCRIPTION = "race track at speed: cars lapping at 20-45 m/s, diamond-mesh catch fence, sponsor boards, spinning windmills, bouncing balls, crowd stands; fast camera pan"
SEED_VARIES = ("time of day (morning to evening: sun height, direction and colour), car colours, lanes and speeds, "
               "sponsor words, the windmills' places and speeds, the balls, asphalt, grass and crowd textures, "
               "the pan's start and rate")
SPONSORS = ("TURBO", "APEX OIL", "VELOCITY", "GRIP TYRES", "NITRO", "PITSTOP", "RACE FM", "FUEL+", "KINETIC",
            "MOTORWORKS")

TRACK_INNER, TRACK_OUTER = 9.5, 14.5


def _asphalt(rng: random.Random):
    s = kit.Shader("Asphalt")
    co = s.coords(offset=kit.random_offset(rng))
    grain = s.node("TexNoise", {"Vector": co, "Scale": 60.0, "Detail": 10.0})
    patches = s.node("TexNoise", {"Vector": co, "Scale": 0.8, "Detail": 3.0})
    base = s.ramp(s.out(grain, "Factor"), [(0.35, (0.04, 0.04, 0.045)), (0.65, (0.16, 0.16, 0.16))])
    base = s.mix(0.3, base, s.out(patches, "Color"), "MULTIPLY")
    # Lane lines: dashed rings at fixed radii, computed from the object-space radius and angle.
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    radius = s.math("SQRT", s.math("ADD", s.math("MULTIPLY", s.out(xyz, "X"), s.out(xyz, "X")),
                                   s.math("MULTIPLY", s.out(xyz, "Y"), s.out(xyz, "Y"))))
    angle = s.math("ARCTAN2", s.out(xyz, "Y"), s.out(xyz, "X"))
    lane = s.math("PINGPONG", s.math("SUBTRACT", radius, TRACK_INNER + 0.15), 1.25)  # 0 on lines
    solid = s.math("LESS_THAN", lane, 0.06)
    dashes = s.math("GREATER_THAN", s.math("SINE", s.math("MULTIPLY", angle, 40.0)), 0.0)
    edge = s.math("LESS_THAN", s.math("ABSOLUTE", s.math("SUBTRACT", radius, TRACK_INNER + 0.15)), 0.12)
    paint = s.math("MAXIMUM", s.math("MULTIPLY", solid, dashes), edge)
    color = s.mix(paint, base, (0.8, 0.8, 0.78))
    return s.principled({"Base Color": color, "Roughness": 0.7,
                         "Normal": s.bump(s.out(grain, "Factor"), 0.4, 0.01)})


def _grass(rng: random.Random):
    s = kit.Shader("Grass")
    co = s.coords(offset=kit.random_offset(rng))
    blades = s.node("TexNoise", {"Vector": co, "Scale": 150.0, "Detail": 4.0})
    mow = s.node("TexWave", {"Vector": co, "Scale": 0.15, "Distortion": 0.0}, bands_direction="X")
    color = s.ramp(s.out(blades, "Factor"), [(0.3, (0.04, 0.12, 0.02)), (0.7, (0.12, 0.3, 0.05))])
    color = s.mix(0.2, color, s.out(mow, "Color"), "OVERLAY")
    return s.principled({"Base Color": color, "Roughness": 0.9,
                         "Normal": s.bump(s.out(blades, "Factor"), 0.5, 0.01)})


def _barrier():
    s = kit.Shader("Barrier")
    xyz = s.node("SeparateXYZ", {"Vector": s.out(s.node("TexCoord"), "Object")})
    angle = s.math("ARCTAN2", s.out(xyz, "Y"), s.out(xyz, "X"))
    stripes = s.math("GREATER_THAN", s.math("SINE", s.math("MULTIPLY", angle, 120.0)), 0.0)
    color = s.mix(stripes, (0.75, 0.05, 0.03), (0.85, 0.85, 0.85))
    return s.principled({"Base Color": color, "Roughness": 0.35})


def _crowd(rng: random.Random):
    s = kit.Shader("Crowd")
    co = s.coords(offset=kit.random_offset(rng))
    # One Voronoi cell per spectator; their random colours, muted towards grey-brown.
    people = s.node("TexVoronoi", {"Vector": co, "Scale": 3.0})
    color = s.mix(0.55, s.out(people, "Color"), (0.25, 0.22, 0.2))
    return s.principled({"Base Color": color, "Roughness": 0.8,
                         "Normal": s.bump(s.out(people, "Distance"), 0.6, 0.05)})


def build(seed: int = 0, frames: int = 48) -> None:
    rng = random.Random(seed)
    kit.setup_scene(frames)
    kit.time_of_day(rng, ("morning", "noon", "afternoon", "evening"))

    ground = kit.MeshBuilder()
    ground.grid((200, 200))
    ground.object("Infield", [_grass(rng)])

    track = kit.MeshBuilder()
    segments = 256
    ring = [(math.cos(2 * math.pi * i / segments), math.sin(2 * math.pi * i / segments))
            for i in range(segments)]
    inner = [track.bm.verts.new((TRACK_INNER * c, TRACK_INNER * s, 0.01)) for c, s in ring]
    outer = [track.bm.verts.new((TRACK_OUTER * c, TRACK_OUTER * s, 0.01)) for c, s in ring]
    for i in range(segments):
        j = (i + 1) % segments
        track.bm.faces.new((inner[i], outer[i], outer[j], inner[j]))
    track.object("Track", [_asphalt(rng)])

    barrier = kit.MeshBuilder()
    barrier.cylinder(TRACK_OUTER + 0.5, 0.9, (0, 0, 0.45), segments=256, smooth=True)
    barrier.cylinder(TRACK_OUTER + 0.2, 0.92, (0, 0, 0.45), segments=256, smooth=True)
    # The two nested cylinders make a wall; drop the inner one's caps and the outer's cap faces.
    for face in [f for f in barrier.bm.faces if len(f.verts) > 4]:
        barrier.bm.faces.remove(face)
    barrier.object("Barrier", [_barrier()])

    stands = kit.MeshBuilder()
    for step in range(6):
        r = TRACK_OUTER + 3 + step * 0.9
        stands.cylinder(r + 0.9, 0.45, (0, 0, 0.6 + step * 0.45), radius_top=r + 0.9, segments=180,
                        smooth=True)
    for face in [f for f in stands.bm.faces if len(f.verts) > 4]:
        stands.bm.faces.remove(face)
    stands.object("Stands", [_crowd(rng)])

    for index in range(3):
        a = rng.uniform(0, 2 * math.pi)
        r = TRACK_OUTER + 1.6
        mill = kit.MeshBuilder()
        mill.cylinder(0.12, 5.0, (0, 0, 2.5), segments=12)
        mill.object(f"MillMast{index}", [kit.plain("Mast", (0.8, 0.8, 0.8), roughness=0.4)],
                    location=(r * math.cos(a), r * math.sin(a), 0))
        blades = kit.MeshBuilder()
        for k in range(4):
            t = k * math.pi / 2
            blades.cube((0.18, 1.9, 0.04), (-0.95 * math.sin(t), 0.95 * math.cos(t), 0), (0, 0, t))
        blades.cube((0.3, 0.3, 0.3))
        blades_obj = blades.object(f"MillBlades{index}",
                                   [kit.plain("Blade", (0.9, 0.2, 0.05), roughness=0.3)])
        hub = (r * math.cos(a) - 0.2 * math.cos(a), r * math.sin(a) - 0.2 * math.sin(a), 5.0)
        spin = rng.choice((-1, 1)) * rng.uniform(8.0, 14.0)  # rad/s: a blade tip moves ~1 m per frame
        # Face the track: the blades turn in the vertical plane perpendicular to the radius.
        kit.key_motion(blades_obj, frames, lambda f, hub=hub, a=a, spin=spin: {
            "location": hub, "rotation_euler": (math.pi / 2, spin * kit.seconds(f), a + math.pi / 2)})

    for index in range(4):
        a = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(5.5, TRACK_INNER - 1.0)
        ball = kit.MeshBuilder()
        ball.sphere(0.3, segments=32, rings=16)
        ball_obj = ball.object(f"Ball{index}", [kit.plain(f"Rubber{index}", [rng.random() for _ in range(3)],
                                                          roughness=0.3)])
        period = rng.uniform(0.5, 0.8)  # seconds per bounce
        phase = rng.random()

        def bounce(f: int, a=a, r=r, period=period, phase=phase) -> kit.Pose:
            u = (kit.seconds(f) / period + phase) % 1.0
            height = 0.3 + 4 * 2.2 * u * (1 - u)  # parabola, 2.2 m high
            return {"location": (r * math.cos(a), r * math.sin(a), height)}

        kit.key_motion(ball_obj, frames, bounce)

    # The camera pans at pan_rate; the cars lap faster or slower, so they overtake the view or fall out of it.
    pan_rate = rng.uniform(0.6, 0.9)  # rad/s
    pan_start = rng.uniform(0, 2 * math.pi)
    count = 8
    for index in range(count):
        car = parts.car(f"Car{index}", rng, plate=False)
        lane = TRACK_INNER + 1.0 + (index % 3) * 1.5
        speed = rng.uniform(20.0, 45.0)  # m/s
        rate = speed / lane
        # Spread evenly round the loop: whatever the speeds, a car is never far from the view.
        start = pan_start + 2 * math.pi * index / count + rng.uniform(-0.2, 0.2)
        parts.drive(car, frames, lambda t, lane=lane, rate=rate, start=start: (
            lane * math.cos(start + rate * t), lane * math.sin(start + rate * t), start + rate * t + math.pi / 2))

    # Catch fence: diamond mesh of thin wires (two helices of opposite slope) on posts, round the outside.
    fence = kit.ArrayMesh()
    radius, low, high = TRACK_OUTER + 0.8, 0.9, 4.4
    z = np.linspace(low, high, 6)
    for slope in (-1, 1):
        a = np.arange(0, 2 * math.pi, 0.14 / radius)[:, None] + slope * (z - low)[None] / radius
        wires = np.stack([radius * np.cos(a), radius * np.sin(a), np.broadcast_to(z, a.shape)], -1)
        fence.tubes(wires[:, :-1].reshape(-1, 3), wires[:, 1:].reshape(-1, 3), 0.004, segments=3)
    posts = np.arange(0, 2 * math.pi, 4.0 / radius)
    fence.tubes(np.stack([radius * np.cos(posts), radius * np.sin(posts), np.zeros_like(posts)], 1),
                np.stack([radius * np.cos(posts), radius * np.sin(posts), np.full_like(posts, high + 0.1)], 1),
                0.05, segments=8, material=1)
    ring = np.linspace(0, 2 * math.pi, 257)
    for zz in (low, high):
        fence.polyline(np.stack([radius * np.cos(ring), radius * np.sin(ring), np.full_like(ring, zz)], 1), 0.02,
                       segments=4, material=1)
    fence.object("CatchFence", [parts.metal("FenceWire", (0.6, 0.6, 0.62), 0.35),
                                parts.metal("FencePost", (0.3, 0.3, 0.32), 0.4)])

    # Sponsor boards on the barrier's inner face, their words in text.
    board_paint = kit.plain("BoardPaint", (0.9, 0.9, 0.88), roughness=0.4)
    for k in range(int(rng.uniform(8, 14))):
        a = 2 * math.pi * k / 12 + rng.uniform(-0.1, 0.1)
        r = TRACK_OUTER + 0.15
        yaw = a - math.pi / 2
        board = kit.ArrayMesh()
        board.boxes([(0, 0.02, 0)], (3.2, 0.04, 0.7))
        holder = board.object(f"Sponsor{k}", [board_paint], location=(r * math.cos(a), r * math.sin(a), 0.45),
                              rotation=(0, 0, yaw))
        ink = kit.plain(f"SponsorInk{k}", kit.vary_color(rng, rng.choice(((0.8, 0.05, 0.05), (0.05, 0.1, 0.6),
                                                                         (0.05, 0.05, 0.05)))), roughness=0.4)
        label = kit.text(f"SponsorText{k}", rng.choice(SPONSORS), ink, size=0.45, extrude=0.005,
                         location=(0, -0.005, 0))
        label.parent = holder

    cam = kit.add_camera(30.0)
    kit.key_camera(cam, frames,
                   # The eye circles the infield centre, a little behind the pan direction.
                   eye=lambda t: (-2.0 * math.cos(pan_start + pan_rate * t - 0.5),
                                  -2.0 * math.sin(pan_start + pan_rate * t - 0.5),
                                  3.5 + 0.1 * math.sin(3 * t)),
                   target=lambda t: (math.cos(pan_start + pan_rate * t) * 12.0,
                                     math.sin(pan_start + pan_rate * t) * 12.0, 0.5))
