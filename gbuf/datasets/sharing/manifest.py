"""The push manifest, ``gbuf-manifest.json``: what a pushed store holds, file by file.

A pushed store carries it at its root: every file's relative path, size and SHA-256,
and the dataset's identity. Push writes it last, so a destination without it is an
unfinished push. The push journal (``gbuf-manifest.partial.json``, the files an
interrupted push finished) has the same form. Pull, and the shard cache of
``gbuf.datasets.remote_store``, trust a file only when it matches its entry here.

On disk (JSON)::

    {"format": "gbuf-manifest", "version": 1, "hash": "sha256", "dataset_id": "...",
     "files": {"<relative path>": {"size": <bytes>, "sha256": "<64 hex digits>"}, ...},
     "total_bytes": <sum of the sizes>}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import PurePosixPath

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError

MANIFEST = "gbuf-manifest.json"
JOURNAL = "gbuf-manifest.partial.json"
FORMAT = "gbuf-manifest"
VERSION = 1
#: Files at a store's root that are not store content (never listed in a manifest).
NOT_CONTENT = frozenset({MANIFEST, JOURNAL})


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One file of a manifest: its size and the SHA-256 of its bytes."""

    size: int
    sha256: str


@dataclasses.dataclass
class Manifest:
    """A manifest (or a push journal) in memory: the dataset's id and its files by relative path."""

    dataset_id: str | None
    files: dict[str, Entry] = dataclasses.field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "hash": "sha256", "dataset_id": self.dataset_id,
                "files": {rel: {"size": e.size, "sha256": e.sha256} for rel, e in sorted(self.files.items())},
                "total_bytes": self.total_bytes}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data, where: str) -> "Manifest":
        """Check a parsed manifest (``check_manifest``) and return it."""
        check_manifest(data, where)
        return cls(dataset_id=data.get("dataset_id"),
                   files={rel: Entry(e["size"], e["sha256"]) for rel, e in data["files"].items()})

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> "Manifest":
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise GbufError(f"{where}: not valid JSON") from None
        return cls.from_json(data, where)


def check_manifest(manifest, where: str) -> dict:
    """Refuse a manifest that is malformed or names paths outside the store."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GbufError(f"{where}: not a gbuf manifest")
    version = manifest.get("version")
    if type(version) is not int or not 1 <= version <= VERSION:
        # A newer gbuf's manifest may mean something this one cannot check: refused, not guessed.
        raise GbufError(f"{where}: manifest version {version!r}; this gbuf reads version {VERSION} "
                        f"(a newer gbuf wrote it? upgrade gbuf)")
    if manifest.get("hash", "sha256") != "sha256":
        raise GbufError(f"{where}: manifest hash {manifest.get('hash')!r}; this gbuf checks sha256 only")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise GbufError(f"{where}: manifest has no file list")
    for rel, entry in files.items():
        safe_relpath(rel, where)
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise GbufError(f"{where}: manifest entry for {rel!r} lacks a size or sha256")
    return manifest


def safe_relpath(rel, where: str) -> str:
    """A manifest path must stay inside the store: relative, no ``..``, no drive, no backslash."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or ":" in rel:
        raise GbufError(f"{where}: manifest names an unsafe path {rel!r}; refused")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise GbufError(f"{where}: manifest names a path outside the store {rel!r}; refused")
    if p.parts[0] == fmt.STATE_DIR or rel in NOT_CONTENT:
        raise GbufError(f"{where}: manifest names a reserved path {rel!r}; refused")
    return rel
