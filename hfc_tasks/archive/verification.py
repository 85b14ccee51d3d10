"""Verification of the archive copies: their sha256 computed on the archive side.

:class:`VerifyMode` names how (``auto``, ``sha256sum``, ``readback``; a ``StrEnum``, so the
operator's ``verify="auto"`` is one); :class:`Verifier` batches the requests of the files in
flight into one digest command on the archive host (``VERIFY_BATCH`` files, after waiting
``VERIFY_DELAY`` for others to join), or reads copies back over SFTP where the account may not
run one. The command is ``openssl dgst -sha256 -r`` where the account may run it (it uses the
CPU's SHA instructions: 0.18 s per 200 MB on the standard workplace against 0.8 s for
coreutils' ``sha256sum``), else ``sha256sum``: tried once per connection (:data:`DIGEST_TOOLS`).
:func:`parse_digests` reads the output of either (also on the cluster side).
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
# The digest commands tried on the archive host, fastest first; each reads the files it is given
# and prints "<hex> *<path>" (openssl -r) or "<hex>  <path>" (sha256sum), going on past an
# unreadable one. An account restricted to sha256sum (the local site's archive_command) refuses
# the first with exit 126: one exec more per connection.
DIGEST_TOOLS = {
    "openssl": "openssl dgst -sha256 -r --",
    "sha256sum": "sha256sum --",
}
HEX = frozenset("0123456789abcdef")


def parse_digests(text: str) -> dict[str, str]:
    """path -> sha256 from the output of ``sha256sum`` or ``openssl dgst -sha256 -r`` (lines
    ``<64 hex>  <path>`` or ``<64 hex> *<path>``); other lines (errors, escaped names) are ignored."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line[:64], line[64:66], line[66:]
        if sep in ("  ", " *") and name and len(digest) == 64 and HEX.issuperset(digest):
            sums[name] = digest
    return sums


class VerifyMode(StrEnum):
    """How a copy's sha256 is computed on the archive side (the archive operator's ``verify``)."""

    AUTO = "auto"  # a digest command where the account may run one, else read-back (decided once per run)
    SHA256SUM = "sha256sum"  # a digest command on the archive host (openssl dgst, else sha256sum), batched
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

    ``sha256sum`` mode batches the requests of files in flight into one digest command
    (``openssl dgst -sha256 -r -- a b c`` where the account runs it, else ``sha256sum -- a b c``)
    on the archive connection (a new channel, not a new connection). ``readback`` reads the copy
    back over SFTP and hashes it here. ``auto`` tries the digest commands once and falls back to
    read-back for the run if the account may run neither (an SFTP-only account); a file the
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
        self.tool: str | None = None  # of DIGEST_TOOLS: the one this connection's account runs (None: not tried)
        self._tool_probe: asyncio.Future | None = None

    @property
    def method(self) -> str:
        if not self.remote_ok:
            return "read-back from the archive"
        return f"{'openssl dgst -sha256' if self.tool == 'openssl' else 'sha256sum'} on the archive"

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

    async def _command(self, tool: str, paths: list[str]):
        cmd = DIGEST_TOOLS[tool] + " " + " ".join(shlex.quote(p) for p in paths)
        result = await asyncio.wait_for(self.conn.run(cmd, check=False, input=""), self.timeout)
        if result.exit_status is None and result.exit_signal is None:  # channel cut before the answer
            raise asyncssh.ConnectionLost(f"{tool} channel closed without an exit status")
        return result, parse_digests(str(result.stdout or ""))

    async def _digests(self, paths: list[str]):
        """(result, sums) of the fastest digest command this account runs, tried in the order of
        ``DIGEST_TOOLS`` by the first batch of the connection (others wait for its verdict)."""
        if self.tool is None and self._tool_probe is not None:
            await asyncio.shield(self._tool_probe)
        if self.tool is not None:
            return await self._command(self.tool, paths)
        self._tool_probe = asyncio.get_running_loop().create_future()
        try:
            *first, last = DIGEST_TOOLS
            for tool in first:
                result, sums = await self._command(tool, paths)
                if sums or result.exit_status == 0:
                    self.tool = tool
                    return result, sums
                err = str(result.stderr or "").strip().splitlines()
                self.say(f"verification: the archive account does not run {tool} (exit {result.exit_status}"
                         f"{': ' + err[0][:200] if err else ''}); trying {last}")
            self.tool = last
            return await self._command(last, paths)
        finally:
            if self.tool is None:  # cut during the probe: the next batch tries again
                self._tool_probe.set_result(None)
                self._tool_probe = None
            elif not self._tool_probe.done():
                self._tool_probe.set_result(None)

    async def _run(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            result, sums = await self._digests([p for p, _ in batch])
        except Exception as exc:  # connection lost: every waiter sees it (and the run reconnects)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            self._end_probe()
            return
        if self.remote_ok is None:
            self.remote_ok = bool(sums)
            if not sums:
                err = str(result.stderr or "").strip().splitlines()
                self.say("verification: the archive account cannot run sha256sum (nor openssl dgst) "
                         f"(exit {result.exit_status}{': ' + err[0] if err else ''}); reading copies back instead")
            else:
                self.say(f"verification: sha256 computed on the archive by {self.tool}")
        elif len(sums) < len(batch):
            err = str(result.stderr or "").strip()
            self.say(f"verification: {self.tool} answered for {len(sums)}/{len(batch)} files ({err[:300]}); "
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
