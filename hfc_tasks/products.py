"""HFC product files: names, kinds, nights and the archive layout.

Pure logic, no Airflow: the DAG, the CLI, the tests and the benchmarks share it.

File names follow the HFC convention (see docs and ``HFC_PRODUCTS.md``)::

    <code>_<version>_<YYYYMMDDTHHMMSS>_<obs>_<kind>.csv     # most codes
    <code>_<version>_<obs>_<YYYYMMDD>_<kind>.csv            # RABAT3: observatory tag first
    <code>_<version>[_<obs>]_{frc_info,observatory}.csv     # per-code metadata, no date
    <input stem>.jpg | .png                                 # quicklooks

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
import re
from dataclasses import dataclass

# Kinds of product a FRC writes. ``quicklook`` is an image; the rest are CSV tables.
TABLE_KINDS = ("frc_info", "observatory", "init", "feat", "track", "obs", "pp", "frc")
QUICKLOOK = "quicklook"
QUICKLOOK_SUFFIXES = (".jpg", ".jpeg", ".png")

# A product name is a plain file name: letters, digits and . _ - + only. Anything else
# (a path separator, "..", a space, a shell metacharacter) is refused before it reaches a
# remote path or a shell, so a hostile name in a run folder can never write outside the tree.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DATED = re.compile(
    r"^(?P<code>[A-Za-z0-9]+)_(?P<version>[A-Za-z0-9]+)_(?P<stamp>\d{8}(?:T\d{4,6})?)_"
    r"(?P<obs>[A-Za-z0-9]+)_(?P<kind>[a-z]+)\.csv$",
    re.IGNORECASE,
)
_DATED_OBS_FIRST = re.compile(
    r"^(?P<code>[A-Za-z0-9]+)_(?P<version>[A-Za-z0-9]+)_(?P<obs>[A-Za-z][A-Za-z0-9]*)_"
    r"(?P<stamp>\d{8}(?:T\d{4,6})?)_(?P<kind>[a-z]+)\.csv$",
    re.IGNORECASE,
)
_METADATA = re.compile(
    r"^(?P<code>[A-Za-z0-9]+)_(?P<version>[A-Za-z0-9]+)(?:_(?P<obs>[A-Za-z0-9]+))?_"
    r"(?P<kind>frc_info|observatory)\.csv$",
    re.IGNORECASE,
)


class ProductNameError(ValueError):
    """A file name that is not a valid HFC product name."""


@dataclass(frozen=True)
class ProductName:
    name: str
    kind: str  # one of TABLE_KINDS or QUICKLOOK
    code: str | None = None
    version: str | None = None
    observatory_tag: str | None = None
    stamp: str | None = None  # YYYYMMDD[THHMMSS] from the name, when it has one

    @property
    def year(self) -> str | None:
        return self.stamp[:4] if self.stamp else None


def check_plain_name(name: str) -> str:
    """Return ``name`` if it is a plain file name, else raise naming it."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or ".." in name:
        raise ProductNameError(
            f"refused product name {name!r}: only letters, digits and . _ - + are allowed "
            "(no path separators, '..', spaces or shell characters)"
        )
    return name


def parse_product_name(name: str) -> ProductName:
    """Classify an HFC product file by its name."""
    check_plain_name(name)
    lower = name.lower()
    if lower.endswith(QUICKLOOK_SUFFIXES):
        return ProductName(name=name, kind=QUICKLOOK)
    for pattern in (_METADATA, _DATED, _DATED_OBS_FIRST):
        m = pattern.match(name)
        if m:
            kind = m.group("kind").lower()
            if kind not in TABLE_KINDS:
                continue
            groups = m.groupdict()
            return ProductName(
                name=name,
                kind=kind,
                code=groups["code"].lower(),
                version=groups["version"],
                observatory_tag=groups.get("obs"),
                stamp=groups.get("stamp"),
            )
    raise ProductNameError(
        f"{name!r} is not an HFC product name "
        "(expected <code>_<version>_<YYYYMMDDTHHMMSS>_<obs>_<kind>.csv, a metadata file "
        "<code>_<version>[_<obs>]_{frc_info,observatory}.csv, or a .jpg/.png quicklook)"
    )


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
