"""Verified copy of one FRC night from the cluster's run folder to the HFC archive.

The promise of the old ``hfc_upload`` script, kept and made checkable: a cluster file is
deleted only after its copy on the archive has been read back and its sha256 equals the
one computed while streaming the source. Each copy is written to ``<name>.part`` and
renamed, so no half file is ever visible under a real name. The night's manifest (JSON,
beside the HFC tree) lists every file with size, sha256, archive path and public URL
base; the catalogue stage reads only the manifest.

Pure logic: it works on two SFTP client objects with paramiko's ``SFTPClient`` interface
(``listdir_attr``, ``open``, ``stat``, ``mkdir``, ``posix_rename``, ``remove``), so the
Airflow operator, the CLI and the tests share it.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import posixpath
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hfc_tasks.products import (
    QUICKLOOK,
    ProductNameError,
    archive_relpath,
    manifest_relpath,
    parse_product_name,
    url_join,
)

MANIFEST_FORMAT = "hfc-manifest/1"
CHUNK = 256 * 1024
log = logging.getLogger(__name__)


class TransferError(RuntimeError):
    """The archive stage cannot finish; the message names the file(s) and what to do."""


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
    ignored: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _exists(sftp, path: str):
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return None
        raise


def makedirs(sftp, path: str, cache: set[str]) -> None:
    """``mkdir -p`` over SFTP, remembering what exists to save round trips."""
    if path in cache or path in ("", "/"):
        return
    if _exists(sftp, path) is None:
        makedirs(sftp, posixpath.dirname(path), cache)
        try:
            sftp.mkdir(path)
        except OSError:
            if _exists(sftp, path) is None:  # lost a race with another task: fine if it exists now
                raise
    cache.add(path)


def sha256_of(sftp, path: str) -> str:
    """Read a remote file back and hash it (the archive account may not run a shell)."""
    h = hashlib.sha256()
    with sftp.open(path, "rb") as f:
        f.prefetch()
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_stream(src, src_path: str, dst, dst_path: str) -> tuple[str, int]:
    """Stream src → dst without holding the file in memory; return (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    with src.open(src_path, "rb") as fin, dst.open(dst_path, "wb") as fout:
        fin.prefetch()
        fout.set_pipelined(True)
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_manifest_bytes(sftp, path: str) -> bytes | None:
    """The manifest file as stored (its sha256 is what a catalogue batch records)."""
    if _exists(sftp, path) is None:
        return None
    with sftp.open(path, "rb") as f:
        return f.read()


def read_manifest(sftp, path: str) -> dict | None:
    raw = read_manifest_bytes(sftp, path)
    return None if raw is None else json.loads(raw.decode("utf-8"))


def write_atomically(sftp, path: str, data: bytes) -> None:
    part = path + ".part"
    with sftp.open(part, "wb") as f:
        f.write(data)
    sftp.posix_rename(part, path)


def list_products(src, run_dir: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(products with sizes, ignored names) of a run folder; hostile names are refused."""
    try:
        entries = src.listdir_attr(run_dir)
    except FileNotFoundError:
        return [], []
    products, ignored, refused = [], [], []
    for e in sorted(entries, key=lambda e: e.filename):
        name = e.filename
        if not stat.S_ISREG(e.st_mode or 0):
            ignored.append(name)
            continue
        # SLURM output and half-written files are not products: they stay on the cluster.
        if name.endswith((".out", ".err", ".tmp", ".part")):
            ignored.append(name)
            continue
        try:
            parse_product_name(name)
        except ProductNameError as exc:
            if any(c in name for c in "/\\") or ".." in name or not name.isprintable():
                refused.append(str(exc))
            else:
                ignored.append(name)
            continue
        products.append((name, e.st_size or 0))
    if refused:
        raise TransferError(
            f"run folder {run_dir} holds files with names that are not allowed; nothing was copied:\n  "
            + "\n  ".join(refused)
        )
    return products, ignored


def archive_night(
    src,
    dst,
    target: ArchiveTarget,
    *,
    progress: Callable[[str], None] | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> tuple[ArchiveSummary, dict]:
    """Copy, verify, then delete: the archive stage of one FRC night. Returns (summary, manifest)."""
    say = progress or log.info
    t0 = time.monotonic()
    summary = ArchiveSummary()
    manifest_path = posixpath.join(target.archive_root, manifest_relpath(target.archive_dir, target.night))
    old = read_manifest(dst, manifest_path)
    products, ignored = list_products(src, target.run_dir)
    summary.ignored = ignored
    if ignored:
        say(f"left on the cluster (not products): {', '.join(ignored)}")

    if not products:
        if old is not None:
            say(f"nothing new in {target.run_dir}; manifest {manifest_path} already lists "
                f"{len(old.get('files', []))} files: nothing to do")
            summary.manifest_path = manifest_path
            summary.manifest_sha256 = hashlib.sha256(_manifest_bytes(old)).hexdigest()
            summary.seconds = time.monotonic() - t0
            return summary, old
        raise TransferError(
            f"no products in {target.run_dir} on the cluster and no manifest at {manifest_path}: "
            "did the FRC job run for this night? Clear the 'submit' task to run it again."
        )

    entries = {e["name"]: e for e in (old or {}).get("files", [])}
    made: set[str] = set()
    conflicts, mismatches = [], []
    summary.files_total = len(products)
    for n, (name, _size) in enumerate(products, 1):
        product = parse_product_name(name)
        rel = archive_relpath(
            target.archive_dir, product, target.night,
            observatory=target.observatory, instrument=target.instrument,
        )
        dest = posixpath.join(target.archive_root, rel)
        source = posixpath.join(target.run_dir, name)
        makedirs(dst, posixpath.dirname(dest), made)
        part = dest + ".part"

        existing = _exists(dst, dest)
        digest, nbytes = _copy_stream(src, source, dst, part)
        verified = sha256_of(dst, part)
        if verified != digest:
            dst.remove(part)
            mismatches.append(f"{name}: archive copy sha256 {verified} != source {digest}")
            continue
        if existing is not None:
            current = sha256_of(dst, dest)
            if current == digest:
                dst.remove(part)
                summary.skipped += 1
            elif target.rewrites:
                dst.posix_rename(part, dest)
                summary.copied += 1
                summary.bytes_copied += nbytes
            else:
                dst.remove(part)
                conflicts.append(f"{name}: {dest} exists with sha256 {current}, new file has {digest}")
                continue
        else:
            dst.posix_rename(part, dest)
            summary.copied += 1
            summary.bytes_copied += nbytes
        # The copy under its real name is verified: only now may the cluster copy go.
        src.remove(source)
        summary.deleted += 1
        entries[name] = {
            "name": name,
            "kind": product.kind,
            "size": nbytes,
            "sha256": digest,
            "archive_path": rel,
            "url_base": url_join(target.public_url_base, posixpath.dirname(rel)),
        }
        if n == len(products) or n % 200 == 0:
            el = max(time.monotonic() - t0, 1e-6)
            say(f"files {n}/{len(products)}, {summary.bytes_copied / 1e6:.1f} MB copied, "
                f"{summary.bytes_copied / 1e6 / el:.1f} MB/s, {n / el:.0f} files/s")

    manifest = {
        "format": MANIFEST_FORMAT,
        "frc": target.frc,
        "night": target.night.isoformat(),
        "product_format": target.product_format,
        "frc_version": target.frc_version,
        "slurm_job_id": target.slurm_job_id or (old or {}).get("slurm_job_id"),
        "archive_root": target.archive_root,
        "public_url_base": target.public_url_base,
        "created": (now or (lambda: dt.datetime.now(dt.UTC)))().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": sorted(entries.values(), key=lambda e: (e["kind"] == QUICKLOOK, e["name"])),
    }
    data = _manifest_bytes(manifest)
    makedirs(dst, posixpath.dirname(manifest_path), made)
    write_atomically(dst, manifest_path, data)
    summary.manifest_path = manifest_path
    summary.manifest_sha256 = hashlib.sha256(data).hexdigest()
    summary.seconds = time.monotonic() - t0
    problems = mismatches + conflicts
    if problems:
        raise TransferError(
            "the archive stage kept these source files on the cluster:\n  " + "\n  ".join(problems)
            + ("\n(this FRC does not rewrite files: remove the archive copy by hand if the new one is right)"
               if conflicts else "")
        )
    return summary, manifest


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
