"""Equal settings, equal bytes: what docs/rendering.md ("Reproducibility") promises.

Each build and render runs in its own process, as two ``make demo`` runs would: the
nondeterminism this guards against (bmesh rebuilding faces in pointer-hash order) only
shows between processes, whose heap addresses differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")

import gbuf.datasets as gd

#: Prints a digest of every object of the default recipe: transform, mesh elements in order, keys.
_DIGEST = r"""
import hashlib, numpy as np, bpy
from gbuf.render import recipes
recipes.build("default", seed=0, frames=2)
for ob in sorted(bpy.data.objects, key=lambda o: o.name):
    h = hashlib.sha256(np.array(ob.matrix_world, np.float64).tobytes())
    if ob.type == "MESH":
        me = ob.data
        for seq, attr, n, dtype in ((me.vertices, "co", 3, np.float32), (me.loops, "vertex_index", 1, np.int32),
                                    (me.polygons, "loop_start", 1, np.int32),
                                    (me.polygons, "material_index", 1, np.int32),
                                    (me.edges, "vertices", 2, np.int32)):
            a = np.zeros(len(seq) * n, dtype)
            seq.foreach_get(attr, a)
            h.update(a.tobytes())
    print("DIGEST", ob.name, h.hexdigest())
"""


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return "\n".join(line for line in proc.stdout.splitlines() if line.startswith("DIGEST "))


def test_the_default_recipe_builds_the_same_meshes_in_every_process():
    first, second = _python(_DIGEST), _python(_DIGEST)
    assert first.count("\n") >= 4, first
    assert first == second, "the default recipe built different meshes (element order) in two processes"


def _store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store; the root's creation time, the one field allowed to differ, blanked."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "zarr.json" and path.parent == root:
            meta = json.loads(data)
            meta["attributes"]["gbuf"]["created"] = None
            data = json.dumps(meta, sort_keys=True).encode()
        out[str(path.relative_to(root))] = data
    return out


@pytest.mark.slow
def test_two_renders_with_equal_settings_give_the_same_store_bytes(tmp_path, gbuf_cli):
    # The demo's command at a tiny size: default recipe, denoised (OIDN), every default buffer.
    args = ["render", "--resolution", "64x36", "--scale", "4", "--frames", "1:2", "--samples", "4", "--quiet"]
    stores = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    for store in stores:
        gbuf_cli(*args, "-o", store, check=True, timeout=300)
    a, b = (_store_files(s) for s in stores)
    assert a.keys() == b.keys()
    assert len(a) > 6, sorted(a)
    # Name the buffer and frame first, for a readable failure; then the bytes of every file.
    sa, sb = gd.open(stores[0])["default"], gd.open(stores[1])["default"]
    for group in ("hr", "lr"):
        for name in sa[group].buffers:
            x, y = sa[group].read(name), sb[group].read(name)
            for t in range(x.shape[0]):
                assert np.array_equal(x[t], y[t], equal_nan=True), \
                    f"{group}/{name} frame {t}: {int((x[t] != y[t]).sum())} values differ between equal renders"
    different = [key for key in a if a[key] != b[key]]
    assert not different, f"store files differ between two equal renders: {different}"
