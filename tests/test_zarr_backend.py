"""The codec pipeline switch: zarrs by default, GBUF_ZARRS=0 for zarr-python, one warning without zarrs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gbuf.datasets import zarr_backend

PROBE = """
import json, sys, warnings
{prelude}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import gbuf.datasets as gd
    from gbuf.datasets import zarr_backend
    ds = gd.open(sys.argv[1])
    seq = ds[ds.sequences[0]]
    data = seq["lr"].read("depth")
    zarr_backend.zarr()
import zarr
print(json.dumps({{"pipeline": zarr_backend.pipeline(), "config": zarr.config.get("codec_pipeline.path"),
                  "sum": float(data.sum()),
                  "warnings": [str(w.message) for w in caught if "zarrs" in str(w.message)]}}))
"""


def _probe(store, env_value=None, hide_zarrs=False):
    prelude = "sys.modules['zarrs'] = None" if hide_zarrs else ""
    env = {k: v for k, v in __import__("os").environ.items() if k != zarr_backend.ENV}
    if env_value is not None:
        env[zarr_backend.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude), str(store)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from gbuf.datasets.writer import SequenceWriter

    store = tmp_path_factory.mktemp("zb") / "s.zarr"
    rng = np.random.default_rng(3)
    with SequenceWriter(store, "clip", 5, {"hr": (32, 48, ["image"]), "lr": (8, 12, ["image", "depth"])},
                        frames_per_shard=2) as w:
        for _ in range(5):
            w.append({"hr": {"image": rng.random((32, 48, 3), dtype=np.float32)},
                      "lr": {"image": rng.random((8, 12, 3), dtype=np.float32),
                             "depth": rng.random((8, 12, 1), dtype=np.float32) * 10}})
    return store


def test_zarrs_is_the_default_and_reads_the_same_data_as_zarr_python(small_store):
    pytest.importorskip("zarrs", reason="zarrs not installed")
    on = _probe(small_store)
    off = _probe(small_store, env_value="0")
    assert on["pipeline"] == "zarrs" and on["config"] == zarr_backend.ZARRS_PIPELINE
    assert off["pipeline"] == "zarr-python" and off["config"] == zarr_backend.PYTHON_PIPELINE
    assert on["warnings"] == [] and off["warnings"] == []
    assert on["sum"] == off["sum"] != 0


def test_without_zarrs_one_warning_and_the_python_pipeline(small_store):
    missing = _probe(small_store, hide_zarrs=True)
    assert missing["pipeline"] == "zarr-python"
    assert len(missing["warnings"]) == 1 and "zarrs is not installed" in missing["warnings"][0]
    # The data does not depend on the pipeline.
    assert missing["sum"] == _probe(small_store, env_value="off")["sum"]


def test_both_pipelines_read_every_buffer_identically(small_store):
    pytest.importorskip("zarrs", reason="zarrs not installed")
    import gbuf.datasets as gd

    zarr = zarr_backend.zarr()
    reads = {}
    try:
        for path in (zarr_backend.ZARRS_PIPELINE, zarr_backend.PYTHON_PIPELINE):
            zarr.config.set({"codec_pipeline.path": path})
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # neither pipeline may fall back or complain here
                seq = gd.open(small_store)["clip"]
                reads[path] = {(g, b): seq[g].read(b, t=slice(1, 4), y=slice(1, 7), x=slice(2, 11))
                               for g, bufs in (("hr", ["image"]), ("lr", ["image", "depth"])) for b in bufs}
    finally:
        zarr.config.set({"codec_pipeline.path": zarr_backend._chosen})
    a, b = reads.values()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
