"""Campaigns (issue 15) without a cluster: chunking into arrays, the throttle, array index → night,
the array chunk's batch script (run by bash here), the parsing of array tasks in sacct/squeue
(rows as the local SLURM 22.05 prints them), one sacct per poll for any number of array tasks,
and progress/ETA."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from hfc_tasks import campaign, products, slurm
from hfc_tasks.campaign import Campaign, CampaignError, Chunk
from hfc_tasks.registry import Frc, Site

D = dt.date
BASE = {"products_root": "/p", "frc_root": "/f", "archive_root": "/a", "public_url_base": "http://x/a"}


def site(**kw) -> Site:
    return Site(**{**BASE, **kw})


def frc(command: str = "echo {night} {run_dir}", name: str = "demo-x") -> Frc:
    return Frc(name=name, version="1", feature="T", observatory="SDO", instrument="HMI", command=command)


# -- plan ---------------------------------------------------------------------------------------


def test_nights_are_the_range_both_ends_included():
    c = Campaign("demo-x", D(2024, 2, 27), D(2024, 3, 2), "c1")
    assert c.nights == (D(2024, 2, 27), D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 1), D(2024, 3, 2))


@pytest.mark.parametrize("kw,match", [
    ({"campaign_id": "a.b"}, "campaign id"), ({"campaign_id": "x y"}, "campaign id"),
    ({"campaign_id": "$(id)"}, "campaign id"), ({"frc": "a;b"}, "FRC name"),
    ({"last": D(2024, 1, 1)}, "before the first"), ({"first": "2024-03-01"}, "not a date"),
])
def test_bad_campaigns_are_refused_naming_what(kw, match):
    args = {"frc": "demo-x", "first": D(2024, 3, 1), "last": D(2024, 3, 5), "campaign_id": "c1", **kw}
    with pytest.raises(CampaignError, match=match):
        Campaign(**args)


def test_chunks_hold_at_most_the_site_array_max_in_order():
    c = Campaign("demo-x", D(2024, 1, 1), D(2024, 1, 1) + dt.timedelta(days=2499), "sdo-v2")
    chunks = campaign.plan_chunks(c, site(campaign_array_max=1000))
    assert [len(k.nights) for k in chunks] == [1000, 1000, 500]
    assert [k.job_name for k in chunks] == [f"hfc.demo-x.campaign.sdo-v2.{i}" for i in range(3)]
    assert sum((k.nights for k in chunks), ()) == c.nights
    assert len(campaign.plan_chunks(c, site(campaign_array_max=2500))) == 1
    assert [len(k.nights) for k in campaign.plan_chunks(c, site(campaign_array_max=7))][-1] == 2500 % 7


def test_job_names_are_deterministic_so_a_second_plan_adopts():
    c = Campaign("demo-x", D(2024, 1, 1), D(2024, 1, 30), "c1")
    assert campaign.plan_chunks(c, site(campaign_array_max=8)) == campaign.plan_chunks(c, site(campaign_array_max=8))


def test_array_spec_and_throttle():
    k = Chunk("demo-x", "c1", "0", tuple(D(2024, 1, 1) + dt.timedelta(days=i) for i in range(10)))
    assert k.array_spec() == "0-9"
    assert k.array_spec(4) == "0-9%4"
    assert Chunk("demo-x", "c1", "1", (D(2024, 1, 1),)).array_spec(1) == "0-0%1"
    with pytest.raises(slurm.SlurmError):
        k.array_spec(0)


def test_index_to_night_and_back_and_task_ids():
    nights = tuple(D(2024, 3, 1) + dt.timedelta(days=i) for i in range(5))
    k = Chunk("demo-x", "c1", "2", nights)
    assert [k.night_of(i) for i in range(5)] == list(nights)
    assert k.index_of(D(2024, 3, 4)) == 3
    assert k.task_id("812", D(2024, 3, 4)) == "812_3"
    assert k.task_ids("812")[D(2024, 3, 1)] == "812_0"
    with pytest.raises(CampaignError, match="no array index 5"):
        k.night_of(5)
    with pytest.raises(CampaignError, match="not in chunk"):
        k.index_of(D(2024, 4, 1))


def test_retry_chunks_have_new_names_and_only_those_nights():
    c = Campaign("demo-x", D(2024, 3, 1), D(2024, 3, 31), "c1")
    (r,) = campaign.plan_retry(c, [D(2024, 3, 9), D(2024, 3, 3)], 1, site())
    assert r.job_name == "hfc.demo-x.campaign.c1.r1-0" and r.nights == (D(2024, 3, 3), D(2024, 3, 9))
    assert campaign.plan_retry(c, [D(2024, 3, 3)], 2, site())[0].job_name.endswith(".r2-0")
    with pytest.raises(CampaignError, match="not in campaign"):
        campaign.plan_retry(c, [D(2024, 4, 1)], 1, site())


# -- the batch script and the submission --------------------------------------------------------


def test_array_batch_script_runs_the_night_of_its_index(tmp_path):
    """Run by bash as SLURM would run array task 1: the night's command, in its run folder, output
    in the run folder under the night's job name and the task id (what archive looks for)."""
    root = tmp_path / "prod ucts $(touch pwned)"
    s = site(products_root=str(root), frc_root="/opt/frcs")
    f = frc("echo night={night} start={start} dir={run_dir}; pwd")
    k = Chunk(f.name, "c1", "0", (D(2024, 3, 1), D(2024, 3, 2), D(2024, 3, 3)))
    script = slurm.array_batch_script(campaign.array_tasks(k, f, s), job_name=k.job_name)
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "812",
           "SLURM_JOB_ID": "815"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(products.run_dir(str(root), f.name, D(2024, 3, 2)))
    out = (run_dir / products.output_name(products.job_name(f.name, D(2024, 3, 2)), "812_1")).read_text()
    assert f"night=2024-03-02 start=2024-03-02T00:00:00 dir={run_dir}\n{run_dir}\n" in out
    assert "array task 812_1 (job 815) night 2024-03-02" in out and "finished" in out
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.rglob("pwned"))
    assert sorted(p.name for p in (root / f.name).iterdir()) == ["20240302"]  # only its night


def test_array_batch_script_fails_like_the_command_and_refuses_unknown_indexes(tmp_path):
    s = site(products_root=str(tmp_path))
    f = frc("echo about to fail; exit 3")
    k = Chunk(f.name, "c1", "0", (D(2024, 3, 1),))
    script = slurm.array_batch_script(campaign.array_tasks(k, f, s), job_name=k.job_name)
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_JOB_ID": "9", "SLURM_JOB_ID": "9"}
    assert subprocess.run(["bash", "-c", script], env={**env, "SLURM_ARRAY_TASK_ID": "0"}).returncode == 3
    bad = subprocess.run(["bash", "-c", script], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True,
                         text=True)
    assert bad.returncode == 64 and "no night for array index 1" in bad.stderr


@pytest.mark.parametrize("task", [
    slurm.ArrayTask(night="2024-03-01; rm -rf /", run_dir="/p", job_name="hfc.x.1", command="true"),
    slurm.ArrayTask(night=dt.datetime(2024, 3, 1), run_dir="/p", job_name="hfc.x.1", command="true"),
    slurm.ArrayTask(night=D(2024, 3, 1), run_dir="/p", job_name="hfc.x.1;id", command="true"),
    slurm.ArrayTask(night=D(2024, 3, 1), run_dir="/p\nid", job_name="hfc.x.1", command="true"),
])
def test_array_batch_script_refuses_what_is_not_a_night_or_a_plain_name(task):
    with pytest.raises(slurm.SlurmError):
        slurm.array_batch_script([task], job_name="hfc.x.campaign.c.0")


def test_chunk_submission_adopts_by_name_record_and_accounting():
    s = site(products_root="/data/p", campaign_array_throttle=4, stagger_seconds=0, default_partition="hfc")
    f = frc()
    k = campaign.plan_chunks(Campaign(f.name, D(2024, 3, 1), D(2024, 3, 10), "c1"), s)[0]
    sub = campaign.chunk_submission(k, f, s, since=D(2026, 12, 1))
    assert sub.job_name == k.job_name
    assert "--array=0-9%4" in sub.script and "--job-name=hfc.demo-x.campaign.c1.0" in sub.script
    assert "--output=/data/p/.hfc-campaigns/demo-x/c1/hfc.demo-x.campaign.c1.0.%A_%a.out" in sub.script
    assert "--partition=hfc" in sub.script and "--no-requeue" in sub.script
    assert "squeue --me --noheader --name=hfc.demo-x.campaign.c1.0" in sub.script  # live: adopted
    assert "attempt=campaign:c1" in sub.script  # the record of this campaign's submission: adopted
    assert "sacct -X -n -P --name=hfc.demo-x.campaign.c1.0 --starttime=2026-12-01" in sub.script
    assert "flock -w" in sub.script and "lock=/data/p/.hfc-submit.lock" in sub.script
    assert sub.stdin.count("hfc_night_") == 11 and "10) " not in sub.stdin
    assert sub.timeout > slurm.submit_timeout()
    # without since: the nightly script exactly (no sacct step)
    assert "sacct" not in campaign.chunk_submission(k, f, s).script


def test_submit_script_without_since_is_unchanged():
    args = {"job_name": "hfc.a.20240301", "sbatch": "sbatch x", "lock_file": "/l", "stagger_seconds": 5}
    assert slurm.submit_script(**args) == slurm.submit_script(**args, since=None)


# -- sacct / squeue of array tasks --------------------------------------------------------------

# sacct -X -n -P -o <SACCT_FIELDS> as the local SLURM printed it for `--array=0-5%2` (task 2 exit 3),
# mid-run: tasks 0-1 and 3 ended or running, 4-5 still pending as one range row.
SACCT_MID = (
    "103_0|hfc.c|COMPLETED|0:0|00:00:03|t|t|vm|None|t\n"
    "103_1|hfc.c|COMPLETED|0:0|00:00:03|t|t|vm|None|t\n"
    "103_2|hfc.c|FAILED|3:0|00:00:03|t|t|vm|JobArrayTaskLimit|t\n"
    "103_3|hfc.c|RUNNING|0:0|00:00:01|t|Unknown|vm|JobArrayTaskLimit|t\n"
    "103_[4-5%2]|hfc.c|PENDING|0:0|00:00:00|Unknown|Unknown|None assigned|JobArrayTaskLimit|t\n"
)


def test_parse_sacct_files_array_tasks_and_pending_ranges_by_task_id():
    found = slurm.parse_sacct(SACCT_MID)
    tasks = slurm.tasks_of(found, "103")
    assert sorted(tasks) == [0, 1, 2, 3, 4, 5]
    assert tasks[0].succeeded and tasks[0].job_id == "103_0"
    assert tasks[2].state == "FAILED" and tasks[2].exit_code == 3
    assert tasks[2].describe().startswith("job 103_2, state FAILED, exit code 3")
    assert "JobArrayTaskLimit" not in tasks[2].describe()  # the throttle's pending reason, not why it failed
    assert tasks[3].state == "RUNNING" and tasks[5].state == "PENDING" and tasks[5].reason == "JobArrayTaskLimit"


def test_a_task_own_row_wins_over_a_cancelled_range_that_still_names_it():
    # after `scancel --state=PENDING 109` while 109_1 ran: sacct keeps 109_[1-5%1] CANCELLED
    found = slurm.parse_sacct(
        "109_[1-5%1]|a|CANCELLED by 1001|0:0|00:00:00|x|y|None|None|t\n"
        "109_0|a|COMPLETED|0:0|00:00:04|x|y|vm|None|t\n"
        "109_1|a|COMPLETED|0:0|00:00:04|x|y|vm|JobArrayTaskLimit|t\n")
    tasks = slurm.tasks_of(found, "109")
    assert [tasks[i].state for i in range(6)] == ["COMPLETED", "COMPLETED"] + ["CANCELLED"] * 4


def test_an_array_own_row_stands_for_the_tasks_never_started():
    # `scancel --state=PENDING 122` while 122_0 ran (throttle 1): sacct and squeue print 122 CANCELLED
    sacct = ("122_0|a|COMPLETED|0:0|00:00:01|x|y|vm|None|t\n"
             "122|a|CANCELLED by 1001|0:0|00:00:00|x|y|None|None|t\n")
    squeue = "122|a|CANCELLED|JobArrayTaskLimit|0:00\n122_0|a|COMPLETED|None|0:01\n"
    for found in (slurm.parse_sacct(sacct), slurm.parse_squeue(squeue)):
        tasks = slurm.tasks_of(found, "122", 8)
        assert [tasks[i].state for i in range(8)] == ["COMPLETED"] + ["CANCELLED"] * 7
        assert tasks[5].job_id == "122_5"
        assert sorted(slurm.tasks_of(found, "122")) == [0]  # without the count: the rows as they are
    k = Chunk("demo-x", "c1", "0", tuple(D(2024, 3, 1) + dt.timedelta(days=i) for i in range(8)))
    p = campaign.progress(campaign.night_statuses(k, "122", slurm.parse_sacct(sacct)))
    assert (p.done, p.cancelled) == (1, 7)


@pytest.mark.parametrize("sacct,squeue", [
    # the array's own row CANCELLED, task 0's own row not yet in accounting
    ("146|a|CANCELLED by 1001|0:0|00:00:00|x|y|None|None|t\n",
     "146|a|CANCELLED|JobArrayTaskLimit|0:00\n146_0|a|COMPLETED|None|0:01\n"),
    # a cancelled range that still names task 0, which ran
    ("146_[0-7%1]|a|CANCELLED by 1001|0:0|00:00:00|x|y|None|None|t\n",
     "146|a|CANCELLED|JobArrayTaskLimit|0:00\n146_0|a|COMPLETED|None|0:01\n"),
])
def test_tasks_ended_in_bulk_are_checked_with_squeue_which_knows_those_that_ran(sacct, squeue):
    """Seen on the local SLURM right after `scancel --state=PENDING`: accounting has the bulk row
    before the row of the task that had just completed; squeue (MinJobAge) knows it."""
    calls, run = _answers({"sacct": sacct, "squeue": squeue,
                           "scontrol": "JobId=147 ArrayJobId=146 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0\n"})
    found = slurm.run_plan(slurm.job_states(["146_*"]), run)
    assert calls == [slurm.sacct_command(["146"]), slurm.squeue_command(["146_*"]), "scontrol -o show job 146"]
    tasks = slurm.tasks_of(found, "146", 8)
    assert tasks[0].succeeded and tasks[0].source == "squeue+scontrol"
    assert [tasks[i].state for i in range(1, 8)] == ["CANCELLED"] * 7
    # once accounting has every task's own row, squeue is not asked
    calls, run = _answers({"sacct": "".join(f"146_{i}|a|COMPLETED|0:0|1|x|y|n|None|t\n" for i in range(8))})
    slurm.run_plan(slurm.job_states(["146_*"]), run)
    assert calls == [slurm.sacct_command(["146"])]


def test_parse_squeue_array_rows():
    found = slurm.parse_squeue("103_[2-5%2]|n|PENDING|JobArrayTaskLimit|0:00\n103_1|n|RUNNING|None|0:03\n"
                               "103_0|n|COMPLETED|None|0:03\n")
    tasks = slurm.tasks_of(found, "103")
    assert {i: t.state for i, t in tasks.items()} == {0: "COMPLETED", 1: "RUNNING", 2: "PENDING", 3: "PENDING",
                                                      4: "PENDING", 5: "PENDING"}


@pytest.mark.parametrize("spec,indexes", [("4-5%2", [4, 5]), ("7", [7]), ("1,3,5-9:2", [1, 3, 5, 7, 9]),
                                          ("[0-2]", [0, 1, 2])])
def test_expand_indexes(spec, indexes):
    assert slurm.expand_indexes(spec) == indexes


@pytest.mark.parametrize("ref", ["12_3", "12_*", "12"])
def test_refs(ref):
    assert slurm.check_job_ref(ref) == ref


@pytest.mark.parametrize("ref", ["12_", "12_3;id", "_3", "12_[1-3]", "12_-1", "12 3"])
def test_hostile_refs_refused(ref):
    with pytest.raises(slurm.SlurmError):
        slurm.check_job_ref(ref)
    with pytest.raises(slurm.SlurmError):
        slurm.scancel_command(ref)


def _answers(answers):
    calls = []

    def run(command):
        calls.append(command)
        return answers[command.split()[0]]

    return calls, run


def test_job_states_asks_an_array_once_whatever_the_number_of_its_tasks():
    calls, run = _answers({"sacct": SACCT_MID})
    refs = [f"103_{i}" for i in range(6)] + ["103_*"]
    found = slurm.run_plan(slurm.job_states(refs), run)
    assert calls == [f"sacct -X -n -P -j 103 -o {','.join(slurm.SACCT_FIELDS)}"]
    assert all(r in found for r in refs[:-1])


def test_job_states_array_tasks_accounting_lags_go_to_squeue_then_one_scontrol_per_array():
    calls, run = _answers({
        "sacct": "103_0|a|COMPLETED|0:0|00:00:03|x|y|vm|None|t\n",
        "squeue": "103_4|a|FAILED|NonZeroExitCode|0:03\n103_5|a|RUNNING|None|0:01\n103_0|a|COMPLETED|None|0:03\n",
        "scontrol": "JobId=108 ArrayJobId=103 ArrayTaskId=4 JobState=FAILED ExitCode=2:0\n"
                    "JobId=103 ArrayJobId=103 ArrayTaskId=5 JobState=RUNNING ExitCode=0:0\n",
    })
    found = slurm.run_plan(slurm.job_states(["103_0", "103_4", "103_5", "7"]), run)
    assert calls == [slurm.sacct_command(["103", "7"]), slurm.squeue_command(["103_4", "103_5", "7"]),
                     "scontrol -o show job 103"]
    assert found["103_0"].source == "sacct"  # accounting wins
    assert found["103_4"].exit_code == 2 and found["103_4"].source == "squeue+scontrol"
    assert found["103_5"].state == "RUNNING" and "7" not in found


def test_poller_serves_tasks_and_whole_arrays_with_one_sacct(monkeypatch):
    from hfc_tasks.provider.triggers import SacctPoller

    calls = []

    async def fake_command(self, command):
        calls.append(command)
        return SACCT_MID + "1|plain|RUNNING|0:0|00:00:01|x|y|n|None\n"

    monkeypatch.setattr(SacctPoller, "_command", fake_command)

    async def scenario():
        poller = SacctPoller.get("array-test", 1.0, 5.0)
        refs = ["1", "103_*", *(f"103_{i}" for i in range(6))]
        queues = {r: poller.subscribe(r) for r in refs}
        poller.task.cancel()
        changed = await poller.poll_once()
        return changed, {r: q.get_nowait() for r, q in queues.items()}

    changed, got = asyncio.run(scenario())
    assert changed and len(calls) == 1 and calls[0].startswith("sacct -X -n -P -j 1,103 ")
    assert got["1"].state == "RUNNING" and got["103_2"].exit_code == 3 and got["103_5"].state == "PENDING"
    whole = slurm.tasks_of(got["103_*"], "103", 6)
    assert sorted(whole) == [0, 1, 2, 3, 4, 5] and whole[0].succeeded


def test_array_trigger_round_trip_and_job_trigger_takes_a_task():
    import importlib

    from hfc_tasks.provider.triggers import SlurmArrayTrigger, SlurmJobTrigger

    trig = SlurmArrayTrigger(ssh_conn_id="c", array_job_id="103", count=6, known_final=[1, 0], batch=2)
    path, kwargs = trig.serialize()
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**kwargs).serialize() == (path, kwargs)
    assert kwargs["known_final"] == [0, 1]
    assert SlurmJobTrigger(ssh_conn_id="c", job_id="103_4").job_id == "103_4"
    with pytest.raises(slurm.SlurmError):
        SlurmJobTrigger(ssh_conn_id="c", job_id="103_*")
    with pytest.raises(slurm.SlurmError):
        SlurmArrayTrigger(ssh_conn_id="c", array_job_id="103_1", count=2)


def test_array_trigger_fires_when_every_task_ended(monkeypatch):
    from hfc_tasks.provider.triggers import SacctPoller, SlurmArrayTrigger

    ended = SACCT_MID.replace("RUNNING", "COMPLETED").replace(
        "103_[4-5%2]|hfc.c|PENDING|0:0|00:00:00|Unknown|Unknown|None assigned|JobArrayTaskLimit|t",
        "103_4|hfc.c|COMPLETED|0:0|00:00:03|t|t|vm|None|t\n103_5|hfc.c|COMPLETED|0:0|00:00:03|t|t|vm|None|t")
    answers = iter([SACCT_MID, ended])
    last = [""]

    async def fake_command(self, command):
        last[0] = next(answers, last[0])
        return last[0]

    monkeypatch.setattr(SacctPoller, "_command", fake_command)
    monkeypatch.setattr(SlurmArrayTrigger, "MIN_EVENT_DELAY", 0.0)

    async def scenario():
        trig = SlurmArrayTrigger(ssh_conn_id="array-fire", array_job_id="103", count=6, poll_interval=0.01,
                                 max_poll_interval=0.01)
        return await asyncio.wait_for(anext(trig.run()), 10)

    event = asyncio.run(scenario())
    assert event.payload["status"] == "final" and len(event.payload["tasks"]) == 6
    assert event.payload["tasks"]["2"]["exit_code"] == 3


# -- progress -----------------------------------------------------------------------------------


def status(state: str, elapsed: str = "00:00:00", exit_code: int | None = 0, job_id: str = "9_0") -> slurm.JobStatus:
    return slurm.JobStatus(job_id=job_id, state=state, raw_state=state, exit_code=exit_code, signal=0,
                           elapsed=elapsed)


def test_progress_counts_reasons_and_eta_from_mean_and_throttle():
    nights = [D(2024, 3, 1) + dt.timedelta(days=i) for i in range(10)]
    st = {
        nights[0]: status("COMPLETED", "00:01:00"),
        nights[1]: status("COMPLETED", "00:03:00"),
        nights[2]: status("FAILED", "00:00:05", 3, "9_2"),
        nights[3]: status("CANCELLED", exit_code=0),
        nights[4]: status("RUNNING", "00:00:30"),
        nights[5]: status("RUNNING", "00:01:30"),
        nights[6]: status("PENDING", exit_code=None),
        nights[7]: None, nights[8]: None, nights[9]: status("PENDING", exit_code=None),
    }
    p = campaign.progress(st, throttle=2)
    assert (p.total, p.done, p.failed, p.cancelled, p.running, p.pending) == (10, 2, 1, 1, 2, 4)
    assert p.failed_nights == {nights[2]: "job 9_2, state FAILED, exit code 3, elapsed 00:00:05"}
    assert p.cancelled_nights == (nights[3],)
    assert p.mean_run_seconds == 120.0
    # 4 pending × 120 s + running remainders (90 + 30) over 2 at once
    assert p.eta_seconds == pytest.approx((4 * 120 + 90 + 30) / 2)
    assert "2/10 done, 1 failed" in p.summary() and "ETA 0:05:00" in p.summary()
    # without a throttle: as many at once as run now; an explicit parallelism wins
    assert campaign.progress(st).parallelism == 2
    assert campaign.progress(st, throttle=2, parallelism=4).eta_seconds == pytest.approx((480 + 120) / 4)


def test_progress_eta_unknown_before_any_night_is_done_and_zero_when_finished():
    n = D(2024, 3, 1)
    assert campaign.progress({n: status("RUNNING", "00:00:10")}).eta_seconds is None
    done = campaign.progress({n: status("COMPLETED", "1-00:00:00"), n + dt.timedelta(days=1): status("FAILED",
                                                                                                    exit_code=1)})
    assert done.finished and done.eta_seconds == 0.0 and done.mean_run_seconds == 86400
    # a lone long night: the ETA is at least what it has left
    p = campaign.progress({n: status("COMPLETED", "00:10:00"), n + dt.timedelta(days=1): status("RUNNING", "00:01:00")},
                          throttle=50)
    assert p.eta_seconds == 540


def test_squeue_completed_without_exit_code_counts_as_done():
    n = D(2024, 3, 1)
    assert campaign.progress({n: status("COMPLETED", "0:03", exit_code=None)}).done == 1


@pytest.mark.parametrize("text,seconds", [("00:01:02", 62), ("1-02:00:00", 93600), ("0:03", 3), ("12:05.5", 725.5),
                                          ("", None), ("INVALID", None)])
def test_parse_elapsed(text, seconds):
    assert campaign.parse_elapsed(text) == seconds


def test_night_statuses_and_merge_with_a_retry():
    nights = (D(2024, 3, 1), D(2024, 3, 2), D(2024, 3, 3))
    k = Chunk("demo-x", "c1", "0", nights)
    first = campaign.night_statuses(k, "103", slurm.parse_sacct(SACCT_MID))
    assert first[D(2024, 3, 3)].state == "FAILED"
    r = Chunk("demo-x", "c1", "r1-0", (D(2024, 3, 3),))
    again = campaign.night_statuses(r, "200", slurm.parse_sacct("200_0|a|COMPLETED|0:0|00:00:02|x|y|vm|None|t\n"))
    merged = campaign.merge_statuses(first, again)
    assert merged[D(2024, 3, 3)].succeeded and merged[D(2024, 3, 1)].job_id == "103_0"
    assert campaign.merge_statuses(first, {D(2024, 3, 1): None})[D(2024, 3, 1)] is not None


def test_default_campaign_id_is_the_run_id_made_plain():
    from hfc_tasks.campaign import CAMPAIGN_ID, CampaignError, default_campaign_id

    assert default_campaign_id("manual__2026-12-03T08:02:59.228013+00:00") == "manual-20261203T080259228013"
    assert default_campaign_id("scheduled__2026-01-01T00:00:00+00:00") == "scheduled-20260101T000000"
    assert CAMPAIGN_ID.match(default_campaign_id("hfc campaign start; rm -rf /"))
    with pytest.raises(CampaignError, match="name the campaign"):
        default_campaign_id("__;;__")
