"""The gbuf dataset format and its tools: open, write, verify, load, convert.

Names are resolved lazily (PEP 562) so ``import gbuf.datasets`` stays cheap and
never loads torch; the crop loaders import torch when first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "open": "gbuf.datasets.store",
    "Dataset": "gbuf.datasets.store",
    "Sequence": "gbuf.datasets.store",
    "Resolution": "gbuf.datasets.store",
    "SequenceWriter": "gbuf.datasets.writer",
    "consolidate": "gbuf.datasets.writer",
    "verify": "gbuf.datasets.integrity",
    "info": "gbuf.datasets.summary",
    "CropDataset": "gbuf.datasets.loader",
    "SequenceDataset": "gbuf.datasets.loader",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gbuf.datasets' has no attribute {name!r}")
