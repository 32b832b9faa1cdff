"""Experiments as data: a TOML file names a dataset spec, models and one budget; one call runs it.

``run_experiment(path, workdir=...)`` (``gbuf experiment run FILE -o WORKDIR``) renders the
dataset (``gbuf.render``), trains the models it names with equal budgets, scores every model and
the bicubic baseline on the held-out test split and measures their latency (``gbuf.train``),
and writes a paper-shaped table, an SVG chart and the time by stage. Each stage keeps its result
in a file, so a rerun skips what finished and resumes an interrupted training.

This room sits above ``gbuf.render`` and ``gbuf.train`` and below ``gbuf.cli``. Modules:

* ``config``: the experiment file (typed, unknown keys refused) -> ``Experiment``
* ``run``: the stages and ``run_experiment`` -> ``ExperimentResult``
* ``report``: ``results.md``, ``results.svg``, ``results.json``

Importing this package loads neither torch nor bpy.
"""

from __future__ import annotations

from gbuf.experiments.config import Experiment, load_experiment
from gbuf.experiments.run import ExperimentResult, ModelRow, run_experiment

__all__ = ["Experiment", "ExperimentResult", "ModelRow", "load_experiment", "run_experiment"]
