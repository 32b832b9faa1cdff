"""``gbuf dataset push / pull / card``: publish, fetch and describe a dataset."""

from __future__ import annotations


import click


def register(group: click.Group) -> None:
    group.add_command(push)
    group.add_command(pull)
    group.add_command(card)


def transfer_bar(enabled: bool = True):
    """A ``progress(label, bytes_done, bytes_total)`` callback drawing a bar in bytes (or None)."""
    from gbuf.cli._output import progress_bar

    return progress_bar(enabled, unit="bytes")


def echo_push(r, *, what: str, tail: str = "") -> None:
    """The one line that says what a push (a ``PushResult``) sent; ``what``: where it went."""
    from gbuf.datasets.summary import human_bytes

    click.echo(f"pushed {what}: {r.sent_files} file(s), {human_bytes(r.sent_bytes)} sent, "
               f"{r.skipped_files} already there; {r.files} file(s), {human_bytes(r.total_bytes)} in all{tail}")


@click.command("push")
@click.argument("ds", type=click.Path(file_okay=False))
@click.argument("url")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Parallel transfers (a copy between local folders uses at most one per CPU).")
@click.option("--force", is_flag=True, help="Write over a destination that holds another dataset.")
@click.option("--readback", is_flag=True,
              help="Download every object sent again and compare its SHA-256 with the manifest "
                   "(without it: hashed as sent, size checked at the destination).")
@click.option("--license", "license_", default=None,
              help="Set the license (written into DS's root attrs) and publish it in the card.")
def push(ds: str, url: str, jobs: int, force: bool, readback: bool, license_: str | None) -> None:
    """Publish the local store DS at URL (any fsspec URL; incremental, resumable).

    DS itself is not modified (besides --license): the card is generated and sent,
    and push keeps a hash cache and the dataset id in DS/.gbuf/.
    """
    from gbuf.datasets.sharing import push as push_store

    with transfer_bar() as progress:
        r = push_store(ds, url, jobs=jobs, force=force, progress=progress, readback=readback, license=license_)
    echo_push(r, what=f"{ds} -> {url}")


@click.command("pull")
@click.argument("url")
@click.argument("ds", type=click.Path(file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Parallel transfers (a copy between local folders uses at most one per CPU).")
@click.option("--force", is_flag=True,
              help="Write over a local folder that holds another dataset, and overwrite files changed "
                   "locally since pull wrote them (without it such a pull is refused, naming the file).")
@click.option("--frame-check/--no-frame-check", default=False, show_default=True,
              help="Also decode every frame and check its CRC-32 (as gbuf dataset verify), which catches "
                   "a source whose manifest matches corrupt data; every object's SHA-256 is checked "
                   "either way.")
def pull(url: str, ds: str, jobs: int, force: bool, frame_check: bool) -> None:
    """Fetch the pushed store at URL into the local folder DS (every object's SHA-256 checked on arrival).

    Pull manages only the files pulls wrote (recorded in DS/.gbuf/): local work in DS, such
    as a sequence rendered or a group degraded there, is never deleted or overwritten.
    """
    from gbuf.datasets.sharing import pull as pull_store
    from gbuf.datasets.summary import human_bytes

    with transfer_bar() as progress:
        r = pull_store(url, ds, jobs=jobs, force=force, progress=progress, frame_check=frame_check)
    checked = f"; {r.frames_verified} frame(s) verified" if frame_check else ""
    removed = f"; {r.removed_files} no longer in the dataset removed" if r.removed_files else ""
    kept = f"; {r.kept_files} no longer in the dataset but changed locally kept" if r.kept_files else ""
    click.echo(f"pulled {url} -> {ds}: {r.received_files} file(s), {human_bytes(r.received_bytes)} "
               f"received (sha256 checked), {r.skipped_files} already there{removed}{kept}{checked}")


@click.command("card")
@click.argument("ds", type=click.Path(exists=True, file_okay=False))
@click.option("--license", "license_", default=None, help="License to record (kept in the root attrs).")
def card(ds: str, license_: str | None) -> None:
    """Write the dataset card, README.md at the root of DS, from its attrs."""
    from gbuf.datasets.datacard import write_card

    click.echo(f"wrote {write_card(ds, license=license_)}")
