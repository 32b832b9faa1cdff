"""``gbuf dataset ...``: build from a spec, inspect, verify, import, export, preview (and share: cli/share.py)."""

from __future__ import annotations

import json

import click

from gbuf.errors import GbufError


@click.group()
def dataset() -> None:
    """Build, inspect, verify, convert, preview and share gbuf datasets."""


@dataset.command()
@click.argument("ds")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(ds: str, as_json: bool) -> None:
    """Print sequences, resolutions, buffers, shapes, dtypes and sizes of DS."""
    from gbuf.datasets.summary import format_info, info as dataset_info

    summary = dataset_info(ds)
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else format_info(summary))


@dataset.command()
@click.argument("ds")
@click.option("--no-checksums", is_flag=True, help="Check structure only, not every frame's checksum.")
def verify(ds: str, no_checksums: bool) -> None:
    """Check shapes, HR/LR alignment, completeness and checksums; name every bad frame."""
    from gbuf.datasets.integrity import verify as verify_store

    report = verify_store(ds, checksums=not no_checksums)
    for problem in report.problems:
        click.echo(f"gbuf: error: {problem}", err=True)
    if not report.ok:
        click.echo(f"{ds}: {len(report.problems)} problem(s)", err=True)
        raise SystemExit(2)
    click.echo(f"{ds}: OK ({report.groups_checked} groups, {report.frames_checked} frames checked)")


@dataset.command("import-folder")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, help="The gbuf store to create.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def import_folder(root: str, output: str, overwrite: bool) -> None:
    """Import the official RDG folder layout (GT/<clip>/Image/000.png, X4LR/...) into a store."""
    from gbuf.datasets.folder import import_folder as run

    out = run(root, output, overwrite=overwrite)
    click.echo(f"wrote {out}")


@dataset.command()
@click.argument("ds")
@click.option("--h5", "h5_path", help="Write one HDF5 file.")
@click.option("--folder", "folder_path", help="Write the RDG folder layout.")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
def export(ds: str, h5_path: str | None, folder_path: str | None, overwrite: bool) -> None:
    """Export DS to HDF5 (--h5 OUT.h5) or to the RDG folder layout (--folder OUT)."""
    if bool(h5_path) == bool(folder_path):
        raise GbufError(f"{ds}: give exactly one of --h5 OUT.h5 or --folder OUT")
    if h5_path:
        from gbuf.datasets.hdf5 import export_hdf5

        click.echo(f"wrote {export_hdf5(ds, h5_path, overwrite=overwrite)}")
    else:
        from gbuf.datasets.folder import export_folder

        click.echo(f"wrote {export_folder(ds, folder_path, overwrite=overwrite)}")


@dataset.command()
@click.argument("ds")
@click.option("--sequence", help="Sequence name (default: the first).")
@click.option("--frame", type=int, default=0, show_default=True, help="Frame of the sheet.")
@click.option("--resolution", default="hr", show_default=True, help="hr, lr or a degraded group.")
@click.option("-o", "--output", help="Contact sheet PNG (with --camera-path: the path picture).")
@click.option("--video", help="MP4 of the sheet over the whole sequence.")
@click.option("--camera-path", is_flag=True,
              help="Instead of a sheet: the sequence's camera path drawn on a top view of its scene (renders "
                   "the top view with Blender).")
@click.option("--width", type=int, default=960, show_default=True, help="With --camera-path: picture width.")
@click.option("--allow-scripts", is_flag=True, help="With --camera-path: let Python embedded in the .blend run.")
def preview(ds, sequence, frame, resolution, output, video, camera_path, width, allow_scripts) -> None:
    """A contact sheet of every buffer of one frame (PNG), of every frame (--video MP4), or the
    camera path on a top view of the scene (--camera-path -o PATH.png)."""
    if camera_path:
        if not output or video:
            raise GbufError(f"{ds}: --camera-path writes one picture: give -o PATH.png (and no --video)")
        from gbuf.render.path_preview import write_camera_path

        result = write_camera_path(ds, output, sequence=sequence, width=width, allow_scripts=allow_scripts)
        click.echo(f"wrote {result.path} ({result.width}x{result.height}, {len(result.centres)} frames of "
                   f"{result.sequence})")
        return
    if not output and not video:
        raise GbufError(f"{ds}: give -o SHEET.png and/or --video OUT.mp4")
    from gbuf.datasets import preview as pv

    if output:
        click.echo(f"wrote {pv.write_sheet(ds, output, sequence=sequence, frame=frame, resolution=resolution)}")
    if video:
        click.echo(f"wrote {pv.write_video(ds, video, sequence=sequence, resolution=resolution)}")


@dataset.command()
@click.argument("spec", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, metavar="DS", help="The local gbuf store to build (created or resumed).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Render on Ray, as `gbuf render --ray` (no ADDRESS: a local Ray; put --ray last or write "
                   "--ray=ADDRESS).")
@click.option("--quiet", is_flag=True, help="No progress bar (for logs).")
def build(spec: str, output: str, ray_address: str | None, quiet: bool) -> None:
    """Render the whole dataset SPEC.toml describes into DS and record its train/val/test split
    (docs/datasets.md); a rerun resumes it and renders nothing once it is complete."""
    from gbuf.cli._output import progress_bar
    from gbuf.render.dataset_build import build_dataset

    with progress_bar(not quiet, unit="frames") as frames:
        result = build_dataset(spec, output, ray_address=ray_address, frame_progress=frames)
    splits = ", ".join(f"{n} {split}" for split, n in result.per_split().items())
    click.echo(f"{result.output}: {result.sequences} sequences ({splits}): {len(result.rendered)} rendered "
               f"({result.frames_rendered} frames), {len(result.complete)} already complete, "
               f"{result.seconds:.1f} s; split recorded (spec {result.spec_sha256[:12]})")


def _register_sharing() -> None:
    from gbuf.cli import share

    share.register(dataset)


_register_sharing()
