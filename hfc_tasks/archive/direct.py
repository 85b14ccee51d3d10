"""Archive direct mode (issue 15): the cluster account pushes the night to the archive itself.

In relay mode (:mod:`~hfc_tasks.archive.night`) every byte crosses the worker twice. Where the
cluster can reach the archive (``archive_mode: direct`` in the registry, with ``archive_direct``),
the task instead opens SSH to the cluster account and runs there **one** OpenSSH ``sftp -b``
(one connection, ``StrictHostKeyChecking=yes`` against a pinned ``known_hosts`` file on the
cluster, ``BatchMode=yes``, the cluster account's own key restricted on the archive side to
SFTP in the archive tree). Everything else is the relay engine's, reused, not copied:

* the same ``.part`` names (``<archive path>.<writer token>.part``), renamed to the real name
  only after the copy is verified, the same archive layout (:func:`hfc_tasks.products.archive_relpath`);
* sha256 on both ends, compared here: ``openssl dgst -sha256`` (else ``sha256sum``) on the
  cluster (batched, alongside the push) and on the archive
  (:class:`~hfc_tasks.archive.verification.Verifier`, batched, through the worker's archive
  connection) as each file lands: sftp echoes each batch command before it runs, so the echo of
  command *k+1* says file *k* is complete;
* the manifest, the delete-after-verify rule, the ``.part`` clean-up, the run-folder listing and
  the retries: :class:`~hfc_tasks.archive.night._Night`, of which :class:`_DirectNight` replaces
  the copy (``_copy_all``) and spares the deletion a second hash of the files whose ``stat``
  identity on the cluster did not change since their sha256 was computed (``_delete_sources``).

Faults: a cut push (either link) is retried on new connections and carries on from what is
verified (a big file cut half way is resumed with ``reput``); a full archive is an
:class:`ArchiveFullError`; a mismatch keeps the source; a changed archive host key makes the
cluster's ssh refuse, reported as a :class:`HostKeyError` naming the host. No Airflow import.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import posixpath
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from hfc_tasks.archive.deletion import STAT_FORMAT, delete_unchanged, digest_command, parse_stat
from hfc_tasks.archive.endpoints import Endpoint, connect, first_error, transient
from hfc_tasks.archive.errors import HostKeyError, TransferError
from hfc_tasks.archive.files import RESUME_MIN, inside, stat_or_none
from hfc_tasks.archive.night import ArchiveSummary, ArchiveTarget, _Night, finish_night
from hfc_tasks.archive.tree import explain_sftp_error, no_space
from hfc_tasks.archive.verification import VERIFY_BATCH, VerifyMode, parse_digests
from hfc_tasks.products import archive_relpath, parse_product_name

SOURCE_BATCH = 500  # cluster files per `sha256sum` command (the command line stays far below ARG_MAX)
SETTLE_DELAY = 0.1  # s a landed file waits for others to share its archive-side sha256sum
LOCK_WAIT = 600  # s a push waits for an earlier push of the same night (a cut attempt's) to end
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectPush:
    """How the cluster account reaches the archive: the registry's ``archive_direct`` (paths on
    the cluster). Plain values; :meth:`of` takes the registry's model or anything shaped like it."""

    host: str
    port: int
    login: str
    key_file: str
    known_hosts: str

    @classmethod
    def of(cls, value) -> DirectPush:
        if isinstance(value, DirectPush):
            return value
        return cls(host=value.host, port=int(value.port), login=value.login, key_file=value.key_file,
                   known_hosts=value.known_hosts)

    def describe(self) -> str:
        return f"{self.login}@{self.host}:{self.port}"

    def sftp_command(self) -> str:
        """The sftp client invocation on the cluster: batch from stdin, host key pinned, no prompts."""
        words = [
            # No -q: sftp passes it to ssh, which then stays silent even on "Host key verification failed".
            "sftp", "-b", "-",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-i", self.key_file, "-P", str(self.port), f"{self.login}@{self.host}",
        ]
        return " ".join(shlex.quote(w) for w in words)


def batch_quote(text: str) -> str:
    """One argument of an sftp batch line: double quotes (which also stop sftp's globbing of
    ``*?[]``), with ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _PushFailed(Exception):
    """The sftp push ended with an answer that is not a lost connection (stderr in the message)."""


class _DirectNight(_Night):
    """A night whose copy is the cluster's own sftp push; the rest is :class:`_Night`'s."""

    def __init__(self, target: ArchiveTarget, direct: DirectPush, **kwargs):
        super().__init__(target, **kwargs)
        self.direct = direct
        self.cconn = None
        self.sources: dict[str, tuple[str, int]] = {}  # name -> (sha256, size) on the cluster
        self.inflight: str | None = None  # the file being pushed when a push was cut
        self.resumed: set[str] = set()  # pushed with reput: a mismatch means push again from scratch
        self.identity: dict[str, str] = {}  # name -> `stat` identity on the cluster before its sha256
        self.pushes = 0

    async def attempt(self, cconn, aconn) -> None:
        self.cconn = cconn
        await super().attempt(cconn, aconn)
        if self.summary.verification:
            self.summary.verification += " (pushed by the cluster: OpenSSH sftp to " + self.direct.describe() + ")"

    # -- the copy -------------------------------------------------------------------------
    async def _copy_all(self, src, dst, *_cconn) -> None:  # the relay's signature (it passes cconn)
        t = self.t
        plan: dict[str, tuple] = {}
        for name, size in self.products or []:
            if name in self.done or name in self.problems:
                continue
            product = parse_product_name(name, t.known)
            rel = archive_relpath(t.archive_dir, product, t.night, observatory=t.observatory, instrument=t.instrument)
            dest = inside(t.archive_root, posixpath.join(t.archive_root, rel))
            plan[name] = (product, rel, dest, f"{dest}.{self.token}.part", size)
        if not plan:
            return
        for folder in sorted({posixpath.dirname(p[2]) for p in plan.values()}):
            await dst.makedirs(folder, exist_ok=True)
        hashing = asyncio.ensure_future(self._hash_sources([n for n in plan if n not in self.sources]))
        try:
            todo = list(plan)
            while todo and not self.fatal:
                again = await self._push(dst, plan, todo, hashing)
                todo = again  # resumed copies that did not verify: once more from scratch
        finally:
            hashing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hashing

    async def _hash_sources(self, names: list[str]) -> None:
        """sha256 and size of the sources, computed on the cluster (``stat`` then the digest).

        The ``stat`` identity (inode, size, mtime, ctime) taken before the hash is kept: at the
        deletion a file with the same identity has not been written since, and its sha256 is
        not computed a second time (:func:`~hfc_tasks.archive.deletion.delete_unchanged`)."""
        cd = f"cd -- {shlex.quote(self.t.run_dir)} || exit 3; "
        for i in range(0, len(names), SOURCE_BATCH):
            quoted = " ".join(shlex.quote("./" + n) for n in names[i:i + SOURCE_BATCH])
            # openssl where the cluster has it: it uses the CPU's SHA instructions (1.3 GB/s here
            # against 270 MB/s for coreutils' sha256sum), and this runs while the push needs the CPU.
            result = await self.cconn.run(
                cd + f"stat -c {shlex.quote(STAT_FORMAT)} -- {quoted}; echo //; " + digest_command(quoted),
                check=False, input="")
            if result.exit_status is None and result.exit_signal is None:
                raise asyncssh.ConnectionLost("sha256sum on the cluster cut before its answer")
            stats, _, sums = str(result.stdout or "").partition("//\n")
            identity = parse_stat(stats)
            for path, digest in parse_digests(sums).items():
                name = path.removeprefix("./")
                size = identity.get(name, "").partition(" ")[0]
                if size.isdigit():
                    self.sources[name] = (digest, int(size))
                    self.identity[name] = identity[name]
            missing = [n for n in names[i:i + SOURCE_BATCH] if n not in self.sources]
            if missing and result.exit_status in (126, 127):
                raise TransferError(f"cannot run stat/sha256sum in {self.t.run_dir} on the cluster "
                                    f"({str(result.stderr or '').strip()[:300]}): direct mode needs them")
            for name in missing:  # gone or unreadable since the listing
                self.problems[name] = (f"{name}: cannot be read in {self.t.run_dir} on the cluster "
                                       f"({str(result.stderr or '').strip()[:200]}); source kept")

    async def _delete_sources(self, src, cconn) -> None:
        """The relay's delete-after-verify, minus the second hash of files not written since
        their sha256 was computed here (same ``stat`` identity on the cluster); the others go
        through the relay's check (sha256 again, kept if it changed)."""
        listed = {e["name"]: e["sha256"] for e in (self.manifest or {}).get("files", [])}
        known = {n: self.identity[n] for n in self.done
                 if n in listed and n not in self.deleted and n in self.identity
                 and self.sources.get(n, ("",))[0] == listed[n]}
        if known:
            await delete_unchanged(cconn, self.t.run_dir, sorted(known), known, deleted=self.deleted)
        await super()._delete_sources(src, cconn)

    async def _source(self, name: str, hashing: asyncio.Future) -> tuple[str, int] | None:
        while name not in self.sources and name not in self.problems:
            if hashing.done():
                hashing.result()  # its error (a lost connection) ends the attempt
                return None
            await asyncio.wait([hashing], timeout=0.05)
        return self.sources.get(name)

    async def _push(self, dst, plan: dict[str, tuple], todo: list[str], hashing) -> list[str]:
        """One sftp process on the cluster for ``todo``; each file is verified and renamed as soon
        as sftp moves on to the next. Returns the resumed files to push again from scratch."""
        lines, order = [], []
        for name in todo:
            part, size = plan[name][3], plan[name][4]
            verb = "put"
            if name == self.inflight and size >= RESUME_MIN:  # cut half way: keep what arrived
                old = await stat_or_none(dst, part)
                if old is not None and old.size == size:
                    verb = None  # whole already: only verify
                elif old is not None and 0 < (old.size or 0) < size:
                    verb = "reput"
                    self.resumed.add(name)
            if verb is None:
                continue
            lines.append(f"{verb} {batch_quote(name)} {batch_quote(part)}\n")
            order.append(name)
        again: list[str] = []
        pending = [n for n in todo if n not in order]  # whole .part already there: verify only
        lock = posixpath.join(posixpath.dirname(self.t.run_dir), f".{posixpath.basename(self.t.run_dir)}.hfc-push.lock")
        # flock: a push of an earlier (cut) attempt still running ends before this one writes.
        cmd = (f"cd -- {shlex.quote(self.t.run_dir)} || exit 3; "
               f"exec flock -w {LOCK_WAIT} {shlex.quote(lock)} {self.direct.sftp_command()}")
        failure: BaseException | None = None
        started = -1
        loop = asyncio.get_running_loop()
        landed: list[str] = []  # complete on the archive, not yet handed to verification
        timer: list[asyncio.TimerHandle | None] = [None]
        try:
            async with asyncio.TaskGroup() as tg:

                def flush() -> None:
                    # Files are handed over in groups, so the Verifier asks the archive one
                    # `sha256sum` for many (one per landed file would fork a session each).
                    if timer[0] is not None:
                        timer[0].cancel()
                        timer[0] = None
                    group, landed[:] = list(landed), []
                    for n in group:
                        tg.create_task(self._settle(dst, plan[n], n, hashing, again))

                def land(name: str) -> None:
                    landed.append(name)
                    if len(landed) >= VERIFY_BATCH:
                        flush()
                    elif timer[0] is None:
                        timer[0] = loop.call_later(SETTLE_DELAY, flush)

                try:
                    for name in pending:
                        land(name)
                    if order:
                        self.pushes += 1
                        proc = await self.cconn.create_process(cmd, encoding="utf-8", errors="replace")
                        proc.stdin.write("".join(lines))
                        proc.stdin.write_eof()
                        err_task = asyncio.ensure_future(proc.stderr.read())
                        async for line in proc.stdout:
                            if not line.startswith("sftp> "):
                                continue
                            if 0 <= started < len(order):  # the previous command is complete
                                land(order[started])
                            started += 1
                            self.inflight = order[started] if started < len(order) else None
                        await proc.wait()
                        stderr = (await err_task).strip()
                        status = proc.exit_status
                        if status == 0 and started == len(order) - 1:
                            land(order[started])
                            self.inflight = None
                        else:
                            flush()
                            failure = await self._push_failure(dst, plan, order, started, status, proc.exit_signal,
                                                               stderr)
                    flush()
                finally:
                    if timer[0] is not None:
                        timer[0].cancel()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if failure is not None:
            raise failure
        return again

    async def _push_failure(self, dst, plan, order, started, status, signal, stderr: str) -> BaseException | None:
        """What a failed push means: an exception to raise (lost link: retried; host key, login:
        configuration), or None after recording the file's problem (archive full, refused write)."""
        d = self.direct
        name = order[started] if 0 <= started < len(order) else None
        last = stderr.splitlines()[-1] if stderr else f"exit status {status}, signal {signal}"
        if status is None and signal is None:
            return asyncssh.ConnectionLost(f"the cluster connection was cut during the push to {d.describe()}")
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return HostKeyError(
                f"host key verification failed for {d.host}:{d.port}: the cluster's ssh refused the archive host "
                f"(its key is not the one pinned in {d.known_hosts} on the cluster), nothing was pushed to "
                f"{d.describe()} and every source is kept. If the archive's key really changed, check its "
                f"fingerprint out of band and update {d.known_hosts}. ssh said: "
                + " | ".join(ln.strip() for ln in stderr.splitlines()
                             if any(w in ln for w in ("Host key", "host key", "fingerprint", "Offending"))))
        if "Permission denied (" in stderr:
            return TransferError(f"the archive {d.describe()} refused the cluster's key {d.key_file} ({last}): "
                                 "check the archive account's authorized_keys line for it")
        if status in (126, 127) and "sftp" in stderr:
            return TransferError(f"cannot run sftp (or flock) on the cluster: {last}")
        if "flock" in stderr and name is None:
            return ConnectionError(f"an earlier push of this night is still running on the cluster after "
                                   f"{LOCK_WAIT} s ({last})")
        # 255: ssh's own failure; > 128 or a signal: sftp killed (SIGPIPE when its ssh died with the link).
        if name is None or status == 255 or (status or 0) > 128 or signal is not None or _lost(stderr):
            return ConnectionError(f"the push from the cluster to {d.describe()} was cut "
                                   f"({' | '.join(stderr.splitlines()[-3:]) or f'exit status {status}'})")
        part, size = plan[name][3], plan[name][4]
        if "No such file or directory" in stderr and part not in stderr:  # the local side: gone
            self.problems[name] = f"{name}: gone from {self.t.run_dir} on the cluster during the push; source kept"
            return None
        full = await no_space(dst, posixpath.dirname(part), size)
        if full:
            what, self.full = f"the archive is full: {full}", True
        elif "Permission denied" in stderr:
            what = f"permission denied on the archive ({last}): the archive tree is not writable by {d.login}"
        else:
            what = f"the archive refused the write ({last}; OpenSSH reports a full disk this way)"
        self.problems[name] = f"{name}: {what} (archive path {plan[name][2]}); source kept"
        self.fatal = self.fatal or what
        with contextlib.suppress(asyncssh.SFTPError, OSError, asyncssh.Error):
            await dst.remove(part)
        self.inflight = None
        return None

    async def _settle(self, dst, entry: tuple, name: str, hashing, again: list[str]) -> None:
        """Verify one pushed ``.part`` (sha256 on the archive == sha256 on the cluster), then
        rename it to its real name: the relay engine's rules for an existing file."""
        product, rel, dest, part, size = entry
        t = self.t
        try:
            source = await self._source(name, hashing)
            if source is None:  # unreadable on the cluster: its problem is recorded
                with contextlib.suppress(asyncssh.SFTPError):
                    await dst.remove(part)
                return
            digest, now_size = source
            await self._after_write(part)
            verified = await self.verifier.sha256(part)
            if now_size != size:
                with contextlib.suppress(asyncssh.SFTPError):
                    await dst.remove(part)
                self.problems[name] = (f"{name}: {now_size} bytes on the cluster, {size} listed: the file changed "
                                       "during the copy; source kept")
                return
            if verified != digest:
                with contextlib.suppress(asyncssh.SFTPError):
                    await dst.remove(part)
                if name in self.resumed:  # a resumed copy that does not match: once more, whole
                    self.resumed.discard(name)
                    again.append(name)
                    return
                self.problems[name] = (f"{name}: archive copy sha256 {verified} != source sha256 {digest} "
                                       f"(copy removed, source kept)")
                return
            try:
                await dst.rename(part, dest)
                self._record(name, product, rel, digest, size, copied=True)
                return
            except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
                raise
            except asyncssh.SFTPError as refused:
                if await stat_or_none(dst, dest) is None:
                    raise refused from None
            current = await self.verifier.sha256(dest)
            if current == digest:
                await dst.remove(part)
                self._record(name, product, rel, digest, size, copied=False)
            elif t.rewrites:
                await dst.posix_rename(part, dest)
                self._record(name, product, rel, digest, size, copied=True)
            else:
                await dst.remove(part)
                self.problems[name] = (f"{name}: {dest} exists on the archive with sha256 {current}, the new file "
                                       f"has {digest} and {t.frc} does not rewrite files")
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            self.problems[name] = f"{name}: {explain_sftp_error(exc)} (archive path {dest}); source kept"
        finally:
            self.report()


def _lost(stderr: str) -> bool:
    """Words of OpenSSH's client for a link that went away (as opposed to an answer)."""
    return any(w in stderr for w in ("Connection closed", "Connection reset", "Broken pipe", "Connection timed out",
                                     "Connection refused", "connection lost", "Couldn't read packet",
                                     "client_loop", "Timeout, server", "message authentication code incorrect",
                                     "Read from remote host", "Write failed", "No route to host",
                                     "Could not resolve hostname", "Network is unreachable"))


# ---------------------------------------------------------------------------- entry point


async def archive_night_direct_async(
    cluster: Endpoint,
    archive: Endpoint,
    direct,
    target: ArchiveTarget,
    *,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    verify: VerifyMode | str = VerifyMode.AUTO,
    attempts: int = 5,
    retry_pause: float = 0.5,
    now: Callable[[], dt.datetime] | None = None,
) -> tuple[ArchiveSummary, dict]:
    """See :func:`archive_night_direct`."""
    direct = DirectPush.of(direct)
    verify = VerifyMode.of(verify)
    say = progress or log.info
    warn = warn or log.warning
    night = _DirectNight(target, direct, say=say, verify=verify, concurrency=64, now=now)
    for attempt in range(1, attempts + 1):
        try:
            # Both handshakes at once: ~0.1 s of the night's fixed cost.
            cconn, aconn = await _connect_both(cluster, archive)
            async with cconn, aconn:
                await night.attempt(cconn, aconn)
            break
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                if transient(exc):
                    raise TransferError(
                        f"{target.frc} night {target.night}: connection lost {attempts} times "
                        f"({type(exc).__name__}: {exc}); {len(night.done)} files verified on the archive so far, "
                        "no source deleted without a verified copy: run the task again to finish"
                    ) from exc
                raise
            night.summary.reconnects += 1
            pause = retry_pause * min(attempt, 10) * (0.5 + random.random())
            say(f"connection lost ({type(exc).__name__}: {exc}); reconnecting in {pause:.1f} s "
                f"(attempt {attempt + 1}/{attempts}, {len(night.done)} files already verified)")
            await asyncio.sleep(pause)
    return finish_night(night, target, night.direct.describe(), say, warn,
                        stage="the archive stage (direct mode)")


async def _connect_both(cluster: Endpoint, archive: Endpoint):
    both = await asyncio.gather(connect(cluster), connect(archive), return_exceptions=True)
    errors = [r for r in both if isinstance(r, BaseException)]
    if errors:
        for r in both:
            if not isinstance(r, BaseException):
                r.close()
        raise next((e for e in errors if not transient(e)), errors[0])
    return both


def archive_night_direct(cluster: Endpoint, archive: Endpoint, direct, target: ArchiveTarget,
                         **kwargs) -> tuple[ArchiveSummary, dict]:
    """The night in direct mode: the cluster pushes (one ``sftp -b``), sha256 on both ends,
    rename, manifest, then delete on the cluster; returns (summary, manifest) like
    :func:`hfc_tasks.archive.archive_night`. ``cluster``: the worker's connection to the cluster
    account; ``archive``: the worker's connection to the archive account (verification, renames,
    the manifest); ``direct``: :class:`DirectPush` or the registry's ``archive_direct``.
    Keyword arguments: ``progress``, ``warn``, ``verify``, ``attempts``, ``retry_pause``, ``now``
    (as :func:`hfc_tasks.archive.archive_night_async`)."""
    return asyncio.run(archive_night_direct_async(cluster, archive, direct, target, **kwargs))
