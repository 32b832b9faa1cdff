"""Running an experiment: stages, each with its own result file; a rerun skips the finished ones.

The stages, in order, and what each writes under the work directory ``WORKDIR``:

- ``dataset``: renders the spec into ``WORKDIR/data.zarr`` (``gbuf.render.dataset_build``, itself
  resumable) and records its split.
- ``train-LABEL`` (each model with ``train = true``): ``gbuf.train.trainer.train`` into
  ``WORKDIR/runs/LABEL`` with the budget; an interrupted training (no result file, a
  checkpoint in its folder) is resumed exactly (``--resume``), after checking that the run's
  saved configuration is the one the experiment asks for.
- ``eval-LABEL`` (every row, ``bicubic`` first): ``gbuf.train.evaluate.score_model`` on the test
  split, PSNR / SSIM (and VMAF when asked) per test sequence.
- ``bench-MODEL``: params and latency as ``gbuf bench`` measures them (one per architecture: the
  weights do not change them).

Each stage's result is ``WORKDIR/stages/NAME.json`` (written atomically, ``gbuf.fileio``): what
it was computed from (``key``), the result, and the seconds it took by kind (render, load,
train, eval, bench). A stage whose file exists with the same key is skipped; with another key
it is an error (its result would silently mix two experiments): use another work directory.
The report (``results.md``, ``results.svg``, ``results.json``) is rewritten at the end of every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

from gbuf import fileio
from gbuf.errors import GbufError
from gbuf.experiments.config import BICUBIC, Experiment, ModelSpec, load_experiment
from gbuf.progress import Progress

_log = logging.getLogger(__name__)

STAGES_DIR = "stages"
STORE_NAME = "data.zarr"
RUNS_DIR = "runs"
SPEC_NAME = "dataset.toml"
#: Kinds of time the report adds up, in its order.
TIME_KINDS = ("render", "load", "train", "eval", "bench")


@dataclasses.dataclass
class ModelRow:
    """One row of the table."""

    label: str
    model: str
    #: ``baseline``, ``trained``, ``fine-tuned`` or ``zero-shot``.
    kind: str
    params: int | None
    latency_ms: float | None
    #: test sequence -> mean over its frames.
    psnr: dict[str, float]
    ssim: dict[str, float]
    vmaf: dict[str, float | None]
    #: The checkpoint scored (relative to the work directory when inside it), None for bicubic.
    checkpoint: str | None
    #: Which weights were scored (``params_ema``, ``params``, ``-``).
    weights: str = "-"
    inputs: list[str] = dataclasses.field(default_factory=list)

    def average(self, metric: str) -> float | None:
        values = [v for v in getattr(self, metric).values() if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else None


@dataclasses.dataclass
class ExperimentResult:
    """What ``run_experiment`` did and found."""

    experiment: Path
    workdir: Path
    name: str
    train_sequences: list[str]
    test_sequences: list[str]
    rows: list[ModelRow]
    #: Lines for the report: rows skipped (a missing checkpoint), what the weights were ...
    notes: list[str]
    #: Seconds by kind (``TIME_KINDS``) over every stage's record: what the whole experiment took,
    #: also when this call skipped finished stages.
    timings: dict[str, float]
    #: Wall seconds of this call.
    seconds: float
    #: Stages this call ran, and those it found finished and skipped.
    ran: list[str]
    skipped: list[str]
    table: Path | None = None
    plot: Path | None = None
    summary: Path | None = None
    #: True when a training run was interrupted (Ctrl-C): rerun to resume.
    interrupted: bool = False
    #: Facts of the dataset and budget, for the report.
    facts: dict = dataclasses.field(default_factory=dict)


def _jsonish(value):
    return json.loads(json.dumps(value))


class _Stages:
    """Stage result files of one work directory."""

    def __init__(self, workdir: Path, experiment: Path):
        self.dir = workdir / STAGES_DIR
        self.experiment = experiment
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.timings = {k: 0.0 for k in TIME_KINDS}
        self._results: dict[str, dict] = {}

    def run(self, name: str, key: dict, work: Callable[[], tuple[dict, dict]]) -> dict:
        """``work()`` -> ``(result, {kind: seconds})``, unless ``name`` finished with ``key`` before."""
        done = self.finished(name, key)
        if done is not None:
            return done
        _log.info("experiment: %s ...", name)
        result, seconds = work()
        return self.record(name, key, result, seconds)

    def finished(self, name: str, key: dict) -> dict | None:
        """The result of ``name`` if it finished with ``key`` before; None if it has not run; an
        error if it finished with another key."""
        path = self.dir / f"{name}.json"
        key = _jsonish(key)
        if name in self._results:  # asked again in this call (one bench serves several rows)
            return self._results[name]
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise GbufError(f"{path}: unreadable stage record ({err}); delete it to redo the stage") from None
            if not isinstance(record, dict) or "result" not in record:
                raise GbufError(f"{path}: not a stage record; delete it to redo the stage")
            if record.get("key") != key:
                changed = sorted(k for k in set(key) | set(record.get("key") or {})
                                 if key.get(k) != (record.get("key") or {}).get(k))
                raise GbufError(f"{path}: stage {name} finished with other settings ({', '.join(changed)}) than "
                                f"{self.experiment} asks for now; run into another work directory (-o) or "
                                f"delete the file to redo it")
            self.skipped.append(name)
            self._count(record.get("seconds") or {})
            _log.debug("experiment: %s finished before; skipped", name)
            self._results[name] = record["result"]
            return record["result"]
        return None

    def record(self, name: str, key: dict, result: dict, seconds: dict) -> dict:
        """Write ``name``'s result file: the stage is finished."""
        path = self.dir / f"{name}.json"
        key = _jsonish(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        fileio.write_text(path, json.dumps({"stage": name, "key": key, "result": result, "seconds": seconds},
                                           indent=1) + "\n")
        self.ran.append(name)
        self._count(seconds)
        self._results[name] = result
        return result

    def _count(self, seconds: dict) -> None:
        for kind, value in seconds.items():
            if kind in self.timings and isinstance(value, (int, float)):
                self.timings[kind] += float(value)


# ---------------------------------------------------------------------------------------------
# The dataset: the one seam to gbuf.render


def build_store(exp: Experiment, workdir: Path, progress: Progress | None = None) -> dict[str, list[str]]:
    """Render the experiment's dataset spec into ``WORKDIR/data.zarr``; its split."""
    from gbuf.render.dataset_build import build_dataset
    from gbuf.render.spec import load_spec

    spec_file = exp.spec_file
    if spec_file is None:  # inline: kept beside the store, the file its record points to
        spec_file = workdir / SPEC_NAME
        if not spec_file.is_file() or spec_file.read_text(encoding="utf-8") != exp.spec_text:
            fileio.write_text(spec_file, exp.spec_text)
    built = build_dataset(load_spec(spec_file), workdir / STORE_NAME, progress=progress, frame_progress=progress)
    return {split: list(names) for split, names in built.splits.items()}


# ---------------------------------------------------------------------------------------------
# Stages


def _kind(spec: ModelSpec | None) -> str:
    if spec is None:
        return "baseline"
    if not spec.train:
        return "zero-shot"
    return "fine-tuned" if spec.init else "trained"


def _train_config(exp: Experiment, label: str, spec: ModelSpec, store: Path, splits: dict, workdir: Path):
    from gbuf.train import config as cfg

    b = exp.budget
    c = cfg.TrainConfig(model=spec.model)
    c.model_options = dict(spec.options)
    c.init = str(exp.resolve(spec.init)) if spec.init else ""
    c.init_weights = spec.init_weights
    c.data.path = str(store)
    c.data.lr_group = exp.lr_group
    c.data.frames, c.data.patch, c.data.batch_size = b.frames, b.patch, b.batch_size
    c.data.workers = exp.run.workers
    c.data.cache = exp.run.cache
    c.data.normalize = exp.normalize
    c.data.train_sequences = list(splits["train"])
    validate = bool(splits.get("val")) and b.val_every > 0
    c.data.val_sequences = list(splits["val"]) if validate else []
    c.optim.lr = spec.lr or b.lr
    c.schedule.iters = spec.iters or b.iters
    for key, value in b.loss.items():
        cfg.set_dotted(c, f"loss.{key}", value, str(exp.path))
    c.run.out = str(workdir / RUNS_DIR / label)
    c.run.device, c.run.amp, c.run.seed = exp.run.device, exp.run.amp, b.seed
    c.run.val_every = b.val_every if validate else 0
    c.run.ckpt_every = b.ckpt_every
    c.run.keep_last = 1
    c.run.log_every = max(1, c.schedule.iters // 20)
    c.run.tensorboard = False
    return c


def _trajectory(config) -> dict:
    """What decides a run's weights (``TRAJECTORY_KEYS``), less the store's path (the work
    directory may move)."""
    from gbuf.train import config as cfg

    return {k: cfg.get_dotted(config, k) for k in cfg.TRAJECTORY_KEYS if k != "data.path"}


def _train(exp: Experiment, label: str, spec: ModelSpec, config, workdir: Path, progress) -> tuple[dict, dict]:
    from gbuf.train import config as cfg
    from gbuf.train import trainer
    from gbuf.train.checkpoints import latest_checkpoint

    out = config.out_dir()
    resume = latest_checkpoint(out) is not None
    if resume:
        saved_path = out / "config.toml"
        saved = cfg.load_file(saved_path) if saved_path.is_file() else None
        if saved is None or _trajectory(saved) != _trajectory(config):
            raise GbufError(f"{out}: holds a training run with other settings than {exp.path} asks for "
                            f"{label}; run into another work directory (-o) or delete {out}")
        _log.info("experiment: resuming the training of %s from %s", label, latest_checkpoint(out))
    config.run.progress = progress is not None

    def steps(_label: str, done: int, total: int) -> None:
        # one stable label per run: the trainer's own holds the rate and the loss, new every step
        progress(f"train {label}", done, total)

    started = time.perf_counter()
    result = trainer.train(config, resume=resume, threads=exp.run.threads,
                           progress=steps if progress is not None else None)
    wall = time.perf_counter() - started
    if result.interrupted:
        raise _Interrupted(label)
    checkpoint = Path(result.checkpoint)
    return ({"checkpoint": _relative(checkpoint, workdir), "step": result.step, "resumed": resume},
            {"load": result.load_seconds, "train": wall - result.load_seconds})


class _Interrupted(Exception):
    """A training run stopped on Ctrl-C (its checkpoint is saved; a rerun resumes it)."""


def _train_in_process(exp: Experiment, label: str, spec: ModelSpec, config, workdir: Path):
    """One training in a worker process of ``_train_side_by_side``: ``(result, seconds)``, or
    None when it was interrupted (its checkpoint saved)."""
    logging.basicConfig(level=logging.WARNING, format=f"[{label}] %(message)s")
    try:
        return _train(exp, label, spec, config, workdir, None)
    except _Interrupted:
        return None


def _parameter_count(spec: ModelSpec) -> int:
    from gbuf.train import models

    return sum(p.numel() for p in models.create(spec.model, **spec.options).parameters())


def _ignore_interrupts() -> None:
    # A worker between trainings ignores Ctrl-C: its death would break the pool and kill the
    # trainings beside it before they save. The trainer installs its own handler while it runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_side_by_side(exp: Experiment, pending, workdir: Path, stages: _Stages,
                        checkpoints: dict[str, Path]) -> list[str]:
    """Run the trainings of ``pending`` in ``exp.run.jobs`` processes at once (each with
    ``run.threads`` torch threads): on a CPU with a core per job the table takes about 1/jobs of the
    training time. Each run's weights are those of the same run alone (a training depends on its
    config and seed, not on what runs beside it). A stage is recorded as soon as its run ends, so an
    interruption or a failure keeps the runs already finished. Returns the labels interrupted."""
    import concurrent.futures
    import multiprocessing

    interrupted: list[str] = []
    # Largest models first (parameters as a proxy for step cost): the longest training then runs
    # beside the short ones instead of alone at the end.
    pending = sorted(pending, key=lambda p: -_parameter_count(p[1]))
    # spawn: a fresh interpreter per worker (no forked torch thread pools or open stores).
    context = multiprocessing.get_context("spawn")
    jobs = min(exp.run.jobs, len(pending))
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                initializer=_ignore_interrupts) as pool:
        futures = {pool.submit(_train_in_process, exp, label, m, config, workdir): (label, key)
                   for label, m, config, key in pending}
        _log.info("experiment: training %s, %d at a time", ", ".join(p[0] for p in pending), jobs)
        waiting = set(futures)
        while waiting:
            try:
                finished, waiting = concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
            except KeyboardInterrupt:
                # Ctrl-C in a terminal reaches the whole process group, the workers too: each
                # finishes its step and saves a checkpoint. (It is not passed on from here: a
                # worker that has it twice stops at once. From elsewhere, signal the group.)
                _log.warning("experiment: interrupt received; waiting for the trainings to save their checkpoints")
                for future in waiting:
                    future.cancel()
                continue
            for future in finished:
                label, key = futures[future]
                if future.cancelled():
                    interrupted.append(label)
                    continue
                outcome = future.result()  # a worker's GbufError is raised here, as in one process
                if outcome is None:
                    interrupted.append(label)
                    continue
                done = stages.record(f"train-{label}", key, *outcome)
                checkpoints[label] = workdir / done["checkpoint"]
                _log.info("experiment: train-%s finished", label)
    return interrupted


def _relative(path: Path, workdir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(workdir.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _model_module(exp: Experiment, spec: ModelSpec | None, checkpoint: Path | None, scale: int, device):
    """``(module in eval mode on device, weights used)`` of one row."""
    from gbuf.train import inference, models, trainer

    if spec is None:
        lm = inference.load_model(BICUBIC, scale=scale, device=device)
        return lm.module, lm.weights
    if spec.train:  # a gbuf checkpoint: it records the model's options
        lm = inference.load_model(spec.model, checkpoint, scale=scale, device=device, weights=exp.eval.weights)
        return lm.module, lm.weights
    module = models.create(spec.model, **spec.options)
    used = trainer.load_init(module, checkpoint, spec.init_weights)
    return module.to(device).eval(), used


def _evaluate(exp: Experiment, label: str, spec, checkpoint, store: Path, test: list[str], device) -> tuple[dict, dict]:
    import gbuf.datasets as gd
    from gbuf.train import evaluate, inference

    started = time.perf_counter()
    ds = gd.open(store)
    scale = ds[test[0]][exp.lr_group].scale
    module, used = _model_module(exp, spec, checkpoint, scale, device)
    lr_buffers, hr_buffers = inference.model_buffers(module)
    inference.check_inputs(ds, label, test, exp.lr_group, lr_buffers, hr_buffers)
    scores = evaluate.score_model(module, store, test, normalize=exp.normalize, lr_group=exp.lr_group,
                                  segment_frames=exp.eval.segment_frames, device=device, ewarp=False,
                                  vmaf=exp.eval.vmaf, label=label)
    result = {"weights": used,
              "psnr": {s.sequence: s.mean("psnr") for s in scores},
              "ssim": {s.sequence: s.mean("ssim") for s in scores},
              "vmaf": {s.sequence: s.mean("vmaf") for s in scores}}
    return result, {"eval": time.perf_counter() - started}


def _bench(exp: Experiment, spec: ModelSpec | None, lr_size: tuple[int, int], scale: int, device) -> tuple[dict, dict]:
    from gbuf.train import bench, inference, models

    started = time.perf_counter()
    module = inference.BicubicUpsampler(scale) if spec is None else models.create(spec.model, **spec.options)
    row = bench.bench_model(BICUBIC if spec is None else spec.model, lr_size, device=device,
                            frames=exp.bench.frames, warmup=exp.bench.warmup, repeats=exp.bench.repeats,
                            model=module, threads=exp.run.threads)
    result = {"params": row.params, "latency_ms": row.latency_ms, "mode": row.mode, "device": row.device,
              "threads": row.threads, "lr_size": list(row.lr_size), "gflops": row.gflops}
    return result, {"bench": time.perf_counter() - started}


def _short_hash(value) -> str:
    return hashlib.sha256(json.dumps(_jsonish(value), sort_keys=True).encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# The run


def run_experiment(path: str | Path, *, workdir: str | Path | None = None,
                   progress: Progress | None = None) -> ExperimentResult:
    """Run the experiment file at ``path`` in ``workdir`` (default ``runs/<file stem>``); see the
    module docstring. ``progress(label, done, total)`` follows the render (clips, frames) and each
    training (steps). Returns the table's rows, the time by kind and the stages run and skipped;
    the report files are written under ``workdir``.
    """
    from gbuf import runtime

    exp = load_experiment(path)
    work = Path(workdir) if workdir is not None else Path("runs") / Path(path).stem
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with runtime.threads(exp.run.threads):
        result = _run(exp, work, progress)
    result.seconds = time.perf_counter() - started
    from gbuf.experiments import report

    report.write(result)
    return result


def _run(exp: Experiment, work: Path, progress) -> ExperimentResult:
    import gbuf.datasets as gd
    from gbuf import runtime
    from gbuf.train import bench as bench_module

    stages = _Stages(work, exp.path)
    spec = exp.dataset_spec()
    if exp.eval.vmaf:
        from gbuf.train import metrics

        if not metrics.vmaf_available():  # before hours of rendering and training, not after
            raise GbufError(f"{exp.path}: eval.vmaf = true, but the ffmpeg of imageio-ffmpeg here has no "
                            f"libvmaf; set it to false")

    def dataset():
        started = time.perf_counter()
        return build_store(exp, work, progress), {"render": time.perf_counter() - started}

    splits = stages.run("dataset", {"spec_sha256": spec.sha256()}, dataset)
    store = work / STORE_NAME
    train_seqs, test = list(splits.get("train", [])), list(splits.get("test", []))
    notes: list[str] = []
    rows_specs: list[tuple[str, ModelSpec | None]] = [(BICUBIC, None)]
    for label, m in exp.models.items():
        if m.init and not exp.resolve(m.init).is_file():
            notes.append(f"{label}: skipped: its checkpoint {m.init} is not here ({exp.resolve(m.init)})")
            _log.warning("experiment: %s skipped: %s not found", label, exp.resolve(m.init))
            continue
        rows_specs.append((label, m))

    result = ExperimentResult(experiment=exp.path, workdir=work, name=exp.name, train_sequences=train_seqs,
                              test_sequences=test, rows=[], notes=notes, timings=stages.timings, seconds=0.0,
                              ran=stages.ran, skipped=stages.skipped)
    # training: every row that trains, with the one budget
    checkpoints: dict[str, Path] = {}
    train_keys: dict[str, dict] = {}
    pending: list[tuple[str, ModelSpec, object, dict]] = []
    for label, m in rows_specs:
        if m is None:
            continue
        if not m.train:
            checkpoints[label] = exp.resolve(m.init)
            # the file's bytes, not its path: the experiment file may move, the weights may not change
            train_keys[label] = {"init_sha256": fileio.file_sha256(checkpoints[label]),
                                 "init_weights": m.init_weights}
            continue
        config = _train_config(exp, label, m, store, splits, work)
        key = _trajectory(config)
        train_keys[label] = key
        done = stages.finished(f"train-{label}", key)
        if done is not None:
            checkpoints[label] = work / done["checkpoint"]
        else:
            pending.append((label, m, config, key))
    if exp.run.jobs > 1 and len(pending) > 1:
        interrupted = _train_side_by_side(exp, pending, work, stages, checkpoints)
    else:
        interrupted = []
        for label, m, config, key in pending:
            try:
                done = stages.run(f"train-{label}", key, lambda: _train(exp, label, m, config, work, progress))
            except _Interrupted:
                interrupted = [label]
                break
            checkpoints[label] = work / done["checkpoint"]
    if interrupted:
        result.interrupted = True
        notes.extend(f"{label}: training interrupted; rerun the same command to resume it" for label in interrupted)
        return result

    device = runtime.resolve_device(exp.run.device)
    ds = gd.open(store)
    first = ds[test[0]][exp.lr_group]
    scale = first.scale
    lr_size = bench_module.parse_size(exp.bench.lr_size) if exp.bench.lr_size else (first.height, first.width)
    for label, m in rows_specs:
        eval_key = {"model": train_keys.get(label, BICUBIC), "test": test, "normalize": exp.normalize,
                    "lr_group": exp.lr_group, "weights": exp.eval.weights, "segment_frames": exp.eval.segment_frames,
                    "vmaf": exp.eval.vmaf, "options": None if m is None else m.options}
        scores = stages.run(f"eval-{label}", eval_key,
                            lambda: _evaluate(exp, label, m, checkpoints.get(label), store, test, device))
        arch = BICUBIC if m is None else m.model + (f"-{_short_hash(m.options)}" if m.options else "")
        bench_key = {"model": BICUBIC if m is None else m.model, "options": None if m is None else m.options,
                     "lr_size": list(lr_size), "scale": scale, "device": str(device), "threads": exp.run.threads,
                     "frames": exp.bench.frames, "warmup": exp.bench.warmup, "repeats": exp.bench.repeats}
        timing = stages.run(f"bench-{arch}", bench_key, lambda: _bench(exp, m, lr_size, scale, device))
        ckpt = checkpoints.get(label)
        result.rows.append(ModelRow(
            label=label, model=BICUBIC if m is None else m.model, kind=_kind(m), params=timing["params"],
            latency_ms=timing["latency_ms"], psnr=scores["psnr"], ssim=scores["ssim"], vmaf=scores["vmaf"],
            checkpoint=None if ckpt is None else _relative(ckpt, work), weights=scores["weights"],
            inputs=[] if m is None else list(m.inputs)))
    b = exp.budget
    result.facts = {
        "budget": {"iters": b.iters, "batch_size": b.batch_size, "patch": b.patch, "frames": b.frames, "lr": b.lr,
                   "seed": b.seed, "loss": dict(b.loss)},
        "lr_rates": {label: (m.lr or b.lr) for label, m in rows_specs if m is not None and m.train},
        "iterations": {label: (m.iters or b.iters) for label, m in rows_specs if m is not None and m.train},
        "render": spec.render.resolution, "scale": spec.render.scale, "samples": spec.render.samples,
        "frames_per_sequence": {s.name: s.frames[1] - s.frames[0] + 1 for s in spec.sequences},
        "splits": splits, "bench": {"lr_size": list(lr_size), "device": str(device), "threads": exp.run.threads},
        "jobs": exp.run.jobs,
        "normalize": exp.normalize, "lr_group": exp.lr_group, "eval_weights": exp.eval.weights,
        "description": exp.description, "command": f"gbuf experiment run {exp.path} -o {work}",
    }
    return result
