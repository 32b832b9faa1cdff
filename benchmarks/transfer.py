"""Push/pull throughput vs a plain recursive copy of the same store to the same kind of destination.

Two destinations:
  * a local folder: ``gbuf push``/``pull`` vs ``shutil.copytree``;
  * an S3 server on loopback (moto, started here): push/pull vs fsspec's recursive
    ``put``/``get`` (s3fs), which is what a plain copy to object storage does.

Push includes hashing the store, writing its card and the arrival checks; pull
includes re-hashing every received object and checking every frame's checksum
(decoding every frame); "pull (sha)" re-hashes every object but skips the frame
check (``--no-frame-check``).
Each figure is the best of ``--repeats`` runs into a fresh destination.

    .venv/bin/python benchmarks/transfer.py [--frames 24] [--hr 272x480] [--jobs 8] [--repeats 2]

Prints MB/s of each and the ratio time(gbuf)/time(plain) (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(name: str, nbytes: int, t_gbuf: float, t_plain: float) -> None:
    mb = nbytes / 1e6
    print(f"{name:<14} gbuf {mb / t_gbuf:8.1f} MB/s ({t_gbuf:6.2f} s)   plain {mb / t_plain:8.1f} MB/s "
          f"({t_plain:6.2f} s)   ratio {t_gbuf / t_plain:5.2f}x")


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
        sharing.push(src, str(tmp / "warm"))  # card + dataset id written once, page cache warm
        shutil.rmtree(tmp / "warm")
        nbytes = store_bytes(src)
        print(f"store: {args.sequences} seq x {args.frames} frames, HR {w}x{h}, "
              f"{nbytes / 1e6:.1f} MB in {sum(1 for p in src.rglob('*') if p.is_file())} files; jobs {args.jobs}")

        def fresh(prefix):
            return tmp / f"{prefix}-{uuid.uuid4().hex[:8]}"

        # -- local folder --------------------------------------------------------------
        pushed = tmp / "pushed"
        t_push = best_of(args.repeats, lambda: sharing.push(src, str(fresh("push")), jobs=args.jobs))
        t_copy = best_of(args.repeats, lambda: shutil.copytree(src, fresh("copy")))
        sharing.push(src, str(pushed), jobs=args.jobs)
        t_pull = best_of(args.repeats, lambda: sharing.pull(str(pushed), fresh("pull"), jobs=args.jobs))
        t_pull_files = best_of(args.repeats, lambda: sharing.pull(str(pushed), fresh("pullq"), jobs=args.jobs,
                                                                    verify=False))
        t_copy2 = best_of(args.repeats, lambda: shutil.copytree(pushed, fresh("copyback")))
        print("local folder (shutil.copytree):")
        row("  push", nbytes, t_push, t_copy)
        row("  pull", nbytes, t_pull, t_copy2)
        row("  pull (sha)", nbytes, t_pull_files, t_copy2)

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

            def plain_put():
                fs.put(str(src), f"bench/plain-{uuid.uuid4().hex[:8]}", recursive=True)

            def gbuf_push():
                sharing.push(src, f"s3://bench/push-{uuid.uuid4().hex[:8]}", jobs=args.jobs,
                             storage_options=opts)

            t_push = best_of(args.repeats, gbuf_push)
            t_put = best_of(args.repeats, plain_put)
            sharing.push(src, "s3://bench/published", jobs=args.jobs, storage_options=opts)
            fs.invalidate_cache()
            t_pull = best_of(args.repeats, lambda: sharing.pull("s3://bench/published", fresh("s3pull"),
                                                                jobs=args.jobs, storage_options=opts))
            t_pull_files = best_of(args.repeats, lambda: sharing.pull(
                "s3://bench/published", fresh("s3pullq"), jobs=args.jobs, storage_options=opts, verify=False))
            t_get = best_of(args.repeats, lambda: fs.get("bench/published", str(fresh("s3get")) + "/",
                                                         recursive=True))
            print("S3 on loopback (s3fs put/get recursive):")
            row("  push", nbytes, t_push, t_put)
            row("  pull", nbytes, t_pull, t_get)
            row("  pull (sha)", nbytes, t_pull_files, t_get)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
