"""One render job: scenes into the sequences of one store, a local path or a URL, in this process.

``render_scenes`` is what ``gbuf render`` (without ``--ray``) calls; ``render`` is its
one-scene form, ``gbuf.render.render``. A local output is the store itself. A URL
output (``s3://``, ``gs://``, ``az://``, ...) is rendered into a local working store
and pushed there when every scene is complete (``gbuf.render.publish``), except for a
plan or a single block, which writes only the working store (``ScaleOut.partial``:
several block tasks cannot share one push). ``--ray`` is ``blocks.render_on_ray``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gbuf.errors import GbufError
from gbuf.render import blocks, pipeline
from gbuf.render import publish as _publish
from gbuf.render.pipeline import RenderResult
from gbuf.render.settings import RenderSettings, ScaleOut, make_settings

if TYPE_CHECKING:
    from gbuf.datasets.sharing import Progress


@dataclasses.dataclass
class RenderRun:
    """What one ``render_scenes`` call did."""

    output: str                              # as asked: a local store or a URL
    results: list[RenderResult]              # one per scene, in order (``output``: the store written)
    plans: list[blocks.BlockPlan]            # with ``ScaleOut(plan=True)``: each sequence's blocks
    work_store: str | None = None            # with a URL: the local working store
    published: _publish.PublishResult | None = None  # with a URL: its push (None for a plan or a block)


def render_scenes(scenes: Sequence[str | None], output, settings: RenderSettings = RenderSettings(), *,
                  frames: tuple[int, int] | None = None, sequence: str | None = None, overwrite: bool = False,
                  allow_scripts: bool = False, quiet: bool = False, scale_out: ScaleOut = ScaleOut(),
                  work_dir=None, keep_work: bool = True, storage_options: dict | None = None,
                  progress: Progress | None = None, frame_progress: Progress | None = None,
                  camera: str = "auto", clip: int = 0, clips: int = 1) -> RenderRun:
    """Render each scene (``None``: the default recipe) into its sequence of ``output``.

    ``settings``, ``frames``, ``sequence``, ``overwrite``, ``allow_scripts`` and ``quiet``
    are ``gbuf.render.render``'s; ``scale_out`` a plan, one block or the shard length.
    With a URL: ``work_dir`` (the working store, default ``publish.work_store_for``),
    ``keep_work`` (``False``: read back what the push sent, then delete the working
    store), ``storage_options`` and ``progress(label, bytes_done, bytes_total)`` of the push.
    ``frame_progress(sequence, frames_done, num_frames)`` follows the render itself.
    ``camera``: one of ``scenefiles.CAMERA_MODES``, as for ``gbuf.render.render``; ``clip``: the
    clip index its path is drawn for (a pure function of scene, seed and clip).

    ``clips > 1``: each scene gives ``clips`` sequences, ``<name>-clip<k>`` for k = clip ..
    clip + clips - 1 (``<name>``: ``sequence`` or the scene's default name), each its own
    shot with its own camera path (so no camera cut inside a sequence); results in that order.
    """
    scenes = list(scenes) or [None]
    if len(scenes) > 1 and (sequence or scale_out.partial):
        raise GbufError("render: --sequence, --block and --plan take one scene (use --ray for several)")
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise GbufError(f"render: --clips {clips!r}: expected a whole number >= 1")
    if isinstance(clip, bool) or not isinstance(clip, int) or clip < 0:
        raise GbufError(f"render: clip {clip!r}: expected a whole number >= 0")
    if clips > 1 and scale_out.partial:
        raise GbufError("render: --block and --plan take one clip (leave out --clips, or use --ray)")
    if clips > 1 and camera == "keep":
        raise GbufError("render: --clips with --camera keep would render the same shot again; "
                        "use --camera flythrough, walk or orbit")
    if overwrite and scale_out.partial:
        raise GbufError("render: --overwrite with --block/--plan would discard other blocks' frames; "
                        "remove the sequence first")
    if output is None or not str(output).strip():
        raise GbufError("render: no output dataset given (-o DATA.zarr)")
    _publish.check_work_options(output, work_dir, keep_work)

    def render_into(store) -> list[RenderResult]:
        # pipeline.render checks the settings again: cheap, and it stays the one entry to a render.
        return [pipeline.render(scene, store, resolution=settings.resolution, scale=settings.scale,
                                frames=frames, samples=settings.samples, denoise=settings.denoise,
                                lr_mode=settings.lr_mode, device=settings.device, passes=settings.buffers,
                                seed=settings.seed, sequence=name, overwrite=overwrite,
                                allow_scripts=allow_scripts, quiet=quiet,
                                frames_per_shard=scale_out.frames_per_shard, block=scale_out.block,
                                blocks_of=scale_out.blocks_of, plan=scale_out.plan, progress=frame_progress,
                                camera=camera, clip=k)
                for scene in scenes for k, name in clip_sequences(scene, sequence, clip, clips)]

    work = published = None
    if _publish.is_url(output):
        results, work, published = _publish.render_to_url(
            str(output), render_into, work_dir=work_dir, keep_work=keep_work, storage_options=storage_options,
            progress=progress, push=not scale_out.partial)
    else:
        results = render_into(output)
    plans = [blocks.block_plan(r.output, r.sequence, scale_out.blocks_of) for r in results] if scale_out.plan \
        else []
    if published is not None:
        for result in results:
            result.published = published
    return RenderRun(output=str(output), results=results, plans=plans,
                     work_store=None if work is None else str(work), published=published)


def clip_sequences(scene, sequence: str | None, clip: int = 0, clips: int = 1) -> list[tuple[int, str | None]]:
    """(clip index, sequence name) of each clip of ``scene``; a name of None: the pipeline's default.

    One clip keeps today's name (``sequence``, or the scene file's stem); several are named
    ``<name>-clip<k>``.
    """
    if clips <= 1:
        return [(clip, sequence)]
    if sequence:
        base = sequence
    else:
        from gbuf.render import recipes

        base = pipeline._sequence_name({"recipe": recipes.DEFAULT if scene is None else None, "path": scene})
    return [(k, f"{base}-clip{k}") for k in range(clip, clip + clips)]


def render(scene=None, output=None, *, resolution=(1920, 1080), scale=4, frames=None, samples=None,
           denoise=True, lr_mode="render", device="cpu", passes=None, seed=0, sequence=None,
           overwrite=False, allow_scripts=False, quiet=False, frames_per_shard=None, block=None,
           blocks_of=None, plan=False, work_dir=None, keep_work: bool = True,
           storage_options: dict | None = None, progress: Progress | None = None,
           camera: str = "auto", clip: int = 0) -> RenderResult:
    """Render ``scene`` (a .blend path; ``None``: the default recipe) into the gbuf store ``output``.

    ``output``: a local store, or an fsspec URL (``s3://``, ``gs://``, ``az://``, ...),
    rendered into a local working store and pushed there, verified and incremental,
    once complete; the result's ``output`` is then the working store and ``published``
    the push. ``work_dir``, ``keep_work``, ``storage_options`` and ``progress`` as for
    ``render_scenes``.

    ``frames``: ``(start, end)`` Blender frame numbers, inclusive (default: the
    scene's range). ``samples``: a fixed count, or ``None`` for adaptive sampling
    (max 1000, noise threshold 0.01). ``lr_mode``: ``"render"`` (LR rendered like
    HR) or ``"aliased"`` (one jittered sample per pixel, as a real-time renderer).
    ``passes``: gbuf buffer names (default: image, depth, normal, motion, brdf).
    An existing sequence is resumed after its last complete frame, if it was made
    with the same scene and settings; ``overwrite`` starts it again.

    Scale-out (``gbuf.render.blocks``): ``plan`` only creates the sequence's arrays
    with their final shape; ``block=K`` renders only block K, the K-th run of
    ``blocks_of`` frames (default: one shard), aligned to shards so parallel blocks
    never share one. ``frames_per_shard`` sets the shard length of a new sequence.

    ``camera``: ``scenefiles.CAMERA_MODES`` (docs/rendering.md, "Camera modes"): ``keep`` the
    scene's camera; ``flythrough``, ``walk`` or ``orbit`` a generated path, a pure function of
    (the scene file's sha256 or the recipe's identity, ``seed``, ``clip``), stored with its
    keyframes in the sequence attrs as ``camera_path``; ``auto``: keep where the scene's camera
    is animated (or a .blend or recipe has one), else flythrough.
    """
    settings = make_settings(resolution=resolution, scale=scale, samples=samples, denoise=denoise,
                             lr_mode=lr_mode, device=device, passes=passes, seed=seed)
    run = render_scenes([scene], output, settings, frames=frames, sequence=sequence, overwrite=overwrite,
                        allow_scripts=allow_scripts, quiet=quiet,
                        scale_out=ScaleOut(frames_per_shard=frames_per_shard, plan=plan, block=block,
                                           blocks_of=blocks_of),
                        work_dir=work_dir, keep_work=keep_work, storage_options=storage_options, progress=progress,
                        camera=camera, clip=clip)
    return run.results[0]
