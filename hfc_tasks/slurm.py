"""SLURM commands and their answers: build ``sbatch``/``squeue``/``sacct``/``scancel`` command
lines (every value shell-quoted) and parse what they print into job states; the submit's
decision (:class:`Decision`) and the one rule that reads a job's state (:func:`job_states`:
sacct, then squeue and scontrol), used by the worker's hook and the triggerer's poller alike.

Pure logic, no Airflow and no SSH: the hooks run these command lines on the cluster's
login node; the tests check the quoting and the parsing on their own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

from hfc_tasks.products import output_name
from hfc_tasks.registry import SlurmResources

# End states, as sacct prints them (``CANCELLED by 1001`` is normalised to CANCELLED).
SUCCESS_STATES = frozenset({"COMPLETED"})
FAILURE_STATES = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "REVOKED",
    }
)
FINAL_STATES = SUCCESS_STATES | FAILURE_STATES
# States in which a job with our name is "live": a retry adopts it instead of submitting again.
LIVE_STATES = (
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    # COMPLETING is not "live": a job that is ending (or being cancelled because its night
    # is recomputed) must not be adopted by the next submit.
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
)
# Submit is last: a line without it (an older poller's, a test's) still parses, with submit "".
SACCT_FIELDS = ("JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "Start", "End", "NodeList", "Reason",
                "Submit")
_SACCT_OPTIONAL = ("Submit",)
# squeue --states=all still knows jobs that ended less than MinJobAge ago: the fallback when
# accounting lags (slurmdbd down or slow) or a site has no accounting at all.
SQUEUE_FIELDS = "%i|%j|%T|%r|%M"
_JOB_ID = re.compile(r"^\d+$")


class SlurmError(RuntimeError):
    """A SLURM command failed or answered something we cannot read."""


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # normalised: first word, e.g. CANCELLED
    raw_state: str  # as printed, e.g. "CANCELLED by 1001"
    exit_code: int | None
    signal: int | None
    name: str = ""
    elapsed: str = ""
    start: str = ""
    end: str = ""
    nodes: str = ""
    reason: str = ""
    source: str = "sacct"
    submit: str = ""  # sacct's Submit (queue seconds = Start - Submit: hfc_tasks.metrics)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCESS_STATES and self.exit_code == 0

    def describe(self) -> str:
        parts = [f"job {self.job_id}", f"state {self.raw_state}"]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.signal:
            parts.append(f"signal {self.signal}")
        if self.reason and self.reason not in ("None", "(null)"):
            parts.append(f"reason {self.reason}")
        if self.nodes and self.nodes not in ("None assigned", "(null)"):
            parts.append(f"node {self.nodes}")
        if self.elapsed:
            parts.append(f"elapsed {self.elapsed}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def check_job_id(job_id: str | int) -> str:
    job_id = str(job_id).strip()
    if not _JOB_ID.match(job_id):
        raise SlurmError(f"{job_id!r} is not a SLURM job id")
    return job_id


def batch_script(command: str, *, job_name: str) -> str:
    """The batch script sent to ``sbatch`` on stdin: fail fast, say what runs."""
    return (
        "#!/bin/bash\n"
        f"# {job_name}: submitted by the HFC nightly pipeline (Airflow)\n"
        "set -euo pipefail\n"
        'echo "[hfc] job ${SLURM_JOB_ID} on $(hostname) started $(date -u +%FT%TZ)"\n'
        f"{command}\n"
        'echo "[hfc] job ${SLURM_JOB_ID} finished $(date -u +%FT%TZ)"\n'
    )


def sbatch_command(
    *,
    job_name: str,
    run_dir: str,
    resources: SlurmResources,
    default_partition: str | None = None,
) -> str:
    """``mkdir`` the run folder, then ``sbatch --parsable`` reading the script from stdin."""
    partition = resources.partition or default_partition
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name}",
        f"--chdir={run_dir}",
        f"--output={run_dir}/{output_name(job_name)}",
        f"--time={resources.time}",
        f"--mem={resources.mem}",
        f"--cpus-per-task={resources.cpus}",
    ]
    if partition:
        args.append(f"--partition={partition}")
    # Never rerun behind the pipeline's back: after a node failure the job ends NODE_FAIL (the
    # wait fails naming the node; a clear of 'submit' runs it again), unless the FRC allows a
    # requeue (`--requeue` in its slurm extra). Else the cluster's JobRequeue (default 1) decides.
    if "--requeue" not in resources.extra:
        args.append("--no-requeue")
    args.extend(resources.extra)
    return f"mkdir -p {shlex.quote(run_dir)} && " + " ".join(shlex.quote(a) for a in args)


def parse_sbatch(stdout: str) -> str:
    """``--parsable`` prints ``<jobid>`` or ``<jobid>;<cluster>``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not _JOB_ID.match(job_id):
        raise SlurmError(f"sbatch answered {stdout.strip()!r}, not a job id")
    return job_id


# Bounds of the remote submit script, and our side's wait for its answer. Ordered so that our
# side always outlasts the cluster: the channel timeout is longer than the lock wait plus the
# squeue and sbatch bounds, so a try never gives up while the cluster may still submit (the
# retry would then submit again). A try whose answer is lost anyway (the connection drops)
# is covered by the submission record: see :func:`submit_script`.
SUBMIT_LOCK_WAIT = 120
SQUEUE_TIMEOUT = 60
SBATCH_TIMEOUT = 120
SUBMIT_MARGIN = 60


def submit_timeout(lock_wait: int = SUBMIT_LOCK_WAIT) -> float:
    """Seconds our side waits for the submit script: longer than everything it may do."""
    return float(lock_wait + SQUEUE_TIMEOUT + SBATCH_TIMEOUT + SUBMIT_MARGIN)


def submit_script(
    *,
    job_name: str,
    sbatch: str,
    lock_file: str,
    stagger_seconds: int,
    attempt: str = "",
    lock_wait: int = SUBMIT_LOCK_WAIT,
) -> str:
    """One remote shell script that adopts or submits, serialised by ``flock`` on the cluster.

    Under the lock: a live job with our name is adopted (prints ``ADOPT <id>``); else the job
    that this same ``attempt`` (a submit task's chain of tries: its retries share it, a clear
    starts a new one) already submitted is adopted whatever its state, from the record
    ``<lock>.jobs/<job name>`` (a try whose answer was lost after ``sbatch`` succeeded, its
    job may have ended since); else, if the last submission (the lock file's mtime) is less
    than ``stagger_seconds`` ago, it prints ``WAIT <seconds>`` and submits nothing (the
    operator defers, holding no worker slot); else it runs ``sbatch`` (script on stdin),
    records the job, touches the lock file and prints ``SUBMIT <id>``.

    A failing ``squeue`` or ``sbatch`` fails the script (exit 76 / 77, their error on stderr):
    an unanswered "is a job live?" never reads as "no". Every step is bounded (``flock -w``,
    ``timeout``) within :func:`submit_timeout`. The lock makes "at least N seconds apart" and
    "never two jobs with one name" hold even when several submit tasks reach the login node at once.
    """
    q = shlex.quote
    return "\n".join(
        [
            "set -eu",
            f"lock={q(lock_file)}",
            f"name={q(job_name)}",
            'record="$lock.jobs/$name"',
            f"attempt={q(attempt)}",
            'mkdir -p "$(dirname "$lock")" "$lock.jobs"',
            'exec 9>>"$lock"',
            f'flock -w {int(lock_wait)} 9 || {{ echo "cannot lock $lock within {int(lock_wait)} s '
            '(another submission holds it): nothing submitted" >&2; exit 75; }',
            f"if ! live=$(timeout -k 5 {SQUEUE_TIMEOUT} {live_jobs_command(job_name)}); then",
            '  echo "squeue failed: cannot tell whether job $name is already live; nothing submitted" >&2',
            "  exit 76",
            "fi",
            'if [ -n "$live" ]; then echo "ADOPT ${live%%[!0-9]*}"; exit 0; fi',
            'if [ -n "$attempt" ] && [ -s "$record" ]; then',
            '  prev=$(cat "$record")',
            '  if [ "${prev#* }" = "$attempt" ]; then echo "ADOPT ${prev%% *}"; exit 0; fi',
            "fi",
            f"stagger={int(stagger_seconds)}",
            'if [ "$stagger" -gt 0 ]; then',
            '  wait=$(( $(stat -c %Y "$lock") + stagger - $(date +%s) ))',
            '  if [ "$wait" -gt 0 ] && [ -s "$lock.stamp" ]; then echo "WAIT $wait"; exit 0; fi',
            "fi",
            f"if ! out=$(timeout -k 5 {SBATCH_TIMEOUT} sh -c {q(sbatch)}); then",
            '  echo "sbatch failed: job $name not submitted" >&2',
            "  exit 77",
            "fi",
            'job=$(printf "%s\\n" "$out" | tail -n 1)',
            "job=${job%%;*}",
            'case "$job" in ""|*[!0-9]*) echo "sbatch answered \'$out\', not a job id" >&2; exit 77;; esac',
            # Recorded before anything is printed: a try that never reads the answer is adopted.
            'printf "%s %s\\n" "$job" "$attempt" > "$record.part" && mv -f "$record.part" "$record"',
            'touch "$lock"; echo stamp > "$lock.stamp"',
            'echo "SUBMIT $job"',
        ]
    )


class Decision(StrEnum):
    """What :func:`submit_script` did, as it prints it: the first word of its answer."""

    ADOPT = "ADOPT"  # a live job with our name, or the one this attempt submitted: its id follows
    SUBMIT = "SUBMIT"  # a new job: its id follows
    WAIT = "WAIT"  # too soon after the last submission: the seconds to wait follow


def parse_submit(stdout: str) -> tuple[Decision, str]:
    """``(ADOPT|SUBMIT, job id)`` or ``(WAIT, seconds)`` from :func:`submit_script`'s output."""
    for line in reversed(stdout.strip().splitlines()):
        verb, _, rest = line.strip().partition(" ")
        if verb == Decision.WAIT and rest.strip().isdigit():
            return Decision.WAIT, rest.strip()
        if verb in (Decision.ADOPT, Decision.SUBMIT):
            return Decision(verb), parse_sbatch(rest)
    raise SlurmError(f"submission answered {stdout.strip()!r}: expected ADOPT, SUBMIT or WAIT")


def live_jobs_command(job_name: str) -> str:
    """Our own live jobs with this exact name: one id per line."""
    return " ".join(
        [
            "squeue",
            "--me",
            "--noheader",
            f"--name={shlex.quote(job_name)}",
            f"--states={','.join(LIVE_STATES)}",
            "--format=%i",
        ]
    )


def parse_job_ids(stdout: str) -> list[str]:
    """The job ids :func:`live_jobs_command` printed, sorted (what the cancellation cancels)."""
    return sorted({line.strip() for line in stdout.splitlines() if _JOB_ID.match(line.strip())}, key=int)


def sacct_command(job_ids: list[str] | tuple[str, ...]) -> str:
    ids = ",".join(check_job_id(j) for j in job_ids)
    return f"sacct -X -n -P -j {ids} -o {','.join(SACCT_FIELDS)}"


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """Parse ``sacct -X -n -P -o <SACCT_FIELDS>``; keeps the last line per job (requeues)."""
    jobs: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < len(SACCT_FIELDS) - len(_SACCT_OPTIONAL):
            raise SlurmError(f"sacct line has {len(cols)} fields, expected {len(SACCT_FIELDS)}: {line!r}")
        rec = dict(zip(SACCT_FIELDS, cols, strict=False))
        rec.setdefault("Reason", "")
        rec.setdefault("Submit", "")
        raw_state = rec["State"].strip()
        exit_code, signal = _parse_exit(rec["ExitCode"])
        jobs[rec["JobIDRaw"]] = JobStatus(
            job_id=rec["JobIDRaw"],
            state=raw_state.split()[0].rstrip("+") if raw_state else "UNKNOWN",
            raw_state=raw_state,
            exit_code=exit_code,
            signal=signal,
            name=rec["JobName"],
            elapsed=rec["Elapsed"],
            start=rec["Start"],
            end=rec["End"],
            nodes=rec["NodeList"],
            reason=rec["Reason"],
            submit=rec["Submit"].strip(),
        )
    return jobs


def squeue_command(job_ids: list[str] | tuple[str, ...]) -> str:
    ids = ",".join(check_job_id(j) for j in job_ids)
    # squeue exits 1 for ids it has never heard of: that is an answer ("missing"), not an error.
    return f"squeue --noheader --states=all --jobs={ids} --format='{SQUEUE_FIELDS}' 2>/dev/null; true"


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    jobs: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 5 or not _JOB_ID.match(cols[0]):
            continue
        state = cols[2].strip()
        jobs[cols[0]] = JobStatus(
            job_id=cols[0], state=state, raw_state=state, exit_code=None, signal=None,
            name=cols[1], elapsed=cols[4], reason=cols[3], source="squeue",
        )
    return jobs


def scontrol_command(job_id: str) -> str:
    return f"scontrol -o show job {check_job_id(job_id)}"


def with_scontrol_exit(status: JobStatus, stdout: str) -> JobStatus:
    """Complete a final state that only squeue knew (no exit code there) from ``scontrol``."""
    m = re.search(r"\bExitCode=(\d+):(\d+)", stdout)
    if not m:
        return status
    return JobStatus(**{**status.to_dict(), "exit_code": int(m.group(1)), "signal": int(m.group(2)),
                        "source": "squeue+scontrol"})


# Ids per sacct call: keeps the command line far below ARG_MAX with thousands of jobs.
SACCT_BATCH = 1000

# A plan of commands: yields each command line, is sent its stdout, returns its result.
Plan = Generator[str, str, dict[str, JobStatus]]


def job_states(job_ids: Sequence[str], *, batch: int = SACCT_BATCH) -> Plan:
    """The states of ``job_ids``: ``sacct`` first (in batches of ``batch`` ids); ``squeue
    --states=all`` for the jobs accounting does not know (yet); for those squeue says ended,
    the exit code from ``scontrol`` (accounting lags: it comes from the controller).

    No I/O: the caller runs each command line this yields and sends back its stdout, raising
    if it failed (:func:`run_plan` or :func:`arun_plan`), so the worker's hook and the
    triggerer's poller read states by the same rule. Returns the statuses; a job that neither
    sacct nor squeue knows is absent.
    """
    ids = [check_job_id(j) for j in job_ids]
    found: dict[str, JobStatus] = {}
    for i in range(0, len(ids), batch):
        found.update(parse_sacct((yield sacct_command(ids[i : i + batch]))))
    missing = [j for j in ids if j not in found]
    if missing:
        for job_id, status in parse_squeue((yield squeue_command(missing))).items():
            if status.is_final:
                status = with_scontrol_exit(status, (yield scontrol_command(job_id)))
            found[job_id] = status
    return found  # noqa: B901 - the plan's result, which run_plan/arun_plan hand back


def run_plan(plan: Plan, run: Callable[[str], str]) -> dict[str, JobStatus]:
    """Carry out ``plan`` with ``run`` (command line -> stdout)."""
    try:
        command = next(plan)
        while True:
            command = plan.send(run(command))
    except StopIteration as done:
        return done.value


async def arun_plan(plan: Plan, run: Callable[[str], Awaitable[str]]) -> dict[str, JobStatus]:
    """:func:`run_plan` with an async ``run``."""
    try:
        command = next(plan)
        while True:
            command = plan.send(await run(command))
    except StopIteration as done:
        return done.value


def steps_command(job_id: str) -> str:
    """Per-step accounting of one job (MaxRSS lives on the steps, not the allocation)."""
    return f"sacct -n -P -j {check_job_id(job_id)} -o JobID,MaxRSS,Elapsed,TotalCPU"


def max_rss(stdout: str) -> str:
    """The largest MaxRSS over a job's steps, as SLURM prints it (e.g. 123456K), or ''."""
    best, text = -1.0, ""
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for line in stdout.splitlines():
        cols = line.split("|")
        if len(cols) < 2 or not cols[1].strip():
            continue
        raw = cols[1].strip()
        try:
            value = float(raw[:-1]) * units[raw[-1]] if raw[-1] in units else float(raw)
        except ValueError:
            continue
        if value > best:
            best, text = value, raw
    return text


def _parse_exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.strip().partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def scancel_command(job_id: str) -> str:
    return f"scancel {check_job_id(job_id)}"
