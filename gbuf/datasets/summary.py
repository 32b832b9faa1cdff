"""``info(path)``: what a store holds, as a dict and as text."""

from __future__ import annotations

import os
from pathlib import Path

from gbuf.datasets import store as _store


def _disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path``; symbolic links are not followed (nor counted)."""
    total = 0
    for folder, _, files in os.walk(path, followlinks=False):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if not os.path.islink(os.path.join(folder, name)):
                total += st.st_size
    return total


def info(path, *, storage_options: dict | None = None) -> dict:
    """A summary: dataset attrs, and per sequence and resolution: size, frames, buffers, bytes."""
    from gbuf.datasets.integrity import links_outside

    ds = _store.open(path, mode="r", storage_options=storage_options)
    local = ds.local_path
    out = {"path": str(path), "attrs": ds.attrs, "sequences": {},
           # Not followed, not counted: info never reads outside the store.
           "links_outside": links_outside(local) if local else {}}
    total = 0
    links = out["links_outside"]
    for name in ds.sequences:
        if name in links:
            continue  # reached through a link out of the store: not read
        seq = ds[name]
        entry = {"attrs": seq.attrs, "resolutions": {}}
        for res in (seq[r] for r in seq.resolutions if f"{name}/{r}" not in links):
            for pack in res.packs:
                if f"{name}/{res.name}/{pack}" not in links:
                    res.array(pack)  # its metadata checked against the attrs: a damaged one is one line
            size = _disk_bytes(local / seq.name / res.name) if local else None
            total += size or 0
            entry["resolutions"][res.name] = {
                "width": res.width, "height": res.height, "scale": res.scale,
                "frames": res.num_frames, "planned_frames": res.planned_frames,
                "complete": bool(res.attrs.get("complete")),
                "kind": res.attrs.get("kind", "render"),
                "buffers": {b: {"channels": res.channels(b), "dtype": str(res.dtype(b))} for b in res.buffers},
                "bytes": size,
            }
        out["sequences"][seq.name] = entry
    out["bytes"] = total if local else None
    return out


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def content_warnings(sequence_attrs: dict) -> list[str]:
    """The warnings of the renderer's content checks of a sequence (docs/format.md), [] if none or unchecked."""
    from gbuf.datasets.format import CONTENT_CHECKS_KEY

    checks = sequence_attrs.get(CONTENT_CHECKS_KEY) or {}
    return list(checks.get("warnings") or [])


def format_info(summary: dict) -> str:
    attrs = summary["attrs"]
    lines = [f"{summary['path']}: gbuf format {attrs.get('version')}, "
             f"{len(summary['sequences'])} sequence(s), {human_bytes(summary['bytes'])}"]
    for name, seq in summary["sequences"].items():
        sa = seq["attrs"]
        scene = sa.get("scene")
        if isinstance(scene, dict):  # the renderer records file, hash, recipe...: show the name
            scene = scene.get("file") or (f"recipe {scene['recipe']}" if scene.get("recipe") else None)
        shown = {**sa, "scene": scene}
        extra = ", ".join(f"{k} {shown[k]}" for k in ("fps", "renderer", "scene") if shown.get(k) is not None)
        lines.append(f"  {name}: {sa.get('num_frames')} frames" + (f" ({extra})" if extra else ""))
        lines.extend(f"    warning: {w}" for w in content_warnings(sa))
        for rname, r in seq["resolutions"].items():
            state = "" if r["complete"] else f" [{r['frames']}/{r['planned_frames']} frames complete]"
            lines.append(f"    {rname}: {r['width']}x{r['height']} (x{r['scale']}), {r['kind']}, "
                         f"{human_bytes(r['bytes'])}{state}")
            for b, spec in r["buffers"].items():
                lines.append(f"      {b:<14} {spec['channels']} ch  {spec['dtype']}")
    links = summary.get("links_outside") or {}
    if links:
        lines.append(f"  note: {len(links)} symbolic link(s) out of the store ignored (not followed, not counted; "
                     f"`gbuf dataset verify` lists them): {', '.join(sorted(links)[:3])}"
                     + (" ..." if len(links) > 3 else ""))
    return "\n".join(lines)
