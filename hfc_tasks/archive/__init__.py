"""The archive stage's domain: copy one (FRC, night)'s products from the cluster to the archive,
verify every copy by sha256 on the archive host, write the night's manifest
(:mod:`hfc_tasks.manifest`), then delete the verified sources on the cluster. No Airflow import.

The public names are here; where each lives is said in its module's docstring.
"""

from hfc_tasks.archive.night import (
    ArchiveFullError,
    ArchiveSummary,
    ArchiveTarget,
    Endpoint,
    HostKeyError,
    TransferError,
    archive_night,
    archive_night_async,
    classify_names,
    connect,
    copy_file,
    sha256_of,
)

__all__ = [
    "ArchiveFullError",
    "ArchiveSummary",
    "ArchiveTarget",
    "Endpoint",
    "HostKeyError",
    "TransferError",
    "archive_night",
    "archive_night_async",
    "classify_names",
    "connect",
    "copy_file",
    "sha256_of",
]
