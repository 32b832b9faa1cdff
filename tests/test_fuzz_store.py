"""A bounded fuzz of a small store, a pushed copy (manifest) and a checkpoint: only GbufError may escape.

The long run is ``benchmarks/fuzz_store.py --minutes 10``; this one takes at most
``BUDGET_S`` seconds of the default suite and always runs the same seeds in order.
"""

from __future__ import annotations

import time

from tests.store_fuzz import build_bases, run_case

#: Wall-clock budget of the fuzz in the default suite (cases stop once it is spent).
BUDGET_S = 30
MIN_CASES = 20


def test_damaged_stores_only_ever_raise_gbuf_errors(tmp_path):
    bases = build_bases(tmp_path / "bases")
    started = time.monotonic()
    outcomes = []
    seed = 0
    while time.monotonic() - started < BUDGET_S or len(outcomes) < MIN_CASES:
        outcomes.append(run_case(seed, bases, tmp_path))
        seed += 1
    failed = [o for o in outcomes if o.failures]
    report = "\n\n".join(f"seed {o.seed} {o.mutations}:\n" + "\n".join(o.failures) for o in failed[:3])
    assert not failed, f"{len(failed)} of {len(outcomes)} cases let something else escape:\n{report}"
    # Stores, pushed copies (their manifest) and checkpoints were all damaged.
    assert {o.mutations[0] for o in outcomes} == {f"[{name}]" for name in bases}
    # The fuzz damages something that matters in most cases (a fuzz that never hits is no test).
    assert sum(o.gbuf_errors > 0 for o in outcomes) > len(outcomes) // 3
