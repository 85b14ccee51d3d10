"""Pure logic of the SLURM stage: command lines (quoting), sacct parsing, the submit's decision and
the plan that reads job states (sacct, then squeue and scontrol)."""

import shlex

import pytest

from hfc_tasks import slurm
from hfc_tasks.registry import SlurmResources

HOSTILE = ["; rm -rf /", "$(touch /tmp/pwned)", "`id`", "a\nb", "x' y", "--wrap=evil"]


@pytest.mark.parametrize("value", HOSTILE)
def test_sbatch_command_quotes_hostile_run_dir(value):
    cmd = slurm.sbatch_command(job_name="hfc.demo.20240301", run_dir=f"/p/{value}", resources=SlurmResources())
    tokens = shlex.split(cmd)
    # the hostile text stays inside single arguments: mkdir's path and sbatch's --chdir/--output
    assert tokens[:3] == ["mkdir", "-p", f"/p/{value}"]
    assert f"--chdir=/p/{value}" in tokens
    assert tokens[3] == "&&" and tokens[4] == "sbatch"


def test_sbatch_command_shape():
    cmd = slurm.sbatch_command(
        job_name="hfc.demo-sunspots.20240301",
        run_dir="/data/products/demo-sunspots/20240301",
        resources=SlurmResources(time="00:10:00", mem="256M", cpus=2, extra=["--qos=normal"]),
        default_partition="debug",
    )
    tokens = shlex.split(cmd)
    assert "--parsable" in tokens
    assert "--job-name=hfc.demo-sunspots.20240301" in tokens
    assert "--output=/data/products/demo-sunspots/20240301/hfc.demo-sunspots.20240301.%j.out" in tokens
    assert {"--time=00:10:00", "--mem=256M", "--cpus-per-task=2", "--partition=debug", "--qos=normal"} <= set(tokens)


def test_parse_sbatch():
    assert slurm.parse_sbatch("1234\n") == "1234"
    assert slurm.parse_sbatch("1234;cluster\n") == "1234"
    with pytest.raises(slurm.SlurmError, match="not a job id"):
        slurm.parse_sbatch("sbatch: error: invalid partition")


def test_job_id_is_checked():
    with pytest.raises(slurm.SlurmError):
        slurm.scancel_command("12; rm -rf /")
    assert slurm.scancel_command("42") == "scancel 42"


SACCT = """\
11|hfc.a.20240301|COMPLETED|0:0|00:00:03|2024-03-02T00:00:01|2024-03-02T00:00:04|node1|None
12|hfc.b.20240301|FAILED|3:0|00:00:01|x|y|node1|NonZeroExitCode
13|hfc.c.20240301|CANCELLED by 1001|0:15|00:01:00|x|y|node1|None
14|hfc.d.20240301|TIMEOUT|0:0|00:01:12|x|y|node1|TimeLimit
15|hfc.e.20240301|RUNNING|0:0|00:00:10|x|Unknown|node1|None
16|hfc.f.20240301|PENDING|0:0|00:00:00|Unknown|Unknown|None assigned|JobHeldUser
"""


def test_parse_sacct_states():
    jobs = slurm.parse_sacct(SACCT)
    assert jobs["11"].succeeded and jobs["11"].is_final
    assert jobs["12"].state == "FAILED" and jobs["12"].exit_code == 3 and not jobs["12"].succeeded
    assert "exit code 3" in jobs["12"].describe() and "reason NonZeroExitCode" in jobs["12"].describe()
    assert jobs["13"].state == "CANCELLED" and jobs["13"].raw_state == "CANCELLED by 1001" and jobs["13"].is_final
    assert jobs["14"].state == "TIMEOUT" and jobs["14"].is_final
    assert not jobs["15"].is_final and not jobs["16"].is_final


def test_parse_sacct_rejects_garbage():
    with pytest.raises(slurm.SlurmError, match="fields"):
        slurm.parse_sacct("just some words\n")


def test_live_jobs_command_quotes_name():
    cmd = slurm.live_jobs_command("hfc.x.20240301")
    assert "--name=hfc.x.20240301" in shlex.split(cmd)
    assert slurm.parse_job_ids("  12\n9\n\nabc\n") == ["9", "12"]


def test_parse_squeue_fallback():
    jobs = slurm.parse_squeue("21|hfc.a.20240301|COMPLETED|None|0:03\n22|hfc.b.20240301|PENDING|JobHeldUser|0:00\n")
    assert jobs["21"].is_final and jobs["21"].source == "squeue" and jobs["21"].exit_code is None
    assert not jobs["22"].is_final and jobs["22"].reason == "JobHeldUser"


def test_submit_script_quotes_and_parses():
    script = slurm.submit_script(
        job_name="hfc.x.20240301", sbatch="sbatch --parsable", lock_file="/p/$(id)/.lock", stagger_seconds=60
    )
    assert "lock='/p/$(id)/.lock'" in script
    assert slurm.parse_submit("SUBMIT 42\n") == (slurm.Decision.SUBMIT, "42")
    assert slurm.parse_submit("ADOPT 7") == (slurm.Decision.ADOPT, "7")
    verb, seconds = slurm.parse_submit("WAIT 13")
    assert verb is slurm.Decision.WAIT and verb == "WAIT" and seconds == "13"  # a StrEnum: the word printed
    with pytest.raises(slurm.SlurmError, match="expected ADOPT"):
        slurm.parse_submit("sbatch: error: Batch job submission failed")


def test_max_rss_picks_largest_step():
    assert slurm.max_rss("12||00:00:01|\n12.batch|125432K|00:00:01|\n12.0|2M|00:00:01|\n") == "125432K"
    assert slurm.max_rss("12||00:00:01|\n") == ""


def test_scontrol_completes_a_squeue_final_state():
    st = slurm.parse_squeue("31|hfc.a.20240301|FAILED|NonZeroExitCode|0:01\n")["31"]
    assert st.exit_code is None
    done = slurm.with_scontrol_exit(st, "JobId=31 JobName=hfc.a JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0")
    assert done.exit_code == 3 and done.state == "FAILED" and "exit code 3" in done.describe()


def test_submit_timeouts_are_ordered_so_our_side_outlasts_the_cluster():
    """Issue 16 item 3: our side must never give up while the cluster may still submit."""
    for lock_wait in (1, slurm.SUBMIT_LOCK_WAIT, 600):
        script = slurm.submit_script(job_name="hfc.x.20240301", sbatch="sbatch --parsable", lock_file="/p/.lock",
                                     stagger_seconds=0, lock_wait=lock_wait)
        assert f"flock -w {lock_wait} 9" in script
        assert f"timeout -k 5 {slurm.SQUEUE_TIMEOUT} squeue" in script
        assert f"timeout -k 5 {slurm.SBATCH_TIMEOUT} sh -c" in script
        # every remote bound, with timeout's kill grace, is inside our wait
        assert slurm.submit_timeout(lock_wait) > lock_wait + slurm.SQUEUE_TIMEOUT + slurm.SBATCH_TIMEOUT + 2 * 5


def test_submit_script_never_reads_a_failing_squeue_as_no_live_job():
    script = slurm.submit_script(job_name="hfc.x.20240301", sbatch="sbatch --parsable", lock_file="/p/.lock",
                                 stagger_seconds=0, attempt="d/r/t/1")
    assert "| head" not in script  # no pipeline hides squeue's exit status
    assert "if ! live=$(timeout" in script and "exit 76" in script
    assert "if ! out=$(timeout" in script and "exit 77" in script
    # the submission is recorded before the answer is printed: a lost answer is adopted on retry
    assert script.index('mv -f "$record.part" "$record"') < script.index('echo "SUBMIT $job"')
    assert "attempt=d/r/t/1" in script


def test_sbatch_never_requeues_unless_the_frc_allows_it():
    """After a node failure the job must end NODE_FAIL (the wait names the node; a clear of submit
    reruns it), not be requeued behind the pipeline's back (SLURM's JobRequeue defaults to 1)."""
    plain = shlex.split(slurm.sbatch_command(job_name="hfc.a.20240301", run_dir="/p", resources=SlurmResources()))
    assert "--no-requeue" in plain
    allowed = shlex.split(slurm.sbatch_command(job_name="hfc.a.20240301", run_dir="/p",
                                               resources=SlurmResources(extra=["--requeue"])))
    assert "--requeue" in allowed and "--no-requeue" not in allowed


def test_describe_names_the_node():
    job = slurm.parse_sacct("17|hfc.g.20240301|NODE_FAIL|0:0|00:00:41|x|y|node2|None\n")["17"]
    assert job.is_final and not job.succeeded
    assert job.describe().startswith("job 17, state NODE_FAIL, exit code 0") and "node node2" in job.describe()
    assert "node" not in slurm.parse_sacct(SACCT)["16"].describe()


def _answers(answers: dict[str, str]):
    """A fake cluster for :func:`slurm.job_states`: each command's stdout, by its first word."""
    calls: list[str] = []

    def run(command: str) -> str:
        calls.append(command)
        return answers[command.split()[0]]

    return calls, run


def test_job_states_sacct_first_then_squeue_and_scontrol():
    calls, run = _answers({
        "sacct": "1|a|RUNNING|0:0|00:00:01|x|y|n|None\n",
        "squeue": "2|b|FAILED|NonZeroExitCode|0:01\n3|c|PENDING|Priority|0:00\n",
        "scontrol": "JobId=2 JobState=FAILED ExitCode=3:0",
    })
    found = slurm.run_plan(slurm.job_states(["1", "2", "3", "4"]), run)
    assert calls == [slurm.sacct_command(["1", "2", "3", "4"]), slurm.squeue_command(["2", "3", "4"]),
                     slurm.scontrol_command("2")]  # scontrol only for the job squeue says ended
    assert found["1"].source == "sacct" and found["3"].state == "PENDING" and "4" not in found
    assert found["2"].exit_code == 3 and found["2"].source == "squeue+scontrol"


def test_job_states_batches_sacct_and_asks_squeue_only_when_needed():
    calls, run = _answers({"sacct": "".join(f"{j}|a|COMPLETED|0:0|1|x|y|n|None\n" for j in range(1, 6))})
    found = slurm.run_plan(slurm.job_states([str(j) for j in range(1, 6)], batch=2), run)
    assert calls == [slurm.sacct_command(["1", "2"]), slurm.sacct_command(["3", "4"]), slurm.sacct_command(["5"])]
    assert sorted(found, key=int) == ["1", "2", "3", "4", "5"]


def test_job_states_async_driver_reads_the_same():
    import asyncio

    calls, run = _answers({"sacct": "", "squeue": "7|a|COMPLETED|None|0:03\n", "scontrol": "ExitCode=0:0"})

    async def arun(command: str) -> str:
        return run(command)

    found = asyncio.run(slurm.arun_plan(slurm.job_states(["7"]), arun))
    assert found["7"].succeeded and len(calls) == 3


def test_job_states_refuses_hostile_ids_before_running_anything():
    calls, run = _answers({})
    with pytest.raises(slurm.SlurmError):
        slurm.run_plan(slurm.job_states(["1; rm -rf /"]), run)
    assert calls == []
