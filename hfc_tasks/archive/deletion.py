"""Deletion of the verified sources on the cluster: the last step of a night, after the manifest.

A cluster file goes only if its sha256, computed now on the cluster, is still the verified
copy's (a file rewritten after its copy, even to the same size, stays and is reported).
Batched: per ``DELETE_BATCH`` files one ``sha256sum`` and one ``rm`` on the cluster. Where the
cluster account cannot run commands, each file is read back over SFTP and hashed here, then
removed.
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

DELETE_BATCH = 500  # cluster files removed per command


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
        sums = await run_command(cconn, cd + f"sha256sum -- {quoted}")
        if sums is None:  # no shell on the cluster account: SFTP read-back, then remove
            await _delete_by_sftp(src, run_dir, batch, listed, deleted=deleted, problems=problems)
            continue
        now = {}
        for line in sums.splitlines():
            digest, sep, name = line.partition("  ")
            if sep and len(digest) == 64:
                now[name] = digest
        same = [n for n in batch if now.get(n) == listed[n]]
        if same and await run_command(cconn, cd + "rm -f -- " + " ".join(shlex.quote(n) for n in same)) is None:
            raise TransferError(f"cannot remove files in {run_dir} on the cluster")
        for name in batch:
            if name in same or name not in now:  # not there: removed by an attempt cut before it answered
                deleted.add(name)
            else:
                problems[name] = _changed(name, now[name], listed[name])


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
