"""The manifest of one (FRC, night): the contract between ``archive``, which writes it, and
``catalogue`` (and ``hfc audit``, ``hfc status``, the status page), which read it.

A JSON object at ``<archive_dir>/manifests/<frc>/<YYYYMMDD>.json`` on the archive
(:func:`hfc_tasks.products.manifest_relpath`)::

    {"format": "hfc-manifest/1", "frc", "night": "YYYY-MM-DD", "product_format", "frc_version",
     "slurm_job_id", "archive_root", "public_url_base", "created",
     "campaign_id",                                    # only when a reprocessing campaign ran it
     "files": [{"name", "kind", "sha256", "archive_path", "size", "url_base"}, ...],
     "no_data": true,                                  # the job ran and wrote no product
     "stale": [{"name", "kind", "archive_path", "sha256", "slurm_job_id"}, ...],  # an earlier job's
     "unmatched": ["name", ...]}                       # run-folder files that are no product name

Here: the schema (:data:`FORMAT`, :func:`new`), writing (:func:`to_bytes`, :func:`same`), reading
(:func:`parse_json`, :func:`read_bytes`, :func:`find`) and validation (:func:`entries`,
:func:`issues`). Pure: the archive's SFTP client is passed in (any object with paramiko's
``stat``/``open``). The atomic write itself (a ``.part`` renamed over the file) is the archive
stage's (:mod:`hfc_tasks.archive`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hfc_tasks import products

if TYPE_CHECKING:
    from hfc_tasks.catalogue.formats import Formats

FORMAT = "hfc-manifest/1"


class ManifestError(ValueError):
    """The manifest itself is unusable (not a per-file problem): nothing is loaded."""


@dataclass(frozen=True)
class Entry:
    """One file the manifest lists, checked."""

    name: str
    kind: str
    sha256: str
    archive_path: str
    size: int | None
    url_base: str | None
    product: products.ProductName | None  # None: a quicklook, or a name that is no product's


# ------------------------------------------------------------------------------------ schema


def new(*, frc: str, night: dt.date, product_format: str, files: Iterable[dict], stale: Iterable[dict] = (),
        unmatched: Iterable[str] = (), **fields) -> dict:
    """A manifest: quicklooks after the result files, each group by name; ``no_data`` when no
    file; ``stale``/``unmatched`` only when there are some. ``fields``: the other keys
    (``frc_version``, ``slurm_job_id``, ``archive_root``, ``public_url_base``, ``created``,
    ``created_by``)."""
    manifest = {
        "format": FORMAT,
        "frc": frc,
        "night": night.isoformat(),
        "product_format": product_format,
        **fields,
        "files": sorted(files, key=lambda e: (e["kind"] == products.QUICKLOOK, e["name"])),
    }
    if not manifest["files"]:
        manifest["no_data"] = True  # the job ran and wrote no product: a night without data
    stale = sorted(stale, key=lambda e: e["name"])
    if stale:
        manifest["stale"] = stale
    if unmatched:
        manifest["unmatched"] = sorted(unmatched)
    return manifest


# ----------------------------------------------------------------------------------- writing


def to_bytes(manifest: dict) -> bytes:
    """The bytes written to the archive (their sha256 is what a catalogue batch records)."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")


def same(a: dict | None, b: dict) -> bool:
    """Whether two manifests say the same (``created`` aside): then the stored one is kept."""
    if a is None:
        return False
    strip = {"created"}
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


# ----------------------------------------------------------------------------------- reading


def parse_json(raw: bytes, path: str) -> dict:
    """The manifest object stored at ``path``; :class:`ManifestError` naming it otherwise."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise ManifestError(f"the manifest {path} on the archive is not valid JSON ({exc}); it was not written "
                            "by this pipeline's atomic writer: move it aside and run the task again") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"the manifest {path} on the archive is not a JSON object: move it aside and run again")
    return manifest


def read_bytes(sftp, path: str) -> bytes | None:
    """The manifest file as stored, or None when there is none."""
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return None
        raise
    with sftp.open(path, "rb") as f:
        return f.read()


def find(sftp, archive_root: str, frc: str, archive_dir: str, night: dt.date) -> tuple[str, bytes | None]:
    """(full path, bytes as stored) of the manifest of (FRC, night), or (its path, None).

    ``<archive_dir>/manifests/<frc>/<YYYYMMDD>.json``. For an FRC that archives into its own
    folder only, a manifest written before there was a folder per FRC
    (``<frc>/manifests/<YYYYMMDD>.json``) is read when the new one does not exist and it names
    this FRC. In a shared folder the old file may be another FRC's: never read.
    """
    path = posixpath.join(archive_root, products.manifest_relpath(archive_dir, frc, night))
    raw = read_bytes(sftp, path)
    legacy = products.legacy_manifest_relpath(archive_dir, frc, night)
    if raw is None and legacy:
        old_path = posixpath.join(archive_root, legacy)
        old = read_bytes(sftp, old_path)
        if old is not None:
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(old.decode("utf-8")).get("frc") == frc:
                    return old_path, old
    return path, raw


# -------------------------------------------------------------------------------- validation


def entries(manifest: dict, known: Formats) -> tuple[str, dt.date, str, list[Entry]]:
    """(frc, night, product format, the files by name) of a manifest to load; :class:`ManifestError`
    for anything that makes the whole manifest unusable (a bad file is the loader's to reject).
    ``known``: the formats (the registry's): their product formats and the file kinds that
    classify names."""
    if not isinstance(manifest, dict):
        raise ManifestError("manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"manifest format {manifest.get('format')!r}, expected {FORMAT!r}")
    for key in ("frc", "night", "product_format"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise ManifestError(f"manifest has no {key!r}")
    try:
        night = products.parse_night(manifest["night"])
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    fmt = manifest["product_format"]
    if fmt not in known.formats:
        raise ManifestError(f"no reader for product format {fmt!r} (known: {', '.join(known.formats)})")
    files = manifest.get("files", [])
    if not isinstance(files, list):
        raise ManifestError("manifest 'files' is not a list")
    found, seen = [], set()
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise ManifestError(f"manifest file #{i} is not an object")
        missing = [k for k in ("name", "kind", "sha256", "archive_path") if not f.get(k)]
        if missing:
            raise ManifestError(f"manifest file #{i} ({f.get('name')!r}) lacks {', '.join(missing)}")
        name = f["name"]
        try:
            products.check_plain_name(name)
        except products.ProductNameError as exc:
            raise ManifestError(str(exc)) from None
        if name in seen:
            raise ManifestError(f"manifest lists {name!r} twice")
        seen.add(name)
        product = None
        if f["kind"] != products.QUICKLOOK:
            try:
                product = products.parse_product_name(name, known)
            except products.ProductNameError:
                product = None  # rejected later, with the reason, like any bad file
        found.append(Entry(name=name, kind=f["kind"], sha256=str(f["sha256"]).lower(),
                           archive_path=f["archive_path"], size=f.get("size"), url_base=f.get("url_base"),
                           product=product))
    found.sort(key=lambda e: e.name)  # deterministic load order and ids
    return manifest["frc"], night, fmt, found


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def issues(manifest: dict) -> list[dict]:
    """What the archive stage noted beside the files (issue 16), as ``hfc.batch.issues``:
    ``{"issue": "unmatched", "name"}`` for a run-folder file that is no product name (left on the
    cluster), ``{"issue": "stale", "name", "archive_path", "slurm_job_id"}`` for an earlier job's
    file this job did not produce (kept on the archive, not loaded). Empty: a clean night."""
    unmatched, stale = manifest.get("unmatched", []), manifest.get("stale", [])
    if not isinstance(unmatched, list) or not all(isinstance(n, str) for n in unmatched):
        raise ManifestError("manifest 'unmatched' is not a list of file names")
    if not isinstance(stale, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in stale):
        raise ManifestError("manifest 'stale' is not a list of files")
    found = [{"issue": "unmatched", "name": n} for n in unmatched]
    found += [{"issue": "stale", "name": e["name"], "archive_path": _opt_str(e.get("archive_path")),
               "slurm_job_id": _opt_str(e.get("slurm_job_id"))} for e in stale]
    return found


def issue_text(issue: dict) -> str:
    if issue.get("issue") == "unmatched":
        return f"{issue['name']!r} is not a product name (left on the cluster)"
    return f"{issue['name']} of job {issue.get('slurm_job_id')} is stale (kept on the archive, not loaded)"
