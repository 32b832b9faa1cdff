"""Push/pull throughput vs a plain recursive copy of the same store to the same destination.

Two destinations, each timed side by side in one run:
  * a local folder: ``sharing.push``/``pull`` vs ``shutil.copytree`` of the same store;
  * an S3 server on loopback (moto, started here, in this process): push/pull vs
    s3fs's recursive ``put``/``get``, which is what a plain copy to object storage does.

Rows:
  push         lists the store, generates the card, then reads every file once,
               hashing its bytes (SHA-256) as they are written to the fresh
               destination; writes the journal and the manifest; on S3 also
               checks every object's size with one listing. Plain: copytree / put.
  pull         reads the manifest, downloads every object, hashes the received bytes
               and compares them with the manifest before renaming them into place.
               Plain: copytree of the pushed folder / get.
  pull +frames as pull, then decodes every frame and checks its CRC-32
               (``--frame-check``). Same plain copy as pull.
  re-push      a second push to a destination that already has everything: sends
               nothing, hashes nothing (the local hash cache in ``.gbuf/``); seconds only.

The store is pushed once before timing (page cache warm; the card and the dataset id
are generated then and cached in ``<store>/.gbuf/``, as for any second push of a
store). Each timed run writes into a fresh destination that is removed after it,
gbuf and plain runs alternate, and each figure is the best of ``--repeats``.
Ratio = time(gbuf) / time(plain); the target is <= 1.5.

    .venv/bin/python benchmarks/transfer.py [--frames 24] [--hr 272x480] [--jobs 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and ".gbuf" not in p.parts)


def side_by_side(repeats: int, gbuf, plain, cleanup) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of ``gbuf(dest)`` and ``plain(dest)``, alternating, fresh dests."""
    best = {"gbuf": float("inf"), "plain": float("inf")}
    for _ in range(repeats):
        for name, run in (("gbuf", gbuf), ("plain", plain)):
            dest = f"{name}-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            run(dest)
            best[name] = min(best[name], time.perf_counter() - t0)
            cleanup(dest)
    return best["gbuf"], best["plain"]


def row(name: str, nbytes: int, t_gbuf: float, t_plain: float) -> None:
    mb = nbytes / 1e6
    print(f"  {name:<13} gbuf {mb / t_gbuf:8.1f} MB/s ({t_gbuf:6.3f} s)   plain {mb / t_plain:8.1f} MB/s "
          f"({t_plain:6.3f} s)   ratio {t_gbuf / t_plain:5.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--hr", default="272x480", help="HR HxW of the synthetic store")
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-s3", action="store_true", help="local folder only")
    args = parser.parse_args()
    h, w = (int(v) for v in args.hr.split("x"))

    from gbuf.datasets import sharing
    from gbuf.datasets.synthetic import make_synthetic_store

    with tempfile.TemporaryDirectory(prefix="gbuf-transfer-") as tmp:
        tmp = Path(tmp)
        src = make_synthetic_store(tmp / "src.zarr", sequences=args.sequences, frames=args.frames,
                                   height=h, width=w, frames_per_shard=8)
        pushed = tmp / "pushed"
        sharing.push(src, str(pushed), jobs=args.jobs)  # card and dataset id generated once, page cache warm
        nbytes = store_bytes(src)
        nfiles = sum(1 for p in src.rglob("*") if p.is_file() and ".gbuf" not in p.parts)
        print(f"store: {args.sequences} seq x {args.frames} frames, HR {w}x{h}, {nbytes / 1e6:.1f} MB in "
              f"{nfiles} files; jobs {args.jobs}; best of {args.repeats}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at start")

        def rm_local(dest):
            shutil.rmtree(tmp / dest, ignore_errors=True)

        # -- local folder --------------------------------------------------------------
        print("local folder (plain: shutil.copytree):")
        row("push", nbytes, *side_by_side(
            args.repeats, lambda d: sharing.push(src, str(tmp / d), jobs=args.jobs),
            lambda d: shutil.copytree(src, tmp / d), rm_local))
        row("pull", nbytes, *side_by_side(
            args.repeats, lambda d: sharing.pull(str(pushed), tmp / d, jobs=args.jobs),
            lambda d: shutil.copytree(pushed, tmp / d), rm_local))
        row("pull +frames", nbytes, *side_by_side(
            args.repeats, lambda d: sharing.pull(str(pushed), tmp / d, jobs=args.jobs, frame_check=True),
            lambda d: shutil.copytree(pushed, tmp / d), rm_local))
        t0 = time.perf_counter()
        again = sharing.push(src, str(pushed), jobs=args.jobs)
        print(f"  re-push       {time.perf_counter() - t0:.3f} s, {again.sent_files} file(s) sent")

        if args.no_s3:
            return
        # -- S3 on loopback ------------------------------------------------------------
        import s3fs
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            opts = {"endpoint_url": f"http://{host}:{port}", "key": "bench", "secret": "bench"}
            fs = s3fs.S3FileSystem(**opts)
            fs.mkdir("bench")

            def rm_s3(dest):
                fs.rm(f"bench/{dest}", recursive=True)
                fs.invalidate_cache()

            published = "s3://bench/published"
            sharing.push(src, published, jobs=args.jobs, storage_options=opts)
            fs.invalidate_cache()
            print("S3 on loopback (plain: s3fs put/get, recursive):")
            row("push", nbytes, *side_by_side(
                args.repeats, lambda d: sharing.push(src, f"s3://bench/{d}", jobs=args.jobs, storage_options=opts),
                lambda d: fs.put(str(src), f"bench/{d}", recursive=True), rm_s3))
            row("pull", nbytes, *side_by_side(
                args.repeats, lambda d: sharing.pull(published, tmp / d, jobs=args.jobs, storage_options=opts),
                lambda d: fs.get("bench/published", str(tmp / d) + "/", recursive=True), rm_local))
            row("pull +frames", nbytes, *side_by_side(
                args.repeats, lambda d: sharing.pull(published, tmp / d, jobs=args.jobs, storage_options=opts,
                                                     frame_check=True),
                lambda d: fs.get("bench/published", str(tmp / d) + "/", recursive=True), rm_local))
            t0 = time.perf_counter()
            again = sharing.push(src, published, jobs=args.jobs, storage_options=opts)
            print(f"  re-push       {time.perf_counter() - t0:.3f} s, {again.sent_files} file(s) sent")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
