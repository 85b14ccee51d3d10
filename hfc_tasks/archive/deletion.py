"""Deletion of the verified sources on the cluster: the last step of a night, after the manifest.

A cluster file goes only if its sha256, computed now on the cluster, is still the verified
copy's (a file rewritten after its copy, even to the same size, stays and is reported).
Batched: per ``DELETE_BATCH`` files one digest command (``openssl dgst -sha256 -r`` where the
cluster has it: 0.18 s per 200 MB on the standard workplace against 0.8 s for coreutils'
``sha256sum``) and one ``rm`` on the cluster. Where the cluster account cannot run commands,
each file is read back over SFTP and hashed here, then removed.

:func:`delete_unchanged` spares the second hash where the sha256 was computed on the cluster
itself (direct mode): a file whose inode, size, mtime and ctime (:data:`STAT_FORMAT`, taken
before that hash) are still the same has not been written since, so it still has that sha256.
ctime cannot be set back from user space (``touch -d`` sets it to now), so a rewrite, even to
the same size with the old mtime restored, shows; such a file goes through the hash check.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex

import asyncssh

from hfc_tasks.archive.endpoints import first_error, run_command
from hfc_tasks.archive.errors import TransferError
from hfc_tasks.archive.files import hash_source
from hfc_tasks.archive.verification import parse_digests

DELETE_BATCH = 500  # cluster files removed per command
# `stat -c` of a file's identity and last change: size, inode, mtime and ctime to the nanosecond
# (%y/%z: GNU stat's full-precision dates), then "|" and the name as given ("|" never occurs
# before it). See delete_unchanged.
STAT_FORMAT = "%s %i %y %z|%n"


def digest_command(quoted: str) -> str:
    """Shell words hashing ``quoted`` (shell-quoted names) on the cluster: openssl where it is
    there (the CPU's SHA instructions), else coreutils; either goes on past a missing file."""
    return (f"if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r -- {quoted}; "
            f"else sha256sum -- {quoted}; fi")


def parse_stat(text: str) -> dict[str, str]:
    """name -> identity (:data:`STAT_FORMAT` without the name) from ``stat -c`` output; a leading
    ``./`` of the name is dropped."""
    out = {}
    for line in text.splitlines():
        ident, sep, name = line.partition("|")
        if sep and name:
            out[name.removeprefix("./")] = ident
    return out


async def delete_sources(src, cconn, run_dir: str, names: list[str], listed: dict[str, str], *,
                         deleted: set[str], problems: dict[str, str]) -> None:
    """Remove ``names`` from ``run_dir`` on the cluster where their sha256 is still ``listed``'s.

    ``src``: the cluster's SFTP client, ``cconn`` its connection. ``deleted`` and ``problems``
    (name -> why its source is kept) are filled as the files go, so what a cut connection
    interrupted is known to the next attempt.
    """
    cd = f"cd -- {shlex.quote(run_dir)} || exit 3; "
    for i in range(0, len(names), DELETE_BATCH):
        batch = names[i:i + DELETE_BATCH]
        quoted = " ".join(shlex.quote(n) for n in batch)
        sums = await run_command(cconn, cd + digest_command(quoted))
        if sums is None:  # no shell on the cluster account: SFTP read-back, then remove
            await _delete_by_sftp(src, run_dir, batch, listed, deleted=deleted, problems=problems)
            continue
        now = parse_digests(sums)
        same = [n for n in batch if now.get(n) == listed[n]]
        if same and await run_command(cconn, cd + "rm -f -- " + " ".join(shlex.quote(n) for n in same)) is None:
            raise TransferError(f"cannot remove files in {run_dir} on the cluster")
        for name in batch:
            if name in same or name not in now:  # not there: removed by an attempt cut before it answered
                deleted.add(name)
            else:
                problems[name] = _changed(name, now[name], listed[name])


async def delete_unchanged(cconn, run_dir: str, names: list[str], identity: dict[str, str], *,
                           deleted: set[str]) -> None:
    """Remove those of ``names`` whose ``stat`` identity on the cluster is still ``identity[name]``:
    taken by the command that computed the sha256 listed for it, before hashing (see the module's
    docstring). The others (changed, gone, or a cluster account without commands) are left for
    :func:`delete_sources`, which hashes them again. ``deleted`` is filled as they go.

    Two commands for the whole night, the names on stdin (NUL-separated, never through the
    shell; ``xargs`` keeps each command line within the system's limits): one ``stat`` and one
    ``rm``. Batches of names on the command line cost one exec round trip each (0.6 s for
    2,200 files here)."""
    if not names:
        return
    cd = f"cd -- {shlex.quote(run_dir)} || exit 3; "
    listing = "".join(f"./{n}\0" for n in names)
    result = await cconn.run(cd + f"xargs -0 stat -c {shlex.quote(STAT_FORMAT)} --", check=False, input=listing)
    if result.exit_status is None and result.exit_signal is None:
        raise asyncssh.ConnectionLost(f"stat in {run_dir} on the cluster cut before its answer")
    if result.exit_status in (126, 127) or result.exit_status is None:  # no shell, no xargs: hash them again
        return
    now = parse_stat(str(result.stdout or ""))
    same = [n for n in names if n in now and now[n] == identity.get(n)]
    if not same:
        return
    result = await cconn.run(cd + "xargs -0 rm -f --", check=False, input="".join(f"./{n}\0" for n in same))
    if result.exit_status is None and result.exit_signal is None:
        raise asyncssh.ConnectionLost(f"rm in {run_dir} on the cluster cut before its answer")
    if result.exit_status != 0:
        raise TransferError(f"cannot remove files in {run_dir} on the cluster (exit {result.exit_status}: "
                            f"{str(result.stderr or '').strip()[:300]})")
    deleted.update(same)


def _changed(name: str, now: str, verified: str) -> str:
    return (f"{name}: changed on the cluster after its copy was verified (sha256 {now} there, "
            f"{verified} archived and listed in the manifest); kept there")


async def _delete_by_sftp(src, run_dir: str, names: list[str], listed: dict[str, str], *,
                          deleted: set[str], problems: dict[str, str]) -> None:
    gate = asyncio.Semaphore(16)  # files read back at once (a few chunks of memory each)

    async def rm(name: str) -> None:
        path = posixpath.join(run_dir, name)
        async with gate:
            try:
                digest, _ = await hash_source(src, path)
            except asyncssh.SFTPNoSuchFile:  # removed by an attempt cut before it answered
                deleted.add(name)
                return
            if digest != listed[name]:
                problems[name] = _changed(name, digest, listed[name])
                return
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):  # a reply lost with a cut connection
                await src.remove(path)
        deleted.add(name)

    try:
        async with asyncio.TaskGroup() as tg:
            for name in names:
                tg.create_task(rm(name))
    except BaseExceptionGroup as group:
        raise first_error(group) from None
