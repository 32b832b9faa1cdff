"""Build a whole dataset from a spec (``gbuf dataset build SPEC.toml -o DS``).

``build_dataset(spec, output)`` renders every sequence of a ``gbuf.render.spec.DatasetSpec``
into one local store through ``gbuf.render.pipeline.render`` (one call per sequence, with
``camera``, ``clip``, ``seed`` and ``sequence`` from the spec), then records the split and the
spec in the store's root attrs (``Dataset.write_splits``; docs/format.md, "Splits").

Resuming: a sequence already complete in the store is checked against the spec (render
settings, frames and what made it) and skipped; an unfinished one is continued by the
pipeline's writer after its last stored frame. A rerun of a finished spec renders nothing.
The split is written only once every sequence is complete, so a store cut short never
claims to hold the dataset.

Recipes: each (recipe, seed) is built once into a .blend kept under the store's state folder
(``DS/.gbuf/dataset-build/``) until the whole dataset is complete: a rebuilt .blend is not
byte-identical (measured: two builds of one recipe and seed differ), and a resumed sequence
must come from the very file its first frames came from (the pipeline checks the file's
SHA-256). The folder is removed when the build completes. A generated camera path of a recipe
scene is drawn from the recipe's name and seed, which the built .blend carries (the pipeline's
``_camera_path``), so a rebuild of the dataset draws the same paths.

With ``ray_address`` the pending sequences run as ``gbuf render --plan`` / ``--block K``
processes on Ray, ``gbuf.render.blocks``' pattern, in one Ray session for the whole dataset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.progress import SAMPLES_SUFFIX, sample_label
from gbuf.render.spec import DatasetSpec, SequencePlan, load_spec

if TYPE_CHECKING:
    from gbuf.progress import Progress

_log = logging.getLogger(__name__)

#: Where recipes' .blend files wait for the build to complete, inside the store's state folder.
BUILD_DIR = "dataset-build"


@dataclasses.dataclass
class BuildResult:
    """What one ``build_dataset`` call did."""

    output: str
    spec: str                                # the spec file
    spec_sha256: str
    rendered: list[str]                      # sequences this call rendered frames of (new or resumed)
    complete: list[str]                      # sequences that were already complete (nothing rendered)
    frames_rendered: int
    splits: dict[str, list[str]]             # as recorded in the store
    seconds: float

    @property
    def sequences(self) -> int:
        return len(self.rendered) + len(self.complete)

    def per_split(self) -> dict[str, int]:
        """Sequences in each split."""
        return {split: len(names) for split, names in self.splits.items()}


def _jsonish(value):
    return json.loads(json.dumps(value))


def _stored_state(output: Path, spec: DatasetSpec) -> tuple[dict[str, int], set[str]]:
    """(frames complete in every group of each planned sequence already in the store, the complete ones).

    A complete sequence must match the spec: the same render settings, frames and origin.
    """
    if not (output / "zarr.json").is_file():
        return {}, set()
    import gbuf.datasets as gd

    ds = gd.open(output, mode="r")
    record = ds.spec_record or {}
    recorded = record.get("sequences", {})
    done, complete = {}, set()
    for plan in spec.sequences:
        if plan.name not in ds.sequences:
            continue
        seq = ds[plan.name]
        groups = [seq[g] for g in seq.resolutions]
        is_complete = {fmt.HR, fmt.LR} <= set(seq.resolutions) and all(g.complete for g in groups)
        if not is_complete:
            done[plan.name] = seq.num_frames if groups else 0
            continue  # the pipeline checks an unfinished one when it resumes it
        attrs = seq.attrs
        mine = {"render_settings": spec.settings_for(plan).to_attrs(), "frame_range": list(plan.frames)}
        theirs = {"render_settings": attrs.get("render_settings"), "frame_range": attrs.get("frame_range")}
        differs = [k for k in mine if _jsonish(mine[k]) != _jsonish(theirs[k])]
        if plan.name in recorded and _jsonish(recorded[plan.name]) != _jsonish(plan.to_attrs()):
            differs.append("scene, camera or clip")
        if differs:
            raise GbufError(f"{output}: sequence {plan.name!r} exists with a different {differs[0].replace('_', ' ')} "
                            f"than {spec.path} asks for; build into a new store, or remove the sequence")
        done[plan.name] = plan.frames[1] - plan.frames[0] + 1
        complete.add(plan.name)
    return done, complete


def _recipe_blend(folder: Path, plan: SequencePlan) -> Path:
    """The recipe's .blend for ``plan`` (built once, kept until the dataset is complete)."""
    from gbuf.render import recipes

    path = folder / f"{plan.scene}-s{plan.seed}-f{plan.recipe_frames}.blend"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _log.info("building recipe %s (seed %d, %d frames)", plan.scene, plan.seed, plan.recipe_frames)
        recipes.build_blend(plan.scene, path, seed=plan.seed, frames=plan.recipe_frames)
    return path


def _check_output(output) -> Path:
    from gbuf.datasets.store import local_path

    if output is None or not str(output).strip():
        raise GbufError("dataset build: no output dataset given (-o DS)")
    local = local_path(str(output))
    if local is None:
        raise GbufError(f"{output}: dataset build writes a local store; build it here, then "
                        f"`gbuf dataset push` it to the URL")
    if local.exists() and not local.is_dir():
        raise GbufError(f"{local}: exists and is a file; a gbuf store is a folder")
    if local.is_dir() and not (local / "zarr.json").is_file() \
            and any(p.name != fmt.STATE_DIR for p in local.iterdir()):
        raise GbufError(f"{local}: exists and is not a gbuf store; refusing to build into it")
    return local


def build_dataset(spec: DatasetSpec | str | Path, output, *, ray_address: str | None = None,
                  progress: Progress | None = None, frame_progress: Progress | None = None) -> BuildResult:
    """Render every sequence of ``spec`` (a ``DatasetSpec`` or the path of a spec file) into the
    local store ``output`` and record its split; returns what was done.

    ``progress("clips", clips_done, clips_total)`` follows the sequences over the whole dataset,
    ``frame_progress("dataset", frames_done, frames_total)`` its frames (a rate and an ETA), and
    ``frame_progress(sample_label("dataset"), samples_done, samples)`` Cycles' samples of the frame
    rendering (``gbuf.progress``; not with Ray).
    ``ray_address``: render on Ray (``""``: a local instance), as ``gbuf render --ray``: one task
    per block of whole shards, each a ``gbuf render --block K --clip C`` process. Resumable
    (module docstring); bad input is a one-line ``GbufError``.
    """
    started = time.perf_counter()
    if not isinstance(spec, DatasetSpec):
        spec = load_spec(spec)
    out = _check_output(output)
    done, complete = _stored_state(out, spec)
    total_frames = spec.frames_total
    frames_base = sum(done.values())
    clips_done = len(complete)
    if progress is not None:
        progress("clips", clips_done, len(spec.sequences))
    if frame_progress is not None:
        frame_progress("dataset", frames_base, total_frames)

    from gbuf.render import pipeline

    build_dir = out / fmt.STATE_DIR / BUILD_DIR
    rendered, frames_rendered = [], 0
    if ray_address is not None:
        pending = [p for p in spec.sequences if p.name not in complete]
        scenes = {p.name: _recipe_blend(build_dir, p) if p.kind == "recipe" else Path(p.scene) for p in pending}
        frames_rendered = _build_on_ray(spec, out, pending, scenes, ray_address or None, done, clips_done,
                                        progress, frame_progress)
        rendered = [p.name for p in pending]
    else:
        for plan in spec.sequences:
            if plan.name in complete:
                continue
            scene = _recipe_blend(build_dir, plan) if plan.kind == "recipe" else plan.scene
            before = done.get(plan.name, 0)

            def follow(label: str, done_: int, total_: int, before=before) -> None:
                if label.endswith(SAMPLES_SUFFIX):  # Cycles' samples of the frame rendering
                    frame_progress(sample_label("dataset"), done_, total_)
                else:
                    frame_progress("dataset", frames_base + done_ - before, total_frames)

            settings = spec.settings_for(plan)
            result = pipeline.render(scene, str(out), resolution=settings.resolution, scale=settings.scale,
                                     frames=plan.frames, samples=settings.samples, denoise=settings.denoise,
                                     lr_mode=settings.lr_mode, device=settings.device, passes=settings.buffers,
                                     seed=plan.seed, sequence=plan.name,
                                     frames_per_shard=spec.render.frames_per_shard,
                                     progress=None if frame_progress is None else follow,
                                     camera=plan.camera, clip=0 if plan.camera == "keep" else plan.clip)
            frames_base += result.num_frames - before
            frames_rendered += result.rendered
            rendered.append(plan.name)
            clips_done += 1
            _log.info("[%d/%d] %s: rendered %d of %d frames (%s, %s)", clips_done, len(spec.sequences), plan.name,
                      result.rendered, result.num_frames, plan.split,
                      plan.scene if plan.kind == "recipe" else Path(plan.scene).name)
            if progress is not None:
                progress("clips", clips_done, len(spec.sequences))

    splits = _record(out, spec)
    if build_dir.is_dir():
        shutil.rmtree(build_dir)  # every sequence is complete: nothing will resume from these
    return BuildResult(output=str(out), spec=str(spec.path), spec_sha256=spec.sha256(), rendered=rendered,
                       complete=[s.name for s in spec.sequences if s.name in complete],
                       frames_rendered=frames_rendered, splits=splits, seconds=time.perf_counter() - started)


def _record(out: Path, spec: DatasetSpec) -> dict[str, list[str]]:
    """Write the split and the spec's record into the store's root attrs (every sequence complete)."""
    import gbuf.datasets as gd
    from gbuf import __version__

    ds = gd.open(out, mode="r+")
    for plan in spec.sequences:  # the split claims the dataset is whole: make sure it is
        seq = ds[plan.name]
        if not all(seq[g].complete for g in (fmt.HR, fmt.LR)):
            raise GbufError(f"{out}/{plan.name}: not complete after rendering; rerun the build to resume")
    others = [n for n in ds.sequences if n not in {s.name for s in spec.sequences}]
    if others:
        _log.warning("%s: %d sequence(s) not in %s stay in the store but in no split: %s", out, len(others),
                     spec.path, ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""))
    record = {"sha256": spec.sha256(), "file": str(spec.path.resolve()), "name": spec.name,
              "built_by": f"gbuf {__version__}",
              "sequences": {s.name: s.to_attrs() for s in spec.sequences}}
    ds.write_splits(spec.splits, record)
    return gd.open(out, mode="r").splits


# ------------------------------------------------------------------------------------ Ray


def _build_on_ray(spec: DatasetSpec, out: Path, pending: list[SequencePlan], scenes: dict[str, Path],
                  address: str | None, done: dict[str, int], clips_done: int, progress, frame_progress) -> int:
    """Render ``pending`` on Ray (``blocks``' pattern: plan each sequence, one task per block of whole
    shards, consolidate); returns the frames rendered. Every task is a ``gbuf render`` process."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise GbufError("dataset build --ray: Ray is not installed (pip install 'gbuf[share]')")
    from gbuf.datasets import writer as _writer
    from gbuf.render import blocks

    output = str(out.resolve())
    frames_total = spec.frames_total
    frames_done = sum(done.values())
    commands: dict[str, tuple[str, list[str]]] = {}
    for plan in pending:
        options = blocks.cli_options(spec.settings_for(plan), frames=plan.frames, sequence=plan.name,
                                     frames_per_shard=spec.render.frames_per_shard)
        clip = [] if plan.camera == "keep" else [f"--clip={plan.clip}"]
        commands[plan.name] = (str(scenes[plan.name]), [*options, f"--camera={plan.camera}", *clip])
    with blocks.ray_session(address) as ray:
        plan_task = ray.remote(num_cpus=1, max_retries=2)(blocks._plan_task)
        block_task = ray.remote(**blocks.block_task_options(2))(blocks._block_task)
        # Plans one after another: they share the store's root metadata.
        for name, (scene, options) in commands.items():
            code, text = ray.get(plan_task.remote(blocks._gbuf_command(scene, output, options, ["--plan"])))
            if code != 0:
                raise GbufError(text.splitlines()[-1].removeprefix("gbuf: error: ") if text else
                                f"{name}: planning failed (exit status {code})")
        futures, left, sizes = {}, {}, {}
        for name, (scene, options) in commands.items():
            blocks_pending, _count = blocks.pending_blocks(output, name)
            plan = blocks.block_plan(output, name)
            spans = blocks.plan_blocks(plan.num_frames, plan.frames_per_shard)
            left[name] = len(blocks_pending)
            for k in blocks_pending:
                ref = block_task.remote(blocks._gbuf_command(scene, output, options, ["--block", str(k)]), name, k)
                futures[ref] = name
                sizes[ref] = spans[k][1] - spans[k][0]
            if not blocks_pending:
                clips_done += 1
        failures = []
        waiting = list(futures)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            result = ray.get(ready[0])
            name = futures[ready[0]]
            if not result.ok:
                failures.append(f"{name} block {result.block}: {result.message.removeprefix('gbuf: error: ')}")
                continue
            frames_done += sizes[ready[0]]
            left[name] -= 1
            if frame_progress is not None:
                frame_progress("dataset", min(frames_done, frames_total), frames_total)
            if left[name] == 0:
                clips_done += 1
                _log.info("[%d/%d] %s: rendered on Ray", clips_done, len(spec.sequences), name)
                if progress is not None:
                    progress("clips", clips_done, len(spec.sequences))
        if failures:
            raise GbufError(f"{output}: " + "; ".join(failures))
    import gbuf.datasets as gd

    ds = gd.open(output, mode="r")
    rendered = 0
    for plan in pending:
        for group in ds[plan.name].resolutions:
            if not _writer.consolidate(output, plan.name, group):
                raise GbufError(f"{output}/{plan.name}/{group}: not every shard was written")
        rendered += plan.frames[1] - plan.frames[0] + 1 - done.get(plan.name, 0)
    return rendered
