"""Verification of the archive copies: their sha256 computed on the archive side.

:class:`VerifyMode` names how (``auto``, ``sha256sum``, ``readback``; a ``StrEnum``, so the
operator's ``verify="auto"`` is one); :class:`Verifier` batches the requests of the files in
flight into one ``sha256sum`` command on the archive host (``VERIFY_BATCH`` files, after waiting
``VERIFY_DELAY`` for others to join), or reads copies back over SFTP where the account may not
run it.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from enum import StrEnum

import asyncssh

from hfc_tasks.archive.files import hash_source

VERIFY_BATCH = 128  # files per remote `sha256sum` command
VERIFY_DELAY = 0.003  # seconds a verification request waits for others to share its command


class VerifyMode(StrEnum):
    """How a copy's sha256 is computed on the archive side (the archive operator's ``verify``)."""

    AUTO = "auto"  # sha256sum where the account may run it, else read-back (decided once per run)
    SHA256SUM = "sha256sum"  # sha256sum on the archive host, batched
    READBACK = "readback"  # read the copy back over SFTP and hash it here

    @classmethod
    def of(cls, value: str) -> VerifyMode:
        """The mode a string names (the operator passes a string); else a ValueError naming the modes."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"verify={value!r}: expected auto, sha256sum or readback") from None


class Verifier:
    """sha256 of files on the archive, computed on the archive side.

    ``sha256sum`` mode batches the requests of files in flight into one ``sha256sum -- a b c``
    command on the archive connection (a new channel, not a new connection). ``readback`` reads
    the copy back over SFTP and hashes it here. ``auto`` tries ``sha256sum`` once and falls back
    to read-back for the run if the account may not run it (an SFTP-only account); a file the
    command does not answer for is read back.
    """

    def __init__(self, conn, sftp, mode: VerifyMode | str, say: Callable[[str], None], timeout: float = 600,
                 remote_ok: bool | None = None):
        self.conn, self.sftp, self.say, self.timeout = conn, sftp, say, timeout
        self.mode = VerifyMode.of(mode)
        # None: not known yet (auto); decided by the first batch and kept across reconnects.
        self.remote_ok: bool | None = {VerifyMode.READBACK: False, VerifyMode.SHA256SUM: True}.get(self.mode, remote_ok)
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._probe: asyncio.Future | None = None

    @property
    def method(self) -> str:
        return "sha256sum on the archive" if self.remote_ok else "read-back from the archive"

    async def sha256(self, path: str) -> str:
        if self.remote_ok is None and self._probe is not None:
            await asyncio.shield(self._probe)  # first batch decides whether the account may run it
        if self.remote_ok is False:
            return await self.read_back(path)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((path, fut))
        if self.remote_ok is None and self._probe is None:
            self._probe = loop.create_future()
        if len(self._pending) >= VERIFY_BATCH:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(VERIFY_DELAY, self._flush)
        digest = await fut
        return digest if digest is not None else await self.read_back(path)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        cmd = "sha256sum -- " + " ".join(shlex.quote(p) for p, _ in batch)
        try:
            result = await asyncio.wait_for(self.conn.run(cmd, check=False, input=""), self.timeout)
        except Exception as exc:  # connection lost: every waiter sees it (and the run reconnects)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            self._end_probe()
            return
        if result.exit_status is None and result.exit_signal is None:  # channel cut before the answer
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(asyncssh.ConnectionLost("sha256sum channel closed without an exit status"))
            self._end_probe()
            return
        sums: dict[str, str] = {}
        for line in str(result.stdout or "").splitlines():
            digest, sep, name = line.partition("  ")
            if sep and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                sums[name] = digest
        if self.remote_ok is None:
            self.remote_ok = bool(sums)
            if not sums:
                err = str(result.stderr or "").strip().splitlines()
                self.say("verification: the archive account cannot run sha256sum "
                         f"(exit {result.exit_status}{': ' + err[0] if err else ''}); reading copies back instead")
            else:
                self.say("verification: sha256 computed on the archive by sha256sum")
        elif len(sums) < len(batch):
            err = str(result.stderr or "").strip()
            self.say(f"verification: sha256sum answered for {len(sums)}/{len(batch)} files ({err[:300]}); "
                     "reading the others back")
        for path, fut in batch:
            if not fut.done():
                fut.set_result(sums.get(path))
        self._end_probe()

    def _end_probe(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(None)

    async def read_back(self, path: str) -> str:
        return (await hash_source(self.sftp, path))[0]

    async def aclose(self) -> None:
        self._flush()
        for task in list(self._tasks):
            task.cancel()
        for _, fut in self._pending:
            fut.cancel()
