"""HFC product files: names, kinds, nights and the archive layout.

Pure logic, no Airflow: the DAG, the CLI, the tests and the benchmarks share it.

File names follow the HFC convention (see docs and ``HFC_PRODUCTS.md``)::

    <code>_<version>_<YYYYMMDDTHHMMSS>_<obs>_<kind>.csv     # most codes
    <code>_<version>_<obs>_<YYYYMMDD>_<kind>.csv            # RABAT3: observatory tag first
    <code>_<version>[_<obs>]_<kind>.csv                     # per-code metadata (frc_info...), no date
    <input stem>.jpg | .png                                 # quicklooks

Which ``<kind>`` exist and which shape each takes is data: the ``files`` of formats.yaml and of a
site's formats folder (:mod:`hfc_tasks.catalogue.formats`); :func:`parse_product_name` asks them.

The archive keeps the public HFC FTP tree, which the HFC clients already know::

    <root>/<frc>/results/<YYYY>/<csv files>
    <root>/<frc>/images/full/<observatory>/<instrument>/<YYYY>/<quicklooks>

and our own manifest of each (FRC, night) beside it (never inside ``results/``), in a folder
per FRC: FRCs that share an archive folder (a tracker beside its detector: ``archive_name``)
each have their own manifest and never read or rewrite another FRC's::

    <root>/<archive_name>/manifests/<frc>/<YYYYMMDD>.json

(Before issue 16 it was ``<root>/<archive_name>/manifests/<YYYYMMDD>.json``, one per folder:
see :func:`legacy_manifest_relpath`.)
"""

from __future__ import annotations

import datetime as dt
import posixpath

from hfc_tasks.catalogue.formats import KNOWN, Formats
from hfc_tasks.product_names import (  # noqa: F401 - re-exported: callers name them products.X
    QUICKLOOK,
    QUICKLOOK_SUFFIXES,
    ProductName,
    ProductNameError,
    check_plain_name,
)


def parse_product_name(name: str, known: Formats | None = None) -> ProductName:
    """Classify an HFC product file by its name, with the file kinds of ``known`` (a
    :class:`hfc_tasks.catalogue.formats.Formats`: the registry's, with its site formats) or of
    the packaged presets."""
    return (known or KNOWN).classify(name)


def night_key(night: dt.date) -> str:
    """``2024-03-01`` → ``20240301``: the key of a night in job names, folders and manifests."""
    return night.strftime("%Y%m%d")


def parse_night(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD`` or ``YYYYMMDD``; raise a ValueError that names the bad value."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except (ValueError, AttributeError):
            continue
    raise ValueError(f"night {text!r} is not a date (expected YYYY-MM-DD or YYYYMMDD)")


def night_of_run(night_param, interval_start) -> dt.date:
    """The night a DAG run works on, the one rule of the re-run contract: its ``night`` param
    (run conf) when given, else the UTC day its data interval starts (a datetime, a date or an
    ISO string as the REST API gives it). A ValueError that says what is missing otherwise.
    Every stage, the status page, the notifier and the listener read the night through this."""
    if night_param:
        return parse_night(str(night_param))
    if interval_start is None or interval_start == "":
        raise ValueError("this run has no data interval and no 'night' param: cannot tell which night")
    if isinstance(interval_start, str):
        interval_start = dt.datetime.fromisoformat(interval_start.replace("Z", "+00:00"))
    if isinstance(interval_start, dt.datetime):
        return (interval_start.astimezone(dt.UTC) if interval_start.tzinfo else interval_start).date()
    return interval_start


def run_dir(products_root: str, frc: str, night: dt.date) -> str:
    """The FRC's run folder on the cluster for one night: ``<products>/<frc>/<YYYYMMDD>``."""
    return posixpath.join(products_root, frc, night_key(night))


def job_name(frc: str, night: dt.date) -> str:
    """SLURM job name of one FRC night: ``hfc.<frc>.<YYYYMMDD>`` (how a job is found again)."""
    return f"hfc.{frc}.{night_key(night)}"


def output_name(job: str, job_id: str = "%j") -> str:
    """A job's SLURM output file in its run folder: ``<job name>.<job id>.out`` (``%j``: the
    placeholder sbatch fills in)."""
    return f"{job}.{job_id}.out"


def output_path(products_root: str, frc: str, night: dt.date, job_id: str) -> str:
    """Where the SLURM output of job ``job_id`` of (FRC, night) is on the cluster."""
    return posixpath.join(run_dir(products_root, frc, night), output_name(job_name(frc, night), job_id))


def manifest_relpath(archive_name: str, frc: str, night: dt.date) -> str:
    """The manifest of one (FRC, night), relative to the archive root:
    ``<archive_name>/manifests/<frc>/<YYYYMMDD>.json``, whatever folder the FRC archives into."""
    return posixpath.join(archive_name, "manifests", frc, f"{night_key(night)}.json")


def legacy_manifest_relpath(archive_name: str, frc: str, night: dt.date) -> str | None:
    """Where the manifest of (FRC, night) was before it had a folder per FRC, when it may still
    be read there: only for an FRC that archives into its own folder (``archive_name`` is its
    name). In a shared folder the old file may hold another FRC's entries: never read."""
    if archive_name != frc:
        return None
    return posixpath.join(archive_name, "manifests", f"{night_key(night)}.json")


def archive_relpath(
    archive_name: str,
    product: ProductName,
    night: dt.date,
    *,
    observatory: str,
    instrument: str,
) -> str:
    """Where a product lives in the archive tree, relative to the archive root.

    The year comes from the product's own date when its name has one (HFC files are
    filed by observation year), else from the night.
    """
    year = product.year or f"{night.year:04d}"
    if product.kind == QUICKLOOK:
        return posixpath.join(
            archive_name, "images", "full", observatory, instrument, year, product.name
        )
    return posixpath.join(archive_name, "results", year, product.name)


def url_join(base: str, relpath: str) -> str:
    """Join a public URL (or folder) base and a relative archive path with single slashes."""
    return base.rstrip("/") + "/" + relpath.lstrip("/")
