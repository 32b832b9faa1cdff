"""The one place gbuf imports zarr: it picks the codec pipeline once per process.

zarrs (Rust, https://github.com/zarrs/zarrs-python) decodes a sharded chunk's inner chunks
in parallel outside the GIL; `benchmarks/loader.py` measures what that buys on random crops.
It is on by default where the package is installed. ``GBUF_ZARRS=0`` (also ``off``, ``false``,
``no``) keeps zarr-python's own pipeline. Where zarrs is missing, gbuf warns once and uses
zarr-python's pipeline; the data read is the same either way (the tests run both).

zarrs serves arrays in local stores; for a store it cannot drive (an fsspec URL, an in-memory
store) it hands the array to zarr-python's pipeline by itself. That hand-over is expected here,
so its per-array warning is silenced; nothing else is.
"""

from __future__ import annotations

import logging
import os
import warnings

log = logging.getLogger(__name__)

#: Environment variable that turns the zarrs codec pipeline off (``0``/``off``/``false``/``no``).
ENV = "GBUF_ZARRS"
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
PYTHON_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"

_chosen: str | None = None


def wanted() -> bool:
    """Whether the environment asks for zarrs (the default)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def zarr():
    """``import zarr`` with gbuf's codec pipeline chosen (first call) and returned."""
    import zarr as _zarr

    global _chosen
    if _chosen is None:
        _chosen = _choose(_zarr)
    return _zarr


def pipeline() -> str:
    """The codec pipeline in use: ``"zarrs"`` or ``"zarr-python"``."""
    zarr()
    return "zarrs" if _chosen == ZARRS_PIPELINE else "zarr-python"


def _choose(zarr_module) -> str:
    path = PYTHON_PIPELINE
    if wanted():
        try:
            import zarrs  # noqa: F401
        except ImportError:
            _forget_broken_entry_points(zarr_module)
            warnings.warn("zarrs is not installed: reading with zarr-python's slower codec pipeline "
                          f"(pip install zarrs, or set {ENV}=0 to silence this)", RuntimeWarning, stacklevel=3)
        else:
            path = ZARRS_PIPELINE
            warnings.filterwarnings("ignore", message="Array is unsupported by ZarrsCodecPipeline",
                                    category=UserWarning)
    zarr_module.config.set({"codec_pipeline.path": path})
    log.debug("zarr codec pipeline: %s", path)
    return path


def _forget_broken_entry_points(zarr_module) -> None:
    # An installed but unimportable zarrs still registers its pipeline as an entry point, and zarr
    # loads every registered pipeline when it opens an array: drop it so zarr-python's own serves.
    try:
        pending = zarr_module.registry._pipeline_registry.lazy_load_list
        pending[:] = [e for e in pending if e.value.split(":")[0].split(".")[0] != "zarrs"]
    except AttributeError:  # a zarr whose registry differs: nothing to drop
        pass
