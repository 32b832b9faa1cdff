"""Degradation: LR groups (and folders) made from HR the way the SR literature does.

- ``bicubic``: MATLAB-compatible ``imresize`` (the "BI" LR of most papers);
- ``gaussian``: the BD degradation (Gaussian blur, then every scale-th pixel),
  BasicVSR/MATLAB or DUF variant;
- ``realworld``: Real-ESRGAN's second-order pipeline with RealBasicVSR's clip rules.

Entry points: :func:`degrade_store` and :func:`degrade_folder` (``gbuf degrade``).
Names resolve lazily, so importing this package loads neither torch nor PyAV.
See ``docs/degrade.md``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "degrade_store": "gbuf.datasets.degrade.api",
    "degrade_folder": "gbuf.datasets.degrade.api",
    "METHODS": "gbuf.datasets.degrade.api",
    "imresize": "gbuf.datasets.degrade.bicubic",
    "imresize_hwc": "gbuf.datasets.degrade.bicubic",
    "bd_downsample": "gbuf.datasets.degrade.blur",
    "sample_plan": "gbuf.datasets.degrade.realworld",
    "degrade_clip": "gbuf.datasets.degrade.realworld",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gbuf.datasets.degrade' has no attribute {name!r}")
