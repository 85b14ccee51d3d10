"""The ``wait`` stage: :class:`SlurmJobSensor` waits for a SLURM job's end state.

Deferrable by default (the wait runs in the triggerer and holds no worker slot);
``deferrable=False`` gives a poke/reschedule sensor for sites without a triggerer.
It succeeds only on COMPLETED with exit code 0 and otherwise fails with the state, the
exit code, the elapsed time and the tail of the job's output file.

It never waits forever: the deferral carries a timeout of the FRC's SLURM time limit plus the
site's ``wait_margin_seconds``; a configuration error of the cluster connection (no or invalid
host key, unknown connection, changed host key, login refused) fails the task at once, without
retries; a cluster unreachable for the site's ``cluster_unreachable_seconds`` fails it with the
last error. Each of these failures leaves the job as it is on the cluster.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from hfc_tasks import products, slurm
from hfc_tasks.provider.links import HFC_LINKS
from hfc_tasks.provider.runs import claim_night, night_of
from hfc_tasks.registry import Site, load_registry


class SlurmJobSensor(BaseSensorOperator):
    template_fields: Sequence[str] = ("job_id",)
    ui_color = "#9ecae1"
    operator_extra_links = HFC_LINKS

    def __init__(
        self,
        *,
        job_id: str,
        frc: str,
        site: str | None = None,
        registry_path: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        max_poll_interval: float = 15.0,
        missing_timeout: float = 300.0,
        tail_lines: int = 50,
        **kwargs,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.job_id = job_id
        self.frc = frc
        self.site = site
        self.registry_path = registry_path
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.missing_timeout = missing_timeout
        self.tail_lines = tail_lines

    def _site(self) -> Site:
        """The site, read from the registry once per execute, poke or end of the wait."""
        return load_registry(self.registry_path).site(self.site)

    def _wait_bound(self) -> tuple[Site, int, int]:
        """The site, and (the FRC's SLURM time limit, the site's margin) in seconds: the longest wait."""
        registry = load_registry(self.registry_path)
        site = registry.site(self.site)
        return site, registry.frc(self.frc).slurm.time_limit_seconds, site.wait_margin_seconds

    def execute(self, context: Context) -> Any:
        # Another active run of this night: fail at once, never wait on (or cancel) its job.
        site, limit, margin = self._wait_bound()
        night = night_of(context)
        claim_night(context, site, self.frc, night, self.log)
        ti = context["ti"]
        self._claim = {"conn_id": site.catalogue_conn_id, "frc": self.frc, "night": night.isoformat(),
                       "dag_id": ti.dag_id, "run_id": ti.run_id}
        if not self.deferrable:
            self.timeout = min(self.timeout, limit + margin)
            return super().execute(context)
        from hfc_tasks.provider.triggers import SlurmJobTrigger  # asyncssh: imported on run, not at DAG parse

        self.log.info("waiting for SLURM job %s at most %d s (the FRC's time limit %d s + the site's "
                      "wait_margin_seconds %d s)", self.job_id, limit + margin, limit, margin)
        self.defer(
            trigger=SlurmJobTrigger(
                ssh_conn_id=site.cluster_conn_id,
                job_id=str(self.job_id),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                missing_timeout=self.missing_timeout,
                claim=self._claim,
                unreachable_timeout=float(site.cluster_unreachable_seconds),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=limit + margin),
        )

    def poke(self, context: Context) -> bool:
        from hfc_tasks.provider.hooks import SlurmHook

        site = self._site()
        hook = SlurmHook(site.cluster_conn_id)
        try:
            status = hook.status([str(self.job_id)]).get(str(self.job_id))
        finally:
            hook.close()
        if status is None:
            # Missing from sacct and squeue: pending for a bounded time, then a loud failure.
            if self._missing_for(context) > self.missing_timeout:
                raise AirflowException(
                    f"SLURM job {self.job_id} is unknown to sacct and squeue after {self.missing_timeout:.0f} s"
                )
            return False
        if not status.is_final:
            return False
        self._finish(context, status, site)
        return True

    def _missing_for(self, context: Context) -> float:
        # Poke mode keeps this object between pokes; reschedule mode builds a new one for each
        # poke, so there the clock is the date the wait was first rescheduled.
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            return 0.0 if first is None else (dt.datetime.now(dt.UTC) - first).total_seconds()
        self._first_missing = getattr(self, "_first_missing", None) or time.monotonic()
        return time.monotonic() - self._first_missing

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context):
        from airflow.sdk.exceptions import TaskDeferralTimeout

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as exc:
            if not isinstance(exc.__cause__, TaskDeferralTimeout):
                raise
            raise AirflowFailException(self._timeout_message(context)) from None

    def _timeout_message(self, context: Context) -> str:
        site, limit, margin = self._wait_bound()
        try:
            from hfc_tasks.provider.hooks import SlurmHook

            hook = SlurmHook(site.cluster_conn_id)
            try:
                status = hook.status([str(self.job_id)]).get(str(self.job_id))
            finally:
                hook.close()
            now = f"it is {status.raw_state} now" if status else "SLURM does not know it now"
        except Exception as exc:  # noqa: BLE001 - the state is a courtesy; the timeout is the message
            now = f"its state could not be read ({exc})"
        return (f"FRC {self.frc} night {night_of(context)}: SLURM job {self.job_id} has not ended within "
                f"{limit + margin} s (the FRC's slurm time limit {limit} s + the site's wait_margin_seconds "
                f"{margin} s); {now}. The job was left as it is: clear this task to wait for it again, or "
                f"cancel it (scancel {self.job_id}) and clear 'submit' to run the night again")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "error":
            # Configuration error (at once) or a cluster unreachable for the site's bound: no retry,
            # retrying cannot help or would only double the bound.
            raise AirflowFailException(f"FRC {self.frc} night {night_of(context)}: waiting for SLURM job "
                                       f"{self.job_id}: {event.get('message')}")
        if event.get("status") != "final":
            raise AirflowException(event.get("message") or f"waiting for job {self.job_id} failed: {event}")
        return self._finish(context, slurm.JobStatus(**event["job"]), self._site())

    def _finish(self, context: Context, status: slurm.JobStatus, site: Site) -> dict[str, Any]:
        from hfc_tasks.metrics import slurm_metrics
        from hfc_tasks.provider.hooks import SlurmHook
        from hfc_tasks.provider.operators import _send_metrics

        # Queue and run seconds of every job that ended, failed ones too (a TIMEOUT's run time counts).
        _send_metrics(slurm_metrics(self.frc, submit=status.submit, start=status.start, end=status.end), self.log)

        output = products.output_path(site.products_root, self.frc, night_of(context), status.job_id)
        result = {"job_id": status.job_id, "state": status.raw_state, "exit_code": status.exit_code,
                  "elapsed": status.elapsed, "output": output}
        hook = SlurmHook(site.cluster_conn_id)
        try:
            if status.succeeded:
                result["max_rss"] = hook.job_summary(status.job_id)
                self.log.info("SLURM %s, MaxRSS %s; output %s", status.describe(), result["max_rss"] or "n/a",
                              output)
                return result
            tail = hook.tail(output, self.tail_lines)
        finally:
            hook.close()
        self.log.error("last %d lines of %s:\n%s", self.tail_lines, output, tail)
        # The job's end is final: a retry of this wait would read the same end, so no retry.
        raise AirflowFailException(f"FRC {self.frc} night {night_of(context)}: SLURM {status.describe()}; output "
                                   f"file {output}. {self._what_to_do(status, site)}")

    def _what_to_do(self, status: slurm.JobStatus, site: Site) -> str:
        rerun = ("clear this FRC's 'submit' with its downstream tasks to run the night again (a new job); "
                 "this wait is not retried: the job's end is final")
        if status.state != "NODE_FAIL":
            return f"Fix the cause, then {rerun}"
        node = status.nodes or "(unknown)"
        now = ""
        if status.nodes:
            from hfc_tasks.provider.hooks import SlurmHook

            try:
                hook = SlurmHook(site.cluster_conn_id)
                try:
                    rc, out, _ = hook.run(f"scontrol -o show node {shlex.quote(status.nodes)}", timeout=30)
                finally:
                    hook.close()
                state = re.search(r"\bState=(\S+)", out) if rc == 0 else None
                reason = re.search(r"\bReason=(.*?)(?: \w+=|$)", out) if rc == 0 else None
                now = (f" (now: State={state.group(1) if state else '?'}"
                       f"{', Reason=' + reason.group(1).strip() if reason else ''})")
            except Exception as exc:  # noqa: BLE001 - the node's state is a courtesy; the failure is the message
                now = f" (its state could not be read: {exc})"
        return (f"Node {node} failed while the job ran{now}: SLURM ended the job. Once the node is back in "
                f"service (restart slurmd on it; if it stays DOWN: scontrol update nodename={node} state=resume), "
                f"{rerun}")

    def on_kill(self) -> None:
        # Worker side of "cancel on clear/mark" (non-deferrable mode); the trigger has its own.
        claim = getattr(self, "_claim", None)
        if not self.job_id or claim is None:  # the wait never started: no job of this run to cancel
            return
        from hfc_tasks.claims import RunRef
        from hfc_tasks.provider.cancellation import cancel_if_held

        cancel_if_held(catalogue_conn_id=claim["conn_id"], cluster_conn_id=self._site().cluster_conn_id,
                       frc=claim["frc"], night=dt.date.fromisoformat(claim["night"]),
                       run=RunRef(claim["dag_id"], claim["run_id"]), job_ids=[str(self.job_id)], logger=self.log)
