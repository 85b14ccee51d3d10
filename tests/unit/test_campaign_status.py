"""A campaign's progress (issue 15) without a cluster: its runs grouped by campaign id, the conf and
REST body of a start and a retry, the listing of its chunks by job name (sacct + squeue, as the
local SLURM 22.05 prints them) and the status that combines SLURM's array tasks (a retry's chunk
over the first) with the catalogue's loaded nights."""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess

import pytest

from hfc_tasks import campaign, slurm
from hfc_tasks.campaign import Campaign, CampaignError
from hfc_tasks.registry import Site

D = dt.date
SITE = Site(products_root="/p", frc_root="/f", archive_root="/a", public_url_base="http://x/a",
            campaign_array_max=4)
C = Campaign("demo-x", D(2024, 3, 1), D(2024, 3, 6), "sdo-v2", version="2.0")


def run(run_id: str, conf: dict | None, state: str = "success", after: str = "2026-12-03T08:00:00Z") -> dict:
    return {"dag_run_id": run_id, "conf": conf, "state": state, "run_after": after}


FIRST = {"frc": "demo-x", "first": "2024-03-01", "last": "2024-03-06", "version": "2.0", "campaign_id": "sdo-v2",
         "retry_nights": []}


# -- runs ---------------------------------------------------------------------------------------


def test_runs_grouped_by_conf_id_or_the_run_id_made_plain():
    runs = [run("r2", {**FIRST, "retry_nights": ["2024-03-03"], "retry_attempt": 1}, after="2026-12-03T09:00:00Z"),
            run("r1", FIRST),
            run("manual__2026-12-03T08:02:59.228013+00:00", {**FIRST, "campaign_id": None}),
            run("other", {**FIRST, "campaign_id": "x"}, state="running")]
    groups = campaign.group_runs(runs)
    assert [r["dag_run_id"] for r in groups["sdo-v2"]] == ["r1", "r2"]  # oldest first
    assert [r["dag_run_id"] for r in groups["manual-20261203T080259228013"]] == [
        "manual__2026-12-03T08:02:59.228013+00:00"]
    cr = campaign.campaign_runs("sdo-v2", groups["sdo-v2"])
    assert cr.campaign == C and cr.retries == {1: (D(2024, 3, 3),)} and cr.next_attempt == 2
    assert cr.run_ids == ("r1", "r2") and not cr.active
    assert campaign.campaign_runs("x", groups["x"]).active
    assert cr.started == dt.datetime(2026, 12, 3, 8, tzinfo=dt.UTC)


def test_unknown_campaign_and_bad_runs_are_named():
    with pytest.raises(CampaignError, match="no run of DAG hfc_campaign belongs to campaign 'nope'"):
        campaign.campaign_runs("nope", [])
    with pytest.raises(CampaignError, match="run r1 .*conf first"):
        campaign.campaign_runs("c", [run("r1", {**FIRST, "first": "March"})])
    with pytest.raises(CampaignError, match="retry_attempt"):
        campaign.campaign_runs("c", [run("r1", FIRST), run("r2", {**FIRST, "retry_nights": ["2024-03-02"]})])


def test_start_and_retry_bodies_follow_the_dag_contract():
    assert campaign.trigger_body(campaign.run_conf(C)) == {"logical_date": None, "conf": FIRST}
    unnamed = campaign.run_conf(C, name_it=False)
    assert unnamed["campaign_id"] is None and "retry_attempt" not in unnamed
    retry = campaign.run_conf(C, retry_nights=[D(2024, 3, 5), D(2024, 3, 2), D(2024, 3, 5)], retry_attempt=3)
    assert retry == {**FIRST, "retry_nights": ["2024-03-02", "2024-03-05"], "retry_attempt": 3}
    with pytest.raises(CampaignError, match=r"nights \['2024-04-01'\] are not in campaign sdo-v2"):
        campaign.run_conf(C, retry_nights=[D(2024, 4, 1)], retry_attempt=1)
    with pytest.raises(CampaignError, match="retry_attempt"):
        campaign.run_conf(C, retry_nights=[D(2024, 3, 2)], retry_attempt=0)


def test_chunks_of_the_runs_are_the_plan_then_each_retry():
    cr = campaign.campaign_runs("sdo-v2", [run("r1", FIRST),
                                           run("r3", {**FIRST, "retry_nights": ["2024-03-06"], "retry_attempt": 2}),
                                           run("r2", {**FIRST, "retry_nights": ["2024-03-02"], "retry_attempt": 1})])
    chunks = campaign.chunks_of(cr, SITE)
    assert [(k.label, len(k.nights)) for k in chunks] == [("0", 4), ("1", 2), ("r1-0", 1), ("r2-0", 1)]


# -- listing the chunks in SLURM ------------------------------------------------------------------

# sacct -X ... --format=JobID,JobName then squeue --format='%i|%j', as the local SLURM prints them
LISTING = """\
301_0|hfc.demo-x.campaign.sdo-v2.0
301_1|hfc.demo-x.campaign.sdo-v2.0
301_[2-3%1]|hfc.demo-x.campaign.sdo-v2.0
302|hfc.demo-x.campaign.sdo-v2.1
310_0|hfc.demo-x.campaign.sdo-v2.r1-0
301_[2-3%1]|hfc.demo-x.campaign.sdo-v2.0
"""


def test_parse_chunks_gives_each_label_its_array():
    found = campaign.parse_chunks(LISTING + "400_0|hfc.demo-x.campaign.sdo-v2.1\n"
                                  "999_0|hfc.demo-x.campaign.sdo-v2x.0\n"  # another campaign's prefix
                                  "998_0|hfc.demo-x.campaign.sdo-v2.evil;x\n", "demo-x", "sdo-v2")
    assert found.arrays == {"0": "301", "1": "302", "r1-0": "310"}
    assert found.duplicates == {"1": ("302", "400")}
    assert campaign.retry_attempts_found(found) == {1}


def test_chunks_command_lists_by_prefix_and_fails_when_sacct_fails(tmp_path):
    cmd = campaign.chunks_command("demo-x", "sdo-v2", D(2026, 12, 1))
    assert "sacct -X -n -P --starttime=2026-12-01 --format=JobID,JobName" in cmd
    assert "squeue --me --noheader --states=all" in cmd
    with pytest.raises(CampaignError, match="campaign id"):
        campaign.chunks_command("demo-x", "a;rm -rf /", D(2026, 12, 1))
    # run by sh with fake sacct/squeue: only the campaign's lines, and sacct's failure is not "no chunk"
    for name, body in (("sacct", f"printf '%s' {shlex.quote(LISTING)}\necho '5_0|hfc.other.0'"),
                       ("squeue", "echo '311_[0-1]|hfc.demo-x.campaign.sdo-v2.r2-0'")):
        (tmp_path / name).write_text(f"#!/bin/bash\n{body}\n")
        (tmp_path / name).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}  # run by sh: the login shell may not be bash
    out = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True, check=True).stdout
    assert "hfc.other" not in out
    assert campaign.parse_chunks(out, "demo-x", "sdo-v2").arrays == {"0": "301", "1": "302", "r1-0": "310",
                                                                     "r2-0": "311"}
    (tmp_path / "sacct").write_text("#!/bin/bash\necho 'sacct: error: slurmdbd down' >&2\nexit 1\n")
    assert subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True).returncode != 0


# -- status ------------------------------------------------------------------------------------------


def row(job: str, state: str, exit_code: str = "0:0", elapsed: str = "00:01:00", reason: str = "None") -> str:
    return f"{job}|n|{state}|{exit_code}|{elapsed}|s|e|vm|{reason}|t\n"


def chunks_and_found():
    cr = campaign.campaign_runs("sdo-v2", [run("r1", FIRST, state="running")])
    chunks = campaign.chunks_of(cr, SITE)  # 0: 03-01..03-04, 1: 03-05..03-06
    sacct = (row("301_0", "COMPLETED") + row("301_1", "FAILED", "3:0", "00:00:05")
             + row("301_2", "RUNNING", "0:0", "00:00:20") + row("301_3", "CANCELLED by 1001", "0:0", "00:00:00")
             + row("302_[0-1%1]", "PENDING", "0:0", "00:00:00", "JobArrayTaskLimit"))
    return cr, chunks, slurm.parse_sacct(sacct)


def test_status_from_slurm_alone():
    cr, chunks, found = chunks_and_found()
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301", "1": "302"}, found, throttle=1)
    assert st.counts == {"done": 1, "failed": 1, "cancelled": 1, "running": 1, "pending": 2}
    assert st.failed_nights == {D(2024, 3, 2): "job 301_1, state FAILED, exit code 3, node vm, elapsed 00:00:05"}
    assert st.nights[D(2024, 3, 6)].job_id == "302_1" and st.nights[D(2024, 3, 6)].reason.startswith("job 302_1")
    # one night took 60 s, throttle 1: 2 pending × 60 + 40 left of the running one
    assert st.eta_seconds == pytest.approx(160) and not st.finished
    assert "1/6 done, 1 failed, 1 cancelled, 1 running, 2 pending; ETA 0:02:40" == st.summary()
    d = st.to_dict()
    assert d["failed"] == {"2024-03-02": st.failed_nights[D(2024, 3, 2)]} and d["cancelled"] == ["2024-03-04"]
    assert d["counts"]["pending"] == 2 and d["arrays"] == {"0": "301", "1": "302"} and not d["catalogue_read"]


def test_a_night_not_submitted_yet_is_pending():
    cr, chunks, found = chunks_and_found()
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301"}, found)
    assert st.nights[D(2024, 3, 5)] == campaign.NightStatus(D(2024, 3, 5), "pending", "not submitted yet")


def test_the_catalogue_decides_what_is_done_after_slurm():
    cr, chunks, found = chunks_and_found()
    arrays = {"0": "301", "1": "302"}
    going = campaign.campaign_status(cr.campaign, chunks, arrays, found, loaded=[], downstream_active=True)
    assert going.nights[D(2024, 3, 1)].state == "running"  # completed, archive/catalogue to come
    ended = campaign.campaign_status(cr.campaign, chunks, arrays, found, loaded=[], downstream_active=False)
    assert ended.nights[D(2024, 3, 1)].state == "failed"
    assert "not in the catalogue" in ended.failed_nights[D(2024, 3, 1)]
    done = campaign.campaign_status(cr.campaign, chunks, arrays, found, loaded=[D(2024, 3, 1)])
    assert done.nights[D(2024, 3, 1)].state == "done" and done.catalogue_read


def test_a_retry_chunk_overrides_the_first_once_slurm_knows_it():
    cr = campaign.campaign_runs("sdo-v2", [
        run("r1", FIRST), run("r2", {**FIRST, "retry_nights": ["2024-03-02"], "retry_attempt": 1}, state="running")])
    chunks = campaign.chunks_of(cr, SITE)
    _, _, found = chunks_and_found()
    # the retry run has not submitted its chunk yet: the night waits for it, not failed
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301", "1": "302"}, found, downstream_active=True)
    assert st.nights[D(2024, 3, 2)].state == "pending" and "retry" in st.nights[D(2024, 3, 2)].reason
    found = {**found, **slurm.parse_sacct(row("310_0", "COMPLETED", elapsed="00:00:30"))}
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301", "1": "302", "r1-0": "310"}, found)
    night = st.nights[D(2024, 3, 2)]
    assert (night.state, night.job_id, night.chunk) == ("done", "310_0", "r1-0")
    assert st.count("failed") == 0 and st.count("done") == 2
    # the retry failed again: the retry's reason
    found = {**found, **slurm.parse_sacct(row("310_0", "FAILED", "2:0"))}
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301", "1": "302", "r1-0": "310"}, found)
    assert st.failed_nights[D(2024, 3, 2)].startswith("job 310_0, state FAILED, exit code 2")


def test_finished_campaign_has_eta_zero():
    cr = campaign.campaign_runs("sdo-v2", [run("r1", FIRST)])
    chunks = campaign.chunks_of(cr, SITE)
    sacct = "".join(row(f"301_{i}", "COMPLETED") for i in range(4)) + row("302_0", "COMPLETED") + row(
        "302", "CANCELLED by 1001")
    st = campaign.campaign_status(cr.campaign, chunks, {"0": "301", "1": "302"}, slurm.parse_sacct(sacct))
    assert st.finished and st.eta_seconds == 0.0
    assert st.counts == {"done": 5, "failed": 0, "cancelled": 1, "running": 0, "pending": 0}


# -- the overview of the status page ---------------------------------------------------------------


class FakeApi:
    def __init__(self, runs):
        self.runs = runs

    def call(self, method, path, body=None, query=None):
        assert (method, path) == ("GET", "/dags/hfc_campaign/dagRuns")
        return {"dag_runs": self.runs, "total_entries": len(self.runs)}


def test_overview_reads_each_campaign_and_names_what_failed():
    from hfc_tasks import status

    runs = [run("a1", FIRST, state="running", after="2026-12-03T09:00:00Z"),
            run("b1", {**FIRST, "campaign_id": "<b>", "first": "soon"}),
            run("c1", {**FIRST, "campaign_id": "c"}, after="2026-12-01T00:00:00Z")]
    listing = "301_0|hfc.demo-x.campaign.sdo-v2.0\n"
    sacct = row("301_0", "COMPLETED") + row("301_1", "FAILED", "3:0") + row("301_[2-3]", "PENDING")

    def run_cmd(command):
        if "campaign.c." in command:
            raise slurm.SlurmError("sacct failed on the cluster (exit 1): slurmdbd down")
        return listing if "--starttime" in command else sacct

    entries, problems = status.campaigns_overview(FakeApi(runs), SITE, run_cmd)
    assert problems == [] and [e.campaign_id for e in entries] == ["sdo-v2", "<b>", "c"]  # newest first
    a, b, c = entries
    assert a.status.counts == {"done": 1, "failed": 1, "cancelled": 0, "running": 0, "pending": 4}
    assert "conf first 'soon' is not a night" in b.error and "slurmdbd down" in c.error
    d = a.to_dict()
    assert d["runs"] == [{"run_id": "a1", "state": "running"}] and d["failed"]["2024-03-02"].startswith("job 301_1")
    # the page: counts, ETA, failed nights with reasons; every string escaped
    from hfc_tasks.provider.status_app.campaigns import _campaign_html

    html = _campaign_html(a)
    assert '<td data-count="done">1</td>' in html and '<td data-count="pending">4</td>' in html
    assert '<li data-night="2024-03-02"><b>2024-03-02</b> job 301_1, state FAILED, exit code 3' in html
    assert "<b>&lt;b&gt;" not in _campaign_html(b) and "&lt;b&gt;" in _campaign_html(b)
    # the cluster unreachable: each campaign says so, the page still shows them
    entries, _ = status.campaigns_overview(FakeApi(runs), SITE, None)
    assert entries[0].error == "the cluster could not be reached: SLURM states unknown"
