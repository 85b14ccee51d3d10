"""Verified copy of one FRC night from the cluster's run folder to the HFC archive.

The promise of the old ``hfc_upload`` script, kept and made checkable:

* every file is written to ``<name>.part`` on the archive and renamed only after its copy is
  verified, so no half file is ever visible under a real name;
* the sha256 of the source is computed while streaming it from the cluster; the copy's sha256
  is computed **on the archive side**: by ``sha256sum`` run on the archive host where the
  account may run it (batched: one command for many files), else by reading the copy back;
* a file already on the archive with the same sha256 is skipped; with another sha256 it is
  replaced only when the FRC rewrites its files (tracking codes), otherwise the run fails
  naming it and keeps its source;
* the manifest of the (FRC, night) (JSON, ``<archive_name>/manifests/<frc>/<YYYYMMDD>.json``,
  one per FRC even where FRCs share a folder) is written **before** any cluster file is
  deleted, atomically (a ``.part`` of this writer's own, then a rename: it is always valid
  JSON, also with two writers at once), and a cluster file is deleted only when the manifest
  lists its verified copy **and its sha256 on the cluster is still the verified one**. A crash
  at any point therefore leaves either the source or a listed, verified copy;
* the manifest holds exactly the files of the job that ran (``slurm_job_id``): a retry of the
  same job merges with its earlier manifest (its sources may be deleted already); a new job
  replaces it, and the earlier job's files it did not produce are listed under ``stale`` (kept
  on the archive). Files of the run folder that are not product names stay on the cluster, are
  listed under ``unmatched`` and fail the run (or warn: the FRC's ``unknown_files``). A job
  that ran (its SLURM output is there) and wrote no product gives a manifest with no files and
  ``"no_data": true``: a night without data is a success.

Engine: asyncssh on one connection per endpoint, with many SFTP requests in flight. A
sequential client is round-trip bound on small files (paramiko's ``get`` ~160 files/s here,
366–448 with TCP_NODELAY) where asyncssh with 16 files in flight does 740–850 files/s
(``LOCAL_SITE_NOTES.md``). The event loop lives inside :func:`archive_night`, so callers
(the Airflow operator, the CLI, tests, ``bench/``) stay synchronous and pass plain
connection parameters (:class:`Endpoint`). A lost connection is retried: the run reconnects
and carries on from what is already verified.

The manifest itself (schema, bytes, reading) is :mod:`hfc_tasks.manifest`; ``sha256_of`` at the end
serves the CLI, which holds a paramiko ``SFTPClient``.

Pure logic: no Airflow import.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import posixpath
import random
import secrets
import shlex
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh

from hfc_tasks import manifest as manifest_mod
from hfc_tasks.products import (
    ProductNameError,
    archive_relpath,
    job_name,
    legacy_manifest_relpath,
    manifest_relpath,
    output_name,
    parse_product_name,
    url_join,
)

CHUNK = 1024 * 1024  # streaming unit: a file is never held in memory beyond a few chunks
PIPELINE_CHUNKS = 4  # chunks read ahead of the archive writes, and writes in flight, per large file
BIG_IN_FLIGHT = 4  # files larger than 2 chunks copied at once (memory: PIPELINE_CHUNKS chunks each)
RESUME_MIN = 8 * CHUNK  # a left-over .part at least this big is resumed rather than rewritten
VERIFY_BATCH = 128  # files per remote `sha256sum` command
DELETE_BATCH = 500  # cluster files removed per command
VERIFY_DELAY = 0.003  # seconds a verification request waits for others to share its command
NOT_PRODUCTS = (".out", ".err", ".tmp", ".part")  # SLURM output, half-written files: stay on the cluster
UNKNOWN_FAIL, UNKNOWN_WARN = "fail", "warn"  # what files that are not product names do to the run
log = logging.getLogger(__name__)

VERIFY_AUTO, VERIFY_SHA256SUM, VERIFY_READBACK = "auto", "sha256sum", "readback"


class TransferError(RuntimeError):
    """The archive stage cannot finish; the message names the file(s) and what to do."""


class _Changed(Exception):
    """A source file is not what its listing said (it changed after the job ended)."""


class HostKeyError(TransferError):
    """The host's key is not the one configured: the connection is refused."""


class ArchiveFullError(TransferError):
    """The archive filesystem is full (ENOSPC): no retry frees space; the operator must."""


@dataclass(frozen=True)
class Endpoint:
    """Plain parameters of one SSH endpoint: what the engine connects to (no Airflow)."""

    host: str
    port: int = 22
    username: str = ""
    key_file: str | None = None
    private_key: str | None = None  # key text, when there is no key file
    host_key: str | None = None  # "ssh-ed25519 AAAA...": the only key accepted
    known_hosts: str | None = None  # or an OpenSSH known_hosts file (when no host_key)
    connect_timeout: float = 30.0
    name: str = ""  # "cluster", "archive": for messages

    def describe(self) -> str:
        return f"{self.name + ' ' if self.name else ''}{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ArchiveTarget:
    """What the archive stage needs to know about one FRC night (all from (FRC, night))."""

    frc: str
    archive_dir: str  # <frc> folder of the HFC tree
    observatory: str
    instrument: str
    night: dt.date
    run_dir: str  # on the cluster
    archive_root: str  # absolute, on the archive host
    public_url_base: str  # public location of archive_root
    rewrites: bool = False
    product_format: str = "sdoss"
    frc_version: str = ""
    slurm_job_id: str | None = None
    unknown_files: str = UNKNOWN_FAIL  # the FRC's registry setting: fail | warn


@dataclass
class ArchiveSummary:
    files_total: int = 0
    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    manifest_path: str = ""
    manifest_sha256: str = ""
    manifest_written: bool = False
    verification: str = ""
    reconnects: int = 0
    ignored: list[str] = field(default_factory=list)  # expected non-products (SLURM output, folders...)
    unmatched: list[str] = field(default_factory=list)  # files that are not product names: left on the cluster
    stale: list[str] = field(default_factory=list)  # an earlier job's files this job did not produce
    no_data: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------- connections


async def connect(ep: Endpoint) -> asyncssh.SSHClientConnection:
    """Open one SSH connection, the host key always verified (there is no way to skip it)."""
    if ep.host_key:
        try:
            # one key per line (hfc_tasks.sshpolicy gives every key the policy trusts)
            trusted = [asyncssh.import_public_key(k) for k in ep.host_key.strip().splitlines() if k.strip()]
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise HostKeyError(f"{ep.describe()}: host_key {ep.host_key[:40]!r}... is not a public key: {exc}") from exc
        known_hosts: object = (trusted, [], [])
    elif ep.known_hosts:
        known_hosts = ep.known_hosts
    else:
        raise HostKeyError(
            f"{ep.describe()}: no host_key and no known_hosts file given; the archive stage never "
            "connects to a host it cannot verify"
        )
    try:
        conn = await asyncssh.connect(
            ep.host, ep.port, username=ep.username or None,
            client_keys=_client_keys(ep),
            known_hosts=known_hosts, agent_path=None, config=None, preferred_auth="publickey",
            connect_timeout=ep.connect_timeout, login_timeout=ep.connect_timeout,
            keepalive_interval=30, keepalive_count_max=4,
            # AES-GCM first: asyncssh's chacha20-poly1305 builds two cipher contexts per packet in
            # Python (a third of the CPU on small files); AES-GCM is one OpenSSL call per packet.
            encryption_algs=_CIPHERS,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(
            f"host key of {ep.describe()} is not the one configured ({exc.reason}): connection refused. "
            "If the host's key really changed, check its fingerprint out of band and update the "
            "connection's host_key extra."
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise TransferError(f"{ep.describe()}: login refused ({exc.reason}); check the key file") from exc
    except TimeoutError as exc:  # transient: the caller reconnects; say where and how long
        raise TimeoutError(f"{ep.describe()}: no SSH answer within {ep.connect_timeout:g} s "
                           "(network down or host unreachable)") from exc
    _coalesce_writes(conn)
    return conn


def _coalesce_writes(conn) -> None:
    """Send the SSH packets made in one event-loop turn with one write instead of one each.

    With many SFTP requests in flight asyncssh writes every packet to the socket at once: on
    small files a third of the CPU went to ~20 send() calls per file. Packets keep their order
    (everything goes through ``_send``); a buffer is flushed at the end of the loop turn. This
    uses asyncssh's private ``_send``/``_transport``: if they are missing, nothing is changed.
    """
    send, transport = getattr(conn, "_send", None), getattr(conn, "_transport", None)
    if send is None or transport is None or not hasattr(transport, "write"):
        return
    loop = asyncio.get_running_loop()
    buf: list[bytes] = []

    def flush() -> None:
        data = b"".join(buf)
        buf.clear()
        send(data)

    def batched(data: bytes) -> None:
        if not buf:
            loop.call_soon(flush)
        buf.append(data)

    conn._send = batched


_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
            "aes128-ctr", "aes256-ctr"]


def _client_keys(ep: Endpoint):
    if ep.private_key:
        return [asyncssh.import_private_key(ep.private_key)]
    return [ep.key_file] if ep.key_file else ()


def _transient(exc: BaseException) -> bool:
    """A lost or refused connection (worth a reconnect), as opposed to an answer from the server."""
    if isinstance(exc, HostKeyError | TransferError | FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return True
    if isinstance(exc, asyncssh.SFTPError):
        return False
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    return isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | ConnectionError
                      | TimeoutError | EOFError | OSError)


# ---------------------------------------------------------------------------- run folder listing


def classify_names(
    entries: list[tuple[str, int, int]], run_dir: str
) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """(products with sizes, ignored names, unmatched names) from (name, st_mode, size) of a run folder.

    Ignored: what a run folder is expected to hold beside products (SLURM output and other
    ``NOT_PRODUCTS``, folders, symlinks). Unmatched: regular files whose name is no product name
    (``_feats.csv``, ``.csv.gz``, ``a b.csv``...): the FRC wrote something the pipeline cannot
    file. Hostile names (path separators, ``..``, control characters) are refused: nothing is copied.
    """
    products, ignored, unmatched, refused = [], [], [], []
    for name, mode, size in sorted(entries):
        if name in (".", ".."):
            continue
        if any(c in name for c in "/\\") or ".." in name or not name.isprintable():
            refused.append(f"refused product name {name!r}: path separators, '..' or control characters")
            continue
        if not stat.S_ISREG(mode or 0):  # folders, symlinks: never followed
            ignored.append(name)
            continue
        if name.endswith(NOT_PRODUCTS):
            ignored.append(name)
            continue
        try:
            parse_product_name(name)
        except ProductNameError:
            unmatched.append(name)
            continue
        products.append((name, size or 0))
    if refused:
        raise TransferError(
            f"run folder {run_dir} holds files with names that are not allowed; nothing was copied:\n  "
            + "\n  ".join(refused)
        )
    return products, ignored, unmatched


def _inside(root: str, path: str) -> str:
    """``path`` if it is strictly inside ``root`` (normalised), else refuse: defence in depth."""
    norm = posixpath.normpath(path)
    if norm != path or not norm.startswith(root.rstrip("/") + "/"):
        raise TransferError(f"refused archive path {path!r}: not a plain path inside {root}")
    return norm


# ---------------------------------------------------------------------------- archive-side sha256


class _Verifier:
    """sha256 of files on the archive, computed on the archive side.

    ``sha256sum`` mode batches the requests of files in flight into one ``sha256sum -- a b c``
    command on the archive connection (a new channel, not a new connection). ``readback`` reads
    the copy back over SFTP and hashes it here. ``auto`` tries ``sha256sum`` once and falls back
    to read-back for the run if the account may not run it (an SFTP-only account); a file the
    command does not answer for is read back.
    """

    def __init__(self, conn, sftp, mode: str, say: Callable[[str], None], timeout: float = 600,
                 remote_ok: bool | None = None):
        if mode not in (VERIFY_AUTO, VERIFY_SHA256SUM, VERIFY_READBACK):
            raise ValueError(f"verify={mode!r}: expected auto, sha256sum or readback")
        self.conn, self.sftp, self.say, self.timeout = conn, sftp, say, timeout
        self.mode = mode
        # None: not known yet (auto); decided by the first batch and kept across reconnects.
        self.remote_ok: bool | None = {VERIFY_READBACK: False, VERIFY_SHA256SUM: True}.get(mode, remote_ok)
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
        return (await _hash_source(self.sftp, path))[0]

    async def aclose(self) -> None:
        self._flush()
        for task in list(self._tasks):
            task.cancel()
        for _, fut in self._pending:
            fut.cancel()


# ---------------------------------------------------------------------------- one run


async def _stat(sftp, path: str):
    try:
        return await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None


class _Night:
    """State of one archive_night call; survives reconnects (what is verified stays verified)."""

    def __init__(self, target: ArchiveTarget, *, say, verify: str, concurrency: int, now):
        self.t = target
        self.say = say
        self.verify_mode = verify
        self.concurrency = concurrency
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.summary = ArchiveSummary()
        self.t0 = time.monotonic()
        self.manifest_path = _inside(target.archive_root, posixpath.join(
            target.archive_root, manifest_relpath(target.archive_dir, target.frc, target.night)))
        legacy = legacy_manifest_relpath(target.archive_dir, target.frc, target.night)
        self.legacy_path = _inside(target.archive_root, posixpath.join(target.archive_root, legacy)) if legacy else None
        self.old: dict | None = None  # the manifest found on the archive before this run
        self.old_path: str | None = None  # where it was read (the legacy path for an FRC's own folder)
        self.old_loaded = False
        # This writer's .part names: two runs at once never write (or rename) each other's files.
        # 6 hex of the (FRC, night), 6 random: the clean-up tells this night's earlier runs from
        # another night's writer of a product name both nights share (frc_info, observatory...).
        self.token = _night_tag(target.frc, target.night) + secrets.token_hex(3)
        self.run_dir_exists = True
        self.output_found = False  # the SLURM output of the job: it ran
        self.unmatched: list[str] = []  # files that are not product names: left on the cluster
        self.products: list[tuple[str, int]] | None = None
        self.done: dict[str, dict] = {}  # name -> manifest entry, verified under its real name
        self.problems: dict[str, str] = {}  # name -> why its source is kept
        self.fatal: str | None = None  # stop starting new files (archive full, not writable...)
        self.full = False  # a write failed for lack of space on the archive filesystem (ENOSPC)
        self.deleted: set[str] = set()
        self.bytes_done = 0
        self.last_report = 0.0
        self.verifier: _Verifier | None = None
        self.manifest: dict | None = None

    # -- progress ------------------------------------------------------------------------
    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < 2.0:
            return
        self.last_report = now
        el = max(now - self.t0, 1e-6)
        n, total = len(self.done) + len(self.problems), len(self.products or [])
        self.say(f"files {n}/{total}, {self.bytes_done / 1e6:.1f} MB, {self.bytes_done / 1e6 / el:.1f} MB/s, "
                 f"{n / el:.0f} files/s ({self.summary.copied} copied, {self.summary.skipped} skipped)")

    def same_job(self) -> bool:
        """Whether the manifest found is this job's own (a retried archive: merge with it).

        Without a job id (the CLI, tests) a run is taken as a retry of the manifest's job.
        """
        if self.old is None:
            return False
        return self.t.slurm_job_id is None or str(self.old.get("slurm_job_id")) == self.t.slurm_job_id

    def _job_ran(self, ignored: list[str]) -> bool:
        """The job's SLURM output file is in the run folder (``<job name>.<job id>.out``)."""
        prefix = job_name(self.t.frc, self.t.night) + "."
        if self.t.slurm_job_id:
            return output_name(job_name(self.t.frc, self.t.night), self.t.slurm_job_id) in ignored
        return any(n.startswith(prefix) and n.endswith(".out") for n in ignored)

    def _did_it_run(self) -> str:
        t = self.t
        out = output_name(job_name(t.frc, t.night), t.slurm_job_id or "<job id>")
        where = (f"the run folder {t.run_dir} does not exist on the cluster" if not self.run_dir_exists
                 else f"no products and no SLURM output {out} in {t.run_dir} on the cluster")
        return (f"{t.frc} night {t.night}: {where}, and no manifest of this job at {self.manifest_path}: "
                "did the FRC job run for this night? Clear the 'submit' task to run it again.")

    # -- one attempt on open connections --------------------------------------------------
    async def attempt(self, cconn, aconn) -> None:
        async with cconn.start_sftp_client() as src, aconn.start_sftp_client() as dst:
            t = self.t
            if not self.old_loaded:
                self.old = await _read_manifest_async(dst, self.manifest_path)
                self.old_path = self.manifest_path if self.old is not None else None
                if self.old is None and self.legacy_path:
                    legacy = await _read_manifest_async(dst, self.legacy_path)
                    if legacy is not None and legacy.get("frc") == t.frc:
                        self.old, self.old_path = legacy, self.legacy_path
                self.old_loaded = True
            if self.products is None:
                try:
                    names = await src.readdir(t.run_dir)
                except asyncssh.SFTPNoSuchFile:
                    names, self.run_dir_exists = [], False
                entries = [(n.filename, n.attrs.permissions or 0, n.attrs.size or 0) for n in names]
                self.products, self.summary.ignored, self.unmatched = classify_names(entries, t.run_dir)
                self.output_found = self._job_ran(self.summary.ignored)
                self.summary.files_total = len(self.products)
                if self.summary.ignored:
                    self.say(f"left on the cluster (not products): {', '.join(self.summary.ignored)}")
                if self.unmatched:
                    self.say(f"left on the cluster (NOT product names): {', '.join(map(repr, self.unmatched))}")
                self.say(f"{len(self.products)} product files, {sum(s for _, s in self.products) / 1e6:.1f} MB "
                         f"in {t.run_dir}")
            if not self.products:
                if not self.same_job() and not (self.run_dir_exists and self.output_found):
                    raise TransferError(self._did_it_run())
                await self._write_manifest(dst)  # a retry (unchanged) or a night without data
                return
            self.verifier = _Verifier(aconn, dst, self.verify_mode, self.say,
                                      remote_ok=self.verifier.remote_ok if self.verifier else None)
            try:
                await self._copy_all(src, dst)
                if self.problems:
                    return
                await self._write_manifest(dst)
                await self._delete_sources(src, cconn)
                await self._clean_parts(dst)
            finally:
                await self.verifier.aclose()
            self.summary.verification = self.verifier.method

    async def _copy_all(self, src, dst) -> None:
        dirs: dict[str, asyncio.Task] = {}
        slots = asyncio.Semaphore(self.concurrency)  # files being read/written at once
        big = asyncio.Semaphore(BIG_IN_FLIGHT)  # of which large ones (memory: a few chunks each)
        window = asyncio.Semaphore(max(4 * self.concurrency, VERIFY_BATCH * 2))  # files started, not finished

        async def makedirs(path: str) -> None:
            if path not in dirs:
                dirs[path] = asyncio.ensure_future(dst.makedirs(path, exist_ok=True))
            await asyncio.shield(dirs[path])

        async def one(name: str, size: int) -> None:
            try:
                await self._one(src, dst, name, size, big if size > 2 * CHUNK else slots, makedirs)
            finally:
                window.release()
            self.report()

        try:
            async with asyncio.TaskGroup() as tg:
                for name, size in self.products or []:
                    if name in self.done or name in self.problems:
                        continue
                    await window.acquire()
                    if self.fatal:
                        window.release()
                        break
                    tg.create_task(one(name, size))
        except BaseExceptionGroup as group:
            # A lost connection anywhere ends this attempt; the caller reconnects.
            raise _first(group) from None
        finally:
            for task in dirs.values():
                task.cancel()

    async def _one(self, src, dst, name, size, slots, makedirs) -> None:
        t = self.t
        product = parse_product_name(name)
        rel = archive_relpath(t.archive_dir, product, t.night, observatory=t.observatory, instrument=t.instrument)
        dest = _inside(t.archive_root, posixpath.join(t.archive_root, rel))
        source = posixpath.join(t.run_dir, name)
        part = f"{dest}.{self.token}.part"  # this writer's own: a run at once never truncates it
        try:
            await makedirs(posixpath.dirname(dest))
            # No stat of the destination first: the copy goes to .part and a plain SFTP rename
            # never replaces an existing file (SFTP v3 draft §6.5; OpenSSH uses link(2)). Only
            # when the rename refuses is the existing file looked at: a crash left it (skip if
            # the same sha256), or it is a rewrite. One request less per file.
            async with slots:
                digest, nbytes = await copy_file(src, source, dst, part, size)
            if nbytes != size:
                raise _Changed(f"{name}: {nbytes} bytes read, {size} listed: the file changed during the copy")
            await self._after_write(part)
            verified = await self.verifier.sha256(part)
            if verified != digest and size >= RESUME_MIN:  # perhaps a bad resumed .part: once from scratch
                await dst.remove(part)
                async with slots:
                    digest, nbytes = await copy_file(src, source, dst, part, size, may_resume=False)
                await self._after_write(part)
                verified = await self.verifier.sha256(part)
            if verified != digest:
                with contextlib.suppress(asyncssh.SFTPError):
                    await dst.remove(part)
                self.problems[name] = (f"{name}: archive copy sha256 {verified} != source sha256 {digest} "
                                       f"(copy removed, source kept)")
                return
            try:
                await dst.rename(part, dest)
                self._record(name, product, rel, digest, nbytes, copied=True)
                return
            except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
                raise
            except asyncssh.SFTPError as refused:
                if await _stat(dst, dest) is None:
                    raise refused from None
            current = await self.verifier.sha256(dest)
            if current == digest:
                await dst.remove(part)
                self._record(name, product, rel, digest, nbytes, copied=False)
            elif t.rewrites:
                await dst.posix_rename(part, dest)  # rewriting FRC: atomic replacement
                self._record(name, product, rel, digest, nbytes, copied=True)
            else:
                await dst.remove(part)
                self.problems[name] = (f"{name}: {dest} exists on the archive with sha256 {current}, the new file "
                                       f"has {digest} and {t.frc} does not rewrite files")
        except _Changed as exc:
            self.problems[name] = str(exc) + "; source kept"
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            what = _explain(exc)
            if isinstance(exc, asyncssh.SFTPFailure | asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
                full = await _no_space(dst, posixpath.dirname(dest), size)
                if full:
                    what, self.full = f"the archive is full: {full}", True
            self.problems[name] = f"{name}: {what} (archive path {dest}); source kept"
            if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPNoSpaceOnFilesystem
                          | asyncssh.SFTPQuotaExceeded | asyncssh.SFTPFailure | asyncssh.SFTPWriteProtect):
                self.fatal = self.fatal or what
            with contextlib.suppress(asyncssh.SFTPError, OSError, asyncssh.Error):
                await dst.remove(part)

    async def _clean_parts(self, dst) -> None:
        if self.problems:
            return
        root = self.t.archive_root
        folders = {posixpath.dirname(posixpath.join(root, e["archive_path"])) for e in self.done.values()}
        removed = await _clean_parts_in(dst, folders, set(self.done), self.token)
        if removed:
            self.say(f"removed {removed} half copies (.part) an earlier interrupted run left on the archive")

    async def _after_write(self, part: str) -> None:
        """Between writing a copy and verifying it. Nothing happens here; tests replace it."""

    def _record(self, name, product, rel, digest, nbytes, *, copied: bool) -> None:
        self.done[name] = {
            "name": name,
            "kind": product.kind,
            "size": nbytes,
            "sha256": digest,
            "archive_path": rel,
            "url_base": url_join(self.t.public_url_base, posixpath.dirname(rel)),
        }
        if copied:
            self.summary.copied += 1
            self.summary.bytes_copied += nbytes
        else:
            self.summary.skipped += 1
        self.bytes_done += nbytes

    async def _write_manifest(self, dst) -> None:
        """Exactly this job's files: merged with the old manifest when it is the same job's (a
        retry whose sources may be gone already), else only what this run verified, the old
        job's other files listed as ``stale`` (they stay on the archive). Written to a .part
        of this writer's own, then renamed over the manifest: always a whole JSON file."""
        t = self.t
        old = self.old or {}
        stale = {e["name"]: e for e in old.get("stale", []) if isinstance(e, dict) and e.get("name")}
        if self.same_job():
            entries = {e["name"]: e for e in old.get("files", [])}
        else:
            entries = {}
            for e in old.get("files", []):
                stale[e["name"]] = {"name": e["name"], "kind": e.get("kind"), "archive_path": e.get("archive_path"),
                                    "sha256": e.get("sha256"), "slurm_job_id": old.get("slurm_job_id")}
        entries.update(self.done)
        for name in entries:
            stale.pop(name, None)
        new_stale = sorted(set(stale) - {e["name"] for e in old.get("stale", []) if isinstance(e, dict)})
        for name in new_stale:
            self.say(f"stale: {name} ({stale[name].get('archive_path')}) of job {stale[name].get('slurm_job_id')} "
                     f"was not produced by job {t.slurm_job_id}: kept on the archive, no longer in the manifest's "
                     "files (listed under 'stale')")
        manifest = manifest_mod.new(
            frc=t.frc, night=t.night, product_format=t.product_format, files=entries.values(),
            stale=stale.values(), unmatched=self.unmatched, frc_version=t.frc_version,
            slurm_job_id=t.slurm_job_id or (self.old or {}).get("slurm_job_id"), archive_root=t.archive_root,
            public_url_base=t.public_url_base, created=self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        if manifest_mod.same(self.old, manifest) and self.old_path == self.manifest_path:
            manifest = self.old  # nothing new: the manifest (and its sha256) stays as it is
        else:
            data = manifest_mod.to_bytes(manifest)
            await dst.makedirs(posixpath.dirname(self.manifest_path), exist_ok=True)
            part = f"{self.manifest_path}.{self.token}.part"
            try:
                async with dst.open(part, "wb") as f:
                    await f.write(data, 0)
                await dst.posix_rename(part, self.manifest_path)  # atomic: readers see old or new
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await dst.remove(part)
                full = (await _no_space(dst, posixpath.dirname(self.manifest_path), len(data))
                        if isinstance(exc, asyncssh.SFTPFailure | asyncssh.SFTPNoSpaceOnFilesystem) else None)
                if full:
                    self.full = True
                    raise ArchiveFullError(f"{t.frc} night {t.night}: manifest {self.manifest_path} not written: "
                                           f"{full}; every source file is kept on the cluster") from exc
                raise
            self.summary.manifest_written = True
            self.old, self.old_path = manifest, self.manifest_path
        self.manifest = manifest

    async def _delete_sources(self, src, cconn) -> None:
        """Every copy is verified and listed in the manifest: only now may the cluster copies go.

        A cluster file goes only if its sha256, computed now on the cluster, is still the
        verified copy's (a file rewritten after its copy, even to the same size, stays and is
        reported). Batched: per DELETE_BATCH files one ``sha256sum`` and one ``rm`` on the
        cluster. Where the cluster account cannot run commands, each file is read back over
        SFTP and hashed here, then removed.
        """
        listed = {e["name"]: e["sha256"] for e in (self.manifest or {}).get("files", [])}
        todo = [n for n in self.done if n in listed and n not in self.deleted]
        cd = f"cd -- {shlex.quote(self.t.run_dir)} || exit 3; "
        for i in range(0, len(todo), DELETE_BATCH):
            batch = todo[i:i + DELETE_BATCH]
            names = " ".join(shlex.quote(n) for n in batch)
            sums = await _run(cconn, cd + f"sha256sum -- {names}")
            if sums is None:  # no shell on the cluster account: SFTP read-back, then remove
                await self._delete_by_sftp(src, batch, listed)
                continue
            now = {}
            for line in sums.splitlines():
                digest, sep, name = line.partition("  ")
                if sep and len(digest) == 64:
                    now[name] = digest
            same = [n for n in batch if now.get(n) == listed[n]]
            if same and await _run(cconn, cd + "rm -f -- " + " ".join(shlex.quote(n) for n in same)) is None:
                raise TransferError(f"cannot remove files in {self.t.run_dir} on the cluster")
            for name in batch:
                if name in same or name not in now:  # not there: removed by an attempt cut before it answered
                    self.deleted.add(name)
                else:
                    self.problems[name] = self._changed(name, now[name], listed[name])

    def _changed(self, name: str, now: str, verified: str) -> str:
        return (f"{name}: changed on the cluster after its copy was verified (sha256 {now} there, "
                f"{verified} archived and listed in the manifest); kept there")

    async def _delete_by_sftp(self, src, names: list[str], listed: dict[str, str]) -> None:
        gate = asyncio.Semaphore(16)  # files read back at once (a few chunks of memory each)

        async def rm(name: str) -> None:
            path = posixpath.join(self.t.run_dir, name)
            async with gate:
                try:
                    digest, _ = await _hash_source(src, path)
                except asyncssh.SFTPNoSuchFile:  # removed by an attempt cut before it answered
                    self.deleted.add(name)
                    return
                if digest != listed[name]:
                    self.problems[name] = self._changed(name, digest, listed[name])
                    return
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):  # a reply lost with a cut connection
                    await src.remove(path)
            self.deleted.add(name)

        try:
            async with asyncio.TaskGroup() as tg:
                for name in names:
                    tg.create_task(rm(name))
        except BaseExceptionGroup as group:
            raise _first(group) from None


PART_STALE_SECONDS = 3600  # another night's .part this old is a crash's leftover, not a writer's


def _night_tag(frc: str, night: dt.date) -> str:
    return hashlib.sha256(f"{frc}/{night.isoformat()}".encode()).hexdigest()[:6]


async def _clean_parts_in(dst, folders: set[str], names: set[str], token: str) -> int:
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


async def _run(conn, command: str) -> str | None:
    """stdout of a command on the host, or None when it cannot run there (exit 126/127, no shell)."""
    result = await conn.run(command, check=False, input="")
    if result.exit_status is None and result.exit_signal is None:
        raise asyncssh.ConnectionLost(f"command cut before its answer: {command[:80]}")
    if result.exit_status in (126, 127) or result.exit_status is None:
        return None
    return str(result.stdout or "")


def _first(group: BaseExceptionGroup) -> BaseException:
    """The exception that matters in a task group: a non-transient one first."""
    leaves: list[BaseException] = []

    def walk(g):
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for e in leaves:
        if not _transient(e):
            return e
    return leaves[0]


async def _no_space(dst, folder: str, need: int) -> str | None:
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


def _explain(exc: asyncssh.SFTPError) -> str:
    reason = getattr(exc, "reason", "") or str(exc)
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return f"permission denied on the archive ({reason}): the archive tree is not writable by this account"
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return f"the archive is full ({reason})"
    if isinstance(exc, asyncssh.SFTPFailure):
        return f"the archive refused the write ({reason}; OpenSSH reports a full disk this way)"
    return f"SFTP error on the archive: {type(exc).__name__}: {reason}"


async def _read_manifest_async(sftp, path: str) -> dict | None:
    try:
        async with sftp.open(path, "rb") as f:
            raw = await f.read()
    except asyncssh.SFTPNoSuchFile:
        return None
    try:
        return manifest_mod.parse_json(raw, path)
    except manifest_mod.ManifestError as exc:
        raise TransferError(str(exc)) from None


async def _chunks(f, size: int = -1):
    """Yield a remote file's bytes in order, in chunks of at most CHUNK.

    With ``size`` (from the run folder's listing) exactly that many bytes are asked for: a
    small file costs one read request. A file that shrank ends early (the caller compares the
    count); one that grew is caught before deletion (its size is checked again). Without
    ``size``: up to the end of the file (asyncssh's ``read`` is short only there).
    """
    offset = 0
    while size < 0 or offset < size:
        want = CHUNK if size < 0 else min(CHUNK, size - offset)
        chunk = await f.read(want, offset)
        if chunk:
            yield chunk
        if len(chunk) < want:
            return
        offset += len(chunk)


async def _hash_source(src, source: str, size_hint: int = -1) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    async with src.open(source, "rb") as f:
        async for chunk in _chunks(f, size_hint):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


async def copy_file(
    src, source: str, dst, part: str, size_hint: int = -1, *, may_resume: bool = True
) -> tuple[str, int]:
    """Stream ``source`` (cluster) → ``part`` (archive); return (sha256 of what was read, size).

    Reads run ahead of the writes by a bounded queue of chunks, so both connections stay busy
    and memory stays at a few chunks per file. A large ``.part`` left by an interrupted run is
    resumed: its bytes are kept, the source is still hashed from the start, and the archive-side
    verification of the whole file decides (a bad resumed copy is removed and rewritten).
    """
    h = hashlib.sha256()
    resume = 0  # bytes of an old .part kept
    if may_resume and size_hint >= RESUME_MIN:
        old = await _stat(dst, part)
        if old is not None and old.size and 0 < old.size <= size_hint:
            resume = old.size - old.size % CHUNK  # whole chunks only
    queue: asyncio.Queue = asyncio.Queue(PIPELINE_CHUNKS)

    async def reader(fin) -> None:
        try:
            async for chunk in _chunks(fin, size_hint):
                await queue.put(chunk)
            await queue.put(b"")
        except Exception as exc:  # handed to the writer, which raises it
            await queue.put(exc)

    total = 0
    writes: set[asyncio.Future] = set()  # chunk writes in flight (distinct offsets: independent)
    async with src.open(source, "rb") as fin, dst.open(part, "r+b" if resume else "wb") as fout:
        task = asyncio.ensure_future(reader(fin))
        try:
            while True:
                chunk = await queue.get()
                if isinstance(chunk, Exception):
                    raise chunk
                if not chunk:
                    break
                h.update(chunk)
                end = total + len(chunk)
                if end > resume:
                    skip = max(resume - total, 0)
                    writes.add(asyncio.ensure_future(fout.write(chunk[skip:], total + skip)))
                    if len(writes) >= PIPELINE_CHUNKS:
                        done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                        for w in done:
                            w.result()
                total = end
            for w in writes:
                await w
        finally:
            for w in (task, *writes):
                w.cancel()
            await asyncio.gather(task, *writes, return_exceptions=True)
        if resume and total < resume:  # the source is shorter than the old .part: start again
            await fout.truncate(total)
    return h.hexdigest(), total


# ---------------------------------------------------------------------------- entry point


async def archive_night_async(
    cluster: Endpoint,
    archive: Endpoint,
    target: ArchiveTarget,
    *,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    verify: str = VERIFY_AUTO,
    concurrency: int = 64,
    attempts: int = 5,
    retry_pause: float = 0.5,
    now: Callable[[], dt.datetime] | None = None,
) -> tuple[ArchiveSummary, dict]:
    """See :func:`archive_night`. ``attempts``: connections tried before giving up (a lost
    connection resumes from what is verified); ``retry_pause``: first pause between them (s),
    growing linearly up to ten times that, with jitter. ``warn``: where the warnings of an FRC
    with ``unknown_files: warn`` go (default: this module's logger)."""
    say = progress or log.info
    warn = warn or log.warning
    # asyncssh's parallel reader can leave sibling block requests behind (past the end of a
    # file, or when a connection drops); their "exception was never retrieved" is noise: the end
    # of file is expected and a lost connection is handled (retried) here.
    loop = asyncio.get_running_loop()

    def quiet(loop, context):
        exc = context.get("exception") or ValueError()
        if not (isinstance(exc, asyncssh.SFTPEOFError) or _transient(exc)):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    night = _Night(target, say=say, verify=verify, concurrency=concurrency, now=now)
    for attempt in range(1, attempts + 1):
        try:
            async with await connect(cluster) as cconn, await connect(archive) as aconn:
                await night.attempt(cconn, aconn)
            break
        except Exception as exc:
            if not _transient(exc) or attempt == attempts:
                if _transient(exc):
                    raise TransferError(
                        f"connection lost {attempts} times ({type(exc).__name__}: {exc}); "
                        f"{len(night.done)} files verified on the archive so far, no source deleted "
                        "without a verified copy: run the task again to finish"
                    ) from exc
                raise
            night.summary.reconnects += 1
            pause = retry_pause * min(attempt, 10) * (0.5 + random.random())
            say(f"connection lost ({type(exc).__name__}: {exc}); reconnecting in {pause:.1f} s "
                f"(attempt {attempt + 1}/{attempts}, {len(night.done)} files already verified)")
            await asyncio.sleep(pause)

    s = night.summary
    s.manifest_path = night.manifest_path
    s.deleted = len(night.deleted)
    s.seconds = time.monotonic() - night.t0
    where = f"{target.frc} night {target.night}: "
    if night.problems and night.manifest is not None:  # at the deletion: the copies are verified and listed
        raise TransferError(
            f"{where}every copy is verified and listed in the manifest {night.manifest_path}, but "
            f"{len(night.problems)} source file(s) were kept in {target.run_dir} on the cluster:\n  "
            + "\n  ".join(night.problems[n] for n in sorted(night.problems))
            + "\nIf the FRC rewrote them on purpose, clear the 'submit' task to run the night again."
        )
    if night.problems:
        raise (ArchiveFullError if night.full else TransferError)(
            f"{where}{'the archive host ' + archive.describe() + ' is FULL: ' if night.full else ''}"
            f"the archive stage kept all {len(night.products or [])} source files on the cluster and did not "
            f"update the manifest; {len(night.problems)} file(s) could not be archived:\n  "
            + "\n  ".join(night.problems[n] for n in sorted(night.problems))
            + (f"\nstopped early: {night.fatal}" if night.fatal else "")
            + ("\n(a FRC that does not rewrite files: remove the archive copy by hand if the new one is right)"
               if any("does not rewrite" in p for p in night.problems.values()) else "")
        )
    manifest = night.manifest
    if not night.products and not s.manifest_written:
        say(f"nothing to do: no products left in {target.run_dir}, and the manifest {night.manifest_path} "
            f"already lists {len(manifest.get('files', []))} files; nothing was changed")
    elif not night.products:
        say(f"{where}the job ran and wrote no product: manifest {night.manifest_path} written with no files "
            "(\"no_data\": true): a night without data")
    else:
        night.report(force=True)
    s.manifest_sha256 = hashlib.sha256(manifest_mod.to_bytes(manifest)).hexdigest()
    s.unmatched = sorted(night.unmatched)
    s.stale = [e["name"] for e in manifest.get("stale", [])]
    s.no_data = not manifest.get("files")
    if night.unmatched:
        if target.unknown_files == UNKNOWN_WARN:
            for name in s.unmatched:
                warn(f"{where}{name!r} in the run folder {target.run_dir} is not an HFC product name: left on "
                     f"the cluster, not archived (listed under 'unmatched' in {night.manifest_path}; "
                     "the FRC's unknown_files is 'warn')")
        else:
            raise TransferError(
                f"{where}{len(s.unmatched)} file(s) in the run folder {target.run_dir} on the cluster are not "
                f"HFC product names; they were left there, not archived (the products were, and the manifest "
                f"{night.manifest_path} lists these under 'unmatched'):\n  "
                + "\n  ".join(repr(n) for n in s.unmatched)
                + "\nRename (to a product name) or remove them on the cluster and clear the 'archive' task, "
                "or set 'unknown_files: warn' for this FRC in the registry."
            )
    return s, manifest


def archive_night(cluster: Endpoint, archive: Endpoint, target: ArchiveTarget, **kwargs) -> tuple[ArchiveSummary, dict]:
    """Copy, verify on the archive, write the manifest, then delete on the cluster.

    Synchronous entry point (runs its own event loop): returns (summary, manifest).
    Keyword arguments: see :func:`archive_night_async`.
    """
    return asyncio.run(archive_night_async(cluster, archive, target, **kwargs))


# ---------------------------------------------------------------------------- paramiko helpers


def sha256_of(sftp, path: str) -> str:
    """Read a remote file back (paramiko) and hash it."""
    h = hashlib.sha256()
    with sftp.open(path, "rb") as f:
        f.prefetch()
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
