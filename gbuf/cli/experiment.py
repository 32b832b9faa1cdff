"""``gbuf experiment run FILE``: an experiment file, run or resumed (``gbuf.experiments.run_experiment``)."""

from __future__ import annotations

import sys

import click


@click.group()
def experiment() -> None:
    """Experiments as data: a dataset spec, models and a budget in one TOML file."""


@experiment.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "workdir", type=click.Path(file_okay=False), metavar="WORKDIR",
              help="Work directory (store, runs, stage results, report); default runs/<FILE stem>. "
                   "A rerun there skips the finished stages.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(file, workdir, quiet) -> None:
    """Render the dataset, train and score every model of FILE; write WORKDIR/results.md."""
    from gbuf.cli._output import progress_bar
    from gbuf.experiments import report
    from gbuf.experiments.run import run_experiment

    with progress_bar(not quiet, unit="steps") as progress:
        result = run_experiment(file, workdir=workdir, progress=progress)
    if result.interrupted:
        click.echo(f"{result.workdir}: interrupted; rerun `gbuf experiment run {file}"
                   f"{'' if workdir is None else f' -o {workdir}'}` to resume", err=True)
        sys.exit(130)
    click.echo(report.table_markdown(result), nl=False)
    click.echo(f"table: {result.table}")
    click.echo(f"plot: {result.plot}")
    for line in report.timing_lines(result):
        click.echo(line)
    if result.skipped:
        click.echo(f"skipped (finished before): {', '.join(result.skipped)}")
