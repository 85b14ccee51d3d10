"""The ``hfc_campaign`` DAG's pure part (hfc_tasks.campaign_run): batches for dynamic task mapping,
the run's plan from its conf, the end of a run; and the DAG's shape."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hfc_tasks import slurm
from hfc_tasks.campaign import CampaignError
from hfc_tasks.campaign_run import (
    MAX_BATCHES,
    MIN_BATCH,
    RunPlan,
    batch_size,
    batches,
    night_result,
    outcome,
    plan_run,
)
from hfc_tasks.registry import Site

SITE = Site(products_root="/p", frc_root="/f", archive_root="/a", public_url_base="http://x/a", campaign_array_max=1000)
D0 = dt.date(2024, 1, 1)
RUN = "manual__2026-12-03T08:02:59.228013+00:00"


def days(n: int, start: dt.date = D0) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


@pytest.mark.parametrize(("count", "size", "n_batches"), [
    (1, 10, 1), (3, 10, 1), (10, 10, 1), (30, 10, 3), (365, 10, 37), (2000, 10, 200), (2001, 11, 182),
    (5000, 25, 200), (10000, 50, 200), (200_000, 1000, 200),
])
def test_batches_stay_few_and_below_max_map_length(count, size, n_batches):
    assert batch_size(count) == size
    got = batches(days(count))
    assert len(got) == n_batches <= MAX_BATCHES < 1024  # core.max_map_length
    assert all(MIN_BATCH <= len(b) <= size for b in got[:-1]) and 1 <= len(got[-1]) <= size
    assert [n for b in got for n in b] == days(count)  # every night once, in order


def test_batches_sort_and_deduplicate():
    nights = days(12)
    assert batches(list(reversed(nights)) + nights[:3]) == [nights[:10], nights[10:]]
    assert batches([]) == []
    with pytest.raises(CampaignError):
        batch_size(-1)


def conf(**kw) -> dict:
    return {"frc": "demo", "first": "2024-01-01", "last": "2024-03-31", "version": None, "campaign_id": None,
            "retry_nights": [], "retry_attempt": None, **kw}


def test_plan_of_a_campaign_run():
    plan = plan_run(conf(campaign_id="v2"), RUN, SITE, ["demo"])
    assert plan.retry_attempt is None
    assert [k.job_name for k in plan.chunks] == ["hfc.demo.campaign.v2.0"]
    assert plan.nights == days(91)
    assert [len(b) for b in plan.batches()] == [10] * 9 + [1]
    # What the plan task pushes comes back whole (the other tasks rebuild it from XCom).
    data = plan.to_dict()
    assert RunPlan.from_dict(data) == plan
    assert data["batches"][0][0] == "2024-01-01" and data["chunks"][0]["job_name"] == "hfc.demo.campaign.v2.0"


def test_plan_chunks_follow_the_site_array_limit_and_the_default_id():
    plan = plan_run(conf(), RUN, Site(**{**SITE.model_dump(), "campaign_array_max": 40}), ["demo"])
    assert plan.campaign.campaign_id == "manual-20261203T080259228013"
    assert [len(k.nights) for k in plan.chunks] == [40, 40, 11]
    assert plan.nights == days(91)


def test_retry_plan_runs_only_the_nights_named():
    plan = plan_run(conf(campaign_id="v2", retry_nights=["2024-02-03", "2024-01-05"], retry_attempt=2), RUN, SITE,
                    ["demo"])
    assert plan.retry_attempt == 2
    assert [(k.label, k.nights) for k in plan.chunks] == [("r2-0", (dt.date(2024, 1, 5), dt.date(2024, 2, 3)))]
    assert plan.batches() == [[dt.date(2024, 1, 5), dt.date(2024, 2, 3)]]


@pytest.mark.parametrize(("kw", "message"), [
    ({"frc": "other"}, "FRC 'other' is not an enabled FRC of this site (enabled: demo)"),
    ({"first": None}, "needs its first and last nights"),
    ({"first": "2024-13-01"}, "first night '2024-13-01' is not a night"),
    ({"last": "2023-12-31"}, "is before the first"),
    ({"campaign_id": "a b"}, "letters, digits"),
    ({"retry_nights": ["2024-01-02"]}, "need retry_attempt"),
    ({"retry_nights": ["2024-01-02"], "retry_attempt": 0}, "must be an integer ≥ 1"),
    ({"retry_nights": ["2025-01-02"], "retry_attempt": 1}, "are not in campaign"),
])
def test_bad_conf_is_refused_naming_what(kw, message):
    with pytest.raises(CampaignError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_run(conf(**kw), RUN, SITE, ["demo"])


def status(state: str, exit_code: int | None = 0, job: str = "7_0") -> slurm.JobStatus:
    return slurm.JobStatus(job_id=job, state=state, raw_state=state, exit_code=exit_code, signal=0,
                           elapsed="00:00:02")


def test_night_results():
    assert night_result(status("COMPLETED"), "7_0")["done"] is True
    assert night_result(status("COMPLETED", None), "7_0")["done"] is True  # squeue: no exit code yet
    failed = night_result(status("FAILED", 3), "7_0")
    assert failed["done"] is False and failed["reason"] == "job 7_0, state FAILED, exit code 3, elapsed 00:00:02"
    assert night_result(None, "7_4") == {"state": "UNKNOWN", "job_id": "7_4", "done": False, "exit_code": None,
                                         "elapsed": "", "reason": "job 7_4: SLURM knows nothing of this array task"}


def test_outcome_of_a_run():
    nights = days(5)
    results = {n.isoformat(): night_result(status("COMPLETED", job=f"7_{i}"), f"7_{i}") for i, n in enumerate(nights)}
    results[nights[1].isoformat()] = night_result(status("FAILED", 3, "7_1"), "7_1")
    results[nights[2].isoformat()] = night_result(status("CANCELLED", None, "7_2"), "7_2")
    got = outcome(nights, results, [nights[0], nights[4]], {nights[3].isoformat(): "archive: disk full"})
    assert got.done == (nights[0], nights[4])
    assert got.failed == {nights[1]: "SLURM job 7_1, state FAILED, exit code 3, elapsed 00:00:02",
                          nights[3]: "archive: disk full"}
    assert got.cancelled == {nights[2]: "SLURM job 7_2, state CANCELLED, elapsed 00:00:02"}
    assert not got.ok and got.summary() == "2 night(s) done, 2 failed, 1 cancelled of 5"
    assert got.lines()[0].startswith("2024-01-02: FAILED: SLURM job 7_1")
    # A completed night without this run's batch and without a recorded reason still says where to look.
    assert "not in the catalogue from this run" in outcome(nights[:1], results, [], {}).failed[nights[0]]
    # No wait result at all: every night failed, naming the stage.
    assert "the wait for SLURM did not end" in outcome(nights[:1], None, [], {}).failed[nights[0]]
    assert outcome(nights[:1], results, nights[:1], {}).ok


def test_campaign_dag_shape():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["hfc_campaign"]
    assert dag.task_ids == ["plan", "submit", "wait", "archive", "catalogue", "report"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered only
    assert set(dag.params) == {"frc", "first", "last", "version", "campaign_id", "retry_nights", "retry_attempt"}
    for task_id in ("archive", "catalogue"):
        task = dag.get_task(task_id)
        assert type(task).__name__ == "MappedOperator"
        assert task.upstream_task_ids >= {"plan"}
    assert dag.get_task("catalogue").trigger_rule == "all_done_min_one_success"
    assert dag.get_task("report").trigger_rule == "all_done"
    assert all(dag.get_task(t).doc_md for t in dag.task_ids)
