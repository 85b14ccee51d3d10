"""One run of the ``hfc_campaign`` DAG (issue 15), the pure part: its conf read into a campaign and
its chunks, the nights cut into batches for the mapped ``archive``/``catalogue`` tasks, and the
end of the run (which nights are done, which are not and why).

No Airflow, no SSH, no database: :mod:`hfc_tasks.provider.campaign_ops` runs it. The SLURM side of
a campaign (chunks, submission, states) is :mod:`hfc_tasks.campaign`.

Batches: dynamic task mapping makes one task instance per batch; Airflow refuses more than
``core.max_map_length`` (1024) of them, and a task instance costs the scheduler a few seconds, so a
batch holds at least :data:`MIN_BATCH` nights and the run at most :data:`MAX_BATCHES` batches (365
nights: 37 batches of 10; 10,000 nights: 200 of 50).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hfc_tasks import campaign as campaign_mod
from hfc_tasks import slurm
from hfc_tasks.campaign import Campaign, CampaignError, Chunk
from hfc_tasks.registry import Site

MIN_BATCH = 10
MAX_BATCHES = 200  # far below core.max_map_length (1024)


def batch_size(count: int) -> int:
    """Nights per batch for ``count`` nights: at least :data:`MIN_BATCH`, at most
    :data:`MAX_BATCHES` batches."""
    if count < 0:
        raise CampaignError(f"a campaign cannot have {count} nights")
    return max(MIN_BATCH, math.ceil(count / MAX_BATCHES))


def batches(nights: Sequence[dt.date]) -> list[list[dt.date]]:
    """``nights`` in order, cut into batches of :func:`batch_size` (the last may be shorter)."""
    ordered = sorted(set(nights))
    size = batch_size(len(ordered))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _date(value, what: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise CampaignError(f"{what} {value!r} is not a night (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class RunPlan:
    """What one DAG run of a campaign processes."""

    campaign: Campaign
    chunks: tuple[Chunk, ...]
    retry_attempt: int | None  # None: the campaign's own run (all its nights)

    @property
    def nights(self) -> list[dt.date]:
        return sorted(n for c in self.chunks for n in c.nights)

    def batches(self) -> list[list[dt.date]]:
        return batches(self.nights)

    def to_dict(self) -> dict:
        """The ``plan`` task's result (XCom: JSON)."""
        c = self.campaign
        return {
            "frc": c.frc, "campaign_id": c.campaign_id, "first": c.first.isoformat(), "last": c.last.isoformat(),
            "version": c.version, "retry_attempt": self.retry_attempt,
            "chunks": [{"label": k.label, "job_name": k.job_name, "nights": [n.isoformat() for n in k.nights]}
                       for k in self.chunks],
            "nights": len(self.nights),
            "batches": [[n.isoformat() for n in b] for b in self.batches()],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> RunPlan:
        """The plan back from the ``plan`` task's XCom."""
        c = Campaign(frc=data["frc"], first=_date(data["first"], "first"), last=_date(data["last"], "last"),
                     campaign_id=data["campaign_id"], version=data.get("version"))
        chunks = tuple(Chunk(c.frc, c.campaign_id, k["label"], tuple(_date(n, "night") for n in k["nights"]))
                       for k in data["chunks"])
        return cls(campaign=c, chunks=chunks, retry_attempt=data.get("retry_attempt"))


def plan_run(params: Mapping, run_id: str, site: Site, enabled: Iterable[str]) -> RunPlan:
    """The run's plan from its conf (``params``: frc, first, last, version, campaign_id,
    retry_nights, retry_attempt; the DAG's doc). ``enabled``: the FRCs of the registry that run on
    this site. Raises :class:`~hfc_tasks.campaign.CampaignError` naming what is wrong."""
    frc = params.get("frc")
    enabled = list(enabled)
    if frc not in enabled:
        raise CampaignError(f"FRC {frc!r} is not an enabled FRC of this site (enabled: {', '.join(enabled)})")
    if not params.get("first") or not params.get("last"):
        raise CampaignError("a campaign needs its first and last nights (conf 'first', 'last': YYYY-MM-DD)")
    campaign_id = params.get("campaign_id") or campaign_mod.default_campaign_id(run_id)
    version = params.get("version") or None
    campaign = Campaign(frc=frc, first=_date(params["first"], "first night"), last=_date(params["last"], "last night"),
                        campaign_id=campaign_id, version=version)
    retry = [_date(n, "retry night") for n in params.get("retry_nights") or []]
    if not retry:
        return RunPlan(campaign, tuple(campaign_mod.plan_chunks(campaign, site)), None)
    attempt = params.get("retry_attempt")
    if attempt in (None, ""):
        raise CampaignError(f"campaign {campaign_id}: retry_nights {[str(n) for n in retry]} need retry_attempt "
                            "(1 for the first retry, 2 for the next...: a retry's SLURM job names must be new)")
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise CampaignError(f"campaign {campaign_id}: retry_attempt {attempt!r} is not an integer ≥ 1")
    return RunPlan(campaign, tuple(campaign_mod.plan_retry(campaign, retry, attempt, site)), attempt)


def night_result(status: slurm.JobStatus | None, task_id: str) -> dict:
    """What the ``wait`` task returns for one night (JSON)."""
    if status is None:
        return {"state": "UNKNOWN", "job_id": task_id, "done": False, "exit_code": None, "elapsed": "",
                "reason": f"job {task_id}: SLURM knows nothing of this array task"}
    return {"state": status.state, "job_id": status.job_id or task_id, "done": campaign_mod.night_done(status),
            "exit_code": status.exit_code, "elapsed": status.elapsed, "reason": status.describe()}


@dataclass(frozen=True)
class Outcome:
    """The end of a run: each night done or not, and why not."""

    done: tuple[dt.date, ...]
    failed: dict[dt.date, str]  # SLURM failed, or archive/catalogue failed: why
    cancelled: dict[dt.date, str]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def summary(self) -> str:
        return (f"{len(self.done)} night(s) done, {len(self.failed)} failed, {len(self.cancelled)} cancelled "
                f"of {len(self.done) + len(self.failed) + len(self.cancelled)}")

    def lines(self) -> list[str]:
        out = [f"{n}: FAILED: {why}" for n, why in sorted(self.failed.items())]
        out += [f"{n}: CANCELLED: {why}" for n, why in sorted(self.cancelled.items())]
        return sorted(out)

    def to_dict(self) -> dict:
        return {"done": [n.isoformat() for n in self.done],
                "failed": {n.isoformat(): why for n, why in sorted(self.failed.items())},
                "cancelled": {n.isoformat(): why for n, why in sorted(self.cancelled.items())}}


def outcome(nights: Iterable[dt.date], results: Mapping[str, Mapping] | None, loaded: Iterable[dt.date],
            downstream: Mapping[str, str]) -> Outcome:
    """Which nights of the run are done: its SLURM task completed (``results``: the ``wait`` task's,
    None when the wait did not end) and the catalogue holds its batch loaded by this run
    (``loaded``). ``downstream``: night (ISO) -> why its archive or catalogue stage failed."""
    loaded = set(loaded)
    done: list[dt.date] = []
    failed: dict[dt.date, str] = {}
    cancelled: dict[dt.date, str] = {}
    for night in sorted(set(nights)):
        iso = night.isoformat()
        result = (results or {}).get(iso)
        if result is None:
            failed[night] = ("the wait for SLURM did not end (see the 'submit' and 'wait' tasks)" if results is None
                             else "SLURM gave no state for its array task")
        elif not result.get("done"):
            (cancelled if result.get("state") == "CANCELLED" else failed)[night] = f"SLURM {result.get('reason')}"
        elif night in loaded:
            done.append(night)
        else:
            failed[night] = downstream.get(iso) or (
                "its SLURM task completed but its batch is not in the catalogue from this run (see the 'archive' "
                "and 'catalogue' tasks of its batch)")
    return Outcome(done=tuple(done), failed=failed, cancelled=cancelled)
