"""The archive stage's domain: the verified copy of one FRC night from the cluster's run folder
to the HFC archive. No Airflow import.

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

The modules, by idea (the public names are re-exported here):

* :mod:`~hfc_tasks.archive.night`: the night's copy (:func:`archive_night`,
  :class:`ArchiveTarget`, :class:`ArchiveSummary`), its retries and its manifest writing;
* :mod:`~hfc_tasks.archive.endpoints`: SSH endpoints and connections (:class:`Endpoint`,
  :func:`connect`), what counts as a lost connection;
* :mod:`~hfc_tasks.archive.files`: run-folder names (:func:`classify_names`), the streaming copy
  of one file (:func:`copy_file`), sha256 of a remote file (:func:`sha256_of` for the CLI's
  paramiko client);
* :mod:`~hfc_tasks.archive.verification`: the archive-side sha256 (:class:`VerifyMode`);
* :mod:`~hfc_tasks.archive.tree`: the archive tree over SFTP: the manifest found, ``.part``
  clean-up, ENOSPC;
* :mod:`~hfc_tasks.archive.deletion`: deleting the verified sources on the cluster;
* :mod:`~hfc_tasks.archive.errors`: :class:`TransferError`, :class:`HostKeyError`,
  :class:`ArchiveFullError`.

The manifest itself (schema, bytes, reading) is :mod:`hfc_tasks.manifest`.
"""

from hfc_tasks.archive.endpoints import Endpoint, connect
from hfc_tasks.archive.errors import ArchiveFullError, HostKeyError, TransferError
from hfc_tasks.archive.files import classify_names, copy_file, sha256_of
from hfc_tasks.archive.night import ArchiveSummary, ArchiveTarget, archive_night, archive_night_async
from hfc_tasks.archive.verification import VerifyMode

__all__ = [
    "ArchiveFullError",
    "ArchiveSummary",
    "ArchiveTarget",
    "Endpoint",
    "HostKeyError",
    "TransferError",
    "VerifyMode",
    "archive_night",
    "archive_night_async",
    "classify_names",
    "connect",
    "copy_file",
    "sha256_of",
]
