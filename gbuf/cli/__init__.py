"""The ``gbuf`` command line: one click group, one module per room.

Commands parse their options, call one library function and print. They hold no
logic of their own, and import heavy libraries (torch, bpy) only inside the
command body, so ``gbuf --help`` stays fast.
"""

from __future__ import annotations

import click

from gbuf.errors import GbufError


class GbufGroup(click.Group):
    """A click group that turns a ``GbufError`` into one line on stderr and exit 2."""

    def invoke(self, ctx: click.Context):
        from gbuf.cli._output import show_library_logs

        show_library_logs()
        try:
            return super().invoke(ctx)
        except GbufError as err:
            click.echo(f"gbuf: error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=GbufGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gbuf", prog_name="gbuf")
def main() -> None:
    """gbuf: render, degrade, share and learn from G-buffer video for real-time super-resolution."""


def _register() -> None:
    # Explicit imports: the command list is plain to read, nothing is discovered by scanning.
    from gbuf.cli import dataset, degrade, experiment, models, render, scene, train

    main.add_command(render.render)
    main.add_command(scene.scene)
    main.add_command(degrade.degrade)
    main.add_command(train.train)
    main.add_command(train.eval_)
    main.add_command(train.upscale)
    main.add_command(models.bench)
    main.add_command(models.export)
    main.add_command(dataset.dataset)
    main.add_command(experiment.experiment)


_register()
