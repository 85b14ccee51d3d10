"""Operators of the four HFC stages: ``submit``, ``wait`` (in :mod:`hfc_tasks.provider.sensors`),
``archive`` and ``catalogue``.

Every stage computes its inputs from (FRC, night) alone (the re-run contract in
ARCHITECTURE.md): the registry gives the FRC, the DAG run's data interval (or the
``night`` param of a manual run) gives the night. Clearing any one task re-runs just
that stage with the same inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from hfc_tasks import products
from hfc_tasks.provider.links import HFC_LINKS
from hfc_tasks.provider.runs import claim_night, night_of, release_night, submit_attempt
from hfc_tasks.registry import Frc, Registry, Site, load_registry


def _send_metrics(metrics, log) -> None:
    """The pipeline's metrics through Airflow's own StatsD client (``[metrics]`` settings; a
    no-op client when metrics are off, e.g. in ``airflow dags test``): :mod:`hfc_tasks.metrics`."""
    from airflow.sdk.observability.stats import Stats

    from hfc_tasks.metrics import send

    send(Stats, metrics, warn=log.warning)


class _FrcStage(BaseOperator):
    """Shared part of the stages: the FRC and site come from the registry at run time."""

    ui_color = "#ffe8b0"
    # SLURM output, archive folder, quicklooks, catalogue batch (pages of the status plugin).
    operator_extra_links = HFC_LINKS

    def __init__(self, *, frc: str, site: str | None = None, registry_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.frc = frc
        self.site = site
        self.registry_path = registry_path

    def resolve(self) -> tuple[Registry, Frc, Site]:
        reg = load_registry(self.registry_path)
        return reg, reg.frc(self.frc), reg.site(self.site)


class SlurmSubmitOperator(_FrcStage):
    """Submit the FRC's job for the night over SSH (``sbatch``), or adopt the live one.

    Returns the job id (XCom); the job name ``hfc.<frc>.<YYYYMMDD>`` is how a retry or a
    cleared task finds a job that is still pending or running instead of starting another.
    Submissions to one cluster are at least the site's ``stagger_seconds`` apart: a submit
    that comes too early defers (no worker slot held) and tries again.
    """

    ui_color = "#c6dbef"

    def execute(self, context: Context, event: dict | None = None) -> str:
        from hfc_tasks.provider.hooks import SlurmHook
        from hfc_tasks.slurm import Decision

        _, frc, site = self.resolve()
        night = night_of(context)
        run_dir = products.run_dir(site.products_root, frc.name, night)
        job_name = products.job_name(frc.name, night)
        selected = (context.get("params") or {}).get("frcs") or []
        if selected and frc.name not in selected:
            # A manual run for some FRCs only: this group is skipped (its tasks show as skipped).
            raise AirflowSkipException(f"{frc.name} is not among the FRCs chosen for this run: {selected}")
        claim_night(context, site, frc.name, night, self.log)
        command = frc.render_command(
            night=night, run_dir=run_dir, frc_root=site.frc_root, archive_url=site.public_url_base
        )
        hook = SlurmHook(site.cluster_conn_id)
        try:
            verb, value = hook.submit(
                job_name=job_name,
                run_dir=run_dir,
                command=command,
                resources=frc.slurm,
                default_partition=site.default_partition,
                lock_file=posixpath.join(site.products_root, ".hfc-submit.lock"),
                stagger_seconds=site.stagger_seconds,
                attempt=submit_attempt(context),
            )
        finally:
            hook.close()
        if verb is Decision.WAIT:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.log.info("last submission to the cluster was less than %d s ago: submitting in %s s",
                          site.stagger_seconds, value)
            self.defer(trigger=TimeDeltaTrigger(dt.timedelta(seconds=int(value))), method_name="execute")
        job_id = value
        self.log.info("%s %s (%s) for night %s, run folder %s",
                      "adopted live job" if verb is Decision.ADOPT else "submitted job", job_id, job_name, night,
                      run_dir)
        self.log.info("command: %s", command)
        return job_id


class ArchiveProductsOperator(_FrcStage):
    """Copy the night's products cluster → archive, verify sha256 on the archive, then delete on the cluster.

    The work is :func:`hfc_tasks.archive.archive_night` (asyncssh, one connection per endpoint,
    many requests in flight, its own event loop); this class only turns the Airflow connections
    into plain parameters and logs. ``verify``: ``auto`` (``sha256sum`` on the archive where the
    account may run it, else read-back), ``sha256sum`` or ``readback``. Returns the summary
    (XCom): files copied/skipped/deleted, bytes, seconds, verification method, manifest.
    """

    template_fields: Sequence[str] = ("slurm_job_id",)
    ui_color = "#c7e9c0"

    def __init__(self, *, slurm_job_id: str | None = None, verify: str = "auto", concurrency: int = 64,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.slurm_job_id = slurm_job_id
        self.verify = verify
        self.concurrency = concurrency

    def execute(self, context: Context) -> dict[str, Any]:
        reg, frc, site = self.resolve()
        night = night_of(context)
        claim_night(context, site, frc.name, night, self.log)
        return archive_one_night(reg, frc, site, night, slurm_job_id=self.slurm_job_id, log=self.log,
                                 verify=self.verify, concurrency=self.concurrency)


def archive_one_night(reg: Registry, frc: Frc, site: Site, night: dt.date, *, slurm_job_id: str | None, log,
                      verify: str = "auto", concurrency: int = 64, campaign_id: str | None = None,
                      frc_version: str | None = None) -> dict[str, Any]:
    """The archive stage of one (FRC, night), for the nightly ``archive`` task and a campaign's
    (the caller has taken the claim). ``slurm_job_id``: the job (or array task) whose products
    these are; ``campaign_id``: the campaign that ran it (manifest provenance), None for the
    nightly DAG; ``frc_version``: the version the products are of (a campaign's), else the registry's.
    Returns the summary; raises the task's failure (no retry for a full archive or
    a configuration fault)."""
    from hfc_tasks.archive import ArchiveFullError, ArchiveTarget, HostKeyError, TransferError, archive_night
    from hfc_tasks.provider.hooks import ssh_endpoint

    target = ArchiveTarget(
        frc=frc.name,
        archive_dir=frc.archive_dir,
        observatory=frc.observatory,
        instrument=frc.instrument,
        night=night,
        run_dir=products.run_dir(site.products_root, frc.name, night),
        archive_root=site.archive_root,
        public_url_base=site.public_url_base,
        rewrites=frc.rewrites,
        product_format=frc.product_format,
        frc_version=frc_version or frc.version,
        slurm_job_id=str(slurm_job_id) if slurm_job_id not in (None, "", "None") else None,
        unknown_files=frc.unknown_files,
        known=reg.formats,
        campaign_id=campaign_id,
    )
    try:
        if site.archive_mode == "direct":  # the cluster pushes with OpenSSH (hfc_tasks.archive.direct)
            from hfc_tasks.archive.direct import archive_night_direct

            summary, manifest = archive_night_direct(
                ssh_endpoint(site.cluster_conn_id), ssh_endpoint(site.archive_conn_id), site.archive_direct,
                target, progress=log.info, warn=log.warning, verify=verify,
            )
        else:
            summary, manifest = archive_night(
                ssh_endpoint(site.cluster_conn_id), ssh_endpoint(site.archive_conn_id), target,
                progress=log.info, warn=log.warning, verify=verify, concurrency=concurrency,
            )
    except ArchiveFullError as exc:
        # A full archive disk does not free itself in a retry delay: fail now, the operator frees
        # space then clears this task (docs/runbook.md, "The archive disk is full").
        raise AirflowFailException(
            f"{frc.name} {night} (archive connection {site.archive_conn_id}): {exc}") from exc
    except TransferError as exc:
        # A changed host key or a refused login is configuration: fail now, without retries.
        config = isinstance(exc, HostKeyError) or type(exc.__cause__).__name__ == "PermissionDenied"
        raise (AirflowFailException if config else AirflowException)(
            f"{frc.name} {night}: {exc}") from exc
    log.info(
        "archive done in %.1f s: %d copied, %d skipped (already there), %d deleted on the cluster, %d bytes; "
        "verification: %s; manifest %s (%s)",
        summary.seconds, summary.copied, summary.skipped, summary.deleted, summary.bytes_copied,
        summary.verification or "none needed", summary.manifest_path,
        "written" if summary.manifest_written else "unchanged",
    )
    from hfc_tasks.metrics import archive_metrics

    _send_metrics(archive_metrics(frc.name, copied=summary.copied, bytes_copied=summary.bytes_copied), log)
    if summary.no_data:
        log.info("%s %s: the job ran and wrote no product: a night without data (\"no_data\": true)",
                 frc.name, night)
    return {**summary.to_dict(), "files_in_manifest": len(manifest["files"])}


def _archive_unreadable(frc: str, night: dt.date, site: Site, full_path: str, exc: BaseException) -> BaseException:
    """The task's failure when the archive cannot be read (issue 16 item 4): FRC, night, the file
    on the archive, the connection, the cause, what to do. A refusal (permission denied, file or
    folder missing, bytes not those of the manifest) needs a person: no retry; a lost connection
    is retried. Any other exception (a bug) is returned as it is."""
    from hfc_tasks.catalogue import ArchiveReadError, archive_fault

    if not isinstance(exc, ArchiveReadError):
        if not archive_fault(exc):
            return exc
        exc = ArchiveReadError.of(full_path, exc)
    exc.frc, exc.night = frc, night
    text = exc.message(f"{full_path} (archive connection {site.archive_conn_id})")
    return AirflowException(text) if exc.transient else AirflowFailException(text)


class CatalogueLoadOperator(_FrcStage):
    """Load the night's manifest into the catalogue: replace batch (FRC, night) in one transaction.

    Which file goes to which table is the FRC's ``product_format`` (+ ``products``) in the
    registry. Rejected files do not stop the good ones: they are loaded, the rejected ones are
    recorded with their reasons (``hfc.rejected_file``), and then the task fails listing them,
    so the night shows red in the UI with nothing hidden. Clearing it re-runs the same load.
    """

    ui_color = "#fdd0a2"

    def __init__(self, *, frc: str, **kwargs) -> None:
        from hfc_tasks.provider.assets import catalogue_asset

        # The FRC's asset, published (partition = the night) when the load succeeds: hfc_tasks.assets.
        kwargs.setdefault("outlets", [catalogue_asset(frc)])
        super().__init__(frc=frc, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from hfc_tasks.catalogue.fetch import ReconnectingReader
        from hfc_tasks.provider.catalogue_db import catalogue_connect
        from hfc_tasks.provider.hooks import sftp_session

        reg, frc, site = self.resolve()
        night = night_of(context)
        claim_night(context, site, frc.name, night, self.log)
        # One archive session for the manifest and every file, opened again if the link drops.
        with ReconnectingReader(lambda: sftp_session(site.archive_conn_id), site.archive_root,
                                say=self.log.warning) as read_file:
            ti = context["ti"]
            report = catalogue_one_night(reg, frc, site, night, read_file=read_file,
                                         connect=lambda: catalogue_connect(site.catalogue_conn_id),
                                         dag_run_id=context["run_id"], task_try=getattr(ti, "try_number", None),
                                         log=self.log)
        release_night(context, site, frc.name, night, self.log)
        self._publish(context, frc.name, night, report)
        return report.to_dict()

    def _publish(self, context: Context, frc: str, night: dt.date, report) -> None:
        """The night's asset event (recorded by Airflow when this task succeeds): partition = night."""
        from hfc_tasks import assets
        from hfc_tasks.provider.assets import catalogue_asset

        event = context["outlet_events"][catalogue_asset(frc)]
        event.add_partitions(assets.partition_key(night))
        event.extra = assets.event_extra(frc=frc, night=night, batch_id=report.batch_id, rows=report.rows,
                                         dag_run_id=context["run_id"], status=report.status)
        self.log.info("publishing asset %s, partition %s", assets.asset_name(frc), assets.partition_key(night))


def read_night_manifest(read_file, frc: Frc, site: Site, night: dt.date) -> tuple[str, bytes, dict]:
    """(path, bytes as stored, parsed) of this FRC's own manifest of the night on the archive
    (``read_file``: a :class:`~hfc_tasks.catalogue.fetch.ReconnectingReader`); the task's failure
    when it is missing, unreadable or another FRC's."""
    from hfc_tasks.manifest import find as find_manifest

    manifest_path = posixpath.join(site.archive_root, products.manifest_relpath(frc.archive_dir, frc.name, night))
    sftp = read_file.session()
    try:
        # This FRC's own manifest only, never another's in a shared folder (issue 16 item 1).
        manifest_path, raw = find_manifest(sftp, site.archive_root, frc.name, frc.archive_dir, night)
    except Exception as exc:
        raise _archive_unreadable(frc.name, night, site, manifest_path, exc) from exc
    if raw is None:
        raise AirflowException(
            f"no manifest at {manifest_path} on the archive: run (or clear) the 'archive' task first"
        )
    manifest = json.loads(raw)
    if manifest.get("frc") != frc.name:
        raise AirflowFailException(
            f"{frc.name} {night}: the manifest {manifest_path} is {manifest.get('frc')!r}'s, not this FRC's: "
            "nothing loaded, the previous batch is kept; re-run the night's 'archive' task"
        )
    return manifest_path, raw, manifest


def catalogue_one_night(reg: Registry, frc: Frc, site: Site, night: dt.date, *, read_file, connect,
                        dag_run_id: str, task_try: int | None, log, manifest: tuple[str, bytes, dict] | None = None):
    """The catalogue stage of one (FRC, night), for the nightly ``catalogue`` task and a campaign's
    (the caller has taken the claim, and releases it and publishes after): the night's manifest
    (``manifest``: already read by :func:`read_night_manifest`, else read here) loaded as batch
    (FRC, night) with ``dag_run_id``. ``connect()``: a context manager giving the catalogue
    connection. Returns the :class:`~hfc_tasks.catalogue.report.LoadReport`; raises the task's
    failure (rejected files: after the good ones are loaded)."""
    import psycopg

    from hfc_tasks.catalogue import ArchiveReadError, load_night

    manifest_path, raw, parsed = manifest or read_night_manifest(read_file, frc, site, night)
    with connect() as conn:
        where = f"catalogue connection {site.catalogue_conn_id} ({conn.info.host}:{conn.info.port})"
        try:
            report = load_night(
                conn,
                parsed,
                read_file,
                dag_run_id=dag_run_id,
                task_try=task_try,
                manifest_sha256=hashlib.sha256(raw).hexdigest(),
                products=frc.products or None,
                known=reg.formats,
            )
        except ArchiveReadError as exc:  # nothing loaded: the previous batch is kept
            full = posixpath.join(site.archive_root, exc.path)
            raise _archive_unreadable(frc.name, night, site, full, exc) from exc
        except psycopg.OperationalError as exc:  # server restarted, connection cut: retried
            raise AirflowException(
                f"{frc.name} {night}: {where} lost during the load: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())}. Nothing was committed (one transaction): the previous "
                "batch is kept; the task is retried"
            ) from exc
    log.info("%s", report.summary())
    for warning in report.warnings:
        log.warning("%s", warning)
    from hfc_tasks.metrics import catalogue_metrics

    _send_metrics(catalogue_metrics(frc.name, rows=report.rows, rejected_files=len(report.rejected_files)), log)
    if report.rejected:
        raise AirflowException(
            f"{len(report.rejected_files)} file(s) of {frc.name} {night} were rejected (batch "
            f"{report.batch_id}; the good files are loaded; details in hfc.rejected_file):\n  "
            + "\n  ".join(report.rejection_lines())  # one line per column and kind, not per row
        )
    return report
