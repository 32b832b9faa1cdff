"""The render loop: a .blend in, HR and LR G-buffer sequences in a gbuf store out.

Per frame: set the frame, render HR, render LR (= HR / scale) into multilayer EXR
in a temporary folder, read them back (``exr``), convert them to the format's
conventions (``convert``), append the whole frame through
``gbuf.datasets.SequenceWriter`` and delete the EXR. The writer makes the loop
resumable: the same call after an interruption starts at ``next_frame``, and a
fixed seed makes the resumed frames identical to an uninterrupted run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gbuf import fileio
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError, error_line
from gbuf.progress import sample_label
from gbuf.render import blend as _blend
from gbuf.render import content_checks, convert, exr, scenefiles
from gbuf.render.settings import RenderSettings, ScaleOut, jitter_sequence, make_settings

if TYPE_CHECKING:
    from gbuf.progress import Progress
    from gbuf.render.publish import PublishResult

_log = logging.getLogger(__name__)

#: What the first frame's motion means, recorded with every sequence (see animation.py).
FIRST_FRAME_MOTION = (
    "motion of frame 0 is the displacement to the scene at frame_range[0]-1 as Blender evaluates it; "
    "F-curves keyed from the first frame are continued backwards along their initial tangent "
    "(zero motion for an animation that starts at rest)")
BACKGROUND_MOTION = (
    "pixels that see no surface get the camera's motion of points at infinity "
    "(perspective cameras; 0 for other camera types)")
JITTER_NOTE = (
    "LR pixels, x right, y down: frame t samples each LR pixel at its centre moved by jitter[t]; "
    "motion excludes the jitter (it is the motion of the unjittered camera)")


@dataclasses.dataclass
class RenderResult:
    output: str
    sequence: str
    num_frames: int          # frames in the sequence
    rendered: int            # frames rendered by this call
    resumed_from: int        # the first frame this call rendered (0 for a fresh sequence)
    seconds: float
    #: With a URL as output (gbuf.render.job): the push of the working store, ``output``, to it.
    published: PublishResult | None = None


def render(scene=None, output=None, *, resolution=(1920, 1080), scale=4, frames=None, samples=None,
           denoise=True, lr_mode="render", device="cpu", passes=None, seed=0, sequence=None,
           overwrite=False, allow_scripts=False, quiet=False, frames_per_shard=None, block=None,
           blocks_of=None, plan=False, progress: Progress | None = None, camera: str = "auto",
           clip: int = 0) -> RenderResult:
    """Render ``scene`` into the local store ``output``: one scene, one sequence, no URL.

    The options are those of ``gbuf.render.render`` (``gbuf.render.job.render``, which documents
    them and adds URLs and several scenes on top of this); ``progress(sequence, frames_done,
    num_frames)`` follows the frames as they are stored.
    """
    settings = make_settings(resolution=resolution, scale=scale, samples=samples, denoise=denoise,
                             lr_mode=lr_mode, device=device, passes=passes, seed=seed)
    if output is None or not str(output).strip():
        raise GbufError("render: no output dataset given (-o DATA.zarr)")
    if frames is not None:
        frames = _check_frames(frames)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gbuf-render-") as tmp:
        tmp = Path(tmp)
        if camera not in scenefiles.CAMERA_MODES:
            raise GbufError(f"render: camera {camera!r}: expected one of {', '.join(scenefiles.CAMERA_MODES)}")
        if isinstance(clip, bool) or not isinstance(clip, int) or clip < 0:
            raise GbufError(f"render: clip {clip!r}: expected a whole number >= 0")
        if scene is not None:
            path = scenefiles.check_scene_file(scene)
            source = {"path": path, "file": str(path.resolve()), "sha256": fileio.file_sha256(path),
                      "recipe": None}
        if quiet:
            progress = None
        with _blend.native_output_to(tmp / "blender.log"):
            if scene is None:
                source = _default_scene(tmp, seed, frames)
            source["camera_mode"] = camera
            source["camera_clip"] = int(clip)
            result = _render_blend(source, str(output), settings, frames, sequence, overwrite,
                                   allow_scripts, progress, tmp,
                                   ScaleOut(frames_per_shard=frames_per_shard, block=block,
                                            blocks_of=blocks_of, plan=plan))
    result.seconds = time.perf_counter() - started
    return result


def _camera_path(scene, source: dict, settings: RenderSettings, start: int, end: int, where: str):
    """Add the generated camera ``--camera`` asks for (``camera_paths``); its path, or None for ``keep``."""
    from gbuf.render import camera_paths

    mode = source.get("camera_mode", "auto")
    clip = int(source.get("camera_clip", 0))
    # A .blend (or a recipe) is authored for rendering: under auto its camera is kept, still
    # or animated (a still camera over moving objects is a shot); an imported file's camera is
    # kept only when animated, since a still camera exported with a level is rarely a shot.
    # A scene without any camera gets a flythrough.
    authored = source["recipe"] is not None or scenefiles.is_blend(source["path"])
    if mode == "auto":
        if scene.camera is not None and (authored or camera_paths.camera_is_animated(scene.camera)):
            mode = "keep"
        else:
            mode = "flythrough"
            what = "has no active camera" if scene.camera is None else f"camera {scene.camera.name!r} is not animated"
            _log.warning("%s: scene %r %s; rendering with a flythrough camera (--camera keep to use it as it is)",
                         where, scene.name, what)
    if mode == "keep":
        if clip:
            raise GbufError(f"{where}: clip {clip}: the scene's own camera gives one shot; use --camera "
                            f"flythrough, walk or orbit for more clips")
        return None
    identity = source["sha256"] or f"recipe:{source['recipe']}:{source.get('recipe_seed')}"
    if source["recipe"] is None and "gbuf_recipe" in scene and "gbuf_seed" in scene:
        # A .blend built from a recipe (`gbuf scene build`, a dataset build) is not byte-identical
        # when built again; its recipe and seed are what say which scene it is.
        identity = f"recipe:{scene['gbuf_recipe']}:{int(scene['gbuf_seed'])}"
    path = camera_paths.make_path(mode, scene, identity, settings.seed, clip, start, end, where)
    camera_paths.add_path_camera(scene, path)
    return path


def _check_frames(frames) -> tuple[int, int]:
    try:
        start, end = (int(v) for v in frames)
    except (TypeError, ValueError):
        raise GbufError(f"frames {frames!r}: expected (start, end)") from None
    if end < start:
        raise GbufError(f"frames {start}:{end}: empty frame range")
    return start, end


def _default_scene(tmp: Path, seed: int, frames) -> dict:
    from gbuf.render import recipes

    # The recipe's frames run 1..N; build enough of them for the range asked.
    count = None if frames is None else max(1, frames[1])
    path = recipes.build_blend(recipes.DEFAULT, tmp / f"{recipes.DEFAULT}.blend", seed=seed, frames=count)
    return {"path": path, "file": None, "sha256": None, "recipe": recipes.DEFAULT,
            "recipe_seed": seed, "recipe_frames": count}


def _render_blend(source: dict, output: str, settings: RenderSettings, frames, sequence, overwrite,
                  allow_scripts, progress, tmp: Path, scale_out: ScaleOut = ScaleOut()) -> RenderResult:
    import bpy

    from gbuf.datasets import SequenceWriter
    from gbuf.render import animation, passes

    where = source["file"] or f"recipe {source['recipe']}"
    if source["recipe"] is None and not scenefiles.is_blend(source["path"]):
        scene = scenefiles.import_scene(source["path"])
        scenefiles.ensure_lights(scene, where)
    else:
        scene = _blend.open_blend(source["path"], allow_scripts=allow_scripts or source["recipe"] is not None)
    start, end = frames if frames is not None else (int(scene.frame_start), int(scene.frame_end))
    if end < start:
        raise GbufError(f"{where}: empty frame range {start}:{end}")
    num_frames = end - start + 1
    camera_path = _camera_path(scene, source, settings, start, end, where)
    camera = _blend.scene_camera(scene, where)
    # Devices first: a missing GPU is an error before anything is written.
    passes.configure_scene(scene, settings)
    if settings.lr_mode == "aliased":
        _check_shift_not_animated(camera, where)
    view_layer = bpy.context.view_layer
    passes.enable_passes(view_layer, passes.needed_layers(settings.buffers))
    extended = animation.extend_before(start)
    if "motion" in settings.buffers and camera.data.type == "ORTHO":
        # After extend_before: the key it adds at start - 1 is what Cycles reads for frame start.
        _check_ortho_projection_still(scene, camera, start, end, where)

    name = sequence or _sequence_name(source)
    jitter = jitter_sequence(num_frames) if settings.lr_mode == "aliased" else None
    sequence_attrs = {
        "source": "gbuf render",
        "renderer": f"Blender {bpy.app.version_string} Cycles",
        "fps": float(scene.render.fps) / float(scene.render.fps_base),
        "frame_range": [start, end],
        "scene": {"file": source["file"], "sha256": source["sha256"], "recipe": source["recipe"],
                  "recipe_seed": source.get("recipe_seed"), "recipe_frames": source.get("recipe_frames"),
                  "name": scene.name, "camera": camera.name, "view_layer": view_layer.name},
        "seed": settings.seed,
        "camera_path": None if camera_path is None else camera_path.to_attrs(),
        "render_settings": settings.to_attrs(),
        "conventions": {"first_frame_motion": FIRST_FRAME_MOTION, "background_motion": BACKGROUND_MOTION,
                        "extended_fcurves": extended},
    }
    lr_attrs = {"kind": "render", "lr_mode": settings.lr_mode}
    if jitter is not None:
        lr_attrs.update({"jitter": jitter, "jitter_convention": JITTER_NOTE})
    _check_resumable(output, name, sequence_attrs, overwrite)
    cameras = camera_track(scene, camera, settings, start, end, jitter)
    hr_attrs = {"kind": "render", fmt.CAMERA_KEY: cameras[fmt.HR]}
    lr_attrs[fmt.CAMERA_KEY] = cameras[fmt.LR]

    (hw, hh), (lw, lh) = settings.hr_size, settings.lr_size
    # In the store's order (grouped by pack): what the writer records and compares on resume.
    buffers = [b for members in fmt.pack_layout(settings.buffers).values() for b, _, _ in members]
    writer = SequenceWriter(output, name, num_frames=num_frames,
                            resolutions={fmt.HR: (hh, hw, buffers), fmt.LR: (lh, lw, buffers)},
                            sequence_attrs=sequence_attrs,
                            resolution_attrs={fmt.HR: hr_attrs, fmt.LR: lr_attrs},
                            overwrite=overwrite, frames_per_shard=scale_out.frames_per_shard,
                            # A block task only learns the layout here; its block writer below locks its frames.
                            lock=scale_out.block is None)
    stop = num_frames
    if scale_out.partial:
        from gbuf.render import blocks

        # The full-range writer above created every array with its final shape; a block
        # writer then owns only its shards.
        if scale_out.plan:
            writer.close()
            return RenderResult(output=output, sequence=name, num_frames=num_frames, rendered=0,
                                resumed_from=writer.next_frame, seconds=0.0)
        block_range = blocks.block_range(num_frames, writer.frames_per_shard, scale_out.block,
                                         scale_out.blocks_of, where=f"{output}/{name}")
        writer = SequenceWriter(output, name, num_frames=num_frames,
                                resolutions={fmt.HR: (hh, hw, buffers), fmt.LR: (lh, lw, buffers)},
                                sequence_attrs=sequence_attrs, frame_range=block_range)
        stop = block_range[1]
    first = writer.next_frame
    frame_renderer = _FrameRenderer(scene, camera, view_layer.name, settings, tmp, where)
    frame_renderer.samples = progress, sample_label(name)  # Cycles' samples of the frame rendering
    measured: dict[int, content_checks.FrameMeasures] = {}
    inside: dict[int, float | None] = {}      # rays from the camera: the normal pass cannot tell back faces
    failed_checks: set[str] = set()
    # Blender releases the GIL while Cycles renders, so frame t is read back, converted and
    # appended on a worker thread while frame t+1 renders. One worker keeps appends in order;
    # frames alternate between two sets of EXR files so the two never share one.
    if progress is not None:
        progress(name, first, num_frames)
    with writer, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gbuf-append") as worker:

        def finish(rendered: _RenderedFrame) -> None:
            hr, lr = frame_renderer.convert(rendered)
            t = writer.next_frame
            measured[t] = content_checks.measure_frame(hr, inside.get(t))
            note = content_checks.first_warning(measured[t], t, failed_checks)
            if note:  # at once, not only at the end: a frame may take minutes
                _log.warning("%s: %s", name, note)
            writer.append({fmt.HR: hr, fmt.LR: lr})
            if progress is not None:
                progress(name, writer.next_frame, num_frames)

        if first < stop:
            frame_renderer.set_previous(start + first - 1)
        pending = None
        with _stop_between_frames() as stop_requested:
            for t in range(first, stop):
                rendered = frame_renderer.render(start + t, None if jitter is None else jitter[t], slot=t % 2)
                inside[t] = content_checks.inside_fraction(scene, camera)  # the scene is at frame t now
                if pending is not None:
                    pending.result()          # frame t-1 is in the store (or its error is raised here)
                pending = worker.submit(finish, rendered)
                if stop_requested() and t + 1 < stop:
                    pending.result()
                    raise GbufError(f"{where}: interrupted; frames {first}-{t} of {name} were rendered and "
                                    f"stored; rerun the same command to resume at frame {t + 1}")
            if pending is not None:
                pending.result()
    content_checks.check_sequence(output, name, measured,
                                  probe=lambda t: content_checks.inside_fraction_at(scene, camera, start + t))
    return RenderResult(output=output, sequence=name, num_frames=num_frames, rendered=stop - first,
                        resumed_from=first, seconds=0.0)


def camera_matrices(scene, camera, width: int, height: int):
    """(projection, camera-to-world) 4x4 of ``camera`` at the current frame, for a width x height render.

    Blender's own ``calc_matrix_camera`` (sensor fit, lens shift, pixel aspect), unjittered:
    the one source of the background motion and of the stored camera data.
    """
    import bpy
    import numpy as np

    depsgraph = bpy.context.evaluated_depsgraph_get()
    cam = camera.evaluated_get(depsgraph)
    render = scene.render
    projection = np.array(cam.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=render.pixel_aspect_x,
                                                 scale_y=render.pixel_aspect_y))
    return projection, np.array(cam.matrix_world.normalized())


def camera_track(scene, camera, settings: RenderSettings, start: int, end: int, jitter) -> dict[str, dict]:
    """Per-frame camera data of frames ``start..end`` for each group: ``{group: {field: list}}``.

    Computed once, before rendering, since the camera path is known up front; stored in each
    group's attrs (``fmt.CAMERA_KEY``, docs/format.md). ``jitter``: the LR jitter (aliased mode).
    """
    import bpy
    import numpy as np

    fields: dict[str, dict[str, list]] = {g: {f: [] for f in fmt.CAMERA_FIELDS} for g in (fmt.HR, fmt.LR)}
    current = scene.frame_current
    try:
        for t, frame in enumerate(range(start, end + 1)):
            scene.frame_set(frame)
            data = camera.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
            # Cycles' film exposure: a linear multiplier already applied to the stored image.
            exposure = float(scene.cycles.film_exposure)
            for group in (fmt.HR, fmt.LR):
                width, height = settings.hr_size if group == fmt.HR else settings.lr_size
                projection, world = camera_matrices(scene, camera, width, height)
                out = fields[group]
                out["K"].append(convert.camera_intrinsics(projection, width, height).tolist())
                out["world_to_camera"].append(convert.world_to_camera(world).tolist())
                out["near"].append(float(data.clip_start))
                out["far"].append(float(data.clip_end))
                out["exposure"].append(exposure)
                shift = jitter[t] if (jitter is not None and group == fmt.LR) else (0.0, 0.0)
                out["jitter"].append([float(v) for v in np.asarray(shift, dtype=np.float64)])
                out["cut"].append(False)   # one sequence is one continuous shot
                out["orthographic"].append(convert.is_orthographic(projection))
    finally:
        scene.frame_set(current)
    return fields


@dataclasses.dataclass
class _RenderedFrame:
    frame: int
    files: dict            # group -> EXR path
    view_projection: object = None
    previous_view_projection: object = None


class _FrameRenderer:
    """Renders one frame at HR and LR (main thread, bpy); converts it (any thread, no bpy)."""

    #: (progress, label) that ``cycles_samples`` reports each render's samples to.
    samples: tuple = (None, "")

    def __init__(self, scene, camera, view_layer: str, settings: RenderSettings, tmp: Path, where: str):
        self.scene = scene
        self.camera = camera
        self.view_layer = view_layer
        self.settings = settings
        self.tmp = tmp
        self.where = where
        self.fill_background = "motion" in settings.buffers and camera.data.type == "PERSP"
        self.previous = None

    def _view_projection(self):
        """Projection @ world-to-camera of the active camera at the current frame (unjittered)."""
        import numpy as np

        projection, world = camera_matrices(self.scene, self.camera, *self.settings.hr_size)
        return projection @ np.linalg.inv(world)

    def set_previous(self, frame: int) -> None:
        if self.fill_background:
            self.scene.frame_set(frame)
            self.previous = self._view_projection()

    def render(self, frame: int, jitter, slot: int = 0) -> _RenderedFrame:
        from gbuf.render import passes

        self.scene.frame_set(frame)
        now = self._view_projection() if self.fill_background else None
        files = {}
        for group in (fmt.HR, fmt.LR):
            passes.configure_resolution(self.scene, self.settings, group)
            width, height = self.settings.hr_size if group == fmt.HR else self.settings.lr_size
            path = self.tmp / f"{group}_{slot}.exr"
            with _jittered(self.camera, jitter if group == fmt.LR else None, width, height), \
                    cycles_samples(*self.samples):
                render_still(self.scene, path, where=f"{self.where}: frame {frame} ({group})")
            files[group] = path
        rendered = _RenderedFrame(frame, files, now, self.previous)
        self.previous = now
        return rendered

    def convert(self, rendered: _RenderedFrame):
        """Read the frame's EXR files back, delete them, and convert to gbuf buffers (hr, lr)."""
        out = {}
        for group, path in rendered.files.items():
            try:
                layers = exr.read_layers(path, self.view_layer)
            finally:
                path.unlink(missing_ok=True)
            cameras = None
            if rendered.view_projection is not None:
                cameras = (rendered.view_projection, rendered.previous_view_projection)
            out[group] = convert.to_buffers(layers, self.settings.buffers,
                                            transparent="alpha" in self.settings.buffers,
                                            cameras=cameras,
                                            where=f"{self.where}: frame {rendered.frame} ({group})")
        return out[fmt.HR], out[fmt.LR]


@contextlib.contextmanager
def _stop_between_frames():
    """Ctrl-C (SIGINT) stops the render after the frame in progress is stored.

    Python's own handler would raise KeyboardInterrupt inside the Cycles add-on's Python
    ``render()``, where Blender catches and logs it and abandons that frame's image: the loop
    would go on (and a half-rendered frame could be stored). This handler only takes note; the
    loop stops after the frame is complete. A second Ctrl-C ends the process at once, which
    loses at most the frames not yet stored (the writer resumes after a kill, and its lock
    is seen as stale).

    Python runs a signal handler only when the main thread runs Python code, which it does
    not while Cycles renders a frame (minutes at full size): two Ctrl-C within one frame
    reached the handler as one, after the frame. So the signal is also read from a wakeup
    fd (written by the C-level handler at once) on a watcher thread, which counts it while
    the main thread is inside Cycles (whose render releases the GIL).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested = threading.Event()
    count_lock = threading.Lock()
    count = [0]

    def interrupted() -> None:
        with count_lock:
            count[0] += 1
            first = count[0] == 1
        if first:
            requested.set()
            _log.warning("render: stopping after the current frame (Ctrl-C again to stop now)")
            return
        # Logged, not written to fd 2: while Cycles renders, fd 2 may be Blender's, silenced.
        _log.error("render: stopped at once (second Ctrl-C); the frames stored are kept, "
                   "rerun the same command to resume")
        os._exit(128 + signal.SIGINT)  # from any thread, at once; no cleanup can be waited for

    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    try:
        old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        old_fd = None

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum == signal.SIGINT:
                    interrupted()

    def handler(signum, frame):
        # The watcher has counted this signal already (the wakeup fd is written before this runs);
        # without the watcher (no wakeup fd), this is the only count.
        if old_fd is None:
            interrupted()

    previous = signal.signal(signal.SIGINT, handler)
    watcher = None
    if old_fd is not None:
        watcher = threading.Thread(target=watch, name="gbuf-sigint", daemon=True)
        watcher.start()
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
        writer.close()
        with contextlib.suppress(OSError):
            reader.shutdown(socket.SHUT_RDWR)
        if watcher is not None:
            watcher.join(timeout=1)
        reader.close()


#: Cycles' status line while it renders, e.g. "Remaining: 00:31.92 | Mem: 3M | Sample 80/400".
_SAMPLE_STATUS = re.compile(r"\bSample (\d+)/(\d+)")


@contextlib.contextmanager
def cycles_samples(progress: Progress | None, label: str):
    """Report Cycles' samples of the render inside as ``progress(label, sample, samples)``.

    Measured on Blender 5.3 as a module in background mode: ``bpy.app.handlers.render_stats``
    fires during ``bpy.ops.render.render`` with Cycles' status lines (from its own threads, the
    GIL released by the render), "Sample 0/16", "Sample 1/16", ... "Sample 16/16", "Finished",
    at most a few times a second. Adaptive sampling may stop before the last sample: the
    render's end reports it complete.
    """
    if progress is None:
        yield
        return
    import bpy

    total = [0]

    def on_stats(status, *_) -> None:
        try:
            match = _SAMPLE_STATUS.search(str(status))
            if match:
                total[0] = int(match.group(2))
                progress(label, int(match.group(1)), total[0])
        except Exception:  # noqa: BLE001  (a progress bar must never break a render)
            _log.debug("sample progress failed", exc_info=True)

    bpy.app.handlers.render_stats.append(on_stats)
    try:
        yield
    finally:
        bpy.app.handlers.render_stats.remove(on_stats)
    if total[0]:
        progress(label, total[0], total[0])


def render_still(scene, path: Path, *, where: str) -> None:
    """One Cycles render of the current frame into ``path`` (multilayer EXR)."""
    import bpy

    scene.render.filepath = str(path)
    try:
        bpy.ops.render.render(write_still=True, scene=scene.name)
    except RuntimeError as err:
        raise GbufError(f"{where}: render failed ({error_line(err, last=True)})") from None
    if not path.is_file():
        raise GbufError(f"{where}: render wrote no image")


@contextlib.contextmanager
def _jittered(camera, jitter, width: int, height: int):
    """Shift the lens by ``jitter`` LR pixels (x right, y down) for one render; restore it after."""
    if jitter is None:
        yield
        return
    data = camera.data
    base = (data.shift_x, data.shift_y)
    # Lens shift is in units of the image's larger side; +shift_x moves the view right, so the
    # pixel centre then sees what sat jitter pixels to its right; +shift_y moves it up.
    unit = float(max(width, height))
    data.shift_x = base[0] + jitter[0] / unit
    data.shift_y = base[1] - jitter[1] / unit
    try:
        yield
    finally:
        data.shift_x, data.shift_y = base


def _check_ortho_projection_still(scene, camera, start: int, end: int, where: str) -> None:
    """Refuse an orthographic camera whose projection changes: Cycles' Vector pass ignores that.

    Measured on 5.3.0 (tests/test_render_conventions.py): for an orthographic camera the Vector
    pass is exact for objects moving in front of it and for the camera moving (trucking, rolling),
    but an animated orthographic scale or lens shift leaves Vector at zero while the image zooms
    or slides. (On 5.0.1 a moving orthographic camera was wrong too, by tens of pixels.) Both
    neighbours of every rendered frame count, since Cycles reads them for the Vector pass.
    """
    def projection(frame: int):
        scene.frame_set(frame)
        data = camera.data
        return round(data.ortho_scale, 9), round(data.shift_x, 9), round(data.shift_y, 9)

    current = scene.frame_current
    try:
        first = projection(start - 1)
        for frame in range(start, end + 2):
            if projection(frame) != first:
                raise GbufError(f"{where}: orthographic camera {camera.name!r} changes its orthographic scale "
                                f"or lens shift (frame {frame}); Cycles leaves motion vectors at zero for that, "
                                f"so keep them fixed, use a perspective camera, or leave out 'motion'")
    finally:
        scene.frame_set(current)


def _check_shift_not_animated(camera, where: str) -> None:
    anim = camera.data.animation_data
    if anim is None:
        return
    from gbuf.render.animation import action_fcurves

    paths = set()
    if anim.action is not None:
        paths.update(fc.data_path for fc in action_fcurves(anim.action))
    paths.update(d.data_path for d in anim.drivers)
    if paths & {"shift_x", "shift_y"}:
        raise GbufError(f"{where}: camera {camera.name!r} has an animated lens shift; "
                        f"--lr-mode aliased needs it free for the sub-pixel jitter")


def _sequence_name(source: dict) -> str:
    stem = source["recipe"] or Path(source["path"]).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".") or "seq0"
    return name


def _check_resumable(output: str, name: str, attrs: dict, overwrite: bool) -> None:
    """Refuse to resume a sequence that was rendered from another scene or with other settings."""
    from gbuf.datasets.store import local_path

    local = local_path(output)  # a file:// URL is a local path too
    if overwrite or local is None or not (local / "zarr.json").is_file():
        return
    import gbuf.datasets as gd

    ds = gd.open(output, mode="r")
    if name not in ds.sequences:
        return
    old = ds[name].attrs
    for key in ("frame_range", "render_settings", "scene", "camera_path"):
        mine = attrs[key]
        theirs = old.get(key)
        if key == "scene":
            mine = {k: mine[k] for k in ("sha256", "recipe", "recipe_seed", "recipe_frames")}
            theirs = {k: (theirs or {}).get(k) for k in mine}
        if _jsonish(mine) != _jsonish(theirs):
            # Name the first value that differs, as stored and as asked (a frame range as start:end).
            where, theirs, mine = _first_difference(_jsonish(theirs), _jsonish(mine))
            label = key.replace("_", " ") + (f" {'.'.join(where)}" if where else "")
            raise GbufError(f"{output}: sequence {name!r} exists with a different {label}: {_shown(key, theirs)} "
                            f"in the store, {_shown(key, mine)} asked; use --overwrite to replace it or "
                            f"--sequence to name another")


def _first_difference(theirs, mine, where: tuple = ()):
    """``(key path, stored value, asked value)`` of the first leaf where two JSON values differ."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for k in sorted(set(theirs) | set(mine), key=str):
            if theirs.get(k) != mine.get(k):
                return _first_difference(theirs.get(k), mine.get(k), (*where, str(k)))
    return where, theirs, mine


def _shown(key: str, value) -> str:
    if key == "frame_range" and isinstance(value, list) and len(value) == 2:
        return f"{value[0]}:{value[1]}"
    text = "none" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonish(value):
    import json

    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------- output


