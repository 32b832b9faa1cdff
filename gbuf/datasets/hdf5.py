"""Export a gbuf store to one HDF5 file (h5py), for tools that read HDF5.

Layout: ``/<sequence>/<resolution>/<buffer>`` datasets shaped ``(T, H, W, C)``
with the store's dtypes, one frame per HDF5 chunk, gzip-compressed. Every group
carries the store's gbuf attrs as a JSON string in attribute ``gbuf``, and each
buffer dataset its channel count and convention.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError


def export_hdf5(dataset, output, *, overwrite: bool = False, compression: str | None = "gzip") -> Path:
    import h5py

    from gbuf.datasets.store import open as open_store

    ds = open_store(dataset)
    output = Path(output)
    if output.exists() and not overwrite:
        raise GbufError(f"{output}: already exists (use --overwrite)")
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs[fmt.ATTRS_KEY] = json.dumps(ds.attrs)
            for seq in ds:
                g_seq = h5.create_group(seq.name)
                g_seq.attrs[fmt.ATTRS_KEY] = json.dumps(seq.attrs)
                for rname in seq.resolutions:
                    res = seq[rname]
                    g_res = g_seq.create_group(rname)
                    g_res.attrs[fmt.ATTRS_KEY] = json.dumps(res.attrs)
                    for buf in res.buffers:
                        shape = (res.num_frames, res.height, res.width, res.channels(buf))
                        d = g_res.create_dataset(buf, shape=shape, dtype=res.dtype(buf),
                                                 chunks=(1,) + shape[1:], compression=compression)
                        d.attrs["convention"] = fmt.BUFFERS[buf].description
                        for t in range(res.num_frames):
                            d[t] = res.read(buf, t=t)[0]
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output
