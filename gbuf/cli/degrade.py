"""``gbuf degrade``: synthesise LR groups from HR (issue 4)."""

from __future__ import annotations

import click

from gbuf.cli._options import threads_option
from gbuf.errors import GbufError


@click.command()
@click.argument("ds", required=False)
@click.option("--bicubic", is_flag=True, help="MATLAB-compatible bicubic imresize (BI).")
@click.option("--gaussian", is_flag=True, help="BD: Gaussian blur, then every scale-th pixel.")
@click.option("--realworld", is_flag=True, help="Real-ESRGAN second-order pipeline with RealBasicVSR's clip rules.")
@click.option("--scale", default="4", show_default=True, help="Reduction factor (HR size / LR size).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
@click.option("--name", "group", help="Name of the new group (default lr_<method>_x<scale>).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML/YAML file overriding the defaults (see docs/degrade.md).")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE",
              help="Any setting by its dotted name, e.g. realworld.white=4 (over --config; flags win).")
@click.option("--overwrite", is_flag=True, help="Replace an existing group (or output folder).")
@click.option("--variant", type=click.Choice(["matlab", "duf"]),
              help="--gaussian: BD variant (default matlab, BasicVSR's).")
@click.option("--sigma", type=float, help="--gaussian: blur sigma (default 1.6; duf: 0.4 x scale).")
@click.option("--gbuffers", "gbuffer_mode", type=click.Choice(["point", "area"]),
              help="How depth/normal/brdf/motion are resampled (default point).")
@click.option("--no-video", is_flag=True, help="--realworld: skip the video-compression steps.")
@click.option("--preset", type=click.Choice(["realbasicvsr", "star"]),
              help="--realworld: RealBasicVSR's clip rules (default) or STAR's (codec last, one draw per clip).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@threads_option
@click.option("--input", "input_dir", type=click.Path(file_okay=False), help="A folder of PNG/EXR frames.")
@click.option("--output", "output_dir", type=click.Path(file_okay=False), help="Where --input's LR frames go.")
def degrade(ds, bicubic, gaussian, realworld, scale, seed, group, config_path, extra, overwrite, variant, sigma, gbuffer_mode, no_video,
            preset, device, threads, input_dir, output_dir) -> None:
    """Make an LR group from HR in every sequence of DS: --bicubic, --gaussian or --realworld.

    One method per run (run degrade once per method). --overwrite builds the new group
    beside the old one and swaps it in only when complete. With --input/--output instead of DS, degrade a folder of PNG (sRGB) or EXR
    (linear) frames, or a folder of such clip folders.
    """
    from gbuf.config_files import parse_set
    from gbuf.datasets.degrade.api import degrade_folder, degrade_store

    # One method per run: two method flags are refused, not silently reduced to one.
    chosen = [m for m, on in (("bicubic", bicubic), ("gaussian", gaussian), ("realworld", realworld)) if on]
    if len(chosen) != 1:
        raise GbufError("choose one method: --bicubic, --gaussian or --realworld" + (
            f" (not {' and '.join('--' + m for m in chosen)}: run degrade once per method)" if chosen else ""))
    method = chosen[0]
    if (variant or sigma is not None) and method != "gaussian":
        raise GbufError("--variant and --sigma apply to --gaussian only")
    if no_video and method != "realworld":
        raise GbufError("--no-video applies to --realworld only")
    if preset and method != "realworld":
        raise GbufError("--preset applies to --realworld only")
    flags = {"gaussian.variant": variant, "gaussian.sigma": sigma, "gbuffers.mode": gbuffer_mode,
             "realworld.video.enabled": False if no_video else None, "realworld.preset": preset}
    overrides = {**parse_set(extra), **{k: v for k, v in flags.items() if v is not None}}
    if input_dir or output_dir:
        if ds:
            raise GbufError("give either a dataset DS or --input/--output, not both")
        if not (input_dir and output_dir):
            raise GbufError("--input and --output go together")
        if group:
            raise GbufError("--name applies to a dataset, not to --input/--output")
        out = degrade_folder(input_dir, output_dir, method, scale=scale, seed=seed, config=config_path,
                             overrides=overrides, overwrite=overwrite, device=device, threads=threads)
        click.echo(f"wrote {out}")
        return
    if not ds:
        raise GbufError("give a dataset DS (or --input FOLDER --output FOLDER)")
    written = degrade_store(ds, method, scale=scale, seed=seed, name=group, config=config_path,
                            overrides=overrides, overwrite=overwrite, device=device, threads=threads)
    for seq, grp in written:
        click.echo(f"{ds}: wrote {seq}/{grp}")
