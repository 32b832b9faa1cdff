"""Find, describe and build the procedural scene recipes (the ``gbuf.scenes`` package).

Listing and describing read the recipe files' source (their ``DESCRIPTION`` and
``SEED_VARIES`` constants) without importing them, so ``gbuf scene list`` and
``gbuf scene show`` never load ``bpy``.
Building imports ``bpy``, empties the session, runs the recipe and saves a .blend.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
from pathlib import Path

from gbuf.errors import GbufError, error_line

PACKAGE = "gbuf.scenes"
DEFAULT = "default"


def _folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GbufError(f"{PACKAGE}: the scene recipes are not installed with gbuf")
    return Path(list(spec.submodule_search_locations)[0])


def names() -> list[str]:
    """Recipe names, sorted (``default`` first); helper modules (``_name.py``) are not recipes."""
    found = sorted(p.stem for p in _folder().glob("*.py") if not p.stem.startswith("_"))
    return sorted(found, key=lambda n: (n != DEFAULT, n))


def _path(name: str) -> Path:
    known = names()
    if name not in known:
        raise GbufError(f"{name}: unknown scene recipe; known: {', '.join(known)}")
    return _folder() / f"{name}.py"


def _constants(name: str) -> dict[str, str]:
    """The recipe's module-level string constants, read from its source without importing it."""
    path = _path(name)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = statement.value.value
    return found


def describe(name: str) -> str:
    """The recipe's one-line ``DESCRIPTION``, read from its source without importing it."""
    found = _constants(name)
    if "DESCRIPTION" not in found:
        raise GbufError(f"{_path(name)}: recipe has no DESCRIPTION string")
    return found["DESCRIPTION"]


@dataclasses.dataclass(frozen=True)
class RecipeInfo:
    name: str
    description: str         # one line: what the scene holds
    seed_varies: str         # what a different --seed changes
    path: Path


def info(name: str) -> RecipeInfo:
    """Name, description and what the seed varies (``SEED_VARIES``), without importing the recipe."""
    found = _constants(name)
    if "SEED_VARIES" not in found:
        raise GbufError(f"{_path(name)}: recipe has no SEED_VARIES string (what its seed changes)")
    return RecipeInfo(name, describe(name), found["SEED_VARIES"], _path(name))


def build(name: str, *, seed: int = 0, frames: int | None = None) -> None:
    """Build recipe ``name`` into the current bpy session, replacing whatever was loaded."""
    path = _path(name)
    if frames is not None and frames < 1:
        raise GbufError(f"{name}: frames must be at least 1, got {frames}")
    import bpy

    module = importlib.import_module(f"{PACKAGE}.{name}")
    if not callable(getattr(module, "build", None)):
        raise GbufError(f"{path}: recipe has no build(seed, frames) function")
    # A factory-fresh, empty file: nothing from an earlier build or the user's startup file leaks in.
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if frames is None:
        module.build(seed=seed)
    else:
        module.build(seed=seed, frames=frames)
    scene = bpy.context.scene
    scene["gbuf_recipe"] = name
    scene["gbuf_seed"] = int(seed)


def build_blend(name: str, out_path, *, seed: int = 0, frames: int | None = None) -> Path:
    """Build recipe ``name`` and save it as a .blend at ``out_path``; returns the path."""
    out = Path(out_path)
    if out.suffix.lower() != ".blend":
        raise GbufError(f"{out}: output must be a .blend file")
    if not out.parent.is_dir():
        what = "is a file, not a folder" if out.parent.exists() else "does not exist"
        raise GbufError(f"{out}: folder {out.parent} {what}")
    if not os.access(out.parent, os.W_OK):
        raise GbufError(f"{out}: folder {out.parent} is not writable (Permission denied)")
    if out.is_dir():
        raise GbufError(f"{out}: is a folder, not a .blend file")
    build(name, seed=seed, frames=frames)
    import bpy

    # Write beside the target, then rename: an interrupted save never leaves half a .blend.
    partial = out.with_name(out.name + ".partial.blend")
    from gbuf.render.blend import native_output_to

    try:
        with native_output_to():  # Blender prints "Info: Saved copy as ..." from C
            bpy.ops.wm.save_as_mainfile(filepath=str(partial.resolve()), compress=True, check_existing=False,
                                        copy=True)
        partial.replace(out)
    except (RuntimeError, OSError) as err:  # a full disk, a folder made read-only meanwhile
        partial.unlink(missing_ok=True)
        raise GbufError(f"{out}: cannot write it ({error_line(err, last=True)})") from None
    return out
