"""Notifications through the providers' notifiers: a mail (smtp provider's ``SmtpNotifier``,
an Airflow ``smtp`` connection) and/or a chat message (apprise provider's ``AppriseNotifier``, an
``apprise`` connection: Mattermost, Slack, Matrix, a JSON webhook...). The site's ``notify``
(registry) names the connections; nothing is sent when it is absent.

Two messages, the rest is the providers':
- :func:`failure_text`: a failed task, naming its FRC, night, stage and a link to its log
  (``on_failure_callback`` of every task, :func:`failure_notifiers`);
- :func:`deadline_text`: the night is not in the catalogue by the site's ``catalogue_deadline``,
  naming the DAG run, the night and the FRCs still missing (:func:`catalogue_deadline_alert`,
  an ``AsyncCallback`` the triggerer runs when the scheduler finds the deadline missed).

SMTP: the connection's extras are the provider's (``from_email``, ``disable_ssl`` for STARTTLS
on 587 instead of implicit TLS on 465, ``disable_tls``, ``ssl_context``, ``timeout``); the server's
certificate is verified against the system's CAs (``SSL_CERT_FILE`` for a private CA). One rule
is ours: a connection with a login but neither TLS nor STARTTLS is refused before connecting, so
credentials never cross the network in clear.
"""

from __future__ import annotations

import asyncio
import html
import smtplib
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.apprise.notifications.apprise import AppriseNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import AsyncCallback, BaseHook, DeadlineAlert, DeadlineReference
from apprise import NotifyType

from hfc_tasks import products

if TYPE_CHECKING:
    from airflow.sdk import Context

    from hfc_tasks.registry import Notify, Site


class NotifyError(RuntimeError):
    """The notice could not be sent; the message names the connection and the cause."""


def _night(night_param, interval_start) -> str:
    try:
        return products.night_of_run(night_param, interval_start).isoformat()
    except ValueError:  # a night param that is no date: say it as given
        return str(night_param or "?")


def failure_text(context: Context) -> str:
    """Subject line, then the body: FRC, night, stage, run, try, log link and the error."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    params = context.get("params") or {}
    night = _night(params.get("night"), context.get("data_interval_start"))
    task_id = ti.task_id if ti else "?"
    # Tasks are <frc>.<stage> (a task group per FRC); a task outside a group is its own stage.
    frc, _, stage = task_id.rpartition(".")
    frc = frc or getattr(context.get("task"), "frc", None) or "?"
    lines = [
        f"HFC nightly: FRC {frc}, stage {stage}, night {night}: task {task_id} FAILED",
        f"FRC: {frc}",
        f"Night: {night}",
        f"Stage: {stage}",
        f"DAG run: {dag_run.run_id if dag_run else context.get('run_id', '?')}, try {getattr(ti, 'try_number', '?')}",
    ]
    try:
        lines.append(f"Log: {ti.log_url}")
    except Exception:  # noqa: BLE001 - a notice without the link beats no notice
        lines.append("Log: (no link: the task instance is not known)")
    if exc := context.get("exception"):
        lines.append(f"Error: {str(exc)[:1500]}")
    return "\n".join(lines)


def deadline_text(context: dict, frcs: Sequence[str], deadline: str, missing: list[str] | None) -> str:
    """The message of a missed catalogue deadline, from the deadline callback's context
    (``dag_run``: the REST API's DAG run; ``deadline``: its id and time)."""
    run = context.get("dag_run") or {}
    night = _night((run.get("conf") or {}).get("night"), run.get("data_interval_start"))
    due = (context.get("deadline") or {}).get("deadline_time", "?")
    if missing is None:
        which = f"not known which of {', '.join(frcs)} (the task states could not be read)"
    else:
        which = ", ".join(missing) or "none (all in by now)"
    return "\n".join([
        f"HFC nightly: night {night} is not in the catalogue by {deadline} UTC (DAG run {run.get('dag_run_id', '?')})",
        f"DAG run: {run.get('dag_id', '?')} / {run.get('dag_run_id', '?')} (state {run.get('state', '?')})",
        f"Night: {night}",
        f"Deadline: {due}",
        f"FRCs not in the catalogue yet: {which}",
    ])


def _check_smtp_conn(conn_id: str, conn) -> None:
    extra = conn.extra_dejson or {}
    clear = bool(extra.get("disable_ssl")) and bool(extra.get("disable_tls"))
    if clear and (conn.login or conn.password):
        raise NotifyError(f"connection {conn_id} (SMTP {conn.host}:{conn.port}): refusing to send the login of "
                          f"{conn.login!r} without TLS (extras disable_ssl and disable_tls are both true): "
                          "enable STARTTLS (disable_tls false) or implicit TLS (disable_ssl false)")


def _smtp_error(conn_id: str, exc: Exception) -> NotifyError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        cause = (f"TLS certificate verification failed: {exc.verify_message}; install the relay's CA "
                 "(SSL_CERT_FILE) or fix its certificate")
    elif isinstance(exc, smtplib.SMTPNotSupportedError):
        cause = f"{exc}: the relay offers no STARTTLS; refusing to send credentials or mail in clear"
    else:
        cause = f"{type(exc).__name__}: {exc}"
    return NotifyError(f"connection {conn_id} (SMTP): {cause}")


class FailureMail(SmtpNotifier):
    """SmtpNotifier whose subject and body are :func:`failure_text`."""

    def _set_text(self, text: str) -> None:
        self.subject = text.splitlines()[0]
        self.html_content = f"<pre>{html.escape(text)}</pre>"

    def notify(self, context: Context) -> None:
        self._set_text(failure_text(context))
        self.send(context)

    def send(self, context) -> None:
        _check_smtp_conn(self.smtp_conn_id, BaseHook.get_connection(self.smtp_conn_id))
        try:
            super().notify(context)
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise _smtp_error(self.smtp_conn_id, exc) from exc

    async def asend(self, context) -> None:
        # The sync client in a thread, not the provider's async_notify: with STARTTLS (smtp
        # provider 3.2.0) aiosmtplib's connect() already upgrades the connection and the hook's
        # second starttls() then fails ("Connection already using TLS"; tested in
        # tests/integration/test_notifier_smtp.py). The triggerer's loop stays free either way.
        await asyncio.to_thread(self.send, context)


class FailureChat(AppriseNotifier):
    """AppriseNotifier whose title and body are :func:`failure_text`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(body="", notify_type=NotifyType.FAILURE, **kwargs)

    def _set_text(self, text: str) -> None:
        self.title, _, self.body = text.partition("\n")

    def notify(self, context: Context) -> None:
        self._set_text(failure_text(context))
        super().notify(context)


def failure_notifiers(notify: Notify) -> list:
    """The ``on_failure_callback`` of the site's tasks: one notifier per named connection."""
    out: list = []
    if notify.smtp_conn_id:
        out.append(FailureMail(smtp_conn_id=notify.smtp_conn_id, to=list(notify.to), from_email=notify.from_email))
    if notify.apprise_conn_id:
        out.append(FailureChat(apprise_conn_id=notify.apprise_conn_id))
    return out


async def catalogue_deadline_missed(
    context: dict[str, Any],
    *,
    frcs: list[str],
    deadline: str,
    smtp_conn_id: str | None = None,
    to: list[str] | None = None,
    from_email: str | None = None,
    apprise_conn_id: str | None = None,
) -> str:
    """The DeadlineAlert callback (run by the triggerer): tell the site's notify connections.
    Returns the text (the callback's recorded result)."""
    run = context.get("dag_run") or {}
    missing = await _not_catalogued(run.get("dag_id"), run.get("dag_run_id"), frcs)
    text = deadline_text(context, frcs, deadline, missing)
    title, _, _ = text.partition("\n")
    errors: list[str] = []
    if smtp_conn_id:
        mail = FailureMail(smtp_conn_id=smtp_conn_id, to=list(to or []), from_email=from_email)
        mail._set_text(text)
        try:
            await mail.asend(context)
        except NotifyError as exc:
            errors.append(str(exc))
    if apprise_conn_id:
        chat = AppriseNotifier(apprise_conn_id=apprise_conn_id, title=title, body=text.partition("\n")[2],
                               notify_type=NotifyType.WARNING)
        await chat.async_notify(context)
    if errors:  # the chat was still tried: one broken relay does not silence the other
        raise NotifyError("; ".join(errors))
    return text


async def _not_catalogued(dag_id: str | None, run_id: str | None, frcs: Sequence[str]) -> list[str] | None:
    """The FRCs whose ``catalogue`` task has not succeeded in the run (skipped ones, not chosen
    for the run, are not missing); None when the states cannot be read."""
    if not (dag_id and run_id):
        return None
    try:
        # The triggerer answers the task-state query of the task SDK (as for a trigger).
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(
            dag_id=dag_id, task_ids=[f"{f}.catalogue" for f in frcs], run_ids=[run_id])
    except Exception:  # noqa: BLE001 - the alert goes out without the list
        return None
    got = states.get(run_id, {})
    return [f for f in frcs if got.get(f"{f}.catalogue") not in ("success", "skipped")]


def catalogue_deadline_alert(site: Site, frcs: Sequence[str]) -> DeadlineAlert | None:
    """The DAG's DeadlineAlert for ``site.catalogue_deadline``: counted from the run's logical
    date (a scheduled run's night start, 00:00 UTC; a manual run's trigger time), one day plus
    HH:MM. None when the site sets no deadline or no notify connection."""
    from hfc_tasks.registry import catalogue_deadline_offset

    if not (site.catalogue_deadline and site.notify):
        return None
    n = site.notify
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=catalogue_deadline_offset(site.catalogue_deadline),
        callback=AsyncCallback(catalogue_deadline_missed, kwargs={
            "frcs": list(frcs), "deadline": site.catalogue_deadline,
            "smtp_conn_id": n.smtp_conn_id, "to": list(n.to), "from_email": n.from_email,
            "apprise_conn_id": n.apprise_conn_id,
        }),
        name="catalogue_deadline",
    )
