"""The gbuf dataset format: names, dtypes, layout and conventions, in one place.

Every other module asks this one; ``docs/format.md`` is the human-readable twin
(keep the two in step, and bump ``FORMAT_VERSION`` on any change a reader would
notice).

Layout of a store (Zarr v3)::

    DATA.zarr/                      root group, attrs["gbuf"] = dataset attrs
      <sequence>/                   one group per sequence (attrs: fps, frames, scene, ...)
        hr/                         one group per resolution
          <pack>                    (T, H, W, C) arrays; each pack holds whole buffers of one dtype
        lr/                         the natively rendered LR
        lr_bicubic_x4/              degraded variants (gbuf.datasets.degrade)

Buffers of one resolution are packed by dtype into a few arrays (``PACKS``); a
channel map in the resolution group's attrs says where each buffer lives. The
API (``Resolution.read``) hides the packing: every buffer is addressed by name.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FORMAT_NAME = "gbuf"
FORMAT_VERSION = "1.0"

#: Attribute key under which gbuf keeps its metadata in every group's attrs.
ATTRS_KEY = "gbuf"

#: Zarr ``dimension_names`` of every pack array.
DIMENSION_NAMES = ("t", "y", "x", "c")


@dataclasses.dataclass(frozen=True)
class BufferSpec:
    name: str
    channels: int
    dtype: str
    pack: str
    description: str


# The conventions below are facts measured on real Blender 5.0.1 Cycles renders
# (tests/test_render_conventions.py checks them); docs/format.md explains each.
BUFFERS: dict[str, BufferSpec] = {
    spec.name: spec
    for spec in (
        BufferSpec("image", 3, "float16", "color",
                   "rendered colour, linear scene-referred RGB (no view transform), premultiplied"),
        BufferSpec("depth", 1, "float32", "geom32",
                   "planar camera Z (distance along the view axis) in scene units; +inf where no surface"),
        BufferSpec("normal", 3, "float16", "geom16",
                   "world-space unit surface normal (Blender world axes, Z up); 0 where no surface"),
        BufferSpec("motion", 2, "float32", "geom32",
                   "displacement from frame t to frame t-1 in pixels of this resolution, x right, y down: "
                   "the surface seen at pixel p in frame t was at p + motion[t, p] in frame t-1"),
        BufferSpec("brdf", 3, "float16", "geom16",
                   "diffuse colour + glossy colour (the RDG 'BRDF' buffer), linear"),
        BufferSpec("diffuse_color", 3, "float16", "geom16", "Cycles Diffuse Color pass, linear"),
        BufferSpec("glossy_color", 3, "float16", "geom16", "Cycles Glossy Color pass, linear"),
        BufferSpec("emission", 3, "float16", "geom16", "Cycles Emission pass, linear"),
        BufferSpec("alpha", 1, "float16", "geom16", "coverage of the pixel by geometry, 0..1"),
    )
}

#: The buffers RDG reads, in its order.
RDG_BUFFERS = ("image", "depth", "normal", "motion", "brdf")

#: Pack array names in a fixed order; a pack only exists if it holds a buffer.
PACKS = ("color", "geom16", "geom32")

#: Resolution group names. Degraded groups are named ``lr_<method>_x<scale>``.
HR = "hr"
LR = "lr"

#: In a flat batch dict (what loaders yield and models take), HR buffers carry this prefix:
#: ``{"image": LR image, "depth": LR depth, ..., "hr_image": HR target, "hr_normal": ...}``.
HR_PREFIX = "hr_"


def hr_key(buffer: str) -> str:
    """The batch-dict key of an HR buffer (``hr_image`` for ``image``)."""
    return HR_PREFIX + buffer


def degraded_group_name(method: str, scale: int) -> str:
    """Default name of a degraded LR group, e.g. ``lr_bicubic_x4``."""
    return f"lr_{method}_x{scale}"


def buffer_spec(name: str) -> BufferSpec:
    from gbuf.errors import GbufError

    try:
        return BUFFERS[name]
    except KeyError:
        raise GbufError(f"unknown buffer {name!r}; known: {', '.join(BUFFERS)}") from None


def pack_layout(buffers: list[str] | tuple[str, ...]) -> dict[str, list[tuple[str, int, int]]]:
    """Where each buffer goes: ``{pack: [(buffer, first_channel, channels), ...]}``.

    Buffers keep the order given, within their pack.
    """
    layout: dict[str, list[tuple[str, int, int]]] = {}
    offsets: dict[str, int] = {}
    for name in buffers:
        spec = buffer_spec(name)
        start = offsets.get(spec.pack, 0)
        layout.setdefault(spec.pack, []).append((name, start, spec.channels))
        offsets[spec.pack] = start + spec.channels
    return {pack: layout[pack] for pack in PACKS if pack in layout}


def pack_dtype(pack: str) -> np.dtype:
    return np.dtype({"color": "float16", "geom16": "float16", "geom32": "float32"}[pack])


def conventions() -> dict[str, str]:
    """The per-buffer conventions as stored in attrs (and printed by ``gbuf dataset info``)."""
    return {name: spec.description for name, spec in BUFFERS.items()}
