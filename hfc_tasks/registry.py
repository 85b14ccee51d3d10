"""The registry: which sites exist and which FRCs run there (``config/registry.yaml``).

Pure logic, no Airflow import: the DAG file, the CLI and the tests all read the registry
through :func:`load_registry`, so a typo in the YAML fails the same way everywhere, with
the file and the key that is wrong.

Values in a site may use ``${NAME}`` to take an environment variable; ``HFC_SITE_DIR``
defaults to ``<repo>/.site`` so the local embedded site works without any setting.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# formats.yaml, read once for the readers, the loader and the registry (no pandas: the DAG file
# parses the registry).
from hfc_tasks.catalogue import formats

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGISTRY = REPO_ROOT / "config" / "registry.yaml"

# FRC names reach job names, folder names and remote shells: keep them plain.
FRC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Placeholders a command template may use; each value is shell-quoted when rendered.
COMMAND_FIELDS = (
    "start", "end", "run_dir", "night", "frc_root", "cadence", "archive_url",
    # for codes that want the dates in pieces (SoSoFT: day month year; RABAT3: YYYYMMDD)
    "year", "month", "day", "start_yyyymmdd", "end_yyyymmdd",
)
# Extra #SBATCH options an FRC may ask for; anything else is refused (they reach sbatch).
ALLOWED_SBATCH_OPTIONS = {
    "--nodes",
    "--ntasks",
    "--ntasks-per-node",
    "--qos",
    "--account",
    "--constraint",
    "--exclusive",
    "--mem-per-cpu",
    "--tmp",
    "--begin",
    "--nice",
    "--requeue",  # the FRC allows SLURM to rerun its job after a node failure (default: --no-requeue)
}
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_TIME_LIMIT = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_MEMORY = re.compile(r"^\d+[KMGT]?$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.,:=/@+-]+$")


def _yaml(text: str):
    """Safe YAML load, with libyaml's C parser when present: the DAG file reads the registry
    at every parse, and the pure-Python parser cost ~60 ms of it."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders only


class RegistryError(ValueError):
    """The registry file is missing or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlurmResources(_Strict):
    partition: str | None = None
    time: str = "01:00:00"
    mem: str = "512M"
    cpus: int = Field(default=1, ge=1, le=256)
    extra: list[str] = Field(default_factory=list)

    @property
    def time_limit_seconds(self) -> int:
        """The ``time`` limit in seconds (SLURM forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)."""
        days, _, rest = self.time.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if days:  # D-H, D-H:M, D-H:M:S
            h, m, sec = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            h, m, sec = parts
        else:  # M or M:S
            h, (m, sec) = 0, (parts + [0])[:2]
        return int(days or 0) * 86400 + h * 3600 + m * 60 + sec

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _TIME_LIMIT.match(v):
            raise ValueError(f"time limit {v!r} is not a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str) -> str:
        if not _MEMORY.match(v):
            raise ValueError(f"memory {v!r} is not a SLURM size such as 512M or 4G")
        return v

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: str | None) -> str | None:
        if v is not None and not _PLAIN_VALUE.match(v):
            raise ValueError(f"partition {v!r} has characters SLURM partitions never have")
        return v

    @field_validator("extra")
    @classmethod
    def _extra(cls, options: list[str]) -> list[str]:
        for opt in options:
            name, _, value = opt.partition("=")
            if name not in ALLOWED_SBATCH_OPTIONS:
                raise ValueError(
                    f"sbatch option {opt!r} is not allowed; allowed: {sorted(ALLOWED_SBATCH_OPTIONS)}"
                )
            if value and not _PLAIN_VALUE.match(value):
                raise ValueError(f"sbatch option {opt!r} has a value that is not plain")
        return options


class Notify(_Strict):
    """The site's notification connections: a mail through ``smtp_conn_id`` (an Airflow ``smtp``
    connection, the smtp provider's SmtpNotifier) to ``to``, and/or a chat message through
    ``apprise_conn_id`` (an ``apprise`` connection, the apprise provider's AppriseNotifier)."""

    smtp_conn_id: str | None = None
    to: list[str] = Field(default_factory=list)
    # None: the connection's ``from_email`` extra.
    from_email: str | None = None
    apprise_conn_id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Notify:
        if not (self.smtp_conn_id or self.apprise_conn_id):
            raise ValueError("notify names no connection: give smtp_conn_id (with to) and/or apprise_conn_id")
        if self.smtp_conn_id and not self.to:
            raise ValueError(f"notify: smtp_conn_id {self.smtp_conn_id!r} needs 'to' (a list of mail addresses)")
        if self.to and not self.smtp_conn_id:
            raise ValueError("notify: 'to' is given but no smtp_conn_id to send the mail through")
        bad = [a for a in self.to if "@" not in a or any(c.isspace() or c in ",;<>" for c in a)]
        if bad:
            raise ValueError(f"notify: 'to' has entries that are not one plain mail address each: {bad}")
        return self


class ArchiveDirect(_Strict):
    """How the cluster account reaches the archive in ``archive_mode: direct`` (issue 15): the
    cluster pushes the night with OpenSSH, so these are paths and names *on the cluster*."""

    # The archive host as the cluster sees it (may differ from what the workers reach).
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    login: str
    # Private key on the cluster account; on the archive its authorized_keys line restricts it to
    # SFTP inside the archive tree.
    key_file: str
    # known_hosts file on the cluster holding the archive's pinned host key (StrictHostKeyChecking=yes).
    known_hosts: str

    @field_validator("host", "login", "key_file", "known_hosts")
    @classmethod
    def _plain(cls, v: str) -> str:
        # These reach a remote shell command line: no shell characters, no options.
        if not v or v.startswith("-") or not re.match(r"^[A-Za-z0-9._/@:+-]+$", v):
            raise ValueError(f"archive_direct value {v!r} must be a plain host, user or path")
        return v


def catalogue_deadline_offset(value: str) -> dt.timedelta:
    """The time after the night's start (its data interval start, 00:00 UTC) by which the night
    must be in the catalogue: one day (the night itself) plus ``HH:MM[:SS]`` of the next day."""
    try:
        t = dt.time.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"catalogue_deadline {value!r} is not a UTC time of day HH:MM (or HH:MM:SS)") from None
    if len(value) not in (5, 8) or t.tzinfo is not None or t.microsecond:
        raise ValueError(f"catalogue_deadline {value!r} is not a UTC time of day HH:MM (or HH:MM:SS)")
    return dt.timedelta(days=1, hours=t.hour, minutes=t.minute, seconds=t.second)


class Site(_Strict):
    description: str = ""
    cluster_conn_id: str = "hfc_cluster"
    archive_conn_id: str = "hfc_archive"
    catalogue_conn_id: str = "hfc_catalogue"
    # Where FRC run folders live on the cluster: <products_root>/<frc>/<YYYYMMDD>/
    products_root: str
    # Where FRC programs are installed on the cluster (``{frc_root}`` in commands).
    frc_root: str
    # Root of the HFC archive tree on the archive host (absolute path of its SFTP account).
    archive_root: str
    # Public location of archive_root: clients open QCLK_URL + "/" + QCLK_FNAME.
    public_url_base: str
    default_partition: str | None = None
    # Seconds between two FRC submissions to the cluster (the old cron used one minute).
    stagger_seconds: int = Field(default=0, ge=0)
    # Airflow pools: at most N tasks talk to the login node / the archive at once.
    cluster_pool: str = "hfc_cluster"
    cluster_pool_slots: int = Field(default=4, ge=1)
    archive_pool: str = "hfc_archive"
    archive_pool_slots: int = Field(default=4, ge=1)
    # Who hears of a failed task and of a missed catalogue deadline (the providers' notifiers);
    # None = no notifications (the local site's default).
    notify: Notify | None = None
    # "HH:MM" (or "HH:MM:SS") UTC on the day after the night: by then the night of every FRC is
    # in the catalogue, else the DAG run's DeadlineAlert tells ``notify``. None = no deadline.
    catalogue_deadline: str | None = None
    # Never hang: a `wait` whose cluster stays unreachable (connection refused/reset, timeouts,
    # sacct failing) this many seconds fails with the last error (configuration errors fail at once).
    cluster_unreachable_seconds: int = Field(default=3600, ge=1)
    # A `wait` gives up when its job has not ended within the FRC's SLURM time limit plus this
    # margin (time spent queued, plus slack): the deferral's timeout. The job is left as it is.
    wait_margin_seconds: int = Field(default=43200, ge=0)
    # Delay before a failed task's first retry (then doubled, at most 30 min): transient faults
    # (a network cut, a restarted database) are retried this long after.
    retry_delay_seconds: int = Field(default=120, ge=1)
    # How `archive` copies a night (issue 15). "relay" (the default, and the only mode when the
    # cluster cannot reach the archive): the worker reads the cluster and writes the archive over
    # SFTP. "direct": the cluster account pushes the night with OpenSSH (``archive_direct``), the
    # task checks sha256 on both ends; manifest and delete-after-verify are the same.
    archive_mode: Literal["relay", "direct"] = "relay"
    archive_direct: ArchiveDirect | None = None
    # Reprocessing campaigns (issue 15) submit SLURM job arrays: at most this many array tasks per
    # sbatch (keep it below the cluster's MaxArraySize), and ``%N``: at most N of a campaign's
    # array tasks running at once (None: as many as SLURM gives).
    campaign_array_max: int = Field(default=1000, ge=1)
    campaign_array_throttle: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _archive_mode(self) -> Site:
        if self.archive_mode == "direct" and self.archive_direct is None:
            raise ValueError("archive_mode direct needs archive_direct: {host, port, login, key_file, known_hosts} "
                             "(how the cluster account reaches the archive)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "notify_conn_id" in data:
            raise ValueError("notify_conn_id was replaced by notify: {smtp_conn_id: ..., to: [...], "
                             "apprise_conn_id: ...} (smtp and apprise connections; see docs/runbook.md)")
        return data

    @field_validator("catalogue_deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        if v is not None:
            catalogue_deadline_offset(v)
        return v

    def airflow_pools(self) -> dict[str, dict]:
        """The site's Airflow pools in ``airflow pools import``'s format: the one source of their
        names and sizes for the local stack, the compose stack and a production deployment."""
        return {
            self.cluster_pool: {"slots": self.cluster_pool_slots, "include_deferred": False,
                                "description": "SSH sessions to the cluster's login node"},
            self.archive_pool: {"slots": self.archive_pool_slots, "include_deferred": False,
                                "description": "sessions to the HFC archive"},
        }


class Frc(_Strict):
    name: str
    version: str
    feature: str
    observatory: str
    instrument: str
    # Which of its files go to which catalogue tables: a product format of
    # hfc_tasks/catalogue/formats.yaml, and per file kind overrides (kind -> spec of that file,
    # or "none" to leave a kind out), so an FRC writing known kinds needs no code.
    product_format: str = "sdoss"
    products: dict[str, str] = Field(default_factory=dict)
    archive_name: str | None = None
    command: str
    cadence_seconds: int = Field(default=14400, ge=1)
    slurm: SlurmResources = Field(default_factory=SlurmResources)
    lag_nights: int = Field(default=0, ge=0, le=366)
    after: list[str] = Field(default_factory=list)
    rewrites: bool = False
    # Files of the run folder that are not HFC product names (a typo, .csv.gz, a space...): they
    # stay on the cluster and are listed in the manifest; "fail" fails the archive task naming
    # them (the default), "warn" logs a warning per file and lets the night go on.
    unknown_files: Literal["fail", "warn"] = "fail"
    enabled: bool = True
    # Sites that run this FRC (None: every site). The HFC V12 codes run in production only.
    sites: list[str] | None = None
    doc: str = ""

    @field_validator("name", "archive_name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and not FRC_NAME.match(v):
            raise ValueError(f"FRC name {v!r} must match [a-z0-9][a-z0-9-]* (it reaches shells and paths)")
        return v

    @field_validator("product_format")
    @classmethod
    def _product_format(cls, v: str, info: ValidationInfo) -> str:
        known = _formats_of(info)
        if v not in known.formats:
            raise ValueError(f"product_format {v!r} is not in the formats (presets and the site's formats_dir; "
                             f"known: {', '.join(sorted(known.formats))})")
        return v

    @field_validator("products")
    @classmethod
    def _products(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        known = _formats_of(info)
        for file_kind, spec in v.items():
            if file_kind not in known.files:
                raise ValueError(f"products: {file_kind!r} is not a declared file kind (formats 'files'; "
                                 f"declared: {', '.join(known.files)})")
            if spec != "none" and spec not in known.kinds:
                raise ValueError(f"products: {file_kind}: {spec!r} is not a kind of the formats "
                                 f"(known: {', '.join(sorted(known.kinds))}, or none)")
        return v

    @model_validator(mode="after")
    def _products_resolve(self, info: ValidationInfo) -> Frc:
        try:
            _formats_of(info).resolve(self.product_format, self.products or None)
        except formats.FormatError as exc:
            raise ValueError(str(exc)) from None
        return self

    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        for field in re.findall(r"\{([^{}]*)\}", v):
            if field not in COMMAND_FIELDS:
                raise ValueError(f"command placeholder {{{field}}} is unknown; use {COMMAND_FIELDS}")
        return v

    @property
    def archive_dir(self) -> str:
        return self.archive_name or self.name

    def window(self, night: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The observation window handed to the FRC for ``night`` (UTC, end exclusive)."""
        start = dt.datetime.combine(night - dt.timedelta(days=self.lag_nights), dt.time(), dt.UTC)
        return start, start + dt.timedelta(days=1)

    def render_command(self, *, night: dt.date, run_dir: str, frc_root: str, archive_url: str = "") -> str:
        """The shell command line of one night; every substituted value is shell-quoted."""
        start, end = self.window(night)
        values = {
            "start": start.strftime("%Y-%m-%dT%H:%M:%S"),
            "end": end.strftime("%Y-%m-%dT%H:%M:%S"),
            "run_dir": run_dir,
            "night": night.isoformat(),
            "frc_root": frc_root,
            "cadence": str(self.cadence_seconds),
            "archive_url": archive_url,
            "year": f"{start:%Y}",
            "month": f"{start:%m}",
            "day": f"{start:%d}",
            "start_yyyymmdd": f"{start:%Y%m%d}",
            "end_yyyymmdd": f"{end:%Y%m%d}",
        }
        return self.command.format(**{k: shlex.quote(v) for k, v in values.items()})


class Registry(_Strict):
    default_site: str
    sites: dict[str, Site]
    frcs: list[Frc]
    # A folder of site formats files (*.yaml) merged over the packaged presets of formats.yaml:
    # where a site declares its own file kinds, kinds and product formats (docs/catalogue.md).
    # Relative to the registry file's folder; ${NAME} expanded.
    formats_dir: str | None = None
    _formats: formats.Formats = PrivateAttr(default=formats.KNOWN)

    @property
    def formats(self) -> formats.Formats:
        """The formats this registry's FRCs are read with: the presets and the site's formats_dir."""
        return self._formats

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        if self.default_site not in self.sites:
            raise ValueError(f"default_site {self.default_site!r} is not one of {sorted(self.sites)}")
        names = [f.name for f in self.frcs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"FRC names appear twice: {dupes}")
        for frc in self.frcs:
            for dep in frc.after:
                if dep not in names:
                    raise ValueError(f"FRC {frc.name!r}: 'after' names unknown FRC {dep!r}")
            for site in frc.sites or ():
                if site not in self.sites:
                    raise ValueError(f"FRC {frc.name!r}: 'sites' names unknown site {site!r}")
        order = {f.name: f.after for f in self.frcs}
        seen: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ValueError(f"'after' dependencies form a cycle: {' -> '.join((*path, name))}")
            if name in seen:
                return
            for dep in order[name]:
                visit(dep, (*path, name))
            seen.add(name)

        for name in order:
            visit(name, ())
        return self

    def site(self, name: str | None = None) -> Site:
        name = name or os.environ.get("HFC_SITE") or self.default_site
        try:
            return self.sites[name]
        except KeyError:
            raise RegistryError(f"site {name!r} is not in the registry (known: {sorted(self.sites)})") from None

    def frc(self, name: str) -> Frc:
        for f in self.frcs:
            if f.name == name:
                return f
        raise RegistryError(f"FRC {name!r} is not in the registry")

    @property
    def enabled_frcs(self) -> list[Frc]:
        """The enabled FRCs that run on the current site (HFC_SITE or default_site)."""
        return self.frcs_for()

    def frcs_for(self, site: str | None = None) -> list[Frc]:
        name = site or os.environ.get("HFC_SITE") or self.default_site
        return [f for f in self.frcs if f.enabled and (f.sites is None or name in f.sites)]


def _formats_of(info: ValidationInfo) -> formats.Formats:
    return (info.context or {}).get("formats") or formats.KNOWN


def formats_folder(registry_path: Path, value: str | None) -> Path | None:
    """The registry's formats_dir as a path (relative to the registry file's folder)."""
    if not value:
        return None
    folder = Path(value)
    return folder if folder.is_absolute() else registry_path.parent / folder


def _expand(value, env: dict[str, str]):
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise RegistryError(f"${{{m.group(1)}}} is used in the registry but not set")
            return env[m.group(1)]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and validate the registry; errors name the file and the offending key."""
    path = Path(path or os.environ.get("HFC_REGISTRY") or DEFAULT_REGISTRY)
    try:
        raw = _yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"registry file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"registry file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"registry file {path} must hold a mapping at the top level")
    # .site may be a link to the real state folder (see hfc_tasks.ops.localsite.layout): resolve it.
    env = {"HFC_SITE_DIR": os.path.realpath(REPO_ROOT / ".site"), "HFC_REPO": str(REPO_ROOT), **os.environ}
    # Only sites are expanded: FRC commands keep their {placeholders} for render_command.
    raw["sites"] = _expand(raw.get("sites", {}), env)
    known = formats.KNOWN
    if raw.get("formats_dir") is not None:
        raw["formats_dir"] = _expand(str(raw["formats_dir"]), env)
        try:
            known = formats.load_formats(site_dir=formats_folder(path, raw["formats_dir"]))
        except formats.FormatError as exc:
            raise RegistryError(f"registry file {path}: formats_dir: {exc}") from None
    try:
        registry = Registry.model_validate(raw, context={"formats": known})
        registry._formats = known
        return registry
    except ValidationError as exc:
        lines = [f"registry file {path} is invalid:"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise RegistryError("\n".join(lines)) from None
