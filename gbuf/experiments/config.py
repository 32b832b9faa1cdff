"""The experiment file: a dataset spec, the models, one training budget, evaluation and bench settings.

An experiment is a TOML file (``experiments/small.toml``) read by the house loader
(``gbuf.config_files``): unknown keys and values of the wrong type are one-line ``GbufError``s
naming the file and the key. Its tables::

    name = "small"
    normalize = "rdg"                 # the loader normalisation of every model (gbuf.datasets.loader)

    [dataset]                         # a dataset spec (gbuf.render.spec), inline ...
    [dataset.render]                  #   ... [render], [clips] and [[dataset.sources]] as in a spec file
    resolution = "160x96"
    [[dataset.sources]]
    recipe = "default"
    seeds = [0, 1]
    split = "train"
    # or: dataset = { spec = "small_spec.toml" }   (a spec file, relative to the experiment file)

    [budget]                          # the same for every model that trains
    iters = 2000
    batch_size = 4
    patch = 64                        # HR patch side
    frames = 6
    lr = 1e-3                         # a model may set its own (a fine-tune: lower)

    [models.rdg-s]                    # one table per row of the table; the name is its label
    [models.rdg-s-image]
    model = "rdg-s"
    inputs = ["image"]                # the G-buffer ablation (see ModelSpec.inputs)
    [models.rdg-s-authors]
    model = "rdg-s"
    init = "../../shared/reference/rdg/RDG_Small.pth"
    train = false                     # zero-shot: evaluate the weights as they are

Relative paths (``init``, ``dataset.spec``, scene files of an inline spec) are relative to the
experiment file, so its meaning does not depend on the folder it is run from.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Literal

from gbuf import config_files
from gbuf.errors import GbufError

#: Labels name files and folders of the work directory.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: The baseline row every table has.
BICUBIC = "bicubic"


@dataclasses.dataclass
class Budget:
    """``[budget]``: what every trained model gets (equal budgets)."""

    iters: int = 2000
    batch_size: int = 4
    #: HR patch side in pixels (LR patch = patch / scale).
    patch: int = 128
    #: Frames per training clip.
    frames: int = 6
    #: Adam learning rate; ``[models.X] lr`` overrides it for one model.
    lr: float = 1e-3
    #: Save a checkpoint every N iterations (an interrupted training resumes from the newest).
    ckpt_every: int = 250
    #: Validate on the spec's ``val`` split every N iterations (0: never).
    val_every: int = 0
    #: Seed of every training run (weights and crops).
    seed: int = 0
    #: Loss weights that differ from the RDG recipe's (``gbuf.train.config.LossConfig``), e.g.
    #: ``loss = { fft = 0.0, temporal = 0.0 }`` (Charbonnier only).
    loss: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvalSpec:
    """``[eval]``: scoring on the test split (``gbuf eval``'s metrics: display domain, RGB, 8-bit)."""

    #: Which weights of a trained checkpoint: ``ema`` (``params_ema``) or ``params``.
    weights: Literal["ema", "params"] = "ema"
    #: Frames per segment (a recurrent model's state resets at each), as ``gbuf eval``.
    segment_frames: int = 100
    #: Also VMAF (needs the ffmpeg with libvmaf of imageio-ffmpeg).
    vmaf: bool = False


@dataclasses.dataclass
class BenchSpec:
    """``[bench]``: latency as ``gbuf bench`` measures it (one frame, median of ``repeats``)."""

    #: LR size ``HxW`` to time at; empty: the first test sequence's LR size.
    lr_size: str = ""
    frames: int = 5
    warmup: int = 2
    repeats: int = 5


@dataclasses.dataclass
class RunSpec:
    """``[run]``: where and how it runs (not part of what is measured)."""

    #: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    device: str = "auto"
    #: Mixed precision of training (``gbuf train --amp``).
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    #: Torch CPU threads (the house default: 1; docs/training.md).
    threads: int = 1
    #: DataLoader workers of each training run.
    workers: int = 0
    #: Hold each training's sequences in memory (``gbuf train --set data.cache=true``): for the
    #: small stores an experiment renders; the same crops, less time decoding them.
    cache: bool = False
    #: Trainings run at once, each in its own process with ``threads`` torch threads (on a CPU:
    #: about one per core; a table's rows train independently, so their weights do not change).
    jobs: int = 1


@dataclasses.dataclass
class ModelSpec:
    """``[models.LABEL]``: one row of the table."""

    #: Registry name (``gbuf bench`` lists them); default: the label.
    model: str = ""
    #: Buffers the model reads; empty: its own. ``["image"]`` is the G-buffer ablation of RDG: the
    #: G-buffers are not loaded and the network sees zeros in their place (``RDG(inputs=...)``).
    inputs: list[str] = dataclasses.field(default_factory=list)
    #: Start from these weights (gbuf's or the authors' checkpoint; ``gbuf train --init``). A missing
    #: file skips the row with a note (the authors' checkpoint is not everywhere).
    init: str = ""
    init_weights: Literal["ema", "params"] = "ema"
    #: False: evaluate ``init`` as it is (zero-shot); true: train with the budget.
    train: bool = True
    #: Learning rate of this model (0: the budget's).
    lr: float = 0.0
    #: Iterations of this model (0: the budget's); a model whose step costs many times another's
    #: may get fewer, for about the same CPU time (the report lists every row's iterations).
    iters: int = 0
    #: Further constructor options (``gbuf.train.models.create``).
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _ExperimentFile:
    """The top level of the file, less ``[dataset]`` and ``[models]`` (read on their own)."""

    name: str = ""
    description: str = ""
    normalize: Literal["rdg", "rdg-official", "none"] = "rdg"
    #: LR group trained and evaluated on: the native render ``lr`` (RDG's data).
    lr_group: str = "lr"
    budget: Budget = dataclasses.field(default_factory=Budget)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    bench: BenchSpec = dataclasses.field(default_factory=BenchSpec)
    run: RunSpec = dataclasses.field(default_factory=RunSpec)


@dataclasses.dataclass
class Experiment:
    """A checked experiment file (``load_experiment``)."""

    path: Path
    name: str
    description: str
    normalize: str
    lr_group: str
    #: The dataset spec: a spec file (``dataset = { spec = "FILE" }``), or None and the inline
    #: ``[dataset]`` tables as TOML text; ``spec_origin`` names it in messages.
    spec_file: Path | None
    spec_text: str
    spec_origin: str
    budget: Budget
    eval: EvalSpec
    bench: BenchSpec
    run: RunSpec
    #: label -> model, in the file's order.
    models: dict[str, ModelSpec]

    def dataset_spec(self):
        """The checked ``gbuf.render.spec.DatasetSpec`` (nothing rendered)."""
        return check_spec(self.spec_file, self.spec_text, self.spec_origin)

    def resolve(self, path: str) -> Path:
        """A path of the file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.path.resolve().parent / p


def _check_budget(b: Budget, where: str) -> None:
    for name in ("iters", "batch_size", "patch", "frames"):
        if getattr(b, name) < 1:
            raise GbufError(f"{where}: budget.{name} must be >= 1, got {getattr(b, name)}")
    if not b.lr > 0:
        raise GbufError(f"{where}: budget.lr must be > 0, got {b.lr}")
    if b.ckpt_every < 0 or b.val_every < 0:
        raise GbufError(f"{where}: budget.ckpt_every and budget.val_every must be >= 0")
    from gbuf.train import config as train_config

    probe = train_config.TrainConfig()
    for key, value in b.loss.items():  # unknown names and wrong types are refused here, not hours later
        train_config.set_dotted(probe, f"loss.{key}", value, f"{where}: budget")


def _read_models(raw, where: str) -> dict[str, ModelSpec]:
    from gbuf.train import models as registry

    if not isinstance(raw, dict) or not raw:
        raise GbufError(f"{where}: no [models.NAME] table; an experiment names at least one model")
    out = {}
    for label, table in raw.items():
        if not LABEL.match(label) or label == BICUBIC:
            raise GbufError(f"{where}: models.{label}: a label is letters, digits, _ . - (and not "
                            f"{BICUBIC!r}, the baseline row every table has)")
        if not isinstance(table, dict):
            raise GbufError(f"{where}: models.{label} must be a table, got {table!r}")
        spec = config_files.overlay(ModelSpec(), table, where, f"models.{label}.")
        spec.model = spec.model or label
        if spec.model not in registry.names():
            raise GbufError(f"{where}: models.{label}.model {spec.model!r}: unknown model; known: "
                            f"{', '.join(registry.names())}")
        if not spec.train and not spec.init:
            raise GbufError(f"{where}: models.{label}: train = false needs init = CHECKPOINT (the weights "
                            f"to evaluate)")
        if spec.lr < 0 or spec.iters < 0:
            raise GbufError(f"{where}: models.{label}.lr and .iters must be >= 0 (0: the budget's)")
        if spec.inputs:
            spec.options = {**spec.options, "inputs": list(spec.inputs)}
        out[label] = spec
    return out


def _spec_text(raw, path: Path) -> tuple[Path | None, str, str]:
    """The dataset spec of the file: ``(spec file or None, inline TOML text, name for messages)``."""
    import tomli_w

    where = f"{path}: dataset"
    if not isinstance(raw, dict) or not raw:
        raise GbufError(f"{path}: no [dataset]; an experiment names a dataset spec ([dataset] tables or "
                        f"dataset = {{ spec = \"FILE.toml\" }})")
    if "spec" in raw:
        if set(raw) != {"spec"} or not isinstance(raw["spec"], str):
            raise GbufError(f"{where}: give spec = \"FILE.toml\" alone, or the spec's tables inline")
        file = Path(raw["spec"]).expanduser()
        file = file if file.is_absolute() else path.resolve().parent / file
        if not file.is_file():
            raise GbufError(f"{where}.spec: {file}: no such file")
        return file, "", str(file)
    # Scene files of an inline spec are relative to the experiment file, as every path in it.
    sources = raw.get("sources")
    if isinstance(sources, list):
        fixed = []
        for source in sources:
            if isinstance(source, dict) and isinstance(source.get("file"), str):
                file = Path(source["file"]).expanduser()
                source = {**source, "file": str(file if file.is_absolute() else path.resolve().parent / file)}
            fixed.append(source)
        raw = {**raw, "sources": fixed}
    try:
        return None, tomli_w.dumps(raw), f"{path} [dataset]"
    except (TypeError, ValueError) as err:
        raise GbufError(f"{where}: {err}") from None


def check_spec(spec_file: Path | None, spec_text: str, origin: str):
    """The ``DatasetSpec`` of a spec file, or of inline spec text (errors then name ``origin``)."""
    from gbuf.render.spec import load_spec

    if spec_file is not None:
        return load_spec(spec_file)
    with tempfile.TemporaryDirectory(prefix="gbuf-experiment-") as tmp:
        file = Path(tmp) / "dataset.toml"
        file.write_text(spec_text, encoding="utf-8")
        try:
            return load_spec(file)
        except GbufError as err:
            raise GbufError(str(err).replace(str(file), origin)) from None


def load_experiment(path: str | Path) -> Experiment:
    """Read and check the experiment file at ``path`` (nothing is rendered or trained)."""
    path = Path(path)
    if path.suffix.lower() != ".toml":
        raise GbufError(f"{path}: an experiment is a .toml file")
    data = config_files.read_config_file(path)
    raw_dataset, raw_models = data.pop("dataset", None), data.pop("models", None)
    top = config_files.overlay(_ExperimentFile(), data, str(path))
    _check_budget(top.budget, str(path))
    if top.eval.segment_frames < 1:
        raise GbufError(f"{path}: eval.segment_frames must be >= 1")
    if top.bench.lr_size:
        from gbuf.train.bench import parse_size

        try:
            parse_size(top.bench.lr_size)
        except GbufError as err:
            raise GbufError(f"{path}: bench.lr_size: {err}") from None
    if top.run.threads < 1 or top.run.workers < 0 or top.run.jobs < 1:
        raise GbufError(f"{path}: run.threads and run.jobs must be >= 1 and run.workers >= 0")
    spec_file, spec_text, origin = _spec_text(raw_dataset, path)
    splits = check_spec(spec_file, spec_text, origin).splits
    models = _read_models(raw_models, str(path))
    if not splits["test"]:
        raise GbufError(f"{origin}: no source in split \"test\"; the experiment scores the models on it")
    if not splits["train"] and any(m.train for m in models.values()):
        raise GbufError(f"{origin}: no source in split \"train\", and models train on it")
    return Experiment(path=path, name=top.name or path.stem, description=top.description,
                      normalize=top.normalize, lr_group=top.lr_group, spec_file=spec_file, spec_text=spec_text,
                      spec_origin=origin,
                      budget=top.budget, eval=top.eval, bench=top.bench, run=top.run, models=models)
