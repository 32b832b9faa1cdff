"""``gbuf scene``: list, show and build the procedural scene recipes (``gbuf.render.recipes``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def scene() -> None:
    """List, show and build the procedural scene recipes."""


@scene.command("list")
def list_() -> None:
    """Name the recipes, one line each."""
    from gbuf.render import recipes

    names = recipes.names()
    width = max(len(name) for name in names)
    for name in names:
        click.echo(f"{name:<{width}}  {recipes.describe(name)}")


@scene.command()
@click.argument("name")
def show(name: str) -> None:
    """What recipe NAME builds and what its --seed varies."""
    from gbuf.render import recipes

    found = recipes.info(name)
    click.echo(f"{found.name}: {found.description}")
    click.echo(f"--seed varies: {found.seed_varies}")
    click.echo(f"source: {found.path}")


@scene.command()
@click.argument("name")
@click.argument("out", metavar="OUT.blend", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int,
              help="Varies layout, materials, lights and time of day; `gbuf scene show NAME` says what exactly.")
@click.option("--frames", type=click.IntRange(min=1), help="Frames 1..N (default: the recipe's, 48).")
def build(name: str, out: Path, seed: int, frames: int | None) -> None:
    """Build recipe NAME into OUT.blend (a scene that ``gbuf render`` accepts)."""
    from gbuf.render import recipes

    path = recipes.build_blend(name, out, seed=seed, frames=frames)
    click.echo(f"{path}: recipe {name}, seed {seed} (the seed varies {recipes.info(name).seed_varies})")
