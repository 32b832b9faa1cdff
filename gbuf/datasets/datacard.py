"""``write_card(store)``: the dataset card, ``README.md`` at the store root, made from attrs.

The machine-readable truth lives in the store's attrs; the card is a readable
rendering of it, written by ``gbuf dataset card``. ``push`` generates it afresh in
memory and publishes it as the destination's ``README.md`` (the local store is not
written to). It is not part of the zarr hierarchy (zarr and gbuf readers skip it)
and is listed in the push manifest like any other file.
"""

from __future__ import annotations

import json
from pathlib import Path

from gbuf.datasets import format as fmt
from gbuf.datasets.summary import human_bytes
from gbuf.errors import GbufError

CARD = "README.md"

UNITS = {
    "image": "linear RGB radiance (scene-referred, not tone-mapped)",
    "depth": "scene units (metres in most scenes)",
    "normal": "unit vector, dimensionless",
    "motion": "pixels of the group's own resolution",
    "brdf": "reflectance 0..1 (linear)",
    "diffuse_color": "reflectance 0..1 (linear)",
    "glossy_color": "reflectance 0..1 (linear)",
    "emission": "linear RGB radiance",
    "alpha": "coverage 0..1",
}

CITATION = """@inproceedings{rdg2025,
  title     = {Efficient Video Super-Resolution for Real-time Rendering with Decoupled G-buffer Guidance},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025}
}"""


def set_license(store, license: str) -> None:
    """Record the license in the root attrs (the card shows it)."""
    from gbuf.datasets.zarr_backend import zarr

    group = zarr().open_group(str(store), mode="r+")
    attrs = dict(group.attrs.get(fmt.ATTRS_KEY, {}))
    attrs["license"] = license
    group.attrs[fmt.ATTRS_KEY] = attrs


def _compact(value, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 3] + "..."


def card_text(store, *, dataset_id: str | None = None) -> str:
    """The card's Markdown for a local store (``dataset_id``: the id push publishes it under)."""
    from gbuf import __version__
    from gbuf.datasets.summary import info

    summary = info(store)
    attrs = summary["attrs"]
    name = Path(str(store).rstrip("/")).name
    seqs = summary["sequences"]
    total_frames = sum(int(s["attrs"].get("num_frames") or 0) for s in seqs.values())
    renderers = sorted({s["attrs"].get("renderer") for s in seqs.values() if s["attrs"].get("renderer")})
    sources = sorted({str(s["attrs"].get("source")) for s in seqs.values() if s["attrs"].get("source")})
    lines = [
        f"# {name}",
        "",
        "A **gbuf** dataset for real-time-rendering video super-resolution: rendered video "
        "sequences stored as G-buffers (colour plus depth, normals, motion and BRDF) at a high "
        "resolution (`hr`) and low resolutions (`lr`, degraded variants), in a Zarr v3 store "
        f"(gbuf format {attrs.get('version')}).",
        "",
        f"- Sequences: {len(seqs)}, frames: {total_frames}",
        f"- Size: {human_bytes(summary['bytes'])}",
        f"- Made by: {attrs.get('created_by', '?')} (card by gbuf {__version__}), created {attrs.get('created', '?')}",
        f"- Renderer: {', '.join(renderers) if renderers else 'none recorded'}"
        + (f"; source: {', '.join(sources)}" if sources else ""),
        f"- License: {attrs.get('license') or 'not set (use gbuf dataset card --license ...)'}",
    ]
    dataset_id = dataset_id or attrs.get("dataset_id")
    if dataset_id:
        lines.append(f"- Dataset id: `{dataset_id}`")
    lines += ["", "## Sequences", "", "| sequence | frames | fps | group | size | scale | kind | buffers |",
              "|---|---|---|---|---|---|---|---|"]
    buffers_seen: dict[str, tuple[int, str]] = {}
    for sname, seq in seqs.items():
        sa = seq["attrs"]
        for rname, r in seq["resolutions"].items():
            bufs = ", ".join(r["buffers"])
            for b, spec in r["buffers"].items():
                buffers_seen.setdefault(b, (spec["channels"], spec["dtype"]))
            frames = r["frames"] if r["complete"] else f"{r['frames']}/{r['planned_frames']}"
            lines.append(f"| {sname} | {frames} | {sa.get('fps', '')} | {rname} | {r['width']}x{r['height']} "
                         f"| x{r['scale']} | {r['kind']} | {bufs} |")
    lines += ["", "## Buffers", "", "| buffer | channels | dtype | units | convention |", "|---|---|---|---|---|"]
    conventions = {**fmt.conventions(), **(attrs.get("conventions") or {})}
    for b, (ch, dt) in buffers_seen.items():
        lines.append(f"| {b} | {ch} | {dt} | {UNITS.get(b, '')} | {conventions.get(b, '')} |")
    lines += ["", "Every frame of every array carries a CRC32 checksum in its group's attrs; "
              "`gbuf dataset verify` checks them.", "", "## Render and degradation settings", ""]
    any_settings = False
    from gbuf.datasets.store import open as open_store

    ds = open_store(store, mode="r")
    for sname, seq in seqs.items():
        sa = seq["attrs"]
        for key in ("render_settings", "seed", "frame_range"):
            if sa.get(key) is not None:
                lines.append(f"- {sname} {key}: `{_compact(sa[key])}`")
                any_settings = True
        for rname, r in seq["resolutions"].items():
            ra = ds[sname][rname].attrs
            if r["kind"] == "degraded":
                any_settings = True
                lines.append(f"- {sname}/{rname}: degraded from hr by `{ra.get('method', '?')}` "
                             f"`{_compact(ra.get('method_params', {}))}`")
    if not any_settings:
        lines.append("- none recorded")
    first_seq = next(iter(seqs), "seq0")
    groups = list(seqs[first_seq]["resolutions"]) if seqs else ["lr"]
    example = next((g for g in groups if g != fmt.HR), groups[0] if groups else "lr")
    example_bufs = list(seqs[first_seq]["resolutions"][example]["buffers"])[:2] if seqs else ["image"]
    example_frames = min(8, seqs[first_seq]["resolutions"][example]["frames"]) if seqs else 8
    lines += [
        "", "## Loading", "", "```python",
        "import gbuf.datasets as gd",
        f"ds = gd.open(\"{name}\")  # a local path or a URL such as s3://bucket/{name}",
        f"lr = ds[\"{first_seq}\"][\"{example}\"].read_many({json.dumps(example_bufs)}, "
        f"t=slice(0, {example_frames}))",
        "```", "",
        "For training crops: `gbuf.datasets.CropDataset(path, frames=15, patch=64)`. "
        "Fetch a published copy with `gbuf dataset pull URL DIR` (every file's SHA-256 checked on arrival; "
        "`--frame-check` also checks every frame).",
        "", "## Citation", "",
        "This data follows the task and G-buffer inputs of RDG, *Efficient Video Super-Resolution for "
        "Real-time Rendering with Decoupled G-buffer Guidance* (CVPR 2025):", "", "```bibtex", CITATION, "```", "",
        "<!-- generated by gbuf from the store's attrs; edits are replaced by `gbuf dataset card` and push -->",
        "",
    ]
    return "\n".join(lines)


def write_card(store, *, license: str | None = None) -> Path:
    """Write ``README.md`` at the root of a local store (setting the license first if given)."""
    from gbuf.datasets import remote_store

    if remote_store.is_url(str(store)):
        raise GbufError(f"{store}: the card is written into a local store (it is pushed with it)")
    root = Path(store)
    if license is not None:
        if not license.strip():
            raise GbufError(f"{root}: license must not be empty")
        from gbuf.datasets.store import open as open_store

        open_store(root, mode="r")  # refuse non-gbuf folders before touching attrs
        set_license(root, license.strip())
    text = card_text(root)
    from gbuf import fileio

    return fileio.write_text(root / CARD, text)
