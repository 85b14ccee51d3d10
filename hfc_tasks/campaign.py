"""Reprocessing campaigns (issue 15): one FRC over a range of nights, submitted to SLURM as job
arrays (one array task per night), adopted and never submitted twice, with progress and ETA.

Pure logic, no Airflow and no SSH: the command lines and scripts are built here, the caller runs
them on the cluster's login node (``SlurmHook.check``, or the triggerer's poller for the states)
and hands the answers back. The SLURM side of each night is the nightly job's: the same command
(:meth:`hfc_tasks.registry.Frc.render_command`), run folder (:func:`hfc_tasks.products.run_dir`),
resources and output file ``<night job name>.<job id>.out`` in the run folder, where the night's
job id is its array task id ``<array job id>_<index>`` (so ``archive`` and the status pages find a
campaign night's output as they find a nightly one's).

Public API
==========

``Campaign(frc, first, last, campaign_id, version=None)``
    A campaign: FRC ``frc`` from night ``first`` to night ``last`` (both included), optionally
    as FRC version ``version`` (provenance: the SLURM side does not use it), named
    ``campaign_id`` (letters, digits, ``-``/``_``: it is part of job names and folders).
    ``.nights`` lists its nights.

``plan_chunks(campaign, site) -> list[Chunk]``
    Its nights cut into array chunks of at most ``site.campaign_array_max`` tasks, labelled
    ``"0"``, ``"1"``, ... ``plan_retry(campaign, nights, attempt, site)`` does the same for some
    nights again (a failed night retried alone), labelled ``"r<attempt>-0"``, ... (new job names:
    a chunk's name is never submitted twice).

``Chunk`` (frc, campaign_id, label, nights)
    ``.job_name`` ``hfc.<frc>.campaign.<campaign id>.<label>`` (deterministic: how the chunk is
    found again), ``.array_spec(throttle)`` (``0-(n-1)[%throttle]``), ``.night_of(index)``,
    ``.index_of(night)``, ``.task_id(array_job_id, night)`` (``<array job id>_<index>``: the
    night's job id), ``.task_ids(array_job_id)`` (night → task id).

``chunk_submission(chunk, frc, site, *, since=None) -> Submission(script, stdin, timeout)``
    The remote script that adopts or submits the chunk, serialised by ``flock`` on the login node
    as the nightly submit is (:func:`hfc_tasks.slurm.submit_script`): a live job with the chunk's
    name is adopted; else the one this campaign already submitted (the record beside the lock,
    whatever its state); else (``since``: a date no later than the campaign's first submission)
    one accounting knows since then; else ``sbatch --array`` with the chunk's batch script
    (:func:`hfc_tasks.slurm.array_batch_script`) on stdin. Run it as
    ``hook.check(sub.script, stdin=sub.stdin, timeout=sub.timeout)`` and read the answer with
    :func:`hfc_tasks.slurm.parse_submit`: ``(ADOPT|SUBMIT, array job id)`` or ``(WAIT, seconds)``
    (the site's ``stagger_seconds``).

``log_dir(site, campaign)``
    The campaign's folder on the cluster, ``<products_root>/.hfc-campaigns/<frc>/<campaign id>``,
    with what SLURM itself writes per task (``<chunk job name>.<array job id>_<index>.out``).

States (the SLURM commands: :mod:`hfc_tasks.slurm`)
    ``slurm.job_states([slurm.array_ref(array_job_id), ...])`` (run with ``run_plan``/``arun_plan``)
    reads every task of the chunks with one ``sacct``; in the triggerer, subscribe the shared
    poller to ``slurm.array_ref(id)`` (every task) or to a task id (one night):
    :class:`hfc_tasks.provider.triggers.SlurmArrayTrigger` / ``SlurmJobTrigger``.
    ``night_statuses(chunk, array_job_id, found)`` turns the answer into night → status (``None``:
    SLURM knows nothing of it yet); ``merge_statuses(*maps)`` lays a retry's over the first.

``progress(statuses, *, throttle=None, parallelism=None) -> Progress``
    Counts done / failed / cancelled / running / pending, the failed nights with their reason
    (``JobStatus.describe()``), the mean run time of the done nights and an ETA in seconds.

Cancel
    ``slurm.cancel_pending_command(array_job_id)`` for each chunk: the tasks not yet started are
    cancelled, running and ended ones are kept (exit 1 when nothing of the array is queued).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hfc_tasks import products, slurm
from hfc_tasks.registry import Frc, Site

CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FRC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LABEL = re.compile(r"^(?:\d+|r\d+-\d+)$")

# States that are neither pending nor ended: the task holds a slot (for the ETA).
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"})


class CampaignError(ValueError):
    """A campaign that cannot be: bad nights, id or chunk."""


@dataclass(frozen=True)
class Campaign:
    frc: str
    first: dt.date
    last: dt.date
    campaign_id: str
    version: str | None = None

    def __post_init__(self) -> None:
        if not _FRC_NAME.match(self.frc or ""):
            raise CampaignError(f"campaign {self.campaign_id!r}: FRC name {self.frc!r} is not plain")
        if not CAMPAIGN_ID.match(self.campaign_id or ""):
            raise CampaignError(f"campaign id {self.campaign_id!r}: letters, digits, '-' and '_' only "
                                "(at most 64, first a letter or digit): it is part of job names and folders")
        for what, night in (("first", self.first), ("last", self.last)):
            if type(night) is not dt.date:
                raise CampaignError(f"campaign {self.campaign_id}: {what} night {night!r} is not a date")
        if self.last < self.first:
            raise CampaignError(f"campaign {self.campaign_id}: last night {self.last} is before the first {self.first}")

    @property
    def nights(self) -> tuple[dt.date, ...]:
        days = (self.last - self.first).days
        return tuple(self.first + dt.timedelta(days=i) for i in range(days + 1))


def default_campaign_id(run_id: str) -> str:
    """The id of a campaign started without one: its DAG run's id made plain
    (``manual__2026-12-03T08:02:59.228013+00:00`` -> ``manual-20261203T080259228013``)."""
    kind, _, stamp = run_id.partition("__")
    digits = re.sub(r"[^0-9T]", "", stamp.split("+")[0]) if stamp else ""
    plain = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{kind}-{digits}" if digits else run_id).strip("-_")
    if not plain or not CAMPAIGN_ID.match(plain[:64]):
        raise CampaignError(f"run id {run_id!r} gives no plain campaign id: name the campaign")
    return plain[:64]


def chunk_job_name(frc: str, campaign_id: str, label: str) -> str:
    """SLURM job name of a campaign's chunk: ``hfc.<frc>.campaign.<campaign id>.<label>``."""
    return f"hfc.{frc}.campaign.{campaign_id}.{label}"


@dataclass(frozen=True)
class Chunk:
    """One ``sbatch --array`` of a campaign: array task ``i`` runs night ``nights[i]``."""

    frc: str
    campaign_id: str
    label: str
    nights: tuple[dt.date, ...]
    _index: dict[dt.date, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise CampaignError(f"chunk label {self.label!r}: expected <n> or r<attempt>-<n>")
        if not self.nights:
            raise CampaignError(f"chunk {self.label} of campaign {self.campaign_id}: no nights")
        if len(set(self.nights)) != len(self.nights):
            raise CampaignError(f"chunk {self.label} of campaign {self.campaign_id}: a night appears twice")
        if any(type(n) is not dt.date for n in self.nights):
            raise CampaignError(f"chunk {self.label} of campaign {self.campaign_id}: nights must be dates")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.nights)})

    @property
    def job_name(self) -> str:
        return chunk_job_name(self.frc, self.campaign_id, self.label)

    def array_spec(self, throttle: int | None = None) -> str:
        """``--array`` of this chunk: ``0-(n-1)``, ``%throttle`` when given."""
        return slurm.array_spec(len(self.nights), throttle)

    def night_of(self, index: int) -> dt.date:
        if not 0 <= index < len(self.nights):
            raise CampaignError(f"chunk {self.job_name} has no array index {index} (0-{len(self.nights) - 1})")
        return self.nights[index]

    def index_of(self, night: dt.date) -> int:
        try:
            return self._index[night]
        except KeyError:
            raise CampaignError(f"night {night} is not in chunk {self.job_name}") from None

    def task_id(self, array_job_id: str, night: dt.date) -> str:
        """The night's job id: its array task ``<array job id>_<index>``."""
        return slurm.task_id(array_job_id, self.index_of(night))

    def task_ids(self, array_job_id: str) -> dict[dt.date, str]:
        return {n: slurm.task_id(array_job_id, i) for i, n in enumerate(self.nights)}


def _chunks(frc: str, campaign_id: str, nights: Sequence[dt.date], size: int, prefix: str) -> list[Chunk]:
    if size < 1:
        raise CampaignError(f"array chunks need at least one task, not {size}")
    return [Chunk(frc, campaign_id, f"{prefix}{k}", tuple(nights[i : i + size]))
            for k, i in enumerate(range(0, len(nights), size))]


def plan_chunks(campaign: Campaign, site: Site) -> list[Chunk]:
    """The campaign's nights in order, cut into chunks of at most ``site.campaign_array_max``."""
    return _chunks(campaign.frc, campaign.campaign_id, campaign.nights, site.campaign_array_max, "")


def plan_retry(campaign: Campaign, nights: Iterable[dt.date], attempt: int, site: Site) -> list[Chunk]:
    """Chunks that run ``nights`` of the campaign again (``attempt`` ≥ 1: one per retry, so that
    its job names are new; a chunk's name is never submitted twice)."""
    if not isinstance(attempt, int) or attempt < 1:
        raise CampaignError(f"retry attempt {attempt!r} must be an integer ≥ 1")
    wanted = sorted(set(nights))
    outside = [n for n in wanted if not campaign.first <= n <= campaign.last]
    if outside:
        raise CampaignError(f"nights {[str(n) for n in outside]} are not in campaign {campaign.campaign_id} "
                            f"({campaign.first} to {campaign.last})")
    if not wanted:
        raise CampaignError(f"campaign {campaign.campaign_id}: no night to retry")
    return _chunks(campaign.frc, campaign.campaign_id, wanted, site.campaign_array_max, f"r{attempt}-")


def log_dir(site: Site, campaign: Campaign | Chunk) -> str:
    """``<products_root>/.hfc-campaigns/<frc>/<campaign id>``: what SLURM writes per array task."""
    return posixpath.join(site.products_root, ".hfc-campaigns", campaign.frc, campaign.campaign_id)


def array_tasks(chunk: Chunk, frc: Frc, site: Site) -> list[slurm.ArrayTask]:
    """Each night of the chunk as the nightly job would run it: run folder, job name, command."""
    if frc.name != chunk.frc:
        raise CampaignError(f"chunk {chunk.job_name} is of FRC {chunk.frc}, not {frc.name}")
    tasks = []
    for night in chunk.nights:
        run_dir = products.run_dir(site.products_root, frc.name, night)
        command = frc.render_command(night=night, run_dir=run_dir, frc_root=site.frc_root,
                                     archive_url=site.public_url_base)
        tasks.append(slurm.ArrayTask(night=night, run_dir=run_dir, job_name=products.job_name(frc.name, night),
                                     command=command))
    return tasks


@dataclass(frozen=True)
class Submission:
    """What to run on the login node to adopt or submit a chunk (module doc)."""

    job_name: str
    script: str
    stdin: str
    timeout: float


def submit_lock(site: Site) -> str:
    """The same lock file as the nightly submit: one submission to the cluster at a time."""
    return posixpath.join(site.products_root, ".hfc-submit.lock")


def chunk_submission(chunk: Chunk, frc: Frc, site: Site, *, since: dt.date | dt.datetime | None = None,
                     lock_wait: int = slurm.SUBMIT_LOCK_WAIT) -> Submission:
    """The adopt-or-submit script of a chunk (module doc) with its batch script and time bound."""
    sbatch = slurm.array_sbatch_command(
        job_name=chunk.job_name, log_dir=log_dir(site, chunk), count=len(chunk.nights),
        throttle=site.campaign_array_throttle, resources=frc.slurm, default_partition=site.default_partition,
    )
    script = slurm.submit_script(
        job_name=chunk.job_name, sbatch=sbatch, lock_file=submit_lock(site), stagger_seconds=site.stagger_seconds,
        attempt=f"campaign:{chunk.campaign_id}", lock_wait=lock_wait, since=since,
    )
    stdin = slurm.array_batch_script(array_tasks(chunk, frc, site), job_name=chunk.job_name)
    timeout = slurm.submit_timeout(lock_wait) + (slurm.SQUEUE_TIMEOUT if since is not None else 0)
    return Submission(job_name=chunk.job_name, script=script, stdin=stdin, timeout=timeout)


def night_output_path(site: Site, frc: str, night: dt.date, task: str) -> str:
    """The night's output file on the cluster for array task ``task`` (``<array job id>_<index>``)."""
    return products.output_path(site.products_root, frc, night, task)


def cancel_command(array_job_id: str) -> str:
    """Cancel what of a chunk has not started (:func:`hfc_tasks.slurm.cancel_pending_command`)."""
    return slurm.cancel_pending_command(array_job_id)


def night_statuses(chunk: Chunk, array_job_id: str,
                   found: Mapping[str, slurm.JobStatus]) -> dict[dt.date, slurm.JobStatus | None]:
    """Night → status of its array task from :func:`hfc_tasks.slurm.job_states`' answer (``None``:
    SLURM does not know the task yet)."""
    tasks = slurm.tasks_of(found, array_job_id, len(chunk.nights))
    return {night: tasks.get(i) for i, night in enumerate(chunk.nights)}


def merge_statuses(*maps: Mapping[dt.date, slurm.JobStatus | None]) -> dict[dt.date, slurm.JobStatus | None]:
    """Later maps win for the nights they know (a retry's status replaces the first run's)."""
    out: dict[dt.date, slurm.JobStatus | None] = {}
    for m in maps:
        for night, status in m.items():
            if status is not None or night not in out:
                out[night] = status
    return out


def parse_elapsed(text: str) -> float | None:
    """Seconds of a SLURM duration: ``[D-]HH:MM:SS``, ``MM:SS``, ``M:SS.mmm``; None if unreadable."""
    text = (text or "").strip()
    if not text or text in ("INVALID", "UNLIMITED"):
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + p
        return seconds + (int(days) * 86400 if days else 0)
    except ValueError:
        return None


def night_done(status: slurm.JobStatus | None) -> bool:
    """The night's array task completed (exit 0). squeue (accounting lagging) has no exit code:
    COMPLETED means exit 0 in SLURM."""
    return status is not None and status.state in slurm.SUCCESS_STATES and status.exit_code in (0, None)


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    pending: int
    failed_nights: dict[dt.date, str]  # night → why (JobStatus.describe())
    cancelled_nights: tuple[dt.date, ...]
    mean_run_seconds: float | None  # of the done nights
    parallelism: int
    eta_seconds: float | None  # None: no night done yet, nothing to measure with

    @property
    def finished(self) -> bool:
        return self.running == 0 and self.pending == 0

    def summary(self) -> str:
        eta = ("-" if self.eta_seconds is None else
               str(dt.timedelta(seconds=round(self.eta_seconds))))
        return (f"{self.done}/{self.total} done, {self.failed} failed, {self.cancelled} cancelled, "
                f"{self.running} running, {self.pending} pending; ETA {eta}")


def progress(statuses: Mapping[dt.date, slurm.JobStatus | None], *, throttle: int | None = None,
             parallelism: int | None = None) -> Progress:
    """Counts, failed nights with their reason and an ETA from night → status.

    The ETA: the work left (a pending night: the mean run time of the done nights; a running
    night: that mean less what it ran already) over the nights that run at once: ``parallelism``
    when given, else the array's ``throttle``, else the number running now (at least 1); never
    less than the longest remainder of a running night. None while no night is done.
    """
    done = failed = cancelled = running = pending = 0
    failed_nights: dict[dt.date, str] = {}
    cancelled_nights: list[dt.date] = []
    runs: list[float] = []
    running_for: list[float] = []
    for night in sorted(statuses):
        status = statuses[night]
        if status is None:
            pending += 1
        elif night_done(status):
            done += 1
            if (seconds := parse_elapsed(status.elapsed)) is not None:
                runs.append(seconds)
        elif status.state == "CANCELLED":
            cancelled += 1
            cancelled_nights.append(night)
        elif status.is_final:
            failed += 1
            failed_nights[night] = status.describe()
        elif status.state in RUNNING_STATES:
            running += 1
            running_for.append(parse_elapsed(status.elapsed) or 0.0)
        else:
            pending += 1
    slots = max(1, parallelism or throttle or running)
    mean = sum(runs) / len(runs) if runs else None
    eta = None
    if mean is not None:
        left = [max(mean - s, 0.0) for s in running_for]
        eta = max((pending * mean + sum(left)) / slots, max(left, default=0.0))
    elif not running and not pending:
        eta = 0.0
    return Progress(total=len(statuses), done=done, failed=failed, cancelled=cancelled, running=running,
                    pending=pending, failed_nights=failed_nights, cancelled_nights=tuple(cancelled_nights),
                    mean_run_seconds=mean, parallelism=slots, eta_seconds=eta)


def describe_submission(chunk: Chunk, verb: str, array_job_id: str) -> str:
    """One log line of a chunk's submission."""
    what = "adopted" if verb == slurm.Decision.ADOPT else "submitted"
    return (f"{what} array job {array_job_id} ({chunk.job_name}): {len(chunk.nights)} night(s) "
            f"{chunk.nights[0]} .. {chunk.nights[-1]}, tasks {shlex.quote(chunk.array_spec())}")


# -- a campaign's runs, chunks and status (``hfc campaign``, the status page) ---------------------

DAG_ID = "hfc_campaign"
# A retry chunk's label: r<attempt>-<n>.
_RETRY_LABEL = re.compile(r"^r(\d+)-\d+$")
# Airflow run states that may still submit, wait, archive or catalogue.
ACTIVE_RUN_STATES = frozenset({"queued", "running"})


def campaign_of_run(run: Mapping) -> str | None:
    """The campaign id of a ``hfc_campaign`` run (Airflow's REST answer): ``conf.campaign_id``,
    else :func:`default_campaign_id` of its run id (None when the run id gives none)."""
    conf = run.get("conf") or {}
    cid = conf.get("campaign_id") if isinstance(conf, Mapping) else None
    if cid:
        return str(cid)
    try:
        return default_campaign_id(str(run.get("dag_run_id") or ""))
    except CampaignError:
        return None


def _conf_night(conf: Mapping, key: str, run_id: str) -> dt.date:
    try:
        return products.parse_night(str(conf[key]))
    except (KeyError, ValueError) as exc:
        raise CampaignError(f"run {run_id} of {DAG_ID}: conf {key} {conf.get(key)!r} is not a night "
                            f"(YYYY-MM-DD): {exc}") from None


@dataclass(frozen=True)
class CampaignRuns:
    """What Airflow knows of one campaign: its definition (the first run's conf), the nights of
    each retry (attempt → nights, from the retry runs' ``retry_nights``/``retry_attempt``), its
    runs' ids and states."""

    campaign: Campaign
    retries: dict[int, tuple[dt.date, ...]]
    runs: tuple[Mapping, ...]  # oldest first

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(str(r["dag_run_id"]) for r in self.runs)

    @property
    def active(self) -> bool:
        return any(r.get("state") in ACTIVE_RUN_STATES for r in self.runs)

    @property
    def next_attempt(self) -> int:
        return max(self.retries, default=0) + 1

    @property
    def started(self) -> dt.datetime | None:
        """When the first run was created (sacct's start of the search for its chunks)."""
        stamps = [run_time(r) for r in self.runs]
        stamps = [s for s in stamps if s is not None]
        return min(stamps) if stamps else None


def run_time(run: Mapping) -> dt.datetime | None:
    """When a run was asked for (``run_after``, else when queued, started or its logical date)."""
    for key in ("run_after", "queued_at", "start_date", "logical_date"):
        text = run.get(key)
        if text:
            try:
                return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
            except ValueError:
                continue
    return None


def group_runs(runs: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """``hfc_campaign`` runs by campaign id, each list oldest first (runs without one are left out)."""
    out: dict[str, list[Mapping]] = {}
    for run in runs:
        cid = campaign_of_run(run)
        if cid is not None:
            out.setdefault(cid, []).append(run)
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    for items in out.values():
        items.sort(key=lambda r: (run_time(r) or floor, str(r.get("dag_run_id"))))
    return out


def campaign_runs(campaign_id: str, runs: Sequence[Mapping]) -> CampaignRuns:
    """The campaign ``campaign_id`` from its runs (:func:`group_runs`' list, oldest first): the
    first run's conf names it (FRC, nights, version); a run with ``retry_nights`` is a retry."""
    if not runs:
        raise CampaignError(f"no run of DAG {DAG_ID} belongs to campaign {campaign_id!r}")
    first = runs[0]
    run_id = str(first.get("dag_run_id"))
    conf = first.get("conf") or {}
    if not conf.get("frc"):
        raise CampaignError(f"run {run_id} of {DAG_ID} (campaign {campaign_id}) has no conf frc")
    camp = Campaign(frc=str(conf["frc"]), first=_conf_night(conf, "first", run_id),
                    last=_conf_night(conf, "last", run_id), campaign_id=campaign_id,
                    version=conf.get("version") or None)
    retries: dict[int, tuple[dt.date, ...]] = {}
    for run in runs:
        conf = run.get("conf") or {}
        nights = conf.get("retry_nights") or []
        if not nights:
            continue
        rid = str(run.get("dag_run_id"))
        attempt = conf.get("retry_attempt")
        if not isinstance(attempt, int) or attempt < 1:
            raise CampaignError(f"run {rid} of {DAG_ID} (campaign {campaign_id}): retry_nights without a "
                                f"retry_attempt ≥ 1 ({attempt!r})")
        retries[attempt] = tuple(sorted(products.parse_night(str(n)) for n in nights))
    return CampaignRuns(campaign=camp, retries=retries, runs=tuple(runs))


def run_conf(campaign: Campaign, *, retry_nights: Sequence[dt.date] = (), retry_attempt: int | None = None,
             name_it: bool = True) -> dict:
    """The conf of a ``hfc_campaign`` run (the DAG's contract). ``name_it`` False: campaign_id
    null, the DAG names the campaign after its run (:func:`default_campaign_id`)."""
    conf: dict = {"frc": campaign.frc, "first": campaign.first.isoformat(), "last": campaign.last.isoformat(),
                  "version": campaign.version, "campaign_id": campaign.campaign_id if name_it else None,
                  "retry_nights": [n.isoformat() for n in sorted(set(retry_nights))]}
    if retry_nights:
        if not isinstance(retry_attempt, int) or retry_attempt < 1:
            raise CampaignError(f"campaign {campaign.campaign_id}: a retry needs retry_attempt ≥ 1, "
                                f"not {retry_attempt!r}")
        outside = [n for n in retry_nights if not campaign.first <= n <= campaign.last]
        if outside:
            raise CampaignError(f"nights {[str(n) for n in sorted(outside)]} are not in campaign "
                                f"{campaign.campaign_id} ({campaign.first} to {campaign.last})")
        conf["retry_attempt"] = retry_attempt
    return conf


def trigger_body(conf: Mapping, note: str | None = None) -> dict:
    """The body of ``POST /api/v2/dags/hfc_campaign/dagRuns`` (a manual run, no logical date)."""
    body: dict = {"logical_date": None, "conf": dict(conf)}
    if note:
        body["note"] = note
    return body


def chunks_of(runs: CampaignRuns, site: Site) -> list[Chunk]:
    """Every chunk the campaign's runs submit: the plan's, then each retry's (attempt order)."""
    chunks = plan_chunks(runs.campaign, site)
    for attempt in sorted(runs.retries):
        chunks += plan_retry(runs.campaign, runs.retries[attempt], attempt, site)
    return chunks


def chunks_prefix(frc: str, campaign_id: str) -> str:
    """What every chunk's job name of the campaign starts with."""
    Campaign(frc, dt.date(2000, 1, 1), dt.date(2000, 1, 1), campaign_id)  # both plain, or CampaignError
    return chunk_job_name(frc, campaign_id, "")


def chunks_command(frc: str, campaign_id: str, since: dt.date | dt.datetime) -> str:
    """The login-node command that lists the campaign's chunks: ``sacct -X`` of our jobs since
    ``since`` (accounting: every chunk, ended ones too) and ``squeue --me`` (the live ones, while
    accounting lags), each line ``<job id>|<job name>``, kept when the name has the campaign's
    prefix. A failing sacct (exit 78) or squeue (exit 76) fails the command: "no chunk" is never a guess."""
    if not isinstance(since, dt.date):
        raise CampaignError(f"since {since!r} is not a date")
    start = since.strftime("%Y-%m-%dT%H:%M:%S") if isinstance(since, dt.datetime) else since.isoformat()
    pattern = shlex.quote("|" + chunks_prefix(frc, campaign_id))
    # POSIX sh (the login shell may not be bash): each answer captured, its failure an exit.
    return (f"a=$(sacct -X -n -P --starttime={start} --format=JobID,JobName) || "
            "{ echo 'sacct failed: cannot list the campaign chunks' >&2; exit 78; }; "
            "q=$(squeue --me --noheader --states=all --format='%i|%j') || "
            "{ echo 'squeue failed: cannot list the campaign chunks' >&2; exit 76; }; "
            f"printf '%s\\n%s\\n' \"$a\" \"$q\" | grep -F -e {pattern} || true")


@dataclass(frozen=True)
class FoundChunks:
    """The campaign's chunks SLURM knows: label → array job id, and the labels found under more
    than one array (never submitted twice by the pipeline: someone did by hand; the first is kept)."""

    arrays: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]


def parse_chunks(stdout: str, frc: str, campaign_id: str) -> FoundChunks:
    """:func:`chunks_command`'s answer as chunk label → array job id (an array task ``123_4``, a
    pending range ``123_[5-9%2]`` and the array's own row ``123`` all give array ``123``)."""
    prefix = chunks_prefix(frc, campaign_id)
    ids: dict[str, set[str]] = {}
    for line in stdout.splitlines():
        job, sep, name = line.strip().partition("|")
        if not sep or not name.startswith(prefix):
            continue
        label = name[len(prefix):].strip()
        head = job.strip().partition("_")[0]
        if not _LABEL.match(label) or not head.isdigit():
            continue
        ids.setdefault(label, set()).add(head)
    arrays = {label: min(found, key=int) for label, found in ids.items()}
    dups = {label: tuple(sorted(found, key=int)) for label, found in ids.items() if len(found) > 1}
    return FoundChunks(arrays=dict(sorted(arrays.items(), key=lambda kv: _label_key(kv[0]))), duplicates=dups)


def _label_key(label: str) -> tuple[int, int]:
    m = _RETRY_LABEL.match(label)
    attempt = int(m.group(1)) if m else 0
    return attempt, int(label.rsplit("-", 1)[-1])


def retry_attempts_found(found: FoundChunks) -> set[int]:
    """The retry attempts SLURM knows chunks of (a new retry never reuses one: new job names)."""
    return {int(m.group(1)) for label in found.arrays if (m := _RETRY_LABEL.match(label))}


NIGHT_STATES = ("done", "failed", "cancelled", "running", "pending")


@dataclass(frozen=True)
class NightStatus:
    night: dt.date
    state: str  # one of NIGHT_STATES
    reason: str = ""  # why it failed / what it waits for
    job_id: str | None = None  # the array task id (<array job id>_<index>) of its latest chunk
    chunk: str | None = None  # that chunk's label

    def to_dict(self) -> dict:
        return {"night": self.night.isoformat(), "state": self.state, "reason": self.reason,
                "job_id": self.job_id, "chunk": self.chunk}


@dataclass(frozen=True)
class CampaignStatus:
    """A campaign's nights as done / failed (with the reason) / cancelled / running / pending,
    from SLURM and (when read) the catalogue, with the SLURM side's ETA (:func:`progress`)."""

    campaign: Campaign
    nights: dict[dt.date, NightStatus]
    arrays: dict[str, str]  # chunk label → array job id (the chunks SLURM knows)
    slurm: Progress
    catalogue_read: bool
    problems: tuple[str, ...] = ()

    def count(self, state: str) -> int:
        return sum(1 for n in self.nights.values() if n.state == state)

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in NIGHT_STATES}

    @property
    def failed_nights(self) -> dict[dt.date, str]:
        return {n.night: n.reason for n in self.nights.values() if n.state == "failed"}

    @property
    def finished(self) -> bool:
        return self.count("running") == 0 and self.count("pending") == 0

    @property
    def eta_seconds(self) -> float | None:
        return 0.0 if self.finished else self.slurm.eta_seconds

    def summary(self) -> str:
        c = self.counts
        eta = "-" if self.eta_seconds is None else str(dt.timedelta(seconds=round(self.eta_seconds)))
        return (f"{c['done']}/{len(self.nights)} done, {c['failed']} failed, {c['cancelled']} cancelled, "
                f"{c['running']} running, {c['pending']} pending; ETA {eta}")

    def to_dict(self) -> dict:
        c = self.campaign
        return {"campaign_id": c.campaign_id, "frc": c.frc, "first": c.first.isoformat(),
                "last": c.last.isoformat(), "version": c.version, "nights": len(self.nights),
                "counts": self.counts, "eta_seconds": self.eta_seconds, "finished": self.finished,
                "mean_run_seconds": self.slurm.mean_run_seconds, "arrays": dict(self.arrays),
                "catalogue_read": self.catalogue_read,
                "failed": {n.isoformat(): why for n, why in self.failed_nights.items()},
                "cancelled": [n.night.isoformat() for n in self.nights.values() if n.state == "cancelled"],
                "problems": list(self.problems),
                "night_states": [n.to_dict() for n in self.nights.values()]}


def campaign_status(campaign: Campaign, chunks: Sequence[Chunk], arrays: Mapping[str, str],
                    found: Mapping[str, slurm.JobStatus], *, loaded: Iterable[dt.date] | None = None,
                    downstream_active: bool = True, throttle: int | None = None,
                    problems: Sequence[str] = ()) -> CampaignStatus:
    """Each night's state from its latest chunk's array task (a retry's chunk overrides the first
    once SLURM knows it: :func:`merge_statuses`) and the catalogue.

    ``chunks``: the campaign's chunks in submission order (:func:`chunks_of`); ``arrays``: label →
    array job id of those SLURM knows (:func:`parse_chunks`); ``found``: the states of those arrays
    (:func:`hfc_tasks.slurm.job_states` of their :func:`~hfc_tasks.slurm.array_ref`). ``loaded``:
    the nights the catalogue holds from the campaign's runs (None: not read; then a night whose
    job completed is done). A night loaded is done whatever SLURM says. A completed job whose
    night is not loaded is running (archive/catalogue) while ``downstream_active`` (a run of the
    campaign is still going), else failed ("not in the catalogue"). A retry chunk that SLURM does
    not know yet leaves its nights pending while a run is going."""
    loaded_set = None if loaded is None else set(loaded)
    maps: list[dict[dt.date, slurm.JobStatus | None]] = []
    latest: dict[dt.date, Chunk] = {}
    awaiting_retry: set[dt.date] = set()
    for chunk in chunks:
        array = arrays.get(chunk.label)
        if array is None:
            if _RETRY_LABEL.match(chunk.label):
                awaiting_retry.update(chunk.nights)
            maps.append({n: None for n in chunk.nights})
            continue
        statuses = night_statuses(chunk, array, found)
        maps.append(statuses)
        for night, status in statuses.items():
            if status is not None:
                latest[night] = chunk
                awaiting_retry.discard(night)
    merged = merge_statuses(*maps)
    merged = {n: merged.get(n) for n in campaign.nights}
    out: dict[dt.date, NightStatus] = {}
    for night, status in merged.items():
        chunk = latest.get(night)
        label = chunk.label if chunk else None
        job = chunk.task_id(arrays[chunk.label], night) if chunk else None
        if loaded_set is not None and night in loaded_set and night not in awaiting_retry:
            out[night] = NightStatus(night, "done", "in the catalogue", job, label)
        elif night in awaiting_retry and downstream_active:
            out[night] = NightStatus(night, "pending", "retry not submitted yet", job, label)
        elif status is None:
            why = "not submitted yet" if label is None else "not started yet"
            out[night] = NightStatus(night, "pending", why, job, label)
        elif night_done(status):
            if loaded_set is None:
                out[night] = NightStatus(night, "done", status.describe(), job, label)
            elif downstream_active:
                out[night] = NightStatus(night, "running", "job completed; archive and catalogue to come", job, label)
            else:
                out[night] = NightStatus(night, "failed", f"{status.describe()}; the night is not in the catalogue "
                                         "(archive or catalogue failed: see the run's archive/catalogue tasks)",
                                         job, label)
        elif status.state == "CANCELLED":
            out[night] = NightStatus(night, "cancelled", status.describe(), job, label)
        elif status.is_final:
            out[night] = NightStatus(night, "failed", status.describe(), job, label)
        elif status.state in RUNNING_STATES:
            out[night] = NightStatus(night, "running", status.describe(), job, label)
        else:
            out[night] = NightStatus(night, "pending", status.describe(), job, label)
    return CampaignStatus(campaign=campaign, nights=out, arrays=dict(arrays),
                          slurm=progress(merged, throttle=throttle), catalogue_read=loaded_set is not None,
                          problems=tuple(problems))
