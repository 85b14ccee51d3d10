"""Catalogue status: which nights of which FRC are in the catalogue (no Airflow import).

The logic behind the status page of the Airflow UI (``plugins/hfc_status.py``) and anything
else that wants the same answer (tests, the CLI):

* :func:`catalogue_batches` reads the pipeline's batch tables (``hfc.batch``,
  ``hfc.rejected_file``) for a range of nights;
* :class:`hfc_tasks.airflow_api.AirflowAPI` (the one REST client) reads the DAG runs and task
  instances from Airflow's public REST API *with the caller's own token*, and creates backfills
  the same way, so Airflow checks the user's rights exactly as for its own UI;
* :func:`build_heatmap` folds both into one cell per (FRC, night): ``loaded``, ``not_clean``
  (loaded, but the batch lists ``issues``: files of the FRC left on the cluster, stale files of
  an earlier run), ``rejected`` (loaded, some files refused), ``no_data`` (batch status
  ``no_data``: the FRC ran and found no observation, a result and not a gap), ``running``,
  ``failed`` or ``missing`` (catalogue migration 0005, docs/catalogue.md);
* :func:`find_gaps` turns the cells into runs of consecutive nights to backfill and
  :func:`backfill_body` into the body of ``POST /api/v2/backfills``;
* the gallery of one FRC night (quicklooks with the catalogue's contours) is
  :mod:`hfc_tasks.gallery`;
* :func:`query_range` and :func:`archive_file` check what a browser or a manifest gives before
  it reaches SQL or SFTP (a range of nights; an ``archive_path`` that must stay in the archive).
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from hfc_tasks import campaign, products, slurm
from hfc_tasks.airflow_api import AirflowAPI, ApiError
from hfc_tasks.catalogue.grouping import group_problems

DAG_ID = "hfc_nightly"
STATES = ("loaded", "not_clean", "rejected", "no_data", "running", "failed", "missing")
NO_DATA = "no_data"  # hfc.batch.status of a night where the FRC ran and found no observation
MAX_NIGHTS = 366  # nights of one page or API call
FIRST_NIGHT = dt.date(1900, 1, 1)  # no HFC observation is older
ACTIVE_TI = {"queued", "scheduled", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting"}
FAILED_TI = {"failed", "upstream_failed"}


# --------------------------------------------------------------------------- nights


def night_range(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ValueError(f"night range {first}..{last} is empty (last before first)")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def default_range(today: dt.date | None = None, nights: int = 30) -> tuple[dt.date, dt.date]:
    """The last ``nights`` complete UTC days (a night is processed once its day is over)."""
    today = today or dt.datetime.now(dt.UTC).date()
    last = today - dt.timedelta(days=1)
    return last - dt.timedelta(days=nights - 1), last


def query_range(first: str | None, last: str | None, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The nights a page asks for (``first``/``last`` as given, default the last 30 nights);
    a ValueError names what is wrong (not a date, reversed, in the future, too long)."""
    today = today or dt.datetime.now(dt.UTC).date()
    d_first, d_last = default_range(today)
    f = check_night(first, today) if first else d_first
    la = check_night(last, today) if last else d_last
    if la < f:
        raise ValueError(f"first night {f} is after last night {la}")
    if (la - f).days + 1 > MAX_NIGHTS:
        raise ValueError(f"{f}..{la} is {(la - f).days + 1} nights: at most {MAX_NIGHTS} at once")
    return f, la


def check_night(text: str, today: dt.date | None = None) -> dt.date:
    """A night given by a browser: a date, not before 1900, not after today (UTC)."""
    today = today or dt.datetime.now(dt.UTC).date()
    night = products.parse_night(text)
    if night > today:
        raise ValueError(f"night {night} is in the future (today is {today} UTC)")
    if night < FIRST_NIGHT:
        raise ValueError(f"night {night} is before {FIRST_NIGHT}")
    return night


def archive_file(archive_root: str, archive_path) -> str:
    """The absolute path of a manifest's or catalogue's ``archive_path`` under ``archive_root``.

    Only a relative path that stays under the root is accepted: an absolute path, any ``..``
    component, a backslash or NUL is refused (ValueError naming it), so no file outside the
    archive is ever read or linked, whatever a manifest or a catalogue row says.
    """
    if not isinstance(archive_path, str) or not archive_path:
        raise ValueError(f"archive_path {archive_path!r} is not a path under the archive root")
    parts = archive_path.split("/")
    if (archive_path.startswith("/") or "\\" in archive_path or "\x00" in archive_path
            or any(p in ("..", ".") for p in parts) or not posixpath.normpath(archive_path).strip("./")):
        raise ValueError(f"archive_path {archive_path!r} is outside the archive root (absolute, '..' or "
                         "not a plain relative path): refused")
    return posixpath.join(archive_root, posixpath.normpath(archive_path))


ISSUE_MEANING = {
    "unmatched": "left on the cluster: not an HFC product name",
    "stale": "produced by an earlier job of the night, not by this one: kept on the archive, not loaded",
}


def issue_text(issue) -> str:
    """One entry of a batch's ``issues`` (migration 0005: ``{"issue": "unmatched"|"stale",
    "name": ...}``) as a line of text; any other entry is shown as it is."""
    if isinstance(issue, dict):
        what = str(issue.get("issue") or issue.get("kind") or "issue")
        name = issue.get("name") or issue.get("file")
        why = issue.get("reason") or ISSUE_MEANING.get(what)
        if what == "stale" and issue.get("slurm_job_id"):
            why = f"{why} (job {issue['slurm_job_id']})"
        if name is None:
            return f"{what}: {why}" if why else f"{what}: {json.dumps(issue, sort_keys=True)}"
        return f"{what}: {name} ({why})" if why else f"{what}: {name}"
    return str(issue)


def run_night(run: dict) -> dt.date | None:
    """The night a DAG run (as the REST API gives it) works on, or None if it cannot tell
    (:func:`hfc_tasks.products.night_of_run`)."""
    try:
        return products.night_of_run((run.get("conf") or {}).get("night"),
                                     run.get("data_interval_start") or run.get("logical_date"))
    except ValueError:
        return None


def run_frcs(run: dict, all_frcs: Sequence[str]) -> list[str]:
    """The FRCs a run covers: its ``frcs`` conf if it names some, else all."""
    wanted = (run.get("conf") or {}).get("frcs") or []
    return [f for f in all_frcs if f in wanted] if wanted else list(all_frcs)


# --------------------------------------------------------------------------- catalogue


@dataclass
class Batch:
    id: int
    frc: str
    night: dt.date
    status: str
    rows: int
    row_counts: dict
    rejected_files: int
    slurm_job_id: str | None = None
    dag_run_id: str | None = None
    frc_version: str | None = None
    finished_at: str | None = None
    issues: list = field(default_factory=list)  # the manifest's: unmatched files, stale files...


def _issues(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value or "[]")
    return list(value) if isinstance(value, list) else [value]


def catalogue_batches(conn, first: dt.date, last: dt.date, frcs: Iterable[str] | None = None) -> dict:
    """``{(frc, night): Batch}`` of the batches loaded for nights ``first..last``."""
    rows = conn.execute(
        """
        select b.id, b.frc, b.night, b.status, b.row_counts, b.slurm_job_id, b.dag_run_id, b.frc_version,
               b.finished_at,
               (select count(distinct r.file) from hfc.rejected_file r where r.batch_id = b.id),
               b.issues
        from hfc.batch b
        where b.night between %s and %s
        order by b.frc, b.night
        """,
        (first, last),
    ).fetchall()
    wanted = set(frcs) if frcs is not None else None
    out = {}
    for bid, frc, night, status, counts, job, run_id, version, finished, rejected, found in rows:
        if wanted is not None and frc not in wanted:
            continue
        counts = counts if isinstance(counts, dict) else json.loads(counts or "{}")
        out[(frc, night)] = Batch(
            id=bid, frc=frc, night=night, status=status, rows=sum(int(v) for v in counts.values()),
            row_counts=counts, rejected_files=int(rejected), slurm_job_id=job, dag_run_id=run_id,
            frc_version=version, finished_at=finished.isoformat() if finished else None, issues=_issues(found),
        )
    return out


def batch_details(conn, frc: str, night: dt.date) -> dict | None:
    """One batch with its files and rejected files: the provenance of a night's rows.

    ``rejected`` has one entry per problem as stored; ``rejected_groups`` the same grouped by
    column and kind of problem (:func:`hfc_tasks.catalogue.grouping.group_problems`), one line each.
    """
    row = conn.execute(
        "select id, status, row_counts, manifest_sha256, slurm_job_id, dag_run_id, task_try, frc_version, "
        "product_format, started_at, finished_at, issues from hfc.batch where frc = %s and night = %s",
        (frc, night),
    ).fetchone()
    if row is None:
        return None
    keys = ("id", "status", "row_counts", "manifest_sha256", "slurm_job_id", "dag_run_id", "task_try",
            "frc_version", "product_format", "started_at", "finished_at", "issues")
    batch = dict(zip(keys, row, strict=True))
    batch["issues"] = _issues(batch["issues"])
    for k in ("started_at", "finished_at"):
        batch[k] = batch[k].isoformat() if batch[k] else None
    batch["files"] = [
        dict(zip(("name", "kind", "rows", "sha256", "archive_path"), r, strict=True))
        for r in conn.execute(
            "select name, kind, rows, sha256, archive_path from hfc.batch_file where batch_id = %s "
            "order by kind = 'quicklook', name",
            (batch["id"],),
        )
    ]
    batch["rejected"] = [
        dict(zip(("file", "line", "column", "reason"), r, strict=True))
        for r in conn.execute(
            "select file, line, column_name, reason from hfc.rejected_file where batch_id = %s order by file, line",
            (batch["id"],),
        )
    ]
    batch["rejected_groups"] = [g.to_dict() for g in group_problems(batch["rejected"])]
    return {"frc": frc, "night": night.isoformat(), **batch}


# --------------------------------------------------------------------------- heat map and gaps


@dataclass
class Cell:
    frc: str
    night: str
    state: str
    rows: int = 0
    rejected_files: int = 0
    batch_id: int | None = None
    slurm_job_id: str | None = None
    run_id: str | None = None
    run_state: str | None = None
    tasks: dict = field(default_factory=dict)  # stage -> state, of the newest run of the night
    issues: list = field(default_factory=list)  # the batch's manifest issues (not clean if any)

    @property
    def clean(self) -> bool:
        return not self.issues


@dataclass
class Heatmap:
    frcs: list[str]
    nights: list[str]
    cells: dict  # (frc, night iso) -> Cell

    def cell(self, frc: str, night: str) -> Cell:
        return self.cells[(frc, night)]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for c in self.cells.values():
            out[c.state] += 1
        return out

    def to_dict(self) -> dict:
        return {"frcs": self.frcs, "nights": self.nights, "counts": self.counts(),
                "cells": [{**asdict(c), "clean": c.clean} for c in self.cells.values()]}


def _run_sort_key(run: dict) -> str:
    return str(run.get("run_after") or run.get("start_date") or run.get("logical_date") or "")


def build_heatmap(frcs: Sequence[str], nights: Sequence[dt.date], batches: dict, runs: Sequence[dict],
                  task_instances: Sequence[dict]) -> Heatmap:
    """One cell per (FRC, night).

    ``running``: the newest run of the night is active and the FRC's tasks are not all done;
    else ``no_data`` when the batch says the FRC found no observation;
    else ``loaded`` / ``not_clean`` / ``rejected`` from the batch (rejected = loaded with refused
    files; not_clean = loaded, but the manifest reported issues);
    a cell of any state whose batch has issues is not :attr:`Cell.clean`;
    else ``failed`` if the newest run that covered the FRC has a failed task of it;
    else ``missing``.
    """
    by_run: dict[str, dict[str, dict[str, str | None]]] = {}
    for ti in task_instances:
        frc, _, stage = ti["task_id"].partition(".")
        if stage:
            by_run.setdefault(ti["dag_run_id"], {}).setdefault(frc, {})[stage] = ti.get("state")
    runs_of: dict[tuple[str, dt.date], list[dict]] = {}
    for run in runs:
        night = run_night(run)
        if night is None:
            continue
        for frc in run_frcs(run, frcs):
            runs_of.setdefault((frc, night), []).append(run)
    cells = {}
    for frc in frcs:
        for night in nights:
            key = (frc, night.isoformat())
            batch = batches.get((frc, night))
            newest = max(runs_of.get((frc, night), []), key=_run_sort_key, default=None)
            tasks = by_run.get(newest["dag_run_id"], {}).get(frc, {}) if newest else {}
            cell = Cell(frc=frc, night=night.isoformat(), state="missing", tasks=tasks,
                        run_id=newest["dag_run_id"] if newest else None,
                        run_state=newest.get("state") if newest else None)
            if batch is not None:
                cell.rows, cell.rejected_files = batch.rows, batch.rejected_files
                cell.batch_id, cell.slurm_job_id = batch.id, batch.slurm_job_id
                cell.issues = list(batch.issues)
            active = bool(newest) and newest.get("state") in ("queued", "running") and (
                not tasks or any(s in ACTIVE_TI or s is None for s in tasks.values()))
            if active:
                cell.state = "running"
            elif batch is not None and batch.status == NO_DATA:
                cell.state = "no_data"
            elif batch is not None:
                cell.state = ("rejected" if batch.status == "partial" or batch.rejected_files
                              else "not_clean" if batch.issues else "loaded")
            elif any(s in FAILED_TI for s in tasks.values()) or (newest and newest.get("state") == "failed"):
                cell.state = "failed"
            cells[key] = cell
    return Heatmap(frcs=list(frcs), nights=[n.isoformat() for n in nights], cells=cells)


@dataclass
class Gap:
    first: str
    last: str
    frcs: list[str]  # FRCs missing or failed on at least one night of the range
    nights: int
    reprocess_behavior: str  # what the backfill must do with the runs these nights already have

    def to_dict(self) -> dict:
        return asdict(self)


def find_gaps(heatmap: Heatmap, states: Sequence[str] = ("missing", "failed")) -> list[Gap]:
    """Runs of consecutive nights where the same FRCs are ``missing`` or ``failed``.

    A night where an FRC is running belongs to no gap (it is being done). Nights with a
    different set of FRCs to redo start a new gap, so that each backfill runs exactly the FRCs
    its nights lack (``frcs`` of the DAG's params).

    A backfill works on whole nights of the DAG; ``reprocess_behavior`` is ``none`` when none
    of the nights has a finished run, ``failed`` when the only finished runs failed, and
    ``completed`` when one of them succeeded (the FRC was added later, say): every stage is
    idempotent (re-run contract), so re-running the FRCs already loaded gives the same rows.
    """
    gaps: list[Gap] = []
    current: list[str] = []

    def close() -> None:
        if not current:
            return
        cells = [heatmap.cells[(f, n)] for n in current for f in heatmap.frcs]
        bad = [c for c in cells if c.state in states]
        run_states = {c.run_state for c in cells if c.run_state}
        behaviour = "completed" if "success" in run_states else "failed" if "failed" in run_states else "none"
        gaps.append(Gap(first=current[0], last=current[-1], nights=len(current),
                        frcs=sorted({c.frc for c in bad}), reprocess_behavior=behaviour))
        current.clear()

    current_frcs: set[str] = set()
    for night in heatmap.nights:
        cells = [heatmap.cells[(f, night)] for f in heatmap.frcs]
        bad_frcs = {c.frc for c in cells if c.state in states}
        if bad_frcs and not any(c.state == "running" for c in cells):
            day = dt.date.fromisoformat(night)
            if current and (bad_frcs != current_frcs
                            or day - dt.date.fromisoformat(current[-1]) != dt.timedelta(days=1)):
                close()
            current.append(night)
            current_frcs = bad_frcs
        else:
            close()
    close()
    return gaps


def backfill_body(gap: Gap, dag_id: str = DAG_ID, *, dag_params: dict | None = None,
                  max_active_runs: int = 3) -> dict:
    """``POST /api/v2/backfills`` for the nights of a gap.

    The DAG's runs have daily data intervals starting at 00:00 UTC: night N is the run whose
    logical date is N 00:00 UTC. When the DAG takes a ``frcs`` param, only the gap's FRCs run.
    """
    conf = {}
    if dag_params and "frcs" in dag_params and gap.frcs:
        conf["frcs"] = list(gap.frcs)
    return {
        "dag_id": dag_id,
        "from_date": f"{gap.first}T00:00:00Z",
        "to_date": f"{gap.last}T00:00:00Z",
        "reprocess_behavior": gap.reprocess_behavior,
        "max_active_runs": max_active_runs,
        "run_backwards": False,
        "dag_run_conf": conf,
    }


def heatmap_for(conn, api: AirflowAPI | None, frcs: Sequence[str], first: dt.date, last: dt.date,
                dag_id: str = DAG_ID) -> tuple[Heatmap, list[str]]:
    """Everything the page shows for a range; the second value lists what could not be read
    (the catalogue or the API), so a partial page says so instead of hiding it."""
    problems: list[str] = []
    nights = night_range(first, last)
    batches = {}
    if conn is not None:
        try:
            batches = catalogue_batches(conn, first, last, frcs)
        except Exception as exc:  # noqa: BLE001 - shown on the page
            problems.append(f"catalogue: {type(exc).__name__}: {exc}".strip())
    runs, tis = [], []
    if api is not None:
        try:
            runs = api.dag_runs(dag_id, first, last)
            ids = [r["dag_run_id"] for r in runs if (n := run_night(r)) is not None and first <= n <= last]
            runs = [r for r in runs if r["dag_run_id"] in set(ids)]
            tis = api.task_instances(dag_id, ids) if ids else []
        except (ApiError, OSError) as exc:
            problems.append(f"Airflow API: {exc}")
    return build_heatmap(frcs, nights, batches, runs, tis), problems


# --------------------------------------------------------------------------- campaigns
# A reprocessing campaign's progress (issue 15): the runs of DAG hfc_campaign (REST, the caller's
# token), its chunks and their array tasks in SLURM (a command runner on the login node) and the
# nights the catalogue holds from its runs. The rules are hfc_tasks.campaign's; this is the I/O.

# Far enough back for any campaign's chunks when its runs are unknown (sacct --starttime).
CAMPAIGN_SINCE_DEFAULT = dt.date(2000, 1, 1)


def campaign_dag_runs(api: AirflowAPI, dag_id: str = campaign.DAG_ID, limit: int = 5000) -> list[dict]:
    """Every run of the campaign DAG, newest first (pages of 100)."""
    runs: list[dict] = []
    offset = 0
    while offset < limit:
        page = api.call("GET", f"/dags/{dag_id}/dagRuns",
                        query={"limit": 100, "offset": offset, "order_by": "-run_after"})
        runs.extend(page["dag_runs"])
        offset += 100
        if offset >= page["total_entries"]:
            break
    return runs


def find_campaign(api: AirflowAPI, campaign_id: str) -> campaign.CampaignRuns:
    """The campaign ``campaign_id`` from Airflow (CampaignError naming it when no run has it)."""
    if not campaign.CAMPAIGN_ID.match(campaign_id or ""):
        raise campaign.CampaignError(f"campaign id {campaign_id!r}: letters, digits, '-' and '_' only")
    groups = campaign.group_runs(campaign_dag_runs(api))
    if campaign_id not in groups:
        known = ", ".join(sorted(groups)[:20]) or "none"
        raise campaign.CampaignError(f"no campaign {campaign_id!r}: no run of DAG {campaign.DAG_ID} has it "
                                     f"(campaigns known: {known})")
    return campaign.campaign_runs(campaign_id, groups[campaign_id])


def campaign_loaded(conn, camp: campaign.Campaign, run_ids: Sequence[str]) -> set[dt.date]:
    """The campaign's nights that the catalogue holds from one of its runs (``no_data`` included:
    the night ran and found nothing, a result)."""
    rows = conn.execute(
        "select b.night from hfc.batch b where b.frc = %s and b.night between %s and %s "
        "and b.dag_run_id = any(%s)",
        (camp.frc, camp.first, camp.last, list(run_ids)),
    ).fetchall()
    return {r[0] for r in rows}


@dataclass(frozen=True)
class CampaignSlurm:
    """What SLURM knows of a campaign: its chunks' arrays and their tasks' states."""

    arrays: dict[str, str]
    found: dict
    problems: list[str]


def campaign_slurm(run, frc: str, campaign_id: str, since: dt.date | dt.datetime) -> CampaignSlurm:
    """The campaign's chunks by job name and every task of their arrays (one sacct, squeue when
    accounting lags): ``run(command) -> stdout`` on the login node, raising when it fails."""
    listed = campaign.parse_chunks(run(campaign.chunks_command(frc, campaign_id, since)), frc, campaign_id)
    problems = [f"chunk {label} was submitted more than once (arrays {', '.join(ids)}): the first is counted"
                for label, ids in listed.duplicates.items()]
    refs = [slurm.array_ref(a) for a in listed.arrays.values()]
    found = slurm.run_plan(slurm.job_states(refs), run) if refs else {}
    return CampaignSlurm(arrays=listed.arrays, found=found, problems=problems)


def campaign_since(runs: campaign.CampaignRuns) -> dt.date | dt.datetime:
    """Where sacct starts looking for the campaign's chunks: a day before its first run (clocks
    of Airflow and the cluster need not agree), else :data:`CAMPAIGN_SINCE_DEFAULT`."""
    started = runs.started
    return (started - dt.timedelta(days=1)).astimezone(dt.UTC).replace(tzinfo=None) if started \
        else CAMPAIGN_SINCE_DEFAULT


def campaign_progress(runs: campaign.CampaignRuns, site, run, conn=None) -> campaign.CampaignStatus:
    """A campaign's status from its runs, SLURM (``run``: :func:`campaign_slurm`) and, with
    ``conn``, the catalogue."""
    camp = runs.campaign
    seen = campaign_slurm(run, camp.frc, camp.campaign_id, campaign_since(runs))
    chunks = campaign.chunks_of(runs, site)
    known = {k.label for k in chunks}
    problems = list(seen.problems)
    problems += [f"chunk {label} (array {array}) is not one of the campaign's runs: its nights are not counted"
                 for label, array in seen.arrays.items() if label not in known]
    loaded = campaign_loaded(conn, camp, runs.run_ids) if conn is not None else None
    return campaign.campaign_status(camp, chunks, seen.arrays, seen.found, loaded=loaded,
                                    downstream_active=runs.active, throttle=site.campaign_array_throttle,
                                    problems=problems)


@dataclass
class CampaignEntry:
    """One campaign of the overview: its runs, its status, or why it could not be read."""

    runs: campaign.CampaignRuns | None
    campaign_id: str
    status: campaign.CampaignStatus | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"campaign_id": self.campaign_id, "error": self.error}
        if self.runs is not None:
            out["runs"] = [{"run_id": r.get("dag_run_id"), "state": r.get("state")} for r in self.runs.runs]
        if self.status is not None:
            out.update(self.status.to_dict())
        return out


def campaigns_overview(api: AirflowAPI, site, run, conn=None, *, limit: int = 20) -> tuple[list[CampaignEntry],
                                                                                             list[str]]:
    """The ``limit`` most recent campaigns (by their latest run) with their status. What could
    not be read is said: the REST API in the second value, a campaign's SLURM or catalogue side
    in its entry's ``error`` (``run`` None: the cluster could not be reached at all)."""
    try:
        groups = campaign.group_runs(campaign_dag_runs(api))
    except (ApiError, OSError) as exc:
        return [], [f"Airflow API: {exc}"]
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    newest = sorted(groups, key=lambda cid: max((campaign.run_time(r) or floor) for r in groups[cid]), reverse=True)
    entries: list[CampaignEntry] = []
    for cid in newest[:limit]:
        try:
            runs = campaign.campaign_runs(cid, groups[cid])
        except campaign.CampaignError as exc:
            entries.append(CampaignEntry(runs=None, campaign_id=cid, error=str(exc)))
            continue
        entry = CampaignEntry(runs=runs, campaign_id=cid)
        if run is None:
            entry.error = "the cluster could not be reached: SLURM states unknown"
        else:
            try:
                entry.status = campaign_progress(runs, site, run, conn)
            except Exception as exc:  # noqa: BLE001 - one campaign's failure is shown, the others still are
                entry.error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.rollback()  # a failed query must not fail the next campaign's
        entries.append(entry)
    return entries, []
