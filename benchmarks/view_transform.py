"""Which view transform did RDG's data go through? The authors' RDG-s scored on one render, encoded three ways.

RDG's PNGs were written by Blender 3.6, whose default view transform is Filmic; the repository
does not say which it used. gbuf stores scene-linear colour and encodes it with "Standard" sRGB.
This study takes the test split of a gbuf store, encodes its HR and LR images (the same linear
pixels) with Blender's own Standard, Filmic and AgX view transforms (bpy, look None, exposure 0,
gamma 1, no dither, 8-bit PNG as Blender saves a render: gbuf.render.view_transform), and scores bicubic and the authors'
RDG-s on each (`gbuf eval`'s scorer: display domain, 8-bit, PSNR/SSIM; G-buffers normalised as
the official loader, "rdg"). The weights fit best the encoding they were trained on: the
transform with the largest gain over bicubic is the likeliest. Needs the render extra (bpy).

    .venv/bin/python benchmarks/view_transform.py STORE [--split test] \\
        [--weights ../shared/reference/rdg/RDG_Small.pth] [--views Standard,Filmic,AgX]

``--split all`` scores every sequence of the store: none was seen by the authors' weights.

Prints, per view transform: bicubic and RDG-s PSNR/SSIM (average over the split's sequences), the
gain in dB, and the ratio of each transform's gain to Standard's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gbuf.render.view_transform import VIEWS

REPO = Path(__file__).resolve().parents[1]
AUTHORS = REPO.parent / "shared" / "reference" / "rdg" / "RDG_Small.pth"


def encoded_store(source: Path, sequences: list[str], view: str, out: Path) -> Path:
    """A copy of ``sequences`` of ``source`` whose images are ``view``-encoded display values
    (``image_encoding`` ``srgb``); every other buffer as it is."""
    import gbuf.datasets as gd
    from gbuf.datasets import format as fmt
    from gbuf.datasets.writer import SequenceWriter
    from gbuf.render.view_transform import ViewEncoder

    ds = gd.open(source)
    groups = {name: [g for g in ds[name].resolutions if g in (fmt.HR, fmt.LR)] for name in sequences}
    for name in sequences:  # all checked before anything is written
        for g in groups[name]:
            if ds[name][g].attrs.get("image_encoding", "linear") != "linear":
                raise SystemExit(f"{source}: {name}/{g} image is not scene-linear; nothing to re-encode")
    encode = ViewEncoder(view)
    for name in sequences:
        seq = ds[name]
        specs, attrs = {}, {}
        for g in groups[name]:
            res = seq[g]
            specs[g] = (res.height, res.width, list(res.buffers))
            # what the writer does not work out itself; it records sizes, checksums and stats anew
            attrs[g] = {k: res.attrs[k] for k in ("scale", "kind", "lr_mode") if k in res.attrs}
            attrs[g]["image_encoding"] = "srgb"
        n = seq[groups[name][0]].num_frames
        with SequenceWriter(out, name, n, specs, resolution_attrs=attrs) as writer:
            for t in range(n):
                frame = {}
                for g in groups[name]:
                    res = seq[g]
                    frame[g] = {b: res.read(b, t=t)[0] for b in res.buffers}
                    frame[g]["image"] = (encode(frame[g]["image"]) / 255.0).astype(np.float32)
                writer.append(frame)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--split", default="test",
                        help="split to score (train, val, test), or all: every sequence (the authors' weights saw none)")
    parser.add_argument("--weights", type=Path, default=AUTHORS)
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    import gbuf.datasets as gd
    from gbuf.train import evaluate, inference, models, trainer

    torch.set_num_threads(args.threads)
    if not args.weights.is_file():
        raise SystemExit(f"{args.weights}: no such file (the authors' RDG_Small.pth)")
    ds = gd.open(args.store)
    sequences = ([s.name for s in ds] if args.split == "all"
                 else list((ds.splits or {}).get(args.split) or []))
    if not sequences:
        raise SystemExit(f"{args.store}: no sequence in split {args.split!r}")
    rdg = models.create("rdg-s")
    trainer.load_init(rdg, args.weights, "ema")
    rdg.eval()
    bicubic = inference.load_model("bicubic", scale=ds[sequences[0]]["lr"].scale).module

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gbuf-view-"))
    try:
        for view in args.views.split(","):
            store = encoded_store(args.store, sequences, view, tmp / f"{view}.zarr")
            scores = {}
            for label, module in (("bicubic", bicubic), ("rdg-s", rdg)):
                with torch.no_grad():
                    result = evaluate.score_model(module, store, sequences, normalize="rdg", ewarp=False)
                scores[label] = (float(np.mean([s.mean("psnr") for s in result])),
                                 float(np.mean([s.mean("ssim") for s in result])))
            rows.append((view, scores))
            shutil.rmtree(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"store {args.store}, split {args.split} ({', '.join(sequences)}), weights {args.weights.name}")
    print(f"{'view':10s} {'bicubic PSNR/SSIM':>20s} {'RDG-s PSNR/SSIM':>20s} {'gain dB':>8s} {'gain / Standard':>16s}")
    base_gain = None
    for view, s in rows:
        gain = s["rdg-s"][0] - s["bicubic"][0]
        base_gain = gain if view == "Standard" else base_gain
        ratio = f"{gain / base_gain:.2f}" if base_gain else "-"
        print(f"{view:10s} {s['bicubic'][0]:12.2f} / {s['bicubic'][1]:.3f} {s['rdg-s'][0]:12.2f} / "
              f"{s['rdg-s'][1]:.3f} {gain:+8.2f} {ratio:>16s}")


if __name__ == "__main__":
    main()
