"""Reading Blender's multilayer EXR with the OpenEXR package (no bpy here).

Blender writes one part per pass, channels named ``<view layer>.<pass>.<channel>``
(``ViewLayer.Vector.X``); the OpenEXR package groups R, G, B(, A) channels into
one ``(H, W, C)`` array named ``<view layer>.<pass>``. ``read_layers`` hides both:
it returns every pass of one view layer as ``(H, W, C)`` float32, channels in
their natural order (RGBA, XYZW).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gbuf.errors import GbufError

_CHANNEL_ORDER = {"R": 0, "G": 1, "B": 2, "A": 3, "X": 0, "Y": 1, "Z": 2, "W": 3, "U": 0, "V": 1}


def read_layers(path, view_layer: str) -> dict[str, np.ndarray]:
    """``{pass name: (H, W, C) float32}`` for every pass of ``view_layer`` in the EXR at ``path``."""
    import OpenEXR

    p = Path(path)
    prefix = view_layer + "."
    singles: dict[str, np.ndarray] = {}
    split: dict[str, dict[str, np.ndarray]] = {}
    try:
        with OpenEXR.File(str(p), separate_channels=False) as exr:
            for part in exr.parts:
                for name, channel in part.channels.items():
                    if not name.startswith(prefix):
                        continue
                    rest = name[len(prefix):]
                    pixels = np.asarray(channel.pixels)
                    if pixels.ndim == 3:          # grouped RGB(A)
                        singles[rest] = pixels
                        continue
                    layer, _, chan = rest.rpartition(".")
                    if not layer or chan not in _CHANNEL_ORDER:
                        singles[rest] = pixels[..., None]
                        continue
                    split.setdefault(layer, {})[chan] = pixels
    except GbufError:
        raise
    except Exception as err:  # noqa: BLE001  (OpenEXR raises plain exceptions for unreadable files)
        raise GbufError(f"{p}: cannot read the rendered EXR ({err})") from None
    layers = {name: np.asarray(a, dtype=np.float32) for name, a in singles.items()}
    for layer, chans in split.items():
        order = sorted(chans, key=_CHANNEL_ORDER.__getitem__)
        layers[layer] = np.stack([chans[c] for c in order], axis=-1).astype(np.float32, copy=False)
    if not layers:
        raise GbufError(f"{p}: the rendered EXR holds no pass of view layer {view_layer!r}")
    return layers
