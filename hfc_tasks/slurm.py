"""SLURM commands and their answers: build ``sbatch``/``squeue``/``sacct``/``scancel`` command
lines (every value shell-quoted) and parse what they print into job states; the submit's
decision (:class:`Decision`) and the one rule that reads a job's state (:func:`job_states`:
sacct, then squeue and scontrol), used by the worker's hook and the triggerer's poller alike.

Job arrays (reprocessing campaigns, :mod:`hfc_tasks.campaign`): a job is named by a *reference*
(:func:`check_job_ref`): a plain job ``12345``, one array task ``12345_7`` or a whole array
``12345_*``. :func:`job_states` reads all three with one ``sacct`` (an array task is asked as its
array, so that the tasks still pending, which sacct prints as one range row ``12345_[8-20%4]``,
come back too); :func:`array_batch_script`, :func:`array_sbatch_command` and the ``since``
check of :func:`submit_script` submit an array chunk; :func:`cancel_pending_command` cancels
what has not started.

Pure logic, no Airflow and no SSH: the hooks run these command lines on the cluster's
login node; the tests check the quoting and the parsing on their own.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
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
# JobID, not JobIDRaw: the same for a plain job, and for an array task its task id ``12345_7``
# (JobIDRaw is then the task's own number, e.g. 12352, which no one asks for) or, for the tasks
# of an array still pending, one range row ``12345_[8-20%4]``.
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Elapsed", "Start", "End", "NodeList", "Reason",
                "Submit")
_SACCT_OPTIONAL = ("Submit",)
# squeue --states=all still knows jobs that ended less than MinJobAge ago: the fallback when
# accounting lags (slurmdbd down or slow) or a site has no accounting at all.
SQUEUE_FIELDS = "%i|%j|%T|%r|%M"
_JOB_ID = re.compile(r"^\d+$")
_TASK_ID = re.compile(r"^(\d+)_(\d+)$")  # one array task: <array job id>_<index>
_ARRAY_REF = re.compile(r"^(\d+)_\*$")  # every task of an array (our notation, not SLURM's)
# The tasks of an array that sacct/squeue print as one row (pending ones; after `scancel` of
# the pending tasks, the cancelled ones): 12345_[8-20%4], 12345_[1,3,5-9:2].
_TASK_RANGE = re.compile(r"^(\d+)_\[([0-9,:\-]+)(?:%\d+)?\]$")
# The pending reason a throttled array task keeps in accounting after it ran: not why it ended.
_STALE_ARRAY_REASONS = frozenset({"JobArrayTaskLimit"})
# Suffix of JobStatus.source for a task's status read from a row of several tasks (a range, or
# the array's own row): the row of the task itself, from sacct or squeue, wins over it.
_BULK = "-range"


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


def check_job_ref(ref: str | int, *, whole_array: bool = True) -> str:
    """A job reference: a plain job id ``12345``, an array task ``12345_7`` or (when
    ``whole_array``) every task of an array ``12345_*``; anything else raises :class:`SlurmError`
    (they reach a shell)."""
    ref = str(ref).strip()
    if _JOB_ID.match(ref) or _TASK_ID.match(ref) or (whole_array and _ARRAY_REF.match(ref)):
        return ref
    what = "a SLURM job id, array task (12345_7)" + (" or array (12345_*)" if whole_array else "")
    raise SlurmError(f"{ref!r} is not {what}")


def task_id(array_job_id: str | int, index: int) -> str:
    """The id of one array task, ``<array job id>_<index>``: what sacct, squeue, scancel and the
    pipeline (the night's job id, its output file ``<job name>.<array job id>_<index>.out``) call it."""
    if not isinstance(index, int) or index < 0:
        raise SlurmError(f"array index {index!r} is not a non-negative integer")
    return f"{check_job_id(array_job_id)}_{index}"


def array_ref(array_job_id: str | int) -> str:
    """The reference of every task of an array: ``<array job id>_*`` (:func:`job_states`, the poller)."""
    return f"{check_job_id(array_job_id)}_*"


def split_task_id(ref: str) -> tuple[str, int]:
    """``12345_7`` → ``("12345", 7)``."""
    m = _TASK_ID.match(str(ref).strip())
    if not m:
        raise SlurmError(f"{ref!r} is not a SLURM array task id (<array job id>_<index>)")
    return m.group(1), int(m.group(2))


def expand_indexes(spec: str) -> list[int]:
    """The indexes of an array range as SLURM prints or takes it: ``8-20%4``, ``1,3,5-9:2``, ``7``
    (the ``%`` throttle is dropped)."""
    body = spec.strip().strip("[]").split("%")[0]
    out: list[int] = []
    for part in body.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        try:
            first, last, every = int(lo), int(hi or lo), int(step or 1)
        except ValueError:
            raise SlurmError(f"array range {spec!r} is not one SLURM prints (e.g. 8-20%4)") from None
        if every < 1 or last < first:
            raise SlurmError(f"array range {spec!r} is not one SLURM prints (e.g. 8-20%4)")
        out.extend(range(first, last + 1, every))
    return out


def array_spec(count: int, throttle: int | None = None) -> str:
    """``sbatch --array`` of ``count`` tasks indexed from 0: ``0-(count-1)``, with ``%throttle``
    (at most that many running at once) when given."""
    if count < 1:
        raise SlurmError(f"an array needs at least one task, not {count}")
    spec = f"0-{count - 1}"
    if throttle is not None:
        if throttle < 1:
            raise SlurmError(f"array throttle {throttle} must be at least 1")
        spec += f"%{int(throttle)}"
    return spec


def ref_sort_key(ref: str) -> tuple[int, int]:
    """Sort references by job id, then index (a whole array before its tasks)."""
    head, _, tail = ref.partition("_")
    return int(head), (int(tail) if tail.isdigit() else -1)


def tasks_of(found: Mapping[str, JobStatus], array_job_id: str | int, count: int | None = None) -> dict[int, JobStatus]:
    """The array's tasks among :func:`job_states`' answer (or a poller's delivery), by index.

    With ``count`` (the array has tasks ``0..count-1``), a task without a row of its own takes the
    array's own row when there is one: the tasks that never started, once they are no longer
    printed as a range. After ``scancel`` of the pending tasks before the second task started,
    sacct and squeue print ``12345`` CANCELLED (not ``12345_[1-7%1]``) beside ``12345_0``
    COMPLETED."""
    array_job_id = check_job_id(array_job_id)
    prefix = f"{array_job_id}_"
    tasks = {int(k[len(prefix):]): v for k, v in found.items() if k.startswith(prefix) and k[len(prefix):].isdigit()}
    rest = found.get(array_job_id)
    if count is not None and rest is not None:
        for index in range(count):
            if index not in tasks:
                tasks[index] = replace(rest, job_id=f"{prefix}{index}", source=rest.source + _BULK)
    return tasks


def array_rows(found: Mapping[str, JobStatus], array_job_id: str | int) -> dict[str, JobStatus]:
    """What ``found`` holds of an array: its tasks' rows and its own (what :func:`tasks_of` reads)."""
    array_job_id = check_job_id(array_job_id)
    prefix = f"{array_job_id}_"
    return {k: v for k, v in found.items() if k == array_job_id or k.startswith(prefix)}


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
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name}",
        f"--chdir={run_dir}",
        f"--output={run_dir}/{output_name(job_name)}",
        *_resource_args(resources, default_partition),
    ]
    return f"mkdir -p {shlex.quote(run_dir)} && " + " ".join(shlex.quote(a) for a in args)


def _resource_args(resources: SlurmResources, default_partition: str | None) -> list[str]:
    """The FRC's resources (one night's: an array task gets the same as a nightly job)."""
    partition = resources.partition or default_partition
    args = [f"--time={resources.time}", f"--mem={resources.mem}", f"--cpus-per-task={resources.cpus}"]
    if partition:
        args.append(f"--partition={partition}")
    # Never rerun behind the pipeline's back: after a node failure the job ends NODE_FAIL (the
    # wait fails naming the node; a clear of 'submit' runs it again), unless the FRC allows a
    # requeue (`--requeue` in its slurm extra). Else the cluster's JobRequeue (default 1) decides.
    if "--requeue" not in resources.extra:
        args.append("--no-requeue")
    args.extend(resources.extra)
    return args


# A job name or night job name written into a batch script: no quoting needed, none possible.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ArrayTask:
    """One night of an array chunk: the night, its run folder, the night's own job name (its
    output file is ``<job name>.<array job id>_<index>.out`` in the run folder, as a nightly
    job's is ``<job name>.<job id>.out``) and the FRC's command for that night (rendered by
    :meth:`hfc_tasks.registry.Frc.render_command`, every value already shell-quoted)."""

    night: dt.date
    run_dir: str
    job_name: str
    command: str


def array_batch_script(tasks: Sequence[ArrayTask], *, job_name: str) -> str:
    """The batch script of an array chunk: array task ``i`` runs ``tasks[i]``.

    The table of nights is written in the script (a ``case`` on ``SLURM_ARRAY_TASK_ID``), so the
    night never comes from the environment or a file: every night is a :class:`datetime.date`
    (written as ISO ``YYYY-MM-DD``), every name plain, every path shell-quoted. Each task works
    as the nightly job of its night does: it makes and enters the night's run folder, writes its
    output there (``<night job name>.<array job id>_<index>.out``, what ``archive`` looks for
    with the night's job id ``<array job id>_<index>``) and runs the night's command, failing
    fast (``set -euo pipefail``). An index without a night exits 64.
    """
    if not tasks:
        raise SlurmError(f"array chunk {job_name}: no nights")
    if not _PLAIN_NAME.match(job_name):
        raise SlurmError(f"job name {job_name!r} is not plain (letters, digits, . _ -)")
    lines = [
        "#!/bin/bash",
        f"# {job_name}: array chunk of {len(tasks)} night(s), submitted by the HFC pipeline (Airflow)",
        "set -euo pipefail",
        'i="${SLURM_ARRAY_TASK_ID:?not run as a SLURM array task}"',
        'case "$i" in',
    ]
    for index, task in enumerate(tasks):
        if type(task.night) is not dt.date:
            raise SlurmError(f"array chunk {job_name}, index {index}: night {task.night!r} is not a date")
        if not _PLAIN_NAME.match(task.job_name):
            raise SlurmError(f"array chunk {job_name}, index {index}: job name {task.job_name!r} is not plain")
        if not task.run_dir or "\n" in task.run_dir:
            raise SlurmError(f"array chunk {job_name}, index {index}: run folder {task.run_dir!r} is not a path")
        lines.append(f"  {index}) night={task.night.isoformat()}; run_dir={shlex.quote(task.run_dir)}; "
                     f"job={task.job_name} ;;")
    lines += [
        f'  *) echo "[hfc] {job_name}: no night for array index $i" >&2; exit 64 ;;',
        "esac",
        'mkdir -p -- "$run_dir"',
        'cd -- "$run_dir"',
        'exec >"$job.${SLURM_ARRAY_JOB_ID}_$i.out" 2>&1',
        'echo "[hfc] array task ${SLURM_ARRAY_JOB_ID}_$i (job ${SLURM_JOB_ID}) night $night on $(hostname) '
        'started $(date -u +%FT%TZ)"',
    ]
    # One function per night: the command goes in verbatim, as in the nightly script.
    for index, task in enumerate(tasks):
        lines += [f"hfc_night_{index}() {{", task.command, "}"]
    lines += [
        '"hfc_night_$i"',
        'echo "[hfc] array task ${SLURM_ARRAY_JOB_ID}_$i night $night finished $(date -u +%FT%TZ)"',
    ]
    return "\n".join(lines) + "\n"


def array_sbatch_command(
    *,
    job_name: str,
    log_dir: str,
    count: int,
    throttle: int | None,
    resources: SlurmResources,
    default_partition: str | None = None,
) -> str:
    """``mkdir`` the chunk's log folder, then ``sbatch --parsable --array=0-(count-1)[%throttle]``
    (script on stdin, :func:`array_batch_script`). Each array task gets the FRC's resources of one
    night. The folder holds what SLURM itself writes (``<job name>.<array job id>_<index>.out``:
    e.g. a time limit's message); the FRC's output goes to the night's run folder."""
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name}",
        f"--array={array_spec(count, throttle)}",
        f"--chdir={log_dir}",
        f"--output={log_dir}/{job_name}.%A_%a.out",
        *_resource_args(resources, default_partition),
    ]
    return f"mkdir -p {shlex.quote(log_dir)} && " + " ".join(shlex.quote(a) for a in args)


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
    since: dt.date | dt.datetime | None = None,
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

    With ``since`` (an array chunk of a campaign, whose name is never run twice), a job of that
    name that accounting knows since then, whatever its state, is adopted too (after the live
    check and the record, before submitting): a chunk that already ran is never submitted again,
    even when the record is gone. A failing ``sacct`` fails the script (exit 78).
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
            *_accounted_check(job_name, since),
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


def _accounted_check(job_name: str, since: dt.date | dt.datetime | None) -> list[str]:
    if since is None:
        return []
    if not isinstance(since, dt.date):
        raise SlurmError(f"since {since!r} is not a date")
    start = since.strftime("%Y-%m-%dT%H:%M:%S") if isinstance(since, dt.datetime) else since.isoformat()
    sacct = f"sacct -X -n -P --name={shlex.quote(job_name)} --starttime={start} --format=JobID"
    return [
        f"if ! ran=$(timeout -k 5 {SQUEUE_TIMEOUT} {sacct}); then",
        '  echo "sacct failed: cannot tell whether job $name already ran; nothing submitted" >&2',
        "  exit 78",
        "fi",
        'if [ -n "$ran" ]; then echo "ADOPT ${ran%%[!0-9]*}"; exit 0; fi',
    ]


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


def _query_tokens(refs: Sequence[str]) -> list[str]:
    """The ids to ask sacct/squeue for ``refs``: a plain job as it is, an array task or a whole
    array as its array job id (so that its pending tasks, one range row, come back too); each once."""
    tokens: dict[str, None] = {}
    for ref in refs:
        ref = check_job_ref(ref)
        tokens[ref.partition("_")[0]] = None
    return list(tokens)


def sacct_command(job_ids: list[str] | tuple[str, ...]) -> str:
    """``sacct`` of jobs, array tasks and arrays (references: :func:`check_job_ref`)."""
    return f"sacct -X -n -P -j {','.join(_query_tokens(job_ids))} -o {','.join(SACCT_FIELDS)}"


def _array_rows(key: str, status: JobStatus, tasks: dict[str, JobStatus], ranged: dict[str, JobStatus]) -> None:
    """File a row of an array task (``12345_7``) or of pending tasks (``12345_[8-20%4]``) under each
    task's id. A task's own row wins over a range row that still names it (sacct keeps the range
    ``12345_[1-5]`` CANCELLED after a cancel although task 1 had started and completed)."""
    if m := _TASK_ID.match(key):
        reason = "" if status.is_final and status.reason in _STALE_ARRAY_REASONS else status.reason
        tasks[key] = replace(status, job_id=key, reason=reason)
    elif m := _TASK_RANGE.match(key):
        for index in expand_indexes(m.group(2)):
            ranged[f"{m.group(1)}_{index}"] = replace(status, job_id=f"{m.group(1)}_{index}",
                                                      source=status.source + _BULK)


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """Parse ``sacct -X -n -P -o <SACCT_FIELDS>``; keeps the last line per job (requeues).

    A plain job (or an array's own row: :func:`tasks_of`) is filed under its id, an array task
    under its task id (``12345_7``), a row of pending tasks (``12345_[8-20%4]``) under each of
    their task ids."""
    jobs: dict[str, JobStatus] = {}
    tasks: dict[str, JobStatus] = {}
    ranged: dict[str, JobStatus] = {}
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
        job_id = rec["JobID"].strip()
        status = JobStatus(
            job_id=job_id,
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
        if "_" in job_id:
            _array_rows(job_id, status, tasks, ranged)
        else:  # a plain job, or an array's own row (tasks_of)
            jobs[job_id] = status
    return {**jobs, **{k: v for k, v in ranged.items() if k not in tasks}, **tasks}


def squeue_command(job_ids: list[str] | tuple[str, ...]) -> str:
    """``squeue --states=all`` of jobs, array tasks and arrays (references: :func:`check_job_ref`)."""
    ids = ",".join(_query_tokens(job_ids))
    # squeue exits 1 for ids it has never heard of: that is an answer ("missing"), not an error.
    return f"squeue --noheader --states=all --jobs={ids} --format='{SQUEUE_FIELDS}' 2>/dev/null; true"


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """Parse ``squeue --format=<SQUEUE_FIELDS>``: plain jobs by id, array tasks by task id
    (``12345_7``), a row of pending tasks (``12345_[8-20%4]``) under each of their task ids."""
    jobs: dict[str, JobStatus] = {}
    tasks: dict[str, JobStatus] = {}
    ranged: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 5:
            continue
        state = cols[2].strip()
        status = JobStatus(
            job_id=cols[0], state=state, raw_state=state, exit_code=None, signal=None,
            name=cols[1], elapsed=cols[4], reason=cols[3], source="squeue",
        )
        if _JOB_ID.match(cols[0]):  # a plain job, or an array's own row (tasks_of)
            jobs[cols[0]] = status
        else:
            _array_rows(cols[0], status, tasks, ranged)
    return {**jobs, **{k: v for k, v in ranged.items() if k not in tasks}, **tasks}


def scontrol_command(job_id: str) -> str:
    """``scontrol -o show job`` of a job or an array task (for an array job id: one line per task)."""
    return f"scontrol -o show job {check_job_ref(job_id, whole_array=False)}"


def scontrol_exits(stdout: str) -> dict[str, tuple[int, int]]:
    """Exit code and signal per array task (``12345_7``) from ``scontrol -o show job <array>``."""
    out: dict[str, tuple[int, int]] = {}
    for line in stdout.splitlines():
        array = re.search(r"\bArrayJobId=(\d+)", line)
        index = re.search(r"\bArrayTaskId=(\d+)\b(?!-)", line)
        code = re.search(r"\bExitCode=(\d+):(\d+)", line)
        if array and index and code:
            out[f"{array.group(1)}_{index.group(1)}"] = (int(code.group(1)), int(code.group(2)))
    return out


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

    ``job_ids`` are references (:func:`check_job_ref`): plain jobs, array tasks ``12345_7`` and
    whole arrays ``12345_*``. Tasks and arrays are asked as their array (one id per array in the
    sacct command, whatever the number of its tasks asked for): the answer holds every task of
    those arrays under its task id (:func:`tasks_of`). An array task or array unknown to sacct
    goes to squeue, and its tasks squeue says ended get their exit codes from one ``scontrol``
    per array.

    No I/O: the caller runs each command line this yields and sends back its stdout, raising
    if it failed (:func:`run_plan` or :func:`arun_plan`), so the worker's hook and the
    triggerer's poller read states by the same rule. Returns the statuses; a job that neither
    sacct nor squeue knows is absent.
    """
    refs = [check_job_ref(j) for j in job_ids]
    tokens = _query_tokens(refs)
    found: dict[str, JobStatus] = {}
    for i in range(0, len(tokens), batch):
        found.update(parse_sacct((yield sacct_command(tokens[i : i + batch]))))
    missing = [j for j in refs if not _known(j, found)]
    # An array whose tasks accounting gives as ended in bulk (a cancelled range, or the array's own
    # row after a cancel) may hold tasks that started and ended whose own rows accounting has not
    # written yet: squeue knows them (MinJobAge), so it is asked too, and its rows of single tasks
    # replace the bulk ones.
    missing_arrays = {r.partition("_")[0] for r in missing}
    unsure = [a for a in sorted({r.partition("_")[0] for r in refs if "_" in r}, key=int)
              if a not in missing_arrays and _ended_in_bulk(found, a)]
    if missing or unsure:
        from_squeue = parse_squeue((yield squeue_command(missing + [array_ref(a) for a in unsure])))
        arrays = {ref.partition("_")[0] for ref in missing if "_" in ref} | set(unsure)
        ended_arrays: dict[str, None] = {}
        asked = set(missing)
        for job_id, status in from_squeue.items():
            head = job_id.partition("_")[0]
            if job_id in asked and "_" not in job_id:  # a plain job asked for
                if status.is_final:
                    status = with_scontrol_exit(status, (yield scontrol_command(job_id)))
                found[job_id] = status
            elif head in arrays and _squeue_wins(found.get(job_id), status):
                found[job_id] = status  # a task, or the array's own row (tasks_of)
                if "_" in job_id and status.is_final:
                    ended_arrays[head] = None
        for array in ended_arrays:
            for key, (code, sig) in scontrol_exits((yield scontrol_command(array))).items():
                if key in found and found[key].source == "squeue" and found[key].is_final:
                    found[key] = replace(found[key], exit_code=code, signal=sig, source="squeue+scontrol")
    return found  # noqa: B901 - the plan's result, which run_plan/arun_plan hand back


def _ended_in_bulk(found: Mapping[str, JobStatus], array_job_id: str) -> bool:
    return any(v.is_final and (k == array_job_id or v.source.endswith(_BULK))
               for k, v in array_rows(found, array_job_id).items())


def _squeue_wins(known: JobStatus | None, status: JobStatus) -> bool:
    """Accounting wins, except a bulk row of it over squeue's row of the task itself."""
    if known is None:
        return True
    return known.source.endswith(_BULK) and not status.source.endswith(_BULK)


def _known(ref: str, found: Mapping[str, JobStatus]) -> bool:
    if m := _ARRAY_REF.match(ref):
        return bool(array_rows(found, m.group(1)))
    return ref in found


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
    """``scancel`` of a job or of one array task (``12345_7``)."""
    return f"scancel {check_job_ref(job_id, whole_array=False)}"


def cancel_pending_command(array_job_id: str) -> str:
    """Cancel the tasks of an array that have not started: running and ended tasks are kept (a
    campaign's cancel keeps what is done). Exits 1 ("Invalid job id") when nothing of the array
    is left in the queue: the caller takes that as "nothing to cancel"."""
    return f"scancel --state=PENDING {check_job_id(array_job_id)}"
