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


def _done(status: slurm.JobStatus) -> bool:
    # squeue (accounting lagging) has no exit code: COMPLETED means exit 0 in SLURM.
    return status.state in slurm.SUCCESS_STATES and status.exit_code in (0, None)


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
        elif _done(status):
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
