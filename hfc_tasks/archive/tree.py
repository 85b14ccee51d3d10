"""The archive tree over SFTP (asyncssh): what the archive stage reads or tidies there besides
the copies themselves.

* :func:`read_manifest`: the night's manifest found on the archive (parsed by
  :mod:`hfc_tasks.manifest`), or None;
* ``.part`` names and clean-up: :func:`night_tag` (the first 6 hex of a writer's token, one
  per (FRC, night)) and :func:`clean_parts` (the half copies earlier runs left, never another
  night's live writer's);
* ENOSPC detection and SFTP refusals in words: :func:`no_space` (OpenSSH answers a full disk
  with a bare "Failure"), :func:`explain_sftp_error`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import posixpath
import time

import asyncssh

from hfc_tasks import manifest as manifest_mod
from hfc_tasks.archive.errors import TransferError

PART_STALE_SECONDS = 3600  # another night's .part this old is a crash's leftover, not a writer's


async def read_manifest(sftp, path: str) -> dict | None:
    """The manifest at ``path`` on the archive, or None if there is none; an invalid one is a TransferError."""
    try:
        async with sftp.open(path, "rb") as f:
            raw = await f.read()
    except asyncssh.SFTPNoSuchFile:
        return None
    try:
        return manifest_mod.parse_json(raw, path)
    except manifest_mod.ManifestError as exc:
        raise TransferError(str(exc)) from None


def night_tag(frc: str, night: dt.date) -> str:
    """6 hex of the (FRC, night): the first half of a writer's ``.part`` token."""
    return hashlib.sha256(f"{frc}/{night.isoformat()}".encode()).hexdigest()[:6]


async def clean_parts(dst, folders: set[str], names: set[str], token: str) -> int:
    """Remove the .part files other writers left for these product names (a crashed earlier
    run): ``<name>.part`` or ``<name>.<12 hex>.part``. Never a file under a real name.

    A product name can be shared by several nights of one FRC (``frc_info``, ``observatory``):
    with ``max_active_runs`` > 1 another night's archive task may be writing its own ``.part``
    of it right now. Only this (FRC, night)'s earlier runs' (same first 6 hex of the token) go at
    once; another night's go when older than ``PART_STALE_SECONDS``."""
    removed = 0
    for folder in sorted(folders):
        try:
            listing = await dst.readdir(folder)
        except asyncssh.SFTPError:
            continue
        for entry in listing:
            fn = entry.filename
            if not fn.endswith(".part"):
                continue
            base = fn[: -len(".part")]
            stem, _, tok = base.rpartition(".")
            tokened = stem in names and len(tok) == 12 and all(c in "0123456789abcdef" for c in tok)
            ours = base in names or tokened
            if tokened and tok[:6] != token[:6] and time.time() - (entry.attrs.mtime or 0) < PART_STALE_SECONDS:
                continue  # another night's writer, perhaps still copying
            if ours and tok != token:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await dst.remove(posixpath.join(folder, fn))
                removed += 1
    return removed


async def no_space(dst, folder: str, need: int) -> str | None:
    """The ENOSPC text when the archive filesystem holding ``folder`` has less room than ``need``
    bytes (at least 64 KiB) for this account (statvfs@openssh.com), else None. OpenSSH's
    sftp-server answers a full disk with a bare "Failure": this says what it is."""
    try:
        fs = await dst.statvfs(folder)
    except (asyncssh.SFTPError, asyncssh.Error, OSError):
        return None
    free = fs.bavail * fs.frsize
    if free >= max(need, 64 * 1024):
        return None
    return (f"No space left on device (ENOSPC): the archive filesystem holding {folder} has {free} bytes "
            f"free for this account (of {fs.blocks * fs.frsize})")


def explain_sftp_error(exc: asyncssh.SFTPError) -> str:
    """What an SFTP refusal on the archive means, for the night's problem list."""
    reason = getattr(exc, "reason", "") or str(exc)
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return f"permission denied on the archive ({reason}): the archive tree is not writable by this account"
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return f"the archive is full ({reason})"
    if isinstance(exc, asyncssh.SFTPFailure):
        return f"the archive refused the write ({reason}; OpenSSH reports a full disk this way)"
    return f"SFTP error on the archive: {type(exc).__name__}: {reason}"
