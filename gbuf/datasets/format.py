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
import math
import re
import zlib

import numpy as np

from gbuf.errors import GbufError

FORMAT_NAME = "gbuf"
FORMAT_VERSION = "1.0"

#: Attribute key under which gbuf keeps its metadata in every group's attrs.
ATTRS_KEY = "gbuf"

#: Folder (inside the store, outside the zarr hierarchy) that holds writer state
#: (staged frames, shard markers) and sharing's local state. Readers of a finished
#: store never need it, and it is never pushed.
STATE_DIR = ".gbuf"

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

#: Per-frame camera data of a rendered resolution group: ``attrs["gbuf"][CAMERA_KEY]`` holds
#: one list per field (length num_frames), read as arrays by ``Resolution.read_camera()``.
CAMERA_KEY = "camera"
#: Field -> shape of one frame's value: intrinsics K (pixels of the group, OpenCV axes),
#: world (Blender) -> OpenCV camera, clip distances, Cycles' film exposure (a linear factor already in the image), the sub-pixel
#: jitter of that render (pixels of the group), whether a cut precedes the frame, and whether
#: the projection is orthographic (pixel = K @ (x, y, 1)) rather than perspective (pixel ~ K @ X).
CAMERA_FIELDS = {"K": (3, 3), "world_to_camera": (4, 4), "near": (), "far": (), "exposure": (),
                 "jitter": (2,), "cut": (), "orthographic": ()}
#: The boolean fields of CAMERA_FIELDS.
CAMERA_FLAGS = ("cut", "orthographic")

#: The dataset split of a store built from a spec (``gbuf dataset build``): root
#: ``attrs["gbuf"][SPLITS_KEY]`` maps each split to its sequence names, no sequence in two;
#: ``attrs["gbuf"][SPEC_KEY]`` records the spec it came from (docs/format.md, "Splits").
SPLITS = ("train", "val", "test")
SPLITS_KEY = "splits"
SPEC_KEY = "dataset_spec"

#: In a flat batch dict (what loaders yield and models take), HR buffers carry this prefix:
#: ``{"image": LR image, "depth": LR depth, ..., "hr_image": HR target, "hr_normal": ...}``.
HR_PREFIX = "hr_"


def hr_key(buffer: str) -> str:
    """The batch-dict key of an HR buffer (``hr_image`` for ``image``)."""
    return HR_PREFIX + buffer


def degraded_group_name(method: str, scale: int) -> str:
    """Default name of a degraded LR group, e.g. ``lr_bicubic_x4``."""
    return f"lr_{method}_x{scale}"


def check_root_attrs(attrs, where: str) -> dict:
    """The root group's gbuf attrs, if they are a gbuf store's of a version this gbuf reads.

    The one check of "is this a gbuf store, and can this gbuf read it" (open, push and
    pull all ask it); a failure is a one-line ``GbufError`` naming ``where``.
    """
    from gbuf.errors import GbufError

    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
        raise GbufError(f"{where}: not a gbuf store (root attrs lack gbuf.format)")
    # Minor versions only add what older readers may ignore; a new major version may not be read.
    if str(attrs.get("version", "0")).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise GbufError(f"{where}: gbuf format {attrs.get('version')} is not readable by this gbuf "
                        f"(reads {FORMAT_VERSION})")
    return attrs


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


# -- checksums and ranges (what a group records per frame) ----------------------------------------
def frame_checksum(frame: np.ndarray) -> int:
    """CRC-32 of one frame of a pack's raw little-endian bytes, as recorded in ``checksums``."""
    data = np.ascontiguousarray(frame.astype(frame.dtype.newbyteorder("<"), copy=False))
    return zlib.crc32(memoryview(data.reshape(-1)).cast("B"))  # the bytes in place: no copy


def frame_range(frame: np.ndarray) -> list:
    """[min, max] over the finite values of one frame of one buffer ([None, None] if none).

    Kept per frame in ``stats`` so loaders can apply whole-frame min-max normalisation
    (the official RDG loader's) to a crop without reading the frame.
    """
    values = frame[np.isfinite(frame)]
    if values.size == 0:
        return [None, None]
    return [float(values.min()), float(values.max())]


_ZERO_CHECKSUMS: dict[tuple[int, ...], int] = {}


def zero_checksum(shape: tuple[int, ...], dtype) -> int:
    """The checksum of an all-zero frame: a shard the codec never wrote (all fill value) reads as it."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size not in _ZERO_CHECKSUMS:
        crc, chunk = 0, bytes(min(size, 1 << 24))
        for start in range(0, size, len(chunk) or 1):
            crc = zlib.crc32(chunk[:min(len(chunk), size - start)], crc)
        _ZERO_CHECKSUMS[size] = crc
    return _ZERO_CHECKSUMS[size]


# -- names ----------------------------------------------------------------------------------------
#: Groups whose name starts with this are a writer's temporary nodes (a replacement being built);
#: readers never list them, and no user-given name may start with it.
HIDDEN_PREFIX = "."
#: Longest sequence or group name in UTF-8 bytes: names become folder names (and, with a suffix,
#: a writer's temporary names), and file systems stop at 255 bytes.
MAX_NAME_BYTES = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name, where: str, what: str = "group") -> str:
    """A sequence or group name, if it is one the format accepts (else a one-line ``GbufError``)."""
    if not isinstance(name, str) or not name:
        raise GbufError(f"{where}: {what} name must be a non-empty string, not {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise GbufError(f"{where}: {what} name {name!r} is not valid UTF-8 (names are folder names and "
                        f"JSON strings; rename it)") from None
    if size > MAX_NAME_BYTES:
        raise GbufError(f"{where}: {what} name is {size} bytes long; the most is {MAX_NAME_BYTES} "
                        f"(it becomes a folder name)")
    if ("/" in name or "\\" in name or name.startswith(HIDDEN_PREFIX) or name.startswith("__")
            or name != name.strip() or _CONTROL.search(name)):
        raise GbufError(f"{where}: invalid {what} name {name!r} (no '/' or '\\', no control characters, "
                        f"no leading '.' or '__', no leading or trailing space)")
    return name


def is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIX)


def replacement_name(group: str) -> str:
    """The temporary name under which a replacement of ``group`` is built (then swapped in)."""
    return f"{HIDDEN_PREFIX}{group}.new"


def retired_name(group: str) -> str:
    """The temporary name of a replaced group between the two renames of a swap."""
    return f"{HIDDEN_PREFIX}{group}.old"


# -- metadata validation ----------------------------------------------------------------------------
# Every reader and writer asks these before it uses a node's attrs, so a damaged or foreign store
# fails with one line naming the file and the field, never with a traceback further on.
IMAGE_ENCODINGS = ("linear", "srgb")


def _kind(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                         int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _bad(where: str, field: str, problem: str) -> GbufError:
    return GbufError(f"{where}: attributes.{ATTRS_KEY}{'.' + field if field else ''} {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Bounds of sizes in attrs: far beyond any real store, small enough that a damaged value is
#: refused here and not met later as an allocation of petabytes.
MAX_FRAMES = 10_000_000
MAX_SIDE = 1 << 20


def _positive_int(attrs: dict, key: str, where: str, *, required: bool = True, default=None,
                  most: int = MAX_FRAMES) -> int:
    if key not in attrs:
        if required:
            raise _bad(where, key, "is missing")
        return default
    value = attrs[key]
    if not _is_int(value) or not 1 <= value <= most:
        raise _bad(where, key, f"must be an integer from 1 to {most}, not {value!r}")
    return value


def check_sequence_attrs(attrs, where: str) -> dict:
    """A sequence group's gbuf attrs (``where`` names its zarr.json)."""
    if not isinstance(attrs, dict):
        raise _bad(where, "", f"must be an object, not {_kind(attrs)}")
    _positive_int(attrs, "num_frames", where)
    if attrs.get(CONTENT_CHECKS_KEY) is not None:
        check_content_checks(attrs[CONTENT_CHECKS_KEY], attrs["num_frames"], where)
    return attrs


#: The renderer's content checks of a sequence (gbuf.render.content_checks; docs/format.md,
#: "Content checks"): ``attrs["gbuf"][CONTENT_CHECKS_KEY]`` in the sequence group.
CONTENT_CHECKS_KEY = "content_checks"


def check_content_checks(value, frames: int, where: str) -> dict:
    """``{checked_frames, thresholds, frames: {check: [t...]}, no_motion, measures: {name: [v per frame]},
    warnings: [str]}``."""
    key = CONTENT_CHECKS_KEY
    if not isinstance(value, dict):
        raise _bad(where, key, f"must be an object, not {_kind(value)}")
    if value.get("checked_frames") != frames:
        raise _bad(where, f"{key}.checked_frames", f"must be the sequence's {frames} frames, "
                   f"not {value.get('checked_frames')!r}")
    warnings = value.get("warnings")
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise _bad(where, f"{key}.warnings", "must be a list of strings")
    flagged = value.get("frames")
    if not isinstance(flagged, dict):
        raise _bad(where, f"{key}.frames", f"must be an object, not {_kind(flagged)}")
    for name, ts in flagged.items():
        if not isinstance(ts, list) or not all(_is_int(t) and 0 <= t < frames for t in ts):
            raise _bad(where, f"{key}.frames.{name}", f"must be a list of frame indices 0..{frames - 1}")
    if value.get("no_motion") not in (None, True, False):
        raise _bad(where, f"{key}.no_motion", f"must be true, false or null, not {value.get('no_motion')!r}")
    measures = value.get("measures", {})
    if not isinstance(measures, dict):
        raise _bad(where, f"{key}.measures", f"must be an object, not {_kind(measures)}")
    for name, values in measures.items():
        if not isinstance(values, list) or len(values) != frames \
                or not all(v is None or _is_number(v) for v in values):
            raise _bad(where, f"{key}.measures.{name}", f"must list one number (or null) per frame ({frames})")
    return value


def pack_channels(buffers: dict) -> dict[str, int]:
    """Channels of each pack array, from a (validated) channel map."""
    out: dict[str, int] = {}
    for entry in buffers.values():
        out[entry["pack"]] = max(out.get(entry["pack"], 0), entry["channels"][1])
    return {pack: out[pack] for pack in PACKS if pack in out}


def check_resolution_attrs(attrs, where: str) -> dict:
    """A resolution group's gbuf attrs: sizes, channel map, checksums and stats (``where``: its zarr.json)."""
    if not isinstance(attrs, dict):
        raise _bad(where, "", f"must be an object, not {_kind(attrs)}")
    for key in ("height", "width"):
        _positive_int(attrs, key, where, most=MAX_SIDE)
    for key in ("num_frames", "frames_per_shard"):
        _positive_int(attrs, key, where)
    _positive_int(attrs, "scale", where, required=False, most=MAX_SIDE)
    frames = attrs["num_frames"]
    buffers = attrs.get("buffers")
    if not isinstance(buffers, dict) or not buffers:
        raise _bad(where, "buffers", f"must be a non-empty object, not {_kind(buffers)}")
    used: dict[str, list[tuple[int, int, str]]] = {}
    for name, entry in buffers.items():
        field = f"buffers.{name}"
        if name not in BUFFERS:
            raise _bad(where, field, f"is not a gbuf buffer (known: {', '.join(BUFFERS)})")
        spec = BUFFERS[name]
        if not isinstance(entry, dict):
            raise _bad(where, field, f"must be an object, not {_kind(entry)}")
        pack = entry.get("pack")
        if pack not in PACKS:
            raise _bad(where, f"{field}.pack", f"is {pack!r}, not one of {', '.join(PACKS)}")
        if entry.get("dtype") != spec.dtype or str(pack_dtype(pack)) != spec.dtype:
            raise _bad(where, f"{field}.dtype", f"is {entry.get('dtype')!r} in pack {pack!r}; {name} is {spec.dtype}")
        chans = entry.get("channels")
        if (not isinstance(chans, list) or len(chans) != 2 or not all(_is_int(c) for c in chans)
                or chans[0] < 0 or chans[1] - chans[0] != spec.channels):
            raise _bad(where, f"{field}.channels", f"must be [first, first + {spec.channels}], not {chans!r}")
        for lo, hi, other in used.get(pack, []):
            if chans[0] < hi and lo < chans[1]:
                raise _bad(where, f"{field}.channels", f"overlap those of {other} in pack {pack!r}")
        used.setdefault(pack, []).append((chans[0], chans[1], name))
    if "image" not in buffers:
        raise _bad(where, "buffers", "has no 'image' (every resolution group holds its image)")
    complete = attrs.get("complete", False)
    if not isinstance(complete, bool):
        raise _bad(where, "complete", f"must be true or false, not {complete!r}")
    if "image_encoding" in attrs and attrs["image_encoding"] not in IMAGE_ENCODINGS:
        raise _bad(where, "image_encoding", f"is {attrs['image_encoding']!r}, not one of {', '.join(IMAGE_ENCODINGS)}")
    shards = -(-frames // attrs["frames_per_shard"])
    committed = attrs.get("committed_shards", [])
    if not isinstance(committed, list) or not all(_is_int(k) and 0 <= k < shards for k in committed):
        raise _bad(where, "committed_shards", f"must be a list of shard numbers 0..{shards - 1}")
    check_checksums(attrs.get("checksums"), frames, set(used), where, "checksums", required=complete)
    check_stats(attrs.get("stats"), frames, set(buffers), where, "stats")
    return attrs


def check_checksums(value, frames: int, packs: set, where: str, field: str, *, required: bool = False,
                    in_attrs: bool = True) -> None:
    """``{pack: [crc32 or None per frame]}`` (every value set where ``required``)."""
    bad = _bad if in_attrs else _bad_field
    if value is None and not required:
        return
    if not isinstance(value, dict):
        raise bad(where, field, f"must be an object of per-frame lists, not {_kind(value)}")
    for pack, values in value.items():
        if pack not in packs:
            raise bad(where, f"{field}.{pack}", "names no pack of this group")
        if not isinstance(values, list) or len(values) != frames:
            raise bad(where, f"{field}.{pack}", f"must list one checksum per frame ({frames} frames), not "
                      + (f"{len(values)}" if isinstance(values, list) else _kind(values)))
        for t, v in enumerate(values):
            if not (v is None and not required) and not (_is_int(v) and 0 <= v < 2**32):
                raise bad(where, f"{field}.{pack}[{t}]", f"must be a CRC-32 (0 <= n < 2**32), not {v!r}")
    if required and set(value) != packs:
        raise bad(where, field, f"lacks pack(s) {', '.join(sorted(packs - set(value)))}")


def check_stats(value, frames: int, buffers: set, where: str, field: str, *, in_attrs: bool = True) -> None:
    """``{buffer: [[min, max] or None per frame]}`` with finite ``min <= max`` (or ``[None, None]``)."""
    bad = _bad if in_attrs else _bad_field
    if value is None:
        return
    if not isinstance(value, dict):
        raise bad(where, field, f"must be an object of per-frame lists, not {_kind(value)}")
    for name, values in value.items():
        if name not in buffers:
            raise bad(where, f"{field}.{name}", "names no buffer of this group")
        if not isinstance(values, list) or len(values) != frames:
            raise bad(where, f"{field}.{name}", f"must list one [min, max] per frame ({frames} frames), not "
                      + (f"{len(values)}" if isinstance(values, list) else _kind(values)))
        for t, v in enumerate(values):
            if v is None or v == [None, None]:
                continue
            if (not isinstance(v, list) or len(v) != 2 or not all(_is_number(x) and math.isfinite(x) for x in v)
                    or v[0] > v[1]):
                raise bad(where, f"{field}.{name}[{t}]", f"must be [min, max] with min <= max, not {v!r}")


def _bad_field(where: str, field: str, problem: str) -> GbufError:
    return GbufError(f"{where}: {field} {problem}")


def check_shard_marker(record, where: str, shard: int, frames_per_shard: int, num_frames: int,
                       packs: set, buffers: set) -> dict:
    """A writer's shard marker (``.gbuf/<sequence>/<group>/shards/<k>.json``) for shard ``shard``."""
    if not isinstance(record, dict):
        raise _bad_field(where, "marker", f"must be an object, not {_kind(record)}")
    first = shard * frames_per_shard
    count = min(frames_per_shard, num_frames - first)
    if record.get("first_frame") != first or record.get("num_frames") != count:
        raise _bad_field(where, "first_frame/num_frames",
                         f"must be {first}/{count} for shard {shard}, not "
                         f"{record.get('first_frame')!r}/{record.get('num_frames')!r}")
    check_checksums(record.get("checksums"), count, packs, where, "checksums", required=True, in_attrs=False)
    check_stats(record.get("stats", {}), count, buffers, where, "stats", in_attrs=False)
    return record


def check_array(where: str, pack: str, attrs: dict, shape, dtype, shards, fill_value=0) -> None:
    """A pack array's zarr metadata against its group's (validated) attrs (``where``: its zarr.json).

    The fill value must be 0: a shard file that is missing reads as the fill value, and
    readers tell a lost shard from real zeros by the recorded checksums.
    """
    chans = pack_channels(attrs["buffers"])[pack]
    want = (attrs["num_frames"], attrs["height"], attrs["width"], chans)
    if tuple(shape) != want:
        raise GbufError(f"{where}: shape {list(shape)} does not match the group's attrs (expected {list(want)}: "
                        f"num_frames, height, width, channels)")
    if np.dtype(dtype) != pack_dtype(pack):
        raise GbufError(f"{where}: data_type {dtype} is not {pack_dtype(pack)} (the dtype of pack {pack!r})")
    try:
        zero = fill_value is not None and float(fill_value) == 0.0
    except (TypeError, ValueError):
        zero = False
    if not zero:
        raise GbufError(f"{where}: fill_value is {fill_value!r}, not 0 (gbuf arrays are filled with 0)")
    if shards is not None and shards[0] != attrs["frames_per_shard"]:
        raise GbufError(f"{where}: shards hold {shards[0]} frames, but the group's attrs say frames_per_shard "
                        f"{attrs['frames_per_shard']}")


def check_node_document(doc, where: str) -> dict:
    """A ``zarr.json`` as parsed JSON: an object naming a Zarr v3 group or array (for diagnosing listings)."""
    if not isinstance(doc, dict):
        raise GbufError(f"{where}: must be a JSON object, not {_kind(doc)}")
    if doc.get("zarr_format") != 3:
        raise GbufError(f"{where}: zarr_format is {doc.get('zarr_format')!r}, not 3")
    if doc.get("node_type") not in ("group", "array"):
        raise GbufError(f"{where}: node_type is {doc.get('node_type')!r}, not 'group' or 'array'")
    if not isinstance(doc.get("attributes", {}), dict):
        raise GbufError(f"{where}: attributes must be an object, not {_kind(doc.get('attributes'))}")
    return doc


def check_splits(value, where: str, sequences=None) -> dict[str, list[str]]:
    """The root's ``splits`` attrs (``SPLITS_KEY``): ``{split: [sequence names]}``, every split of
    ``SPLITS`` present (empty lists allowed), no name twice. ``sequences``: the store's sequence
    names, which every listed name must be one of (None: not checked). ``{}`` for ``None``
    (a store without splits)."""
    field = SPLITS_KEY
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, field, f"must be an object, not {_kind(value)}")
    unknown = sorted(set(value) - set(SPLITS))
    if unknown:
        raise _bad(where, f"{field}.{unknown[0]}", f"is not a split (splits: {', '.join(SPLITS)})")
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        names = value.get(split)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _bad(where, f"{field}.{split}", f"must be a list of sequence names, not {_kind(names)}")
        for name in names:
            if name in seen:
                raise _bad(where, f"{field}.{split}", f"lists {name!r}, which is already in {seen[name]} "
                                                      f"(a sequence belongs to one split)")
            seen[name] = split
            if sequences is not None and name not in sequences:
                raise _bad(where, f"{field}.{split}", f"lists {name!r}, which is not a sequence of the store")
        out[split] = list(names)
    return out


def check_spec_record(value, where: str) -> dict | None:
    """The root's ``dataset_spec`` attrs (``SPEC_KEY``), if any: ``sha256`` (hex string) and
    ``sequences`` (an object: name -> what made it); None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(where, SPEC_KEY, f"must be an object, not {_kind(value)}")
    digest = value.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise _bad(where, f"{SPEC_KEY}.sha256", f"must be a hex SHA-256, not {digest!r}")
    if not isinstance(value.get("sequences"), dict):
        raise _bad(where, f"{SPEC_KEY}.sequences", f"must be an object, not {_kind(value.get('sequences'))}")
    return value
