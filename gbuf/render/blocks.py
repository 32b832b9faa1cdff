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
With a URL as output it renders into a local working store and pushes it once, at
the end (``gbuf.render.publish``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gbuf.errors import GbufError
from gbuf.render import publish as _publish
from gbuf.render.settings import RenderSettings

if TYPE_CHECKING:
    from gbuf.datasets.sharing import Progress

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


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """A planned sequence's blocks: how many, of how many frames, and which are not yet complete."""

    store: str
    sequence: str
    num_frames: int
    frames_per_shard: int
    frames_per_block: int
    blocks: int
    pending: list[int]


def block_plan(store, sequence: str, frames_per_block: int | None = None) -> BlockPlan:
    """The blocks of ``sequence`` in ``store`` (``frames_per_block`` as for ``plan_blocks``)."""
    import gbuf.datasets as gd

    pending, count = pending_blocks(store, sequence, frames_per_block)
    seq = gd.open(store, mode="r")[sequence]
    first = seq[seq.resolutions[0]]
    fps = first.frames_per_shard
    return BlockPlan(store=str(store), sequence=sequence, num_frames=first.planned_frames, frames_per_shard=fps,
                     frames_per_block=frames_per_block or fps, blocks=count, pending=pending)


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
    #: With a URL as output: the local working store, and its push to the URL.
    work_store: str | None = None
    published: _publish.PublishResult | None = None


def cli_options(settings: RenderSettings, *, frames: tuple[int, int] | None = None, sequence: str | None = None,
                frames_per_shard: int | None = None, allow_scripts: bool = False) -> list[str]:
    """The ``gbuf render`` options that make a CLI call render with these settings.

    Every block task (and the plan call) is such a call, so what reaches a task is
    exactly what ``make_settings`` accepts back: the sequence records the same
    settings whichever process renders it. ``--opt=value`` keeps a negative frame
    number from reading as an option.
    """
    w, h = settings.resolution
    options = [f"--resolution={w}x{h}", f"--scale={settings.scale}", f"--lr-mode={settings.lr_mode}",
               f"--device={settings.device}", f"--seed={settings.seed}", f"--passes={','.join(settings.buffers)}",
               "--denoise" if settings.denoise else "--no-denoise"]
    if settings.samples is not None:
        options.append(f"--samples={settings.samples}")
    if frames is not None:
        options.append(f"--frames={int(frames[0])}:{int(frames[1])}")
    if sequence is not None:
        options.append(f"--sequence={sequence}")
    if frames_per_shard is not None:
        options.append(f"--frames-per-shard={int(frames_per_shard)}")
    if allow_scripts:
        options.append("--allow-scripts")
    return options


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


#: The logger of Ray's notice that a new local instance uses token authentication.
RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropTokenNotice(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice, and nothing else.

    Ray prints it on every start of a local instance: the token is generated and
    kept in ~/.ray by Ray itself, the instance lives as long as this job, and the only
    advice it gives (turn authentication off) would make things worse, so there is
    nothing for a gbuf user to do. Its other messages (for example that a cluster
    runs *without* authentication) stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RAY_TOKEN_NOTICE)


@contextlib.contextmanager
def ray_session(address: str | None = None, local_cpus: int = 2):
    """``ray.init`` for a block job (a local instance of ``local_cpus`` CPUs when ``address`` is None,
    stopped on exit), without Ray's token notice."""
    import ray

    token_log = logging.getLogger(RAY_TOKEN_LOGGER)
    quiet = _DropTokenNotice()
    token_log.addFilter(quiet)
    try:
        if address is None:
            ray.init(num_cpus=int(local_cpus), include_dashboard=False, log_to_driver=False,
                     object_store_memory=80 * 2**20)
        else:
            ray.init(address=address, log_to_driver=False)
    finally:
        token_log.removeFilter(quiet)
    try:
        yield ray
    finally:
        if address is None:
            ray.shutdown()


def render_on_ray(scenes: Sequence[str | None], output: str, settings: RenderSettings = RenderSettings(), *,
                  frames: tuple[int, int] | None = None, sequence: str | None = None,
                  frames_per_shard: int | None = None, allow_scripts: bool = False,
                  address: str | None = None, blocks_of: int | None = None, max_retries: int = 2,
                  local_cpus: int = 2, verify: bool = True, echo: Callable[[str], None] | None = None,
                  work_dir=None, keep_work: bool = True, storage_options: dict | None = None,
                  progress: Progress | None = None) -> RayRenderResult:
    """Render ``scenes`` into ``output`` as one Ray job: one task per (sequence, block).

    ``settings`` (``make_settings``), ``frames``, ``sequence``, ``frames_per_shard`` and
    ``allow_scripts`` are those of ``gbuf.render.render``, shared by every task.
    ``address``: a running Ray cluster (``"auto"``, ``ray://...``, ``HOST:PORT``);
    ``None`` starts a local instance with ``local_cpus`` CPUs and stops it after.
    Blocks already complete are skipped; a task whose process fails is retried up to
    ``max_retries`` times; bad input fails the job at once. ``echo`` receives a line
    per step.

    ``output`` may be a URL: the tasks write the working store (``work_dir``, default
    ``publish.work_store_for(output)``; on a multi-node cluster it must be on storage
    every node mounts), and the driver pushes it to the URL once, after consolidation
    and verification (``keep_work``, ``storage_options``, ``progress`` as for
    ``publish.publish``). The destination is checked before Ray starts.
    """
    if str(output).startswith("file://"):
        from gbuf.datasets.store import local_path

        output = str(local_path(output))  # a local folder: the tasks are given its path
    job = functools.partial(_render_on_ray, scenes, settings=settings, frames=frames, sequence=sequence,
                            frames_per_shard=frames_per_shard, allow_scripts=allow_scripts, address=address,
                            blocks_of=blocks_of, max_retries=max_retries, local_cpus=local_cpus, echo=echo)
    if not _publish.is_url(output):
        _publish.check_work_options(output, work_dir, keep_work)
        return job(str(output), verify=verify)

    def render_into(work: Path) -> RayRenderResult:
        if address is not None and work_dir is None and echo is not None:
            echo(f"working store {work}: on a cluster of several nodes it must be on storage every node "
                 f"mounts (--work-dir)")
        return job(str(work), verify=True)  # verified before it is pushed

    result, work, published = _publish.render_to_url(str(output), render_into, work_dir=work_dir,
                                                     keep_work=keep_work, storage_options=storage_options,
                                                     progress=progress)
    result.output, result.work_store, result.published = str(output), str(work), published
    return result


def _render_on_ray(scenes: Sequence[str | None], output: str, *, settings: RenderSettings, frames, sequence,
                   frames_per_shard, allow_scripts: bool, address: str | None, blocks_of: int | None,
                   max_retries: int, local_cpus: int, verify: bool, echo) -> RayRenderResult:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GbufError("render --ray: Ray is not installed (pip install 'gbuf[share]')") from None
    from gbuf.datasets import writer as _writer

    echo = echo or (lambda _msg: None)
    if "://" in str(output):
        # Block writers stage frames and markers next to the arrays, on a filesystem.
        raise GbufError(f"{output}: render --ray writes to a directory every node mounts (NFS, Lustre, ...) "
                        f"or to an s3://, gs://, az://... URL (through a working store)")
    output = str(Path(output).resolve())
    options = cli_options(settings, frames=frames, sequence=sequence, frames_per_shard=frames_per_shard,
                          allow_scripts=allow_scripts)
    started = time.perf_counter()
    scenes = list(scenes) or [None]
    stems = [Path(s).stem if s else "default" for s in scenes]
    if len(set(stems)) != len(stems) and sequence is None:
        raise GbufError(f"{output}: two scenes share a file name ({', '.join(stems)}); each becomes the sequence "
                        f"named after its file, so rename one")
    if len(scenes) > 1 and sequence is not None:
        raise GbufError(f"{output}: --sequence names one sequence; several scenes each get their own")
    for scene in scenes:
        if scene is not None and not Path(scene).is_file():
            raise GbufError(f"{scene}: no such file")
    block_opts = [] if blocks_of is None else ["--blocks-of", str(int(blocks_of))]

    with ray_session(address, local_cpus) as ray:
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
        for scene, name in zip(scenes, sequences):
            pending, count = pending_blocks(output, name, blocks_of)
            total += count
            skipped += count - len(pending)
            for k in pending:
                command = _gbuf_command(scene, output, options, ["--block", str(k), *block_opts])
                futures.append(block_task.remote(command, name, k))
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

    # 3. Consolidate and verify (the last block task usually consolidated already).
    import gbuf.datasets as gd

    ds = gd.open(output, mode="r")
    for name in sequences:
        for group in ds[name].resolutions:
            if not _writer.consolidate(output, name, group):
                raise GbufError(f"{output}/{name}/{group}: not every shard was written")
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
