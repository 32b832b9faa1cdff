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
@click.argument("scene", required=False, metavar="[SCENE.blend]")
@click.option("-o", "--output", required=True, metavar="DATA.zarr", help="The gbuf store to write (created or resumed).")
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
def render(scene, output, resolution, scale, frames, samples, denoise, lr_mode, device, passes, seed, sequence,
           overwrite, allow_scripts, quiet) -> None:
    """Render SCENE.blend (default: the built-in default recipe) into HR/LR G-buffer sequences."""
    from gbuf.render import render as run

    result = run(scene, output, resolution=_resolution(resolution), scale=scale, frames=_frames(frames),
                 samples=samples, denoise=denoise, lr_mode=lr_mode, device=device.lower(), passes=passes,
                 seed=seed, sequence=sequence, overwrite=overwrite, allow_scripts=allow_scripts, quiet=quiet)
    if not quiet:
        if result.rendered == 0:
            click.echo(f"{result.output}/{result.sequence}: already complete ({result.num_frames} frames)")
        else:
            resumed = f", resumed at frame {result.resumed_from}" if result.resumed_from else ""
            click.echo(f"{result.output}/{result.sequence}: rendered {result.rendered} of {result.num_frames} "
                       f"frames in {result.seconds:.1f} s{resumed}")
