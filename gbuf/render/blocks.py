"""Rendering in parallel: shard-aligned blocks of frames, run as plain CLI calls or Ray tasks.

The pattern (docs/scaling.md):

1. *Plan*: create every array of a sequence with its final shape
   (``gbuf render SCENE -o STORE --plan``), so no task ever creates metadata.
2. *Blocks*: split the sequence's frames into runs of whole shards
   (``plan_blocks``). A task owns one block: it renders those frames, writes each of
   its shards once, whole, and leaves a completion marker per shard
   (``gbuf render SCENE -o STORE --block K``). Two tasks never share a shard, because
   concurrent writers into one zarr shard lose data (zarr-python #3514, #3682).
   A retried task resumes after its last staged frame and rewrites identical bytes
   (seeds are fixed).
3. *Consolidate*: once every shard has its marker, fold the markers into the
   group's attrs and verify the checksums.

``render_on_ray`` drives this on a Ray cluster (or a local Ray instance); the same
``--block K`` call is the unit of work for Slurm arrays or Kubernetes indexed jobs.

Rendering to a URL (``s3://``, ``gs://``, ``az://``, ...): frames are written into a
local *working store* (``work_store_for``), which is published to the URL with the
verified, incremental ``gbuf.datasets.sharing.push`` once the whole render is
complete (``publish``). The destination is checked before anything is rendered
(``check_destination``). The working store persists, so an interrupted render
resumes there and the rerun's push sends only what the destination lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gbuf.errors import GbufError

#: Exit status of a gbuf command for bad input: retrying such a task cannot help.
USER_ERROR = 2


def plan_blocks(num_frames: int, frames_per_shard: int, frames_per_block: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: consecutive runs of whole shards covering ``0..num_frames``.

    ``frames_per_block`` (default: one shard) must be a multiple of
    ``frames_per_shard``; the last block ends at ``num_frames``.
    """
    num_frames, frames_per_shard = int(num_frames), int(frames_per_shard)
    if num_frames < 1 or frames_per_shard < 1:
        raise GbufError(f"blocks: need at least one frame and one frame per shard "
                        f"(got {num_frames} frames, {frames_per_shard} per shard)")
    size = frames_per_shard if frames_per_block is None else int(frames_per_block)
    if size < 1 or size % frames_per_shard:
        raise GbufError(f"--blocks-of {size}: must be a positive multiple of the {frames_per_shard} frames per "
                        f"shard (a block is whole shards, so no two blocks share one)")
    return [(start, min(start + size, num_frames)) for start in range(0, num_frames, size)]


def block_range(num_frames: int, frames_per_shard: int, block: int, frames_per_block: int | None = None,
                *, where: str = "render") -> tuple[int, int]:
    """Frames ``(start, stop)`` (sequence indices) of block number ``block``."""
    blocks = plan_blocks(num_frames, frames_per_shard, frames_per_block)
    if not 0 <= int(block) < len(blocks):
        raise GbufError(f"{where}: --block {block}: the sequence has blocks 0..{len(blocks) - 1} "
                        f"({num_frames} frames in blocks of {blocks[0][1] - blocks[0][0]})")
    return blocks[int(block)]


def pending_blocks(store, sequence: str, frames_per_block: int | None = None) -> tuple[list[int], int]:
    """Blocks of ``sequence`` not yet complete in every group, and the number of blocks."""
    import gbuf.datasets as gd

    seq = gd.open(store, mode="r")[sequence]
    groups = [seq[name] for name in seq.resolutions]
    fps = groups[0].frames_per_shard
    blocks = plan_blocks(groups[0].planned_frames, fps, frames_per_block)
    pending = []
    for k, (start, stop) in enumerate(blocks):
        shards = set(range(start // fps, -(-stop // fps)))
        if any(not shards <= res.committed_shards() for res in groups):
            pending.append(k)
    return pending, len(blocks)


# ------------------------------------------------------------------------------------ Ray driver


@dataclasses.dataclass
class BlockResult:
    sequence: str
    block: int
    ok: bool
    seconds: float
    attempt_pid: int
    message: str = ""


@dataclasses.dataclass
class RayRenderResult:
    output: str
    sequences: list[str]
    blocks_total: int
    blocks_run: int
    blocks_skipped: int
    seconds: float
    verified_frames: int
    #: With a URL as output: the local working store, and ``sharing.push``'s counts.
    work_store: str | None = None
    published: dict | None = None


def _gbuf_command(scene: str | None, output: str, options: list[str], extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "gbuf", "render", *([scene] if scene else []), "-o", output,
            "--quiet", *options, *extra]


def _run_gbuf(command: list[str]) -> tuple[int, str]:
    # Each call is its own process with its own bpy: Blender keeps one scene per process.
    proc = subprocess.run(command, capture_output=True, text=True, env=_child_env(), check=False)
    text = (proc.stdout + proc.stderr).strip()
    return proc.returncode, text


def _child_env() -> dict:
    env = dict(os.environ)
    # A Ray worker may run with another working directory: keep the gbuf checkout importable.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class BlockFailed(RuntimeError):
    """A block's process died or failed in a way a retry may fix (Ray retries these)."""


def _block_task(command: list[str], sequence: str, block: int) -> BlockResult:
    started = time.perf_counter()
    code, text = _run_gbuf(command)
    seconds = time.perf_counter() - started
    if code == USER_ERROR:
        return BlockResult(sequence, block, False, seconds, os.getpid(), text.splitlines()[-1] if text else "")
    if code != 0:
        raise BlockFailed(f"{sequence} block {block}: exit status {code}: {text[-2000:]}")
    return BlockResult(sequence, block, True, seconds, os.getpid(), text)


def block_task_options(max_retries: int) -> dict:
    """Ray options of a block task: one CPU slot; a crashed or failed process is retried."""
    # max_retries covers a dead worker or node; retry_exceptions a gbuf process that failed
    # (BlockFailed), but not bad input, which _block_task returns instead of raising.
    return {"num_cpus": 1, "max_retries": int(max_retries), "retry_exceptions": [BlockFailed]}


def _plan_task(command: list[str]) -> tuple[int, str]:
    return _run_gbuf(command)


def render_on_ray(scenes: list[str | None], output: str, *, address: str | None = None,
                  render_options: list[str] | None = None, blocks_of: int | None = None,
                  max_retries: int = 2, local_cpus: int = 2, verify: bool = True,
                  echo=None, work_dir=None, keep_work: bool = True, storage_options: dict | None = None,
                  progress: bool = False) -> RayRenderResult:
    """Render ``scenes`` into ``output`` as one Ray job: one task per (sequence, block).

    ``render_options``: ``gbuf render`` options shared by every call (resolution,
    samples, seed, ...). ``address``: a running Ray cluster (``"auto"``, ``ray://...``,
    ``HOST:PORT``); ``None`` starts a local instance with ``local_cpus`` CPUs and
    stops it after. Blocks already complete are skipped; a task whose process fails
    is retried up to ``max_retries`` times; bad input fails the job at once.

    ``output`` may be a URL: the tasks write the working store (``work_dir``, default
    ``work_store_for(output)``; on a multi-node cluster it must be on storage every
    node mounts), and the driver pushes it to the URL once, after consolidation and
    verification (``publish``; ``keep_work``, ``storage_options``, ``progress``).
    The destination is checked before Ray starts.
    """
    from gbuf.datasets import remote_store

    if not remote_store.is_url(str(output)):
        if work_dir is not None or not keep_work:
            raise GbufError(f"{output}: a working store (work_dir/keep_work) is only for a URL as output")
        return _render_on_ray(scenes, output, address=address, render_options=render_options,
                              blocks_of=blocks_of, max_retries=max_retries, local_cpus=local_cpus,
                              verify=verify, echo=echo)
    url = str(output)
    work = work_store_for(url, work_dir)
    check_destination(url, work, storage_options)
    if address is not None and work_dir is None and echo is not None:
        echo(f"working store {work}: on a cluster of several nodes it must be on storage every node mounts "
             f"(--work-dir)")
    try:
        result = _render_on_ray(scenes, str(work), address=address, render_options=render_options,
                                blocks_of=blocks_of, max_retries=max_retries, local_cpus=local_cpus,
                                verify=True, echo=echo)
    except GbufError as err:
        raise GbufError(f"{err} ({unpublished_note(url, work)})") from None
    result.published = publish(work, url, keep_work=keep_work, storage_options=storage_options,
                               progress=progress)
    result.output, result.work_store = url, str(work)
    return result


def _render_on_ray(scenes: list[str | None], output: str, *, address: str | None, render_options,
                   blocks_of: int | None, max_retries: int, local_cpus: int, verify: bool,
                   echo) -> RayRenderResult:
    try:
        import ray
    except ImportError:
        raise GbufError("render --ray: Ray is not installed (pip install 'gbuf[share]')") from None
    from gbuf.datasets import writer as _writer

    echo = echo or (lambda _msg: None)
    if "://" in str(output):
        # Block writers stage frames and markers next to the arrays, on a filesystem.
        raise GbufError(f"{output}: render --ray writes to a directory every node mounts (NFS, Lustre, ...) "
                        f"or to an s3://, gs://, az://... URL (through a working store)")
    output = str(Path(output).resolve())
    options = list(render_options or [])
    started = time.perf_counter()
    if not scenes:
        scenes = [None]
    stems = [Path(s).stem if s else "default" for s in scenes]
    if len(set(stems)) != len(stems) and "--sequence" not in options:
        raise GbufError(f"{output}: two scenes share a file name ({', '.join(stems)}); each becomes the sequence "
                        f"named after its file, so rename one")
    if len(scenes) > 1 and "--sequence" in options:
        raise GbufError(f"{output}: --sequence names one sequence; several scenes each get their own")
    for scene in scenes:
        if scene is not None and not Path(scene).is_file():
            raise GbufError(f"{scene}: no such file")
    block_opts = [] if blocks_of is None else ["--blocks-of", str(int(blocks_of))]

    started_here = address is None
    if started_here:
        ray.init(num_cpus=int(local_cpus), include_dashboard=False, log_to_driver=False,
                 object_store_memory=80 * 2**20)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        plan = ray.remote(num_cpus=1, max_retries=max_retries)(_plan_task)
        block_task = ray.remote(**block_task_options(max_retries))(_block_task)

        # 1. Plan: every sequence's arrays with their final shape, one scene after another
        # (they share the store's root metadata).
        sequences = []
        for scene in scenes:
            code, text = ray.get(plan.remote(_gbuf_command(scene, output, options, ["--plan", *block_opts])))
            if code != 0:
                raise GbufError(text.splitlines()[-1].removeprefix("gbuf: error: ") if text else
                                f"{scene}: planning failed (exit status {code})")
            match = re.search(r"/([^/]+): \d+ frames, blocks", text.strip().splitlines()[-1])
            if match is None:
                raise GbufError(f"{scene}: planning printed no plan: {text[-500:]}")
            sequences.append(match.group(1))
            echo(f"planned {sequences[-1]} ({scene or 'default recipe'})")

        # 2. Blocks: one task each, skipping those already complete.
        futures, total, skipped = [], 0, 0
        for scene, sequence in zip(scenes, sequences):
            pending, count = pending_blocks(output, sequence, blocks_of)
            total += count
            skipped += count - len(pending)
            for k in pending:
                command = _gbuf_command(scene, output, options, ["--block", str(k), *block_opts])
                futures.append(block_task.remote(command, sequence, k))
        echo(f"{len(futures)} block task(s), {skipped} already complete")
        failures = []
        for result in ray.get(futures):
            if not result.ok:
                failures.append(f"{result.sequence} block {result.block}: "
                                f"{result.message.removeprefix('gbuf: error: ')}")
            else:
                echo(f"{result.sequence} block {result.block}: {result.seconds:.1f} s (pid {result.attempt_pid})")
        if failures:
            raise GbufError(f"{output}: " + "; ".join(failures))
    finally:
        if started_here:
            ray.shutdown()

    # 3. Consolidate and verify (the last block task usually consolidated already).
    import gbuf.datasets as gd

    ds = gd.open(output, mode="r")
    for sequence in sequences:
        for group in ds[sequence].resolutions:
            if not _writer.consolidate(output, sequence, group):
                raise GbufError(f"{output}/{sequence}/{group}: not every shard was written")
    checked = 0
    if verify:
        from gbuf.datasets.integrity import verify as verify_store

        report = verify_store(output)
        if not report.ok:
            raise GbufError(f"{output}: verify after render: {report.problems[0]}")
        checked = report.frames_checked
    return RayRenderResult(output=output, sequences=sequences, blocks_total=total, blocks_run=len(futures),
                           blocks_skipped=skipped, seconds=time.perf_counter() - started,
                           verified_frames=checked)


# ------------------------------------------------------------------------------ rendering to a URL


def work_store_for(url: str, work_dir=None) -> Path:
    """The local working store a render to ``url`` writes, to be pushed there when complete.

    ``work_dir`` if given; else ``$GBUF_CACHE_DIR/render/<key>/<name>``, or
    ``${XDG_CACHE_HOME:-~/.cache}/gbuf/render/<key>/<name>`` without it, where
    ``<key>`` is the first 16 hex digits of the SHA-256 of the URL (without a trailing
    ``/``) and ``<name>`` the URL's last path component (so the dataset card names it).
    """
    if work_dir is not None and str(work_dir).strip():
        return Path(work_dir).expanduser().resolve()
    from gbuf.datasets import remote_store

    base = remote_store.cache_dir_for(None)
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gbuf"
    text = str(url).rstrip("/")
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.rsplit("/", 1)[-1]).lstrip(".") or "data"
    return (base / "render" / key / name).expanduser().resolve()


def check_destination(url: str, work: Path, storage_options: dict | None = None) -> None:
    """Refuse, before anything is rendered, a destination the final push would refuse or cannot reach.

    Reads the destination's manifest and push journal as push does (so wrong
    credentials or an unreachable endpoint give push's one-line error); without
    either, lists it once: it must be empty (and its bucket must exist). A
    destination holding a gbuf dataset must be the working store's own dataset.
    """
    from gbuf.datasets import remote_store, sharing

    if str(url).split("://")[0].lower() in ("http", "https"):
        raise GbufError(f"{url}: http(s) is read-only; render to s3://, gs://, az:// or a folder, and serve that")
    work = Path(work)
    fs, root = remote_store.filesystem(url, storage_options)
    with sharing._remote_errors(url, "reading the destination"):
        marks = [sharing._read_json(fs, sharing._join(root, name), url)
                 for name in (sharing.MANIFEST, sharing.JOURNAL)]
        ids = {m.get("dataset_id") for m in marks if isinstance(m, dict)} - {None}
        if not ids:
            try:
                entries = fs.ls(root, detail=False)
            except FileNotFoundError:
                entries = []
            if entries:
                raise GbufError(f"{url}: not empty and not a gbuf push destination; render to another URL "
                                f"(or render with --work-dir DIR and `gbuf dataset push --force DIR {url}`)")
            bucket = root.strip("/").split("/")[0]
            if sharing._is_object_store(fs) and bucket:
                try:
                    fs.info(bucket)
                except FileNotFoundError:
                    raise GbufError(f"{url}: bucket {bucket!r} does not exist (create it first)") from None
        with contextlib.suppress(Exception):
            fs.invalidate_cache(root)  # push lists the destination afresh, maybe hours later
    if not ids:
        return
    shown = ", ".join(sorted(map(str, ids)))
    if not (work / "zarr.json").is_file():
        raise GbufError(f"{url}: already holds a gbuf dataset (id {shown}) that the working store {work} does "
                        f"not have; to add to it, `gbuf dataset pull {url} {work}` first (or give its working "
                        f"store with --work-dir), else render to another URL")
    work_id = sharing._dataset_id(work, sharing._root_attrs(work))
    if work_id not in ids:
        raise GbufError(f"{url}: holds another dataset (id {shown}) than the working store {work} "
                        f"(id {work_id}); render to another URL or use that dataset's working store")


def unpublished_note(url: str, work) -> str:
    return f"nothing pushed to {url}; the working store is {work}"


def publish(work, url: str, *, keep_work: bool = True, storage_options: dict | None = None,
            progress: bool = False, jobs: int = 8) -> dict:
    """Push the complete working store ``work`` to ``url`` (incremental, verified); returns push's counts.

    ``keep_work=False`` reads every object this push sends back and compares its
    SHA-256 (``readback``; objects already there were checked when they were sent),
    then deletes the working store: the local copy goes only once the push is checked.
    """
    from gbuf.datasets import sharing

    work = Path(work)
    try:
        result = sharing.push(work, url, jobs=jobs, storage_options=storage_options, progress=progress,
                              readback=not keep_work)
    except GbufError as err:
        raise GbufError(f"{err} (the working store {work} is kept; fix this and rerun, or "
                        f"`gbuf dataset push {work} {url}`)") from None
    result["work_removed"] = False
    if not keep_work:
        shutil.rmtree(work)
        result["work_removed"] = True
        if work == work_store_for(url):
            with contextlib.suppress(OSError):
                work.parent.rmdir()  # the default working store's <key> folder, when empty
    return result
