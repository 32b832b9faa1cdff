"""Fuzzing what gbuf reads: damage a store, a pushed copy or a checkpoint; only GbufError may escape.

Shared by ``tests/test_fuzz_store.py`` (a bounded run in the default suite) and
``benchmarks/fuzz_store.py`` (the long run). A case is a seed: it copies one of four
small bases and applies one to three random mutations (truncate, flip bytes, delete,
empty, garbage, a JSON value replaced by one of the wrong type or removed; for a
checkpoint also an entry replaced inside the saved dict, with or without its content
hash made to match), then runs what reads it:

- ``complete`` / ``partial`` stores (finished; interrupted, with shard markers and
  staged frames): open, info, verify, reads of every buffer, ``CropDataset``,
  ``SequenceDataset`` and, on the interrupted one, a resuming ``SequenceWriter``;
- ``pushed`` (a ``gbuf dataset push`` of the finished store into a folder: its
  ``gbuf-manifest.json`` and files): ``pull`` into a new folder (with the frame check)
  and ``verify`` of what arrived;
- ``checkpoint`` (a gbuf training checkpoint of rdg-s with EMA weights and a config):
  ``checkpoints.read_file``, ``checkpoints.read`` and ``inference.load_model`` with
  either weights.

Anything but ``GbufError`` escaping is a failure, with its traceback.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import shutil
import signal
import traceback
from pathlib import Path

import numpy as np

BUFS = ["image", "depth", "normal", "motion", "brdf"]
SPECS = {"hr": (16, 24, BUFS), "lr": (4, 6, BUFS)}
#: Values that are the wrong type (or range) for almost every field of gbuf's metadata.
WRONG = [None, True, False, 0, -1, 1, 3, 2**70, 1.5, "", "x", "float16", [], [1], [0, 0], [1, "a"], {}, {"a": 1},
         [[0, 1]], "image"]


class Hang(BaseException):
    pass


@dataclasses.dataclass
class Outcome:
    seed: int
    mutations: list[str]
    gbuf_errors: int = 0
    #: Problems ``verify`` reported (it reports instead of raising).
    verify_problems: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    hang: bool = False


#: The model of the base checkpoint: small, with G-buffer inputs and constant buffers (CycleFC offsets).
CHECKPOINT_MODEL = "rdg-s"


def build_bases(root: Path) -> dict[str, Path]:
    """The bases: ``complete`` (6 frames, shards of 2), ``partial`` (shard 0 written, frames 4-5
    staged, 7 planned in shards of 4), ``pushed`` (``complete`` pushed into a folder) and
    ``checkpoint`` (``CHECKPOINT_MODEL`` saved as training does)."""
    import gbuf.datasets as gd
    from gbuf.datasets.synthetic import make_synthetic_store, synthetic_frame

    root.mkdir(parents=True, exist_ok=True)
    complete = make_synthetic_store(root / "complete.zarr", frames=6, frames_per_shard=2, height=16, width=24)
    partial = root / "partial.zarr"
    w = gd.SequenceWriter(partial, "synthetic_000", 7, SPECS, frames_per_shard=4)
    for t in range(6):
        w.append(synthetic_frame(t, 16, 24, 4, buffers=BUFS))
    w._release()
    del w
    gc.collect()
    from gbuf.datasets.sharing import push

    pushed = root / "pushed"
    push(complete, str(pushed), jobs=1)
    return {"complete": complete, "partial": partial, "pushed": pushed, "checkpoint": _base_checkpoint(root)}


def _base_checkpoint(root: Path) -> Path:
    import torch

    from gbuf.train import checkpoints, models

    torch.manual_seed(0)
    model, ema = models.create(CHECKPOINT_MODEL), models.create(CHECKPOINT_MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    path = root / "checkpoint" / "step_3.pt"
    path.parent.mkdir(parents=True)
    # The entries a training checkpoint holds (gbuf.train.trainer), small.
    checkpoints.atomic_save({"params": checkpoints.official_state(model), "params_ema": checkpoints.official_state(ema),
                             "model": CHECKPOINT_MODEL, "model_options": {},
                             "config": {"data": {"normalize": "rdg"}, "train": {"lr": 2e-4}},
                             "train_state": {"step": 3, "optimizer": optimizer.state_dict(), "best_psnr": None}},
                            path)
    return path.parent


def _files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _json_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(node, list) and len(node) <= 8:
        for i, v in enumerate(node):
            yield from _json_paths(v, prefix + (i,))
    elif isinstance(node, list):
        for i in (0, len(node) - 1):
            yield from _json_paths(node[i], prefix + (i,))


def _mutate_json(path: Path, rng: random.Random) -> str:
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return _mutate_bytes(path, rng)
    paths = [p for p in _json_paths(doc) if p]
    # Mostly gbuf's own attrs: that is where validation has most to do.
    gbuf = [p for p in paths if p[:2] == ("attributes", "gbuf")]
    pick = rng.choice(gbuf if gbuf and rng.random() < 0.7 else paths or [()])
    if not pick:
        path.write_text(json.dumps(rng.choice(WRONG)))
        return f"{path.name}: whole document replaced"
    parent = doc
    for k in pick[:-1]:
        parent = parent[k]
    key = pick[-1]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[key]
        what = "removed"
    else:
        parent[key] = rng.choice(WRONG)
        what = f"= {parent[key]!r}"
    path.write_text(json.dumps(doc))
    return f"{'.'.join(map(str, pick))} {what}"


def _mutate_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["truncate", "flip", "flip", "delete", "empty", "garbage", "zero"])
    if kind == "truncate" and data:
        data = data[:rng.randrange(len(data))]
    elif kind == "flip" and data:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "delete":
        path.unlink()
        return "deleted"
    elif kind == "empty":
        data = bytearray()
    elif kind == "garbage":
        data = bytearray(rng.randbytes(rng.randint(1, 64)))
    elif kind == "zero" and data:
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 256)] = bytes(len(data[start:start + rng.randint(1, 256)]))
    path.write_bytes(bytes(data))
    return kind


def _mutate_checkpoint(path: Path, rng: random.Random) -> str:
    """Replace or remove one entry inside the saved dict; half the time the content hash is made to
    match, so what lies behind the hash check is tried too."""
    import torch

    from gbuf.train import checkpoints

    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return _mutate_bytes(path, rng)
    if not isinstance(doc, dict):
        return _mutate_bytes(path, rng)
    paths = [p for p in _json_paths(doc) if p]
    pick = rng.choice(paths)
    parent = doc
    for k in pick[:-1]:
        parent = parent[k]
    key = pick[-1]
    wrong = WRONG + [torch.zeros(rng.randint(0, 3), 2), torch.ones(1, dtype=torch.int64),
                     torch.full((2, 2), float("nan")), torch.empty(0)]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[key]
        what = "removed"
    else:
        value = rng.choice(wrong)
        parent[key] = value
        what = f"= {type(value).__name__}"
    rehashed = rng.random() < 0.5
    if rehashed:
        checkpoints.atomic_save({k: v for k, v in doc.items() if k != checkpoints.DIGEST_KEY}, path)
    else:
        torch.save(doc, path)
    return f"{'.'.join(map(str, pick))} {what}{' (hash made to match)' if rehashed else ''}"


def mutate(store: Path, rng: random.Random) -> list[str]:
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        files = _files(store)
        if not files:
            break
        meta = [p for p in files if p.name == "zarr.json"]
        state = [p for p in files if ".gbuf" in p.parts]
        data = [p for p in files if p not in meta and p not in state]
        pool = rng.choices([meta, data, state or data], weights=[5, 3, 2])[0] or files
        path = rng.choice(pool)
        manifests = [p for p in files if p.name == "gbuf-manifest.json"]
        if manifests and rng.random() < 0.5:   # a pushed copy: its manifest is what pull trusts first
            path = manifests[0]
        rel = path.relative_to(store)
        if path.name.endswith(".json") and rng.random() < 0.75:
            done.append(f"{rel}: {_mutate_json(path, rng)}")
        elif path.suffix == ".pt" and rng.random() < 0.6:
            done.append(f"{rel}: {_mutate_checkpoint(path, rng)}")
        else:
            done.append(f"{rel}: {_mutate_bytes(path, rng)}")
    return done


def operations(path: Path, base: str):
    """(name, callable) for every reader (and, on the interrupted store, the resuming writer)."""
    import gbuf.datasets as gd

    if base == "pushed":
        return _pull_operations(path)
    if base == "checkpoint":
        return _checkpoint_operations(path)
    from gbuf.datasets.loader import CropDataset, SequenceDataset

    def read_all():
        ds = gd.open(path)
        for s in ds.sequences:
            for r in ds[s].resolutions:
                res = ds[s][r]
                res.read_many(res.buffers, t=slice(0, res.num_frames))
                res.read_many(res.buffers, t=slice(0, res.num_frames), y=slice(1, 3), x=slice(2, 5))

    def crops():
        ds = CropDataset(path, frames=2, patch=8, length=3, seed=1, normalize="rdg")
        for i in range(3):
            ds[i]

    def whole():
        ds = SequenceDataset(path, segment_frames=4)
        for i in range(len(ds)):
            ds[i]

    def resume():
        gd.SequenceWriter(path, "synthetic_000", 7, SPECS, frames_per_shard=4).close()

    ops = [("open", lambda: gd.open(path).sequences), ("info", lambda: gd.info(path)),
           ("verify", lambda: gd.verify(path)), ("read", read_all), ("crops", crops), ("sequences", whole)]
    if base == "partial":
        ops.append(("resume", resume))
    return ops


def _pull_operations(pushed: Path):
    import gbuf.datasets as gd
    from gbuf.datasets.sharing import pull

    target = pushed.with_name(pushed.name + "-pulled")
    shutil.rmtree(target, ignore_errors=True)

    def pulled():
        try:
            pull(str(pushed), target, jobs=1, frame_check=True)
        finally:
            # What pull fetched must check out (or pull must have said why not).
            if (target / "zarr.json").is_file():
                gd.verify(target)

    def pull_again():
        if (target / "zarr.json").is_file():
            pull(str(pushed), target, jobs=1)

    return [("pull", pulled), ("pull again", pull_again)]


def _checkpoint_operations(folder: Path):
    from gbuf.train import checkpoints, inference

    path = folder / "step_3.pt"
    return [("read_file", lambda: checkpoints.read_file(path)), ("read", lambda: checkpoints.read(path)),
            ("load ema", lambda: inference.load_model(CHECKPOINT_MODEL, path, weights="ema")),
            ("load params", lambda: inference.load_model(CHECKPOINT_MODEL, path, weights="params"))]


def run_case(seed: int, bases: dict[str, Path], work: Path, timeout_s: int = 20) -> Outcome:
    from gbuf.errors import GbufError

    rng = random.Random(seed)
    base = rng.choice(sorted(bases))
    case = work / f"case-{seed}.zarr"
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(bases[base], case)
    out = Outcome(seed, [f"[{base}]"] + mutate(case, rng))

    def alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        for name, op in operations(case, base):
            signal.alarm(timeout_s)
            try:
                result = op()
                if name == "verify":
                    out.verify_problems = len(result.problems)
            except GbufError as err:
                out.gbuf_errors += 1
                if "\n" in str(err):
                    out.failures.append(f"{name}: a GbufError of several lines: {err!r}")
            except Hang:
                out.hang = True
                out.failures.append(f"{name}: no answer within {timeout_s} s")
            except Exception:
                out.failures.append(f"{name}: {traceback.format_exc()}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(case, ignore_errors=True)
        shutil.rmtree(case.with_name(case.name + "-pulled"), ignore_errors=True)
    np.seterr(all="warn")
    return out
