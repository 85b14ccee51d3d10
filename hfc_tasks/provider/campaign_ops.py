"""Operators of the ``hfc_campaign`` DAG (issue 15): reprocess FRC F from night D1 to D2 as SLURM
job arrays, then archive and load each night exactly as the nightly DAG does.

``plan`` (:class:`CampaignPlanOperator`) reads the run's conf into chunks and batches
(:mod:`hfc_tasks.campaign_run`); ``submit`` (:class:`CampaignSubmitOperator`) adopts or submits
each chunk (:func:`hfc_tasks.campaign.chunk_submission`) after taking the run's claim on every
night; ``wait`` (:class:`CampaignWaitOperator`) defers on :class:`SlurmArrayTrigger` (the shared
poller: one ``sacct`` per interval for every array task) chunk after chunk and returns each
night's end; ``archive`` and ``catalogue`` (:class:`CampaignArchiveOperator`,
:class:`CampaignCatalogueOperator`) are mapped over batches of nights and run the nightly stages'
own per-night code (:func:`hfc_tasks.provider.operators.archive_one_night`,
:func:`~hfc_tasks.provider.operators.catalogue_one_night`) on the nights whose array task
completed; ``report`` (:class:`CampaignReportOperator`) fails the run when a night is not done,
naming each with its reason.

A night that fails in archive or catalogue does not stop the other nights of its batch: the
task goes on, then fails listing them (their reasons also go to XCom ``failed`` for ``report``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from hfc_tasks.registry import Registry, Site, load_registry

DAG_TASKS = ("plan", "submit", "wait", "archive", "catalogue", "report")


class _CampaignTask(BaseOperator):
    """The registry is read at run time, as the nightly stages do; the plan comes from ``plan``."""

    ui_color = "#e5d8f0"

    def __init__(self, *, site: str | None = None, registry_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.site = site
        self.registry_path = registry_path

    def registry(self) -> tuple[Registry, Site]:
        reg = load_registry(self.registry_path)
        return reg, reg.site(self.site)

    def run_plan(self, context: Context):
        from hfc_tasks.campaign_run import RunPlan

        data = context["ti"].xcom_pull(task_ids="plan", key="plan")
        if not data:
            raise AirflowFailException("the 'plan' task of this run left no plan: clear 'plan' and its downstream")
        return RunPlan.from_dict(data)

    def resolve(self, context: Context):
        """(registry, FRC, site, run plan)."""
        plan = self.run_plan(context)
        reg, site = self.registry()
        return reg, reg.frc(plan.campaign.frc), site, plan


class CampaignPlanOperator(_CampaignTask):
    """The run's chunks (SLURM arrays) and batches of nights (the mapped tasks) from its conf.

    Returns the batches (lists of ISO nights: what ``archive`` and ``catalogue`` are mapped over;
    Airflow maps over a task's return value only) and pushes the whole plan (campaign, chunks,
    batches: :meth:`hfc_tasks.campaign_run.RunPlan.to_dict`) under XCom key ``plan``."""

    ui_color = "#d9d2e9"

    def execute(self, context: Context) -> list[list[str]]:
        from hfc_tasks.campaign import CampaignError
        from hfc_tasks.campaign_run import plan_run

        reg, site = self.registry()
        params = context.get("params") or {}
        try:
            plan = plan_run(params, context["run_id"], site, [f.name for f in reg.enabled_frcs])
        except CampaignError as exc:  # the conf is wrong: a retry reads the same conf
            raise AirflowFailException(f"campaign conf {dict(params)}: {exc}") from exc
        data = plan.to_dict()
        c = plan.campaign
        self.log.info("campaign %s: FRC %s%s, nights %s .. %s; this run: %d night(s) in %d chunk(s) (%s), "
                      "%d batch(es) of at most %d night(s)", c.campaign_id, c.frc,
                      f" version {c.version}" if c.version else "", c.first, c.last, data["nights"],
                      len(plan.chunks), ", ".join(k.job_name for k in plan.chunks), len(data["batches"]),
                      max(len(b) for b in data["batches"]))
        if plan.retry_attempt is not None:
            self.log.info("retry %d of nights %s", plan.retry_attempt, ", ".join(str(n) for n in plan.nights))
        context["ti"].xcom_push(key="plan", value=data)
        return data["batches"]


class CampaignSubmitOperator(_CampaignTask):
    """Take the run's claim on every night, then adopt or submit each chunk (``sbatch --array``).

    Returns ``{chunk label: array job id}``. A chunk already in the queue, recorded for this
    campaign or known to accounting is adopted, never submitted twice; submissions keep the
    site's ``stagger_seconds`` apart (a submit that comes too early defers, then goes on)."""

    ui_color = "#c6dbef"

    def execute(self, context: Context, event: dict | None = None) -> dict[str, str]:
        from hfc_tasks import campaign as campaign_mod
        from hfc_tasks import slurm
        from hfc_tasks.provider.hooks import SlurmHook
        from hfc_tasks.provider.runs import claim_nights

        _, frc, site, plan = self.resolve(context)
        refused = claim_nights(context, site, frc.name, plan.nights, self.log)
        if refused:
            raise AirflowFailException(
                f"campaign {plan.campaign.campaign_id}: {len(refused)} night(s) are being processed by another run; "
                "nothing submitted:\n  " + "\n  ".join(f"{n}: {why}" for n, why in sorted(refused.items())))
        since = self._since(context)
        ids: dict[str, str] = {}
        hook = SlurmHook(site.cluster_conn_id)
        try:
            for chunk in plan.chunks:
                sub = campaign_mod.chunk_submission(chunk, frc, site, since=since)
                out = hook.check(sub.script, stdin=sub.stdin, what=f"submission of {chunk.job_name}",
                                 timeout=sub.timeout)
                verb, value = slurm.parse_submit(out)
                if verb is slurm.Decision.WAIT:
                    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

                    # The chunks submitted so far are adopted when this resumes (same names).
                    self.log.info("last submission to the cluster was less than %d s ago: submitting %s in %s s",
                                  site.stagger_seconds, chunk.job_name, value)
                    self.defer(trigger=TimeDeltaTrigger(dt.timedelta(seconds=int(value))), method_name="execute")
                ids[chunk.label] = value
                self.log.info("%s", campaign_mod.describe_submission(chunk, verb, value))
        finally:
            hook.close()
        return ids

    @staticmethod
    def _since(context: Context) -> dt.date:
        """No later than the campaign's first submission: a day before this run started (a chunk
        of this campaign that accounting knows since then is adopted)."""
        started = getattr(context.get("dag_run"), "start_date", None) or dt.datetime.now(dt.UTC)
        return started.date() - dt.timedelta(days=1)


class CampaignWaitOperator(_CampaignTask):
    """Wait in the triggerer (no worker slot held) until every array task of every chunk has ended.

    Defers on :class:`~hfc_tasks.provider.triggers.SlurmArrayTrigger`, one chunk after the other.
    Returns ``{night: {state, job_id (<array>_<index>), done, exit_code, elapsed, reason}}``; the
    nights that did not complete are the ``report`` task's business (this task succeeds so that
    the others are archived and loaded). Clearing or marking it cancels nothing on the cluster: a
    campaign is cancelled explicitly (``hfc campaign cancel``)."""

    ui_color = "#9ecae1"

    def __init__(self, *, poll_interval: float = 5.0, max_poll_interval: float = 15.0,
                 missing_timeout: float = 300.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.missing_timeout = missing_timeout

    def execute(self, context: Context) -> Any:
        return self._wait_for(context, 0, {})

    def _wait_for(self, context: Context, index: int, results: dict[str, dict]) -> Any:
        from hfc_tasks.provider.triggers import SlurmArrayTrigger

        _, _, site, plan = self.resolve(context)
        ids = context["ti"].xcom_pull(task_ids="submit") or {}
        if index >= len(plan.chunks):
            return self._finish(plan, results)
        chunk = plan.chunks[index]
        if chunk.label not in ids:
            raise AirflowFailException(f"the 'submit' task of this run gave no array job for chunk {chunk.job_name}: "
                                       "clear 'submit' and its downstream")
        self.log.info("waiting for SLURM array %s (%s): %d night(s) %s .. %s", ids[chunk.label], chunk.job_name,
                      len(chunk.nights), chunk.nights[0], chunk.nights[-1])
        self.defer(
            trigger=SlurmArrayTrigger(
                ssh_conn_id=site.cluster_conn_id, array_job_id=str(ids[chunk.label]), count=len(chunk.nights),
                poll_interval=self.poll_interval, max_poll_interval=self.max_poll_interval,
                missing_timeout=self.missing_timeout, unreachable_timeout=float(site.cluster_unreachable_seconds),
            ),
            method_name="execute_complete",
            kwargs={"index": index, "results": results},
        )

    def execute_complete(self, context: Context, event: dict[str, Any], index: int = 0,
                         results: dict | None = None) -> Any:
        from hfc_tasks import slurm
        from hfc_tasks.campaign_run import night_result

        plan = self.run_plan(context)
        chunk = plan.chunks[index]
        status = event.get("status")
        if status == "error":
            raise (AirflowFailException if event.get("config") else AirflowException)(
                f"campaign {plan.campaign.campaign_id}: waiting for SLURM array {event.get('array_job_id')} "
                f"({chunk.job_name}): {event.get('message')}")
        if status != "final":
            raise AirflowException(event.get("message") or f"waiting for {chunk.job_name} failed: {event}")
        array_job_id = str(event["array_job_id"])
        tasks = {int(i): slurm.JobStatus(**t) for i, t in (event.get("tasks") or {}).items()}
        results = dict(results or {})
        for i, night in enumerate(chunk.nights):
            results[night.isoformat()] = night_result(tasks.get(i), slurm.task_id(array_job_id, i))
        done = sum(1 for n in chunk.nights if results[n.isoformat()]["done"])
        self.log.info("SLURM array %s (%s) ended: %d/%d night(s) completed", array_job_id, chunk.job_name, done,
                      len(chunk.nights))
        return self._wait_for(context, index + 1, results)

    def _finish(self, plan, results: dict[str, dict]) -> dict[str, dict]:
        not_done = {n: r for n, r in sorted(results.items()) if not r["done"]}
        self.log.info("campaign %s: %d/%d night(s) completed on SLURM", plan.campaign.campaign_id,
                      len(results) - len(not_done), len(results))
        for night, r in not_done.items():
            self.log.warning("night %s: %s", night, r["reason"])
        return results


class _BatchStage(_CampaignTask):
    """A mapped stage over one batch of nights (``nights``: ISO dates)."""

    template_fields: Sequence[str] = ("nights",)

    def __init__(self, *, nights: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.nights = nights

    def completed(self, context: Context, plan) -> dict[dt.date, dict]:
        """The batch's nights whose array task completed, with the wait's result."""
        results = context["ti"].xcom_pull(task_ids="wait")
        if results is None:
            raise AirflowSkipException("the 'wait' task of this run has no result: nothing to do")
        out = {}
        for iso in self.nights:
            result = results.get(iso)
            if result is not None and result.get("done"):
                out[dt.date.fromisoformat(iso)] = result
        skipped = len(self.nights) - len(out)
        self.log.info("campaign %s, batch %s .. %s: %d night(s) completed on SLURM%s", plan.campaign.campaign_id,
                      self.nights[0], self.nights[-1], len(out),
                      f" ({skipped} did not: left to 'report')" if skipped else "")
        return out

    def finish(self, context: Context, what: str, failed: dict[dt.date, BaseException], result: dict) -> dict:
        """Push the failed nights (``report`` reads them), then fail listing them, if any."""
        reasons = {n.isoformat(): f"{what}: {exc}" for n, exc in sorted(failed.items())}
        context["ti"].xcom_push(key="failed", value=reasons)
        if failed:
            # Retried unless every night's failure is one a retry cannot help.
            final = all(isinstance(e, AirflowFailException) for e in failed.values())
            raise (AirflowFailException if final else AirflowException)(
                f"{len(failed)} night(s) of this batch failed in {what} (the others went on):\n  "
                + "\n  ".join(f"{n}: {why}" for n, why in reasons.items()))
        return result


def _failure(exc: Exception) -> BaseException:
    """A night's failure as the nightly stage would raise it (anything else counts as retryable)."""
    return exc if isinstance(exc, AirflowException) else AirflowException(f"{type(exc).__name__}: {exc}")


class CampaignArchiveOperator(_BatchStage):
    """The nightly ``archive`` stage for each night of the batch whose array task completed: same
    layout, manifest (with the campaign id), verification and delete-after-verify."""

    ui_color = "#c7e9c0"

    def __init__(self, *, verify: str = "auto", concurrency: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.verify = verify
        self.concurrency = concurrency

    def execute(self, context: Context) -> dict[str, Any]:
        from hfc_tasks.provider.operators import archive_one_night
        from hfc_tasks.provider.runs import claim_nights

        reg, frc, site, plan = self.resolve(context)
        nights = self.completed(context, plan)
        refused = claim_nights(context, site, frc.name, list(nights), self.log)
        failed: dict[dt.date, BaseException] = {n: AirflowFailException(why) for n, why in refused.items()}
        archived: dict[str, dict] = {}
        for night, result in nights.items():
            if night in failed:
                continue
            self.log.info("night %s (SLURM job %s)", night, result["job_id"])
            try:
                summary = archive_one_night(reg, frc, site, night, slurm_job_id=result["job_id"], log=self.log,
                                            verify=self.verify, concurrency=self.concurrency,
                                            campaign_id=plan.campaign.campaign_id, frc_version=plan.campaign.version)
            except Exception as exc:  # noqa: BLE001 - one night's failure does not stop the batch
                self.log.error("night %s: archive failed: %s", night, exc)
                failed[night] = _failure(exc)
                continue
            archived[night.isoformat()] = {k: summary[k] for k in ("copied", "skipped", "deleted", "bytes_copied",
                                                                   "files_in_manifest", "manifest_path")}
        return self.finish(context, "archive", failed, {"archived": archived})


class CampaignCatalogueOperator(_BatchStage):
    """The nightly ``catalogue`` stage for each night of the batch whose archive is this run's (the
    manifest on the archive names the night's array task): batch (FRC, night) replaced with this
    run's id, the claim released. One archive session and one catalogue connection per batch."""

    ui_color = "#fdd0a2"

    def execute(self, context: Context) -> dict[str, Any]:
        from hfc_tasks.catalogue.fetch import ReconnectingReader
        from hfc_tasks.provider.catalogue_db import catalogue_connect
        from hfc_tasks.provider.hooks import sftp_session
        from hfc_tasks.provider.operators import catalogue_one_night, read_night_manifest
        from hfc_tasks.provider.runs import claim_nights, release_nights

        reg, frc, site, plan = self.resolve(context)
        nights = self.completed(context, plan)
        refused = claim_nights(context, site, frc.name, list(nights), self.log)
        failed: dict[dt.date, BaseException] = {n: AirflowFailException(why) for n, why in refused.items()}
        loaded: dict[str, dict] = {}
        ti = context["ti"]
        conn = None

        @contextlib.contextmanager
        def connect():
            nonlocal conn
            if conn is None or conn.closed:
                conn = catalogue_connect(site.catalogue_conn_id)
            try:
                yield conn
            except BaseException:
                conn.close()  # a failed load may leave it unusable: the next night opens another
                conn = None
                raise

        try:
            with ReconnectingReader(lambda: sftp_session(site.archive_conn_id), site.archive_root,
                                    say=self.log.warning) as read_file:
                for night, result in nights.items():
                    if night in failed:
                        continue
                    try:
                        manifest = read_night_manifest(read_file, frc, site, night)
                        job = manifest[2].get("slurm_job_id")
                        if str(job) != str(result["job_id"]):
                            raise AirflowException(
                                f"the manifest {manifest[0]} is job {job}'s, not this run's {result['job_id']}: "
                                "the night's archive stage did not finish (see the 'archive' task of its batch); "
                                "nothing loaded, the previous batch is kept")
                        report = catalogue_one_night(reg, frc, site, night, read_file=read_file, connect=connect,
                                                     dag_run_id=context["run_id"],
                                                     task_try=getattr(ti, "try_number", None), log=self.log,
                                                     manifest=manifest)
                    except Exception as exc:  # noqa: BLE001 - one night's failure does not stop the batch
                        self.log.error("night %s: catalogue failed: %s", night, exc)
                        failed[night] = _failure(exc)
                        continue
                    loaded[night.isoformat()] = {"batch_id": report.batch_id, "rows": sum(report.rows.values()),
                                                 "status": report.status}
        finally:
            if conn is not None:
                conn.close()
        release_nights(context, site, frc.name, [dt.date.fromisoformat(n) for n in loaded], self.log)
        return self.finish(context, "catalogue", failed, {"loaded": loaded})


class CampaignReportOperator(_CampaignTask):
    """The run's end: every night done (array task completed, batch (FRC, night) in the catalogue
    from this run) or the task fails listing each night that is not, with its reason (SLURM's
    state, exit code and node; or the archive/catalogue failure). Runs whatever the upstream
    states (trigger rule ``all_done``); never retried (its answer would be the same)."""

    ui_color = "#f4cccc"

    def execute(self, context: Context) -> dict[str, Any]:
        from hfc_tasks.campaign_run import outcome
        from hfc_tasks.provider.catalogue_db import catalogue_connect

        _, frc, site, plan = self.resolve(context)
        ti = context["ti"]
        results = ti.xcom_pull(task_ids="wait")
        downstream: dict[str, str] = {}
        for task in ("archive", "catalogue"):  # catalogue's reason last: the later stage's word wins
            for pushed in _as_list(ti.xcom_pull(task_ids=task, key="failed")):
                downstream.update(pushed or {})
        with catalogue_connect(site.catalogue_conn_id) as conn:
            rows = conn.execute("select night from hfc.batch where frc = %s and night = any(%s) and dag_run_id = %s",
                                (frc.name, plan.nights, context["run_id"])).fetchall()
        result = outcome(plan.nights, results, [r[0] for r in rows], downstream)
        c = plan.campaign
        self.log.info("campaign %s (FRC %s, %s .. %s), this run: %s", c.campaign_id, c.frc, c.first, c.last,
                      result.summary())
        if not result.ok:
            for line in result.lines():
                self.log.error("%s", line)
            raise AirflowFailException(
                f"campaign {c.campaign_id}: {result.summary()}; not done:\n  " + "\n  ".join(result.lines())
                + f"\nRetry nights alone: hfc campaign retry {c.campaign_id} --night <night> ...")
        return {"campaign_id": c.campaign_id, **result.to_dict()}


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


__all__ = [
    "CampaignArchiveOperator", "CampaignCatalogueOperator", "CampaignPlanOperator", "CampaignReportOperator",
    "CampaignSubmitOperator", "CampaignWaitOperator", "DAG_TASKS",
]
