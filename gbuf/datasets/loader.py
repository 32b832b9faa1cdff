"""PyTorch datasets over gbuf stores: random spatio-temporal crops, and whole sequences.

Both yield flat dicts of float32 tensors shaped ``(T, C, H, W)``: LR buffers under
their names (``image``, ``depth``, ...) and HR buffers under ``hr_<name>``
(``hr_image`` is the target), so a DataLoader batch is ``(B, T, C, H, W)`` per key,
the layout every gbuf model takes.

The store is opened lazily in each process (nothing zarr-related is pickled), so
the datasets work in DataLoader workers under any start method.

``patch`` is the HR patch side everywhere (``CropDataset(patch=)``, ``gbuf train
--patch``, ``data.patch``, the official ``gt_size``); the LR patch is ``patch /
scale`` of the LR group, so ``patch`` must be a multiple of that scale.

Normalisation ``"rdg"`` reproduces the official RDG loader: image display-referred
in [0, 1] (a linear store is clipped and sRGB-encoded), normal ``(n + 1) / 2``, BRDF
and depth min-max normalised per whole frame (using the per-frame ranges kept in
the store's attrs, so a crop is normalised exactly as the whole frame would be),
motion in pixels with y down (the store's convention already). Depth background
(+inf) maps to 1, the far end, and the surfaces keep the whole [0, 1] range. This is the
default (``gbuf train``'s ``data.normalize``, and what a checkpoint without a saved config is
evaluated with): it equals the official loader on every frame without background, and where
sky is visible it keeps the depth of the surfaces instead of crushing it to about 0.

Normalisation ``"rdg-official"`` is the official loader's formula to the letter: it reads
the raw Depth EXR, where Blender writes the background as 1e10, and min-max normalises over
the whole file, so in a frame where any background is visible the range is [nearest surface,
1e10]: the background becomes 1 and every surface about 0 (a surface 100 m away: 1e-8).
Frames without background come out as with ``"rdg"``; image, normal, BRDF and motion are
``"rdg"``'s. Whether a whole frame holds background is read once per frame and kept (a crop
alone cannot tell).
"""

from __future__ import annotations

import os

import numpy as np

from gbuf.datasets import format as fmt
from gbuf.datasets import store as _store
from gbuf.datasets.colour import srgb_encode
from gbuf.errors import GbufError

NORMALISATIONS = (None, "rdg", "rdg-official")
#: The normalisations that feed RDG's domain: display-referred images, G-buffers in [0, 1].
RDG_NORMALISATIONS = ("rdg", "rdg-official")
#: Blender's depth where no surface is seen, as the official loader reads it from the EXR.
BLENDER_BACKGROUND_DEPTH = 1e10
_MIN_MAX = ("depth", "brdf", "emission", "diffuse_color", "glossy_color")


def normalise_rdg(buffer: str, data: np.ndarray, ranges, image_encoding: str, background=None) -> np.ndarray:
    """Apply the RDG normalisation to ``data`` (T, H, W, C) of one buffer.

    ``ranges``: each whole frame's finite ``[min, max]`` (None: taken from ``data``).
    ``background`` (depth only): one bool per frame, True where the whole frame holds
    background; given, those frames are normalised as ``"rdg-official"`` (range up to 1e10).
    """
    data = data.astype(np.float32, copy=False)
    if buffer == "image":
        return data if image_encoding == "srgb" else srgb_encode(data)
    if buffer == "normal":
        return (data + 1.0) * 0.5
    if buffer in _MIN_MAX:
        out = np.empty_like(data)
        for i, frame in enumerate(data):
            known = ranges is not None and ranges[i] is not None and ranges[i][0] is not None
            lo, hi = ranges[i] if known else _finite_range(frame)
            if background is not None and buffer == "depth" and background[i]:
                out[i] = _official_depth(frame, lo if known or np.isfinite(frame).any() else None)
                continue
            span = hi - lo if hi > lo else 1.0
            norm = (frame - lo) / span
            out[i] = np.where(np.isfinite(frame), norm, 1.0)
        return out
    return data


def _official_depth(frame: np.ndarray, nearest: float | None) -> np.ndarray:
    """The official loader's depth of a frame with background: ``(d - min) / (max - min)`` over
    the raw values, background as 1e10, in float32 as the EXR is read. ``nearest``: the frame's
    nearest surface (None: the frame is all background; 0 there, where the official code
    divides 0 by 0)."""
    background = np.float32(BLENDER_BACKGROUND_DEPTH)
    raw = np.where(np.isfinite(frame), frame, background)
    if nearest is None:
        return np.zeros_like(raw)
    lo = np.float32(nearest)
    return (raw - lo) / (background - lo)


def _finite_range(frame: np.ndarray) -> tuple[float, float]:
    values = frame[np.isfinite(frame)]
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


class _StoreBacked:
    """Opens the store on first use in each process; drops the handle when pickled."""

    def __init__(self, path, storage_options=None):
        self.path = str(path)
        self.storage_options = storage_options
        self._ds = None
        self._pid = None
        #: ``rdg-official``: (group, frame) -> whether that whole depth frame sees background.
        self._background: dict = {}

    @property
    def ds(self):
        if self._ds is None or self._pid != os.getpid():
            self._ds = _store.open(self.path, mode="r", storage_options=self.storage_options)
            self._pid = os.getpid()
        return self._ds

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None
        state["_pid"] = None
        return state


def _check_buffers(res, buffers, role):
    missing = [b for b in buffers if b not in res.buffers]
    if missing:
        raise GbufError(f"{res.where}: {role} group lacks buffer(s) {', '.join(missing)} "
                        f"(has: {', '.join(res.buffers)})")


def _to_tensors(arrays: dict[str, np.ndarray], prefix: str = "") -> dict:
    import torch

    # (T, H, W, C) -> (T, C, H, W), float32, contiguous
    return {prefix + k: torch.from_numpy(np.ascontiguousarray(v.transpose(0, 3, 1, 2), dtype=np.float32))
            for k, v in arrays.items()}


def frames_with_background(res, t: slice, cache: dict) -> list[bool]:
    """For each frame of ``t``: does the whole depth frame of ``res`` see background (+inf)?

    Read once per frame (the whole frame: a crop cannot tell) and kept in ``cache``.
    """
    frames = range(*t.indices(res.num_frames))
    missing = [f for f in frames if (res.where, f) not in cache]
    if missing:
        first, last = missing[0], missing[-1] + 1
        depth = res.read("depth", t=slice(first, last))
        for f in range(first, last):
            cache[(res.where, f)] = not bool(np.isfinite(depth[f - first]).all())
    return [cache[(res.where, f)] for f in frames]


def _read(res, buffers, t, y, x, normalize, background_cache: dict | None = None):
    data = res.read_many(buffers, t=t, y=y, x=x)
    if normalize in RDG_NORMALISATIONS:
        stats = res.frame_stats() if any(b in _MIN_MAX for b in buffers) else {}
        enc = res.attrs.get("image_encoding", "linear")
        background = None
        if normalize == "rdg-official" and "depth" in buffers:
            background = frames_with_background(res, t, {} if background_cache is None else background_cache)
        for b in buffers:
            ranges = stats.get(b, [None] * res.planned_frames)[t] if b in stats else None
            data[b] = normalise_rdg(b, data[b], ranges, enc, background)
    return data


class CropDataset(_StoreBacked):
    """Random crops of ``frames`` consecutive frames: an LR patch and its pixel-aligned HR patch.

    ``patch`` is the side of the HR patch in pixels (as ``gbuf train --patch``); the
    LR patch is ``patch / scale``, where ``scale`` is the LR group's (``patch`` must be
    a multiple of it). With ``hr_buffers=()`` only the LR patch is read, still sized
    ``patch / scale``.

    Item ``i`` is a pure function of ``(seed, i)``, so the data order is reproducible
    and a resumed training run sees exactly the crops it would have seen.

    ``cache=True`` reads each sequence's buffers whole on first use (in each process) and
    crops from memory: the same items, without decoding chunks for every crop. It holds the
    whole training split in memory (``gbuf dataset info`` tells its size): for small stores.
    """

    def __init__(self, path, *, frames: int = 15, patch: int = 256, lr_group: str = fmt.LR,
                 lr_buffers=fmt.RDG_BUFFERS, hr_buffers=("image",), normalize: str | None = None,
                 length: int = 1000, seed: int = 0, sequences=None, storage_options=None,
                 cache: bool = False):
        super().__init__(path, storage_options)
        self.cache = bool(cache)
        self._memory: dict = {}
        if normalize not in NORMALISATIONS:
            raise GbufError(f"unknown normalisation {normalize!r}; known: {NORMALISATIONS}")
        if frames < 1 or patch < 1:
            raise GbufError(f"{path}: frames and patch must be >= 1")
        self.frames, self.patch, self.lr_group = int(frames), int(patch), lr_group
        self.lr_buffers, self.hr_buffers = list(lr_buffers), list(hr_buffers)
        self.normalize, self.length, self.seed = normalize, int(length), int(seed)
        self.sequences = self._usable(sequences)

    def _usable(self, wanted) -> list[str]:
        names = list(wanted) if wanted else self.ds.sequences
        usable = []
        lr_patches = set()
        for name in names:
            seq = self.ds[name]
            lr = seq[self.lr_group]
            _check_buffers(lr, self.lr_buffers, self.lr_group)
            if self.hr_buffers:
                _check_buffers(seq[fmt.HR], self.hr_buffers, fmt.HR)
            p = self._lr_patch(lr)
            lr_patches.add(p)
            # Frames complete in both groups: an interrupted HR group may have fewer than its LR group.
            frames = min(lr.num_frames, seq[fmt.HR].num_frames) if self.hr_buffers else lr.num_frames
            if frames >= self.frames and lr.height >= p and lr.width >= p:
                usable.append(name)
        if not usable:
            sizes = " or ".join(f"{p}x{p}" for p in sorted(lr_patches))
            raise GbufError(f"{self.path}: no sequence has {self.frames} frames of at least {sizes} "
                            f"(HR patch {self.patch}) in group {self.lr_group!r}")
        return usable

    def _lr_patch(self, lr) -> int:
        """The LR patch side in ``lr``'s pixels: the HR patch / the group's scale."""
        if self.patch % lr.scale:
            raise GbufError(f"{lr.where}: patch {self.patch} (HR pixels) is not a multiple of the group's "
                            f"scale {lr.scale}")
        return self.patch // lr.scale

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):
        state = super().__getstate__()
        state["_memory"] = {}
        return state

    def crop_at(self, index: int) -> tuple[str, int, int, int]:
        """(sequence, first frame, LR top, LR left) of item ``index``."""
        rng = np.random.default_rng([self.seed, int(index)])
        name = self.sequences[int(rng.integers(len(self.sequences)))]
        lr = self.ds[name][self.lr_group]
        frames = min(lr.num_frames, self.ds[name][fmt.HR].num_frames) if self.hr_buffers else lr.num_frames
        p = self._lr_patch(lr)
        t0 = int(rng.integers(frames - self.frames + 1))
        y0 = int(rng.integers(lr.height - p + 1))
        x0 = int(rng.integers(lr.width - p + 1))
        return name, t0, y0, x0

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        name, t0, y0, x0 = self.crop_at(index)
        seq = self.ds[name]
        lr = seq[self.lr_group]
        t = slice(t0, t0 + self.frames)
        p = self._lr_patch(lr)
        out = _to_tensors(self._crop(lr, self.lr_buffers, t, slice(y0, y0 + p), slice(x0, x0 + p)))
        if self.hr_buffers:
            s = lr.scale
            hr = seq[fmt.HR]
            hr_data = self._crop(hr, self.hr_buffers, t, slice(y0 * s, (y0 + p) * s), slice(x0 * s, (x0 + p) * s))
            out.update(_to_tensors(hr_data, fmt.HR_PREFIX))
        return out

    def _crop(self, res, buffers, t: slice, y: slice, x: slice) -> dict[str, np.ndarray]:
        if not self.cache:
            return _read(res, buffers, t, y, x, self.normalize, self._background)
        # The normalisations are per pixel with per-frame constants (ranges, background), so a
        # crop of the normalised frames is the normalised crop, value for value.
        key = (os.getpid(), res.where)  # a DataLoader worker fills its own
        if key not in self._memory:
            self._memory[key] = _read(res, buffers, slice(0, res.num_frames), slice(None), slice(None),
                                      self.normalize, self._background)
        return {b: self._memory[key][b][t, y, x] for b in buffers}


class SequenceDataset(_StoreBacked):
    """Whole frames of each sequence, in segments of ``segment_frames`` (for evaluation).

    Item: the tensors plus ``sequence`` (name) and ``first_frame``. Recurrent models
    reset their state at each segment, as the official test does.
    """

    def __init__(self, path, *, lr_group: str = fmt.LR, lr_buffers=fmt.RDG_BUFFERS, hr_buffers=("image",),
                 normalize: str | None = None, segment_frames: int = 100, sequences=None,
                 storage_options=None):
        super().__init__(path, storage_options)
        if normalize not in NORMALISATIONS:
            raise GbufError(f"unknown normalisation {normalize!r}; known: {NORMALISATIONS}")
        if segment_frames < 1:
            raise GbufError("segment_frames must be >= 1")
        self.lr_group, self.normalize = lr_group, normalize
        self.lr_buffers, self.hr_buffers = list(lr_buffers), list(hr_buffers)
        self.segment_frames = int(segment_frames)
        names = list(sequences) if sequences else self.ds.sequences
        self.items: list[tuple[str, int, int]] = []
        for name in names:
            seq = self.ds[name]
            lr = seq[lr_group]
            _check_buffers(lr, self.lr_buffers, lr_group)
            n = lr.num_frames
            if self.hr_buffers:
                _check_buffers(seq[fmt.HR], self.hr_buffers, fmt.HR)
                n = min(n, seq[fmt.HR].num_frames)
            if n == 0:
                raise GbufError(f"{path}: sequence {name!r} has no complete frame")
            for first in range(0, n, self.segment_frames):
                self.items.append((name, first, min(first + self.segment_frames, n)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, first, last = self.items[index]
        seq = self.ds[name]
        t = slice(first, last)
        out = _to_tensors(_read(seq[self.lr_group], self.lr_buffers, t, slice(None), slice(None), self.normalize,
                                self._background))
        if self.hr_buffers:
            out.update(_to_tensors(_read(seq[fmt.HR], self.hr_buffers, t, slice(None), slice(None),
                                         self.normalize, self._background), fmt.HR_PREFIX))
        out["sequence"] = name
        out["first_frame"] = first
        return out
