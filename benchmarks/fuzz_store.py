"""The long fuzz of what gbuf reads: damage stores, pushed copies and checkpoints, count what escapes.

    .venv/bin/python benchmarks/fuzz_store.py [--minutes 10] [--seed 0] [--show 3]

Runs cases (seeds from ``--seed`` on) of ``tests/store_fuzz.py`` for ``--minutes``: each
copies one of four small bases (a finished store, an interrupted one, a pushed copy with
its manifest, a training checkpoint), damages one to three files (truncate, flip bytes,
delete, empty, garbage, JSON values or checkpoint entries of the wrong type) and runs what
reads it: open, info, verify, reads, CropDataset, SequenceDataset and a resuming writer;
pull and a second pull; the checkpoint reader and model loading. Prints how many cases
ran (per base), how many ended in a GbufError (the expected outcome for damage that
matters), how many only verify objected to (it reports, it does not raise), how many were
clean (damage to something no reader needs, such as a description), how many let a
traceback escape, and how many hung (no answer within 20 s); then the first few
failures. Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.store_fuzz

from tests.store_fuzz import build_bases, run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--show", type=int, default=3, help="failures to print in full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gbuf-fuzz-") as tmp:
        work = Path(tmp)
        bases = build_bases(work / "bases")
        stop = time.monotonic() + args.minutes * 60
        cases = errors = reported = tracebacks = hangs = 0
        per_base: dict[str, int] = {}
        failed = []
        seed = args.seed
        while time.monotonic() < stop:
            out = run_case(seed, bases, work)
            cases += 1
            per_base[out.mutations[0]] = per_base.get(out.mutations[0], 0) + 1
            errors += out.gbuf_errors > 0
            reported += out.gbuf_errors == 0 and out.verify_problems > 0
            hangs += out.hang
            if out.failures and not out.hang:
                tracebacks += 1
            if out.failures:
                failed.append(out)
            seed += 1
        print(f"cases {cases} (seeds {args.seed}..{seed - 1}), minutes {args.minutes:g}; per base: "
              + ", ".join(f"{k.strip('[]')} {v}" for k, v in sorted(per_base.items())))
        print(f"  ending in a GbufError : {errors}")
        print(f"  only verify objected  : {reported}")
        print(f"  clean (damage harmless): {cases - errors - reported - len(failed)}")
        print(f"  tracebacks            : {tracebacks}")
        print(f"  hangs                 : {hangs}")
        for out in failed[:args.show]:
            print(f"\nseed {out.seed} {out.mutations}:")
            print("\n".join(out.failures))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
