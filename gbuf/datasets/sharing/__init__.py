"""``push(store, url)`` and ``pull(url, store)``: publish and fetch gbuf stores over fsspec.

A pushed store carries a manifest, ``gbuf-manifest.json`` at its root: every file's
relative path, size and SHA-256, and the dataset's identity. Push writes it last, so a
destination without it is an unfinished push, and pull refuses it. Every byte is read
once and hashed once on each side, while it is in memory.

One idea per module:

* ``manifest``: the manifest's format and its checks (also read by
  ``gbuf.datasets.remote_store``'s shard cache);
* ``local``: listing a local store, copying and hashing its files, the hash cache in
  ``<store>/.gbuf/``, the store's identity;
* ``transport``: fsspec helpers, parallel transfers, one-line errors, progress;
* ``pushing``: ``push`` (and ``inspect_destination``, push's first reads);
* ``pulling``: ``pull``.

Names are resolved lazily (PEP 562): ``remote_store`` reads ``sharing.manifest``
without loading push and pull, which themselves use ``remote_store``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "push": "pushing",
    "PushResult": "pushing",
    "inspect_destination": "pushing",
    "DestinationState": "pushing",
    "pull": "pulling",
    "PullResult": "pulling",
    "Manifest": "manifest",
    "Entry": "manifest",
    "check_manifest": "manifest",
    "safe_relpath": "manifest",
    "sha256": "manifest",
    "MANIFEST": "manifest",
    "JOURNAL": "manifest",
    "dataset_id": "local",
    "CACHE_FILE": "local",
    "ID_FILE": "local",
    "CARD": "local",
    "Progress": "transport",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
