"""Making frame ``start - 1`` exist, so the first rendered frame has real backward motion (bpy).

Cycles computes the Vector pass by evaluating the scene one frame before and one
frame after the rendered one. Animation curves hold their first value before
their first key, so a scene keyed from its first rendered frame would show no
backward motion there even when everything is moving.

``extend_before`` fixes that without changing any rendered frame: every keyframed
F-curve whose first key lies in (start - 1, start] gets one more key at
``start - 1`` on the tangent the curve leaves its first key with (its right
handle, or the line to the next key for linear keys), joined linearly. Handles
are frozen first, so the curve from ``start`` on is exactly what the author made.
Frame 0's motion is therefore "where the surface was one frame earlier, had the
animation continued backwards along its initial tangent": zero for an animation
that starts from rest (an eased first key), its velocity for one that starts
moving. Curves keyed before ``start - 1`` (the gbuf recipes key one frame beyond
each end) are used as authored, and so are curves whose first key is after
``start`` (they are static before that key anyway). Drivers, NLA strips,
simulations and constraints are evaluated by Blender as they are.
"""

from __future__ import annotations


def action_fcurves(action):
    """Every F-curve of an action (Blender 5 layered actions; legacy ``action.fcurves`` too)."""
    legacy = getattr(action, "fcurves", None)
    if legacy is not None:
        yield from legacy
    for layer in getattr(action, "layers", ()):
        for strip in layer.strips:
            for bag in getattr(strip, "channelbags", ()):
                yield from bag.fcurves


def leaving_slope(fcurve) -> float:
    """d(value)/d(frame) with which the curve leaves its first key."""
    keys = fcurve.keyframe_points
    first = keys[0]
    if first.interpolation == "BEZIER":
        dx = first.handle_right[0] - first.co[0]
        return (first.handle_right[1] - first.co[1]) / dx if dx > 1e-9 else 0.0
    if first.interpolation == "LINEAR" and len(keys) > 1:
        dx = keys[1].co[0] - first.co[0]
        return (keys[1].co[1] - first.co[1]) / dx if dx > 1e-9 else 0.0
    return 0.0   # constant (stepped) and easing presets: at rest before the first key


def freeze_handles(fcurve) -> None:
    """Make every handle FREE at its current place, so adding a key re-shapes nothing."""
    for key in fcurve.keyframe_points:
        left, right = tuple(key.handle_left), tuple(key.handle_right)
        key.handle_left_type = "FREE"
        key.handle_right_type = "FREE"
        key.handle_left = left
        key.handle_right = right


def extend_before(start: int) -> int:
    """Give F-curves that begin at the first rendered frame a key at ``start - 1``; returns how many."""
    import bpy

    extended = 0
    before = start - 1
    for action in bpy.data.actions:
        for fcurve in action_fcurves(action):
            keys = fcurve.keyframe_points
            if len(keys) == 0 or fcurve.mute or len(fcurve.modifiers):
                continue
            if fcurve.extrapolation != "CONSTANT":
                continue   # already defined before its first key
            first_frame = keys[0].co[0]
            if not (before < first_frame <= start):
                continue
            slope = leaving_slope(fcurve)
            freeze_handles(fcurve)
            value = keys[0].co[1] - slope * (first_frame - before)
            key = keys.insert(before, value, options={"FAST"})
            key.interpolation = "LINEAR"
            fcurve.update()
            extended += 1
    return extended
