"""The night's copy: one (FRC, night) from the cluster's run folder to the archive, verified.

:func:`archive_night` (synchronous, runs its own event loop) and :func:`archive_night_async`
copy every product, verify it on the archive (:mod:`~hfc_tasks.archive.verification`), write
the manifest, then delete the verified sources (:mod:`~hfc_tasks.archive.deletion`); a lost
connection is retried and the run carries on from what is verified (:class:`_Night` holds that
state). Files up to ``STREAM_MAX`` are read from the cluster as tar streams over exec channels
(where the cluster account has a shell with tar; else over SFTP like the larger ones): one
channel instead of ~3 SFTP round trips per file, each member written and verified as it arrives
and renamed once its stream is known whole. :class:`ArchiveTarget` says what one night is,
:class:`ArchiveSummary` what was done.
The contract this keeps is the package's docstring (:mod:`hfc_tasks.archive`).
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh

from hfc_tasks import manifest as manifest_mod
from hfc_tasks.archive.deletion import DELETE_BATCH, delete_sources
from hfc_tasks.archive.endpoints import Endpoint, connect, first_error, transient
from hfc_tasks.archive.errors import ArchiveFullError, TransferError
from hfc_tasks.archive.files import (
    CHUNK,
    RESUME_MIN,
    STREAM_MAX,
    StreamError,
    classify_names,
    copy_file,
    inside,
    stat_or_none,
    stream_command,
    tar_members,
)
from hfc_tasks.archive.tree import clean_parts, explain_sftp_error, night_tag, no_space, read_manifest
from hfc_tasks.archive.verification import VERIFY_BATCH, Verifier, VerifyMode
from hfc_tasks.catalogue.formats import Formats
from hfc_tasks.products import (
    archive_relpath,
    job_name,
    legacy_manifest_relpath,
    manifest_relpath,
    output_name,
    parse_product_name,
    url_join,
)

BIG_IN_FLIGHT = 4  # files larger than 2 chunks copied at once (memory: PIPELINE_CHUNKS chunks each)
STREAM_BATCH = 300  # small files per tar stream read from the cluster
DELETE_LANES = 2  # deletion batches checked on the cluster at once
STREAMS = 2  # tar streams at once (the first one alone: it tells whether the cluster can stream)
UNKNOWN_FAIL, UNKNOWN_WARN = "fail", "warn"  # what files that are not product names do to the run
log = logging.getLogger(__name__)


class _Changed(Exception):
    """A source file is not what its listing said (it changed after the job ended)."""


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
    # The reprocessing campaign that ran the night (issue 15): in the manifest; None for the nightly DAG.
    campaign_id: str | None = None
    # The formats whose file kinds name products (the registry's, with its site formats): None = presets.
    known: Formats | None = field(default=None, repr=False, compare=False)


@dataclass
class ArchiveSummary:
    """What one archive run did: counts, the manifest written, what was left on the cluster."""

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


# ---------------------------------------------------------------------------- one run


def _written(dst, data: bytes, slots: asyncio.Semaphore):
    """The copy of a streamed member: its bytes (held since the stream) to the ``.part`` in one
    SFTP write (same signature as the SFTP copy); its memory slot released once written."""
    held: list[bytes | None] = [data]

    async def copy(part: str, may_resume: bool) -> tuple[str, int]:
        chunk = held[0]
        if chunk is None:
            raise TransferError(f"{part}: a streamed file's bytes were written once already")
        try:
            async with dst.open(part, "wb") as f:
                if chunk:
                    await f.write(chunk, 0)
        finally:
            held[0] = None
            slots.release()
        return hashlib.sha256(chunk).hexdigest(), len(chunk)
    return copy


class _Night:
    """State of one archive_night call; survives reconnects (what is verified stays verified)."""

    def __init__(self, target: ArchiveTarget, *, say, verify: VerifyMode, concurrency: int, now):
        self.t = target
        self.say = say
        self.verify_mode = verify
        self.concurrency = concurrency
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.summary = ArchiveSummary()
        self.t0 = time.monotonic()
        self.manifest_path = inside(target.archive_root, posixpath.join(
            target.archive_root, manifest_relpath(target.archive_dir, target.frc, target.night)))
        legacy = legacy_manifest_relpath(target.archive_dir, target.frc, target.night)
        self.legacy_path = inside(target.archive_root, posixpath.join(target.archive_root, legacy)) if legacy else None
        self.old: dict | None = None  # the manifest found on the archive before this run
        self.old_path: str | None = None  # where it was read (the legacy path for an FRC's own folder)
        self.old_loaded = False
        # This writer's .part names: two runs at once never write (or rename) each other's files.
        # 6 hex of the (FRC, night), 6 random: the clean-up tells this night's earlier runs from
        # another night's writer of a product name both nights share (frc_info, observatory...).
        self.token = night_tag(target.frc, target.night) + secrets.token_hex(3)
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
        self.verifier: Verifier | None = None
        self.manifest: dict | None = None
        self.stream_ok: bool | None = None  # the cluster account can stream with tar (None: not tried yet)

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
                self.old = await read_manifest(dst, self.manifest_path)
                self.old_path = self.manifest_path if self.old is not None else None
                if self.old is None and self.legacy_path:
                    legacy = await read_manifest(dst, self.legacy_path)
                    if legacy is not None and legacy.get("frc") == t.frc:
                        self.old, self.old_path = legacy, self.legacy_path
                self.old_loaded = True
            if self.products is None:
                try:
                    names = await src.readdir(t.run_dir)
                except asyncssh.SFTPNoSuchFile:
                    names, self.run_dir_exists = [], False
                entries = [(n.filename, n.attrs.permissions or 0, n.attrs.size or 0) for n in names]
                self.products, self.summary.ignored, self.unmatched = classify_names(entries, t.run_dir, t.known)
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
            self.verifier = Verifier(aconn, dst, self.verify_mode, self.say,
                                     remote_ok=self.verifier.remote_ok if self.verifier else None)
            try:
                await self._copy_all(src, dst, cconn)
                if self.problems:
                    return
                await self._write_manifest(dst)
                await self._delete_sources(src, cconn)
                await self._clean_parts(dst)
            finally:
                await self.verifier.aclose()
            self.summary.verification = self.verifier.method

    async def _copy_all(self, src, dst, cconn) -> None:
        """Every product not yet verified: small files read from the cluster as tar streams
        (:meth:`_stream`), larger ones (and all where the cluster cannot stream) over SFTP,
        many at once; each one written, verified and renamed on the archive (:meth:`_one`)."""
        dirs: dict[str, asyncio.Task] = {}
        slots = asyncio.Semaphore(self.concurrency)  # files being read/written at once
        big = asyncio.Semaphore(BIG_IN_FLIGHT)  # of which large ones (memory: a few chunks each)
        window = asyncio.Semaphore(max(4 * self.concurrency, VERIFY_BATCH * 2))  # files started, not finished

        async def makedirs(path: str) -> None:
            if path not in dirs:
                dirs[path] = asyncio.ensure_future(dst.makedirs(path, exist_ok=True))
            await asyncio.shield(dirs[path])

        def by_sftp(name: str, size: int):
            gate = big if size > 2 * CHUNK else slots

            async def copy(part: str, may_resume: bool) -> tuple[str, int]:
                async with gate:
                    return await copy_file(src, posixpath.join(self.t.run_dir, name), dst, part, size,
                                           may_resume=may_resume)
            return copy

        async def one(name: str, size: int) -> None:
            try:
                await self._one(dst, name, size, by_sftp(name, size), makedirs)
            finally:
                window.release()
            self.report()

        todo = [(n, s) for n, s in self.products or [] if n not in self.done and n not in self.problems]
        streamed = [(n, s) for n, s in todo if s <= STREAM_MAX] if self.stream_ok is not False else []
        try:
            async with asyncio.TaskGroup() as tg:
                if streamed:
                    tg.create_task(self._streams(cconn, dst, streamed, tg, slots, makedirs, by_sftp))
                for name, size in todo:
                    if streamed and size <= STREAM_MAX:
                        continue
                    await window.acquire()
                    if self.fatal:
                        window.release()
                        break
                    tg.create_task(one(name, size))
        except BaseExceptionGroup as group:
            # A lost connection anywhere ends this attempt; the caller reconnects.
            raise first_error(group) from None
        finally:
            for task in dirs.values():
                task.cancel()

    async def _streams(self, cconn, dst, files, tg, slots, makedirs, by_sftp) -> None:
        """The small files as tar streams from the cluster (``STREAM_BATCH`` files each,
        ``STREAMS`` at once): one exec channel instead of open/read/close per file. The first
        stream also tells whether the cluster account can stream at all (a shell with tar); if
        not, the run reads every file over SFTP."""
        batches = [files[i:i + STREAM_BATCH] for i in range(0, len(files), STREAM_BATCH)]
        if self.stream_ok is None:  # the first batch decides, alone
            await self._stream(cconn, dst, batches.pop(0), tg, slots, makedirs, by_sftp)
        lanes = asyncio.Semaphore(STREAMS)

        async def lane(batch) -> None:
            async with lanes:
                await self._stream(cconn, dst, batch, tg, slots, makedirs, by_sftp)

        async with asyncio.TaskGroup() as streams:
            for batch in batches:
                streams.create_task(lane(batch))

    async def _stream(self, cconn, dst, batch, tg, slots, makedirs, by_sftp) -> None:
        """One tar stream of ``batch`` (name, size) from the cluster. Each member is hashed and
        written to its ``.part`` as it arrives and verified at once; it is renamed into place
        only once tar has exited 0 (``gate``): a file that changed while tar read it (tar pads
        or cuts it and exits 1), a missing one or a broken stream make the batch's files go over
        SFTP instead, from scratch. The names go to tar on stdin, NUL-separated, never through
        the shell; the run folder is quoted (:func:`stream_command`)."""
        if self.stream_ok is False:
            for name, size in batch:
                tg.create_task(self._one(dst, name, size, by_sftp(name, size), makedirs))
            return
        sizes = dict(batch)
        gate: asyncio.Future = asyncio.get_running_loop().create_future()
        seen: set[str] = set()
        why = ""
        members: list[asyncio.Task] = []
        try:
            proc = await cconn.create_process(stream_command(self.t.run_dir), encoding=None)
        except asyncssh.ChannelOpenError as exc:  # exec refused: SFTP it is (a lost link shows there)
            proc, why = None, f"exec refused: {exc.reason}"
        if proc is None:
            self.stream_ok = False if self.stream_ok is None else self.stream_ok
            self.say(f"cluster tar stream not started ({why}); reading {len(batch)} files over SFTP")
            gate.set_result(False)
            for name, size in batch:
                tg.create_task(self._one(dst, name, size, by_sftp(name, size), makedirs))
            return
        errors = asyncio.ensure_future(proc.stderr.read(64 * 1024))
        try:
            proc.stdin.write(b"".join(n.encode() + b"\0" for n, _ in batch))
            proc.stdin.write_eof()
            try:
                async for name, data in tar_members(proc.stdout):
                    if name not in sizes or name in seen:
                        raise StreamError(f"tar stream: member {name!r} was not asked for")
                    seen.add(name)
                    await slots.acquire()  # memory: the member's bytes until written
                    members.append(tg.create_task(
                        self._one(dst, name, sizes[name], _written(dst, data, slots), makedirs, gate=gate,
                                  fallback=by_sftp(name, sizes[name]))))
                    self.report()
                await proc.stdout.read()  # the end-of-archive padding
                await proc.wait()
                if proc.exit_status != 0 or seen != set(sizes):
                    err = (await errors).decode(errors="replace").strip()
                    why = (f"tar exit {proc.exit_status if proc.exit_status is not None else proc.exit_signal}, "
                           f"{len(seen)}/{len(sizes)} files{': ' + err[:300] if err else ''}")
            except StreamError as exc:
                why = str(exc)
        finally:
            proc.close()
            errors.cancel()
        if why and self.stream_ok is None and not seen:
            self.stream_ok = False
            self.say(f"the cluster account cannot stream the run folder with tar ({why}); reading files over SFTP")
        elif why:
            self.say(f"cluster tar stream of {len(batch)} files not whole ({why}); these go over SFTP")
        elif self.stream_ok is None:
            self.stream_ok = True
            self.say("reading small files from the cluster as tar streams")
        gate.set_result(not why)
        if why:
            for name, size in batch:
                if name not in seen:
                    tg.create_task(self._one(dst, name, size, by_sftp(name, size), makedirs))

    async def _one(self, dst, name, size, copy, makedirs, *, gate: asyncio.Future | None = None,
                   fallback=None) -> None:
        """Write one file to its ``.part`` (``copy(part, may_resume)`` -> (sha256, size)), verify
        it on the archive, rename it into place. With ``gate`` (a streamed file): the rename
        waits for the stream's verdict; a stream that was not whole sends the file through
        ``fallback`` (the SFTP copy) instead."""
        t = self.t
        product = parse_product_name(name, t.known)
        rel = archive_relpath(t.archive_dir, product, t.night, observatory=t.observatory, instrument=t.instrument)
        dest = inside(t.archive_root, posixpath.join(t.archive_root, rel))
        part = f"{dest}.{self.token}.part"  # this writer's own: a run at once never truncates it
        try:
            await makedirs(posixpath.dirname(dest))
            # No stat of the destination first: the copy goes to .part and a plain SFTP rename
            # never replaces an existing file (SFTP v3 draft §6.5; OpenSSH uses link(2)). Only
            # when the rename refuses is the existing file looked at: a crash left it (skip if
            # the same sha256), or it is a rewrite. One request less per file.
            digest, nbytes = await copy(part, True)
            if nbytes != size:
                raise _Changed(f"{name}: {nbytes} bytes read, {size} listed: the file changed during the copy")
            await self._after_write(part)
            verified = await self.verifier.sha256(part)
            if gate is not None and not await asyncio.shield(gate):
                return await self._one(dst, name, size, fallback, makedirs)  # the stream was not whole
            if verified != digest and size >= RESUME_MIN:  # perhaps a bad resumed .part: once from scratch
                await dst.remove(part)
                digest, nbytes = await copy(part, False)
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
                if await stat_or_none(dst, dest) is None:
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
            what = explain_sftp_error(exc)
            if isinstance(exc, asyncssh.SFTPFailure | asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
                full = await no_space(dst, posixpath.dirname(dest), size)
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
        removed = await clean_parts(dst, folders, set(self.done), self.token)
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
            **({"campaign_id": t.campaign_id} if t.campaign_id else {}),
        )
        if manifest_mod.same(self.old, manifest) and self.old_path == self.manifest_path:
            manifest = self.old  # nothing new: the manifest (and its sha256) stays as it is
        else:
            data = manifest_mod.to_bytes(manifest)
            await dst.makedirs(posixpath.dirname(self.manifest_path), exist_ok=True)
            part = f"{self.manifest_path}.{self.token}.part"
            try:
                for tries in range(3, 0, -1):
                    async with dst.open(part, "wb") as f:
                        await f.write(data, 0)
                    try:
                        await dst.posix_rename(part, self.manifest_path)  # atomic: readers see old or new
                        break
                    except asyncssh.SFTPNoSuchFile:
                        # Another run of this night, whole before us, swept its folder of this
                        # night's .part files, ours included: write it again.
                        if tries == 1:
                            raise
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await dst.remove(part)
                full = (await no_space(dst, posixpath.dirname(self.manifest_path), len(data))
                        if isinstance(exc, asyncssh.SFTPFailure | asyncssh.SFTPNoSpaceOnFilesystem) else None)
                if full:
                    self.full = True
                    raise ArchiveFullError(f"{t.frc} night {t.night}: manifest {self.manifest_path} not written: "
                                           f"{full}; every source file is kept on the cluster") from exc
                raise
            self.summary.manifest_written = True
            self.old, self.old_path = manifest, self.manifest_path
        self.manifest = manifest
        # A try cut while writing the manifest could not remove its own .part: the manifest is
        # whole now (written or already right), so this night's earlier .part of it goes.
        removed = await clean_parts(dst, {posixpath.dirname(self.manifest_path)},
                                    {posixpath.basename(self.manifest_path)}, self.token)
        if removed:
            self.say(f"removed {removed} half-written manifest(s) (.part) an interrupted try left on the archive")

    async def _delete_sources(self, src, cconn) -> None:
        """Every copy is verified and listed in the manifest: only now may the cluster copies go
        (those whose sha256 on the cluster is still the listed one: :mod:`hfc_tasks.archive.deletion`)."""
        listed = {e["name"]: e["sha256"] for e in (self.manifest or {}).get("files", [])}
        todo = [n for n in self.done if n in listed and n not in self.deleted]
        # Batches of DELETE_BATCH checked and removed side by side (one exec channel each): the
        # cluster's sha256sum of a night is CPU work its cores share, not a queue.
        lanes = asyncio.Semaphore(DELETE_LANES)

        async def lane(names: list[str]) -> None:
            async with lanes:
                await delete_sources(src, cconn, self.t.run_dir, names, listed, deleted=self.deleted,
                                     problems=self.problems)

        per = max(1, min(DELETE_BATCH, -(-len(todo) // DELETE_LANES)))
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(0, len(todo), per):
                    tg.create_task(lane(todo[i:i + per]))
        except BaseExceptionGroup as group:
            raise first_error(group) from None


# ---------------------------------------------------------------------------- entry point


async def archive_night_async(
    cluster: Endpoint,
    archive: Endpoint,
    target: ArchiveTarget,
    *,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    verify: VerifyMode | str = VerifyMode.AUTO,
    concurrency: int = 64,
    attempts: int = 5,
    retry_pause: float = 0.5,
    now: Callable[[], dt.datetime] | None = None,
) -> tuple[ArchiveSummary, dict]:
    """See :func:`archive_night`. ``attempts``: connections tried before giving up (a lost
    connection resumes from what is verified); ``retry_pause``: first pause between them (s),
    growing linearly up to ten times that, with jitter. ``warn``: where the warnings of an FRC
    with ``unknown_files: warn`` go (default: this module's logger). ``verify``: a
    :class:`VerifyMode` or its string (``"auto"``, ``"sha256sum"``, ``"readback"``)."""
    verify = VerifyMode.of(verify)
    say = progress or log.info
    warn = warn or log.warning
    # asyncssh's parallel reader can leave sibling block requests behind (past the end of a
    # file, or when a connection drops); their "exception was never retrieved" is noise: the end
    # of file is expected and a lost connection is handled (retried) here.
    loop = asyncio.get_running_loop()

    def quiet(loop, context):
        exc = context.get("exception") or ValueError()
        if not (isinstance(exc, asyncssh.SFTPEOFError) or transient(exc)):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    night = _Night(target, say=say, verify=verify, concurrency=concurrency, now=now)
    for attempt in range(1, attempts + 1):
        try:
            async with await connect(cluster) as cconn, await connect(archive) as aconn:
                await night.attempt(cconn, aconn)
            break
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                if transient(exc):
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

    return finish_night(night, target, archive.describe(), say, warn)


def finish_night(night: _Night, target: ArchiveTarget, archive_desc: str, say, warn, *,
                 stage: str = "the archive stage") -> tuple[ArchiveSummary, dict]:
    """The summary and the errors of a night whose copy loop ended: one wording of the contract
    for both modes (relay here, direct in :mod:`~hfc_tasks.archive.direct`)."""
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
            f"{where}{'the archive host ' + archive_desc + ' is FULL: ' if night.full else ''}"
            f"{stage} kept all {len(night.products or [])} source files on the cluster and did not "
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
