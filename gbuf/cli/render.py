"""``gbuf render``: Blender scenes to HR/LR G-buffer sequences (``gbuf.render.render``)."""

from __future__ import annotations

import re

import click

from gbuf.errors import GbufError
from gbuf.render.scenefiles import CAMERA_MODES

_DEVICES = ("cpu", "cuda", "optix", "hip", "metal")


def _resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match:
        raise GbufError(f"--resolution {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    return int(match.group(1)), int(match.group(2))


def _frames(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(-?\d+)\s*[:\-]\s*(-?\d+)\s*", text) or re.fullmatch(r"\s*(-?\d+)\s*", text)
    if not match:
        raise GbufError(f"--frames {text!r}: expected START:END (inclusive), e.g. 1:48")
    start = int(match.group(1))
    end = int(match.group(2)) if match.lastindex == 2 else start
    return start, end


@click.command()
@click.argument("scenes", nargs=-1, metavar="[SCENE]...")
@click.option("-o", "--output", required=True, metavar="DATA.zarr|URL",
              help="The gbuf store to write (created or resumed): a local path, or an fsspec URL "
                   "(s3://, gs://, az://, ...), rendered into a local working store and pushed there when "
                   "complete (credentials as for `gbuf dataset push`: GBUF_STORAGE_OPTIONS).")
@click.option("--resolution", default="1920x1080", show_default=True, metavar="WxH", help="HR size.")
@click.option("--scale", default=4, show_default=True, type=int, help="LR = HR / scale.")
@click.option("--frames", metavar="A:B", help="Blender frames A to B, inclusive (default: the scene's range).")
@click.option("--samples", type=int, help="Fixed samples per pixel (default: adaptive, max 1000, threshold 0.01).")
@click.option("--denoise/--no-denoise", default=True, show_default=True, help="OpenImageDenoise on the image.")
@click.option("--lr-mode", type=click.Choice(["render", "aliased"]), default="render", show_default=True,
              help="render: LR rendered like HR; aliased: 1 jittered sample per pixel, as a real-time renderer.")
@click.option("--device", default="cpu", show_default=True, metavar="|".join(_DEVICES), help="Cycles device.")
@click.option("--passes", metavar="LIST",
              help="Comma-separated buffers (default: image,depth,normal,motion,brdf; also "
                   "diffuse_color, glossy_color, emission, alpha).")
@click.option("--seed", default=0, show_default=True, type=int, help="Cycles seed (and the default recipe's).")
@click.option("--sequence", metavar="NAME", help="Sequence name in the store (default: the scene file's stem).")
@click.option("--camera", type=click.Choice(CAMERA_MODES), default="auto", show_default=True,
              help="keep: the scene's own (animated) camera; flythrough: a smooth game-camera path through "
                   "the scene's free space, kept clear of surfaces by ray casts; walk: first person at eye "
                   "height above the ground, at walking speed, stopping short of walls; orbit: circling the "
                   "scene's bounds; auto: keep where the scene's camera is animated (or a .blend has one), "
                   "else flythrough. Generated paths are a function of the file's sha256, --seed and the "
                   "clip index, and their keyframes are stored (docs/rendering.md, Camera modes).")
@click.option("--clips", default=1, show_default=True, type=int, metavar="N",
              help="Clips per scene: N > 1 renders sequences NAME-clip0 .. NAME-clip<N-1>, each its own "
                   "camera path (flythrough, walk or orbit).")
@click.option("--clip", "first_clip", default=0, show_default=True, type=int, metavar="K",
              help="Index of the (first) clip whose camera path is drawn: with --clips N, clips K .. K+N-1 "
                   "(one block task renders one clip of a bigger set this way).")
@click.option("--overwrite", is_flag=True, help="Replace the sequence instead of resuming it.")
@click.option("--allow-scripts", is_flag=True, help="Let Python embedded in the .blend run (untrusted by default).")
@click.option("--quiet", is_flag=True, help="No progress bar (for logs).")
@click.option("--frames-per-shard", type=int, metavar="N",
              help="Frames per shard of a new sequence (default: about 192 MiB shards, at most 64 frames).")
@click.option("--plan", is_flag=True, help="Only create the sequence's arrays (final shape) and print its blocks.")
@click.option("--block", type=int, metavar="K",
              help="Render only block K (one Slurm array / indexed-job task; see docs/scaling.md).")
@click.option("--blocks-of", type=int, metavar="N", help="Frames per block (a multiple of the shard; default: one shard).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Render every scene as one Ray job, one task per block (no ADDRESS: a local Ray; "
                   "put --ray last or write --ray=ADDRESS).")
@click.option("--retries", default=2, show_default=True, type=int, help="With --ray: retries of a failed block task.")
@click.option("--work-dir", metavar="DIR",
              help="With -o URL: the local working store (default: $GBUF_CACHE_DIR/render/<hash of URL>/<name>, "
                   "else ~/.cache/gbuf/render/...); kept across runs, so a rerun resumes there.")
@click.option("--keep-work/--no-keep-work", default=True, show_default=True,
              help="With -o URL: keep the working store after the push (the resume point), or read back "
                   "and check what the push sent, then delete the working store.")
def render(scenes, output, resolution, scale, frames, samples, denoise, lr_mode, device, passes, seed, sequence,
           camera, clips, first_clip, overwrite, allow_scripts, quiet, frames_per_shard, plan, block, blocks_of, ray_address,
           retries, work_dir, keep_work) -> None:
    """Render SCENE files (.blend, .gltf/.glb, .fbx, .obj, .usd/.usda/.usdc/.usdz; default: the built-in
    default recipe) into HR/LR G-buffer sequences."""
    from gbuf.cli._output import progress_bar
    from gbuf.render.settings import ScaleOut, make_settings

    settings = make_settings(resolution=_resolution(resolution), scale=scale, samples=samples, denoise=denoise,
                             lr_mode=lr_mode, device=device.lower(), passes=passes, seed=seed)
    if ray_address is not None:
        if block is not None or plan:
            raise GbufError("render: --ray plans and runs every block itself; leave out --block/--plan")
        if overwrite:
            raise GbufError("render: --overwrite is not supported with --ray; remove the sequence first")
        if camera != "auto" or clips != 1 or first_clip != 0:
            raise GbufError("render: --camera, --clips and --clip are not supported with --ray yet "
                            "(its tasks use --camera auto, one clip; `gbuf dataset build --ray` takes them)")
        from gbuf.render.blocks import render_on_ray

        with progress_bar(not quiet, unit="bytes") as progress:
            result = render_on_ray(list(scenes), output, settings, frames=_frames(frames), sequence=sequence,
                                   frames_per_shard=frames_per_shard, allow_scripts=allow_scripts,
                                   address=ray_address or None, blocks_of=blocks_of, max_retries=retries,
                                   echo=None if quiet else (lambda msg: click.echo(msg, err=True)),
                                   work_dir=work_dir, keep_work=keep_work, progress=progress)
        click.echo(f"{result.work_store or result.output}: {', '.join(result.sequences)}: {result.blocks_run} "
                   f"block task(s) run, {result.blocks_skipped} already complete, {result.verified_frames} frames "
                   f"verified, {result.seconds:.1f} s")
        if result.published is not None:
            _echo_push(result.published)
        return

    from gbuf.render.job import render_scenes

    with progress_bar(not quiet, unit="frames") as frame_progress, \
            progress_bar(not quiet, unit="bytes") as progress:
        run = render_scenes(list(scenes), output, settings, frames=_frames(frames), sequence=sequence,
                            overwrite=overwrite, allow_scripts=allow_scripts, quiet=quiet,
                            scale_out=ScaleOut(frames_per_shard=frames_per_shard, plan=plan, block=block,
                                               blocks_of=blocks_of),
                            work_dir=work_dir, keep_work=keep_work, progress=progress,
                            frame_progress=frame_progress, camera=camera, clip=first_clip, clips=clips)
    for result in [] if plan else run.results:
        _echo_result(result, quiet)
    for p in run.plans:
        # Always printed (also with --quiet): scripts (and the --ray driver) read the last line.
        click.echo(f"{p.store}/{p.sequence}: {p.num_frames} frames, blocks 0..{p.blocks - 1} of "
                   f"{p.frames_per_block} frames ({p.frames_per_shard} per shard), {len(p.pending)} to render")
    if run.work_store is not None and run.published is None:  # a plan or a block: nothing pushed
        what = f"block {block}" if block is not None else "the plan"
        names = ", ".join(r.sequence for r in run.results)
        work = run.work_store
        click.echo(f"note: {what} of {names} is in the working store {work}; --block/--plan push nothing: once "
                   f"every block is done, `gbuf render ... -o {run.output} --work-dir {work}` (same options) or "
                   f"`gbuf dataset push {work} {run.output}` publishes it", err=True)
    if run.published is not None:
        _echo_push(run.published)


def _echo_push(published) -> None:
    from gbuf.cli.share import echo_push

    # Always printed (also with --quiet): the last line says what reached the URL.
    kept = (f"working store {published.work_store} removed (what was sent read back and checked)"
            if published.work_removed else f"working store {published.work_store} kept")
    echo_push(published.push, what=published.url, tail=f"; {kept}")


def _echo_result(result, quiet) -> None:
    if not quiet:
        if result.rendered == 0:
            click.echo(f"{result.output}/{result.sequence}: already complete ({result.num_frames} frames)")
        else:
            resumed = f", resumed at frame {result.resumed_from}" if result.resumed_from else ""
            click.echo(f"{result.output}/{result.sequence}: rendered {result.rendered} of {result.num_frames} "
                       f"frames in {result.seconds:.1f} s{resumed}")
