"""``gbuf render``: Blender scenes to HR/LR G-buffer sequences (``gbuf.render.render``)."""

from __future__ import annotations

import re

import click

from gbuf.errors import GbufError

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
@click.argument("scenes", nargs=-1, metavar="[SCENE.blend]...")
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
           overwrite, allow_scripts, quiet, frames_per_shard, plan, block, blocks_of, ray_address, retries,
           work_dir, keep_work) -> None:
    """Render SCENE.blend files (default: the built-in default recipe) into HR/LR G-buffer sequences."""
    from gbuf.datasets.remote_store import is_url

    url = output if is_url(output) else None
    if url is None and (work_dir is not None or not keep_work):
        raise GbufError("render: --work-dir and --no-keep-work are for -o URL (a local -o is the store itself)")
    if ray_address is not None:
        _render_on_ray(scenes, output, ray_address, blocks_of, retries, quiet, locals())
        return
    if len(scenes) > 1 and (sequence or block is not None or plan):
        raise GbufError("render: --sequence, --block and --plan take one scene (use --ray for several)")
    if overwrite and (block is not None or plan):
        raise GbufError("render: --overwrite with --block/--plan would discard other blocks' frames; "
                        "remove the sequence first")
    work = None
    if url is not None:
        from gbuf.render.blocks import check_destination, work_store_for

        work = work_store_for(url, work_dir)
        if block is None and not plan:  # block tasks never push: they need no access to the URL
            check_destination(url, work)
        output = str(work)
    try:
        results = _render_each(scenes, output, resolution, scale, frames, samples, denoise, lr_mode, device,
                               passes, seed, sequence, overwrite, allow_scripts, quiet, frames_per_shard, plan,
                               block, blocks_of)
    except GbufError as err:
        if url is None:
            raise
        from gbuf.render.blocks import unpublished_note

        raise GbufError(f"{err} ({unpublished_note(url, work)})") from None
    except BaseException:
        if url is not None:  # interrupted: say where the frames are
            from gbuf.render.blocks import unpublished_note

            click.echo(f"gbuf: {unpublished_note(url, work)}; rerun the same command to resume", err=True)
        raise
    if url is None:
        return
    if block is not None or plan:
        what = f"block {block}" if block is not None else "the plan"
        names = ", ".join(r.sequence for r in results)
        click.echo(f"note: {what} of {names} is in the working store {work}; --block/--plan push nothing: once "
                   f"every block is done, `gbuf render ... -o {url} --work-dir {work}` (same options) or "
                   f"`gbuf dataset push {work} {url}` publishes it", err=True)
        return
    _publish(work, url, keep_work, quiet)


def _render_each(scenes, output, resolution, scale, frames, samples, denoise, lr_mode, device, passes, seed,
                 sequence, overwrite, allow_scripts, quiet, frames_per_shard, plan, block, blocks_of) -> list:
    from gbuf.render import render as run

    results = []
    for scene in scenes or (None,):
        result = run(scene, output, resolution=_resolution(resolution), scale=scale, frames=_frames(frames),
                     samples=samples, denoise=denoise, lr_mode=lr_mode, device=device.lower(), passes=passes,
                     seed=seed, sequence=sequence, overwrite=overwrite, allow_scripts=allow_scripts,
                     quiet=quiet, frames_per_shard=frames_per_shard, block=block, blocks_of=blocks_of, plan=plan)
        results.append(result)
        if plan:
            _echo_plan(result, blocks_of)
            continue
        _echo_result(result, quiet)
    return results


def _publish(work, url, keep_work, quiet) -> None:
    from gbuf.render.blocks import publish

    r = publish(work, url, keep_work=keep_work, progress=not quiet)
    _echo_push(r, work, url, quiet)


def _echo_push(r: dict, work, url: str, quiet: bool) -> None:
    from gbuf.datasets.summary import human_bytes

    # Always printed (also with --quiet): the last line says what reached the URL.
    kept = (f"working store {work} removed (what was sent read back and checked)" if r.get("work_removed")
            else f"working store {work} kept")
    click.echo(f"pushed {url}: {r['sent_files']} file(s), {human_bytes(r['sent_bytes'])} sent, "
               f"{r['skipped_files']} already there; {r['files']} file(s), {human_bytes(r['total_bytes'])} "
               f"in all; {kept}")


def _echo_plan(result, blocks_of) -> None:
    import gbuf.datasets as gd
    from gbuf.render.blocks import pending_blocks

    pending, count = pending_blocks(result.output, result.sequence, blocks_of)
    seq = gd.open(result.output, mode="r")[result.sequence]
    fps = seq[seq.resolutions[0]].frames_per_shard
    # Always printed (also with --quiet): scripts read the last line.
    click.echo(f"{result.output}/{result.sequence}: {result.num_frames} frames, blocks 0..{count - 1} of "
               f"{blocks_of or fps} frames ({fps} per shard), {len(pending)} to render")


def _render_on_ray(scenes, output, address, blocks_of, retries, quiet, opts) -> None:
    from gbuf.render.blocks import render_on_ray

    if opts["block"] is not None or opts["plan"]:
        raise GbufError("render: --ray plans and runs every block itself; leave out --block/--plan")
    if opts["overwrite"]:
        raise GbufError("render: --overwrite is not supported with --ray; remove the sequence first")
    forwarded = ["--resolution", opts["resolution"], "--scale", str(opts["scale"]), "--lr-mode", opts["lr_mode"],
                 "--device", opts["device"], "--seed", str(opts["seed"]),
                 "--denoise" if opts["denoise"] else "--no-denoise"]
    for flag, key in (("--frames", "frames"), ("--samples", "samples"), ("--passes", "passes"),
                      ("--sequence", "sequence"), ("--frames-per-shard", "frames_per_shard")):
        if opts[key] is not None:
            forwarded += [flag, str(opts[key])]
    if opts["allow_scripts"]:
        forwarded.append("--allow-scripts")
    result = render_on_ray(list(scenes), output, address=address or None, render_options=forwarded,
                           blocks_of=blocks_of, max_retries=retries,
                           echo=None if quiet else (lambda msg: click.echo(msg, err=True)),
                           work_dir=opts["work_dir"], keep_work=opts["keep_work"], progress=not quiet)
    click.echo(f"{result.work_store or result.output}: {', '.join(result.sequences)}: {result.blocks_run} block "
               f"task(s) run, {result.blocks_skipped} already complete, {result.verified_frames} frames verified, "
               f"{result.seconds:.1f} s")
    if result.published is not None:
        _echo_push(result.published, result.work_store, result.output, quiet)


def _echo_result(result, quiet) -> None:
    if not quiet:
        if result.rendered == 0:
            click.echo(f"{result.output}/{result.sequence}: already complete ({result.num_frames} frames)")
        else:
            resumed = f", resumed at frame {result.resumed_from}" if result.resumed_from else ""
            click.echo(f"{result.output}/{result.sequence}: rendered {result.rendered} of {result.num_frames} "
                       f"frames in {result.seconds:.1f} s{resumed}")
