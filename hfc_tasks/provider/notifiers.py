"""Failure notifications for the operators: mail or a chat webhook, chosen by an Airflow
connection (the site's ``notify_conn_id``), off when the site names none.

- connection type ``smtp`` (or ``email``): a mail; extras ``to`` (comma-separated) and
  ``from``; host/port/login/password of the mail relay. TLS: implicit TLS on port 465 (or extra
  ``ssl: true``), else STARTTLS; the server's certificate and host name are always verified
  (the system's CA store, or the ``ca_file`` extra). Credentials are never sent without TLS:
  a relay that offers no STARTTLS fails the notice with the reason. Only a relay without
  login may be used in clear (extra ``starttls: false``, for a relay on the same host).
- connection type ``http``/``https``: a JSON POST ``{"text": ...}`` to
  ``<schema>://<host>:<port>/<path extra>`` (Mattermost, Slack and Rocket.Chat webhooks take it).

Secrets stay in the connection; the message holds no credentials.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.request
from email.message import EmailMessage

from airflow.sdk import BaseHook, BaseNotifier, Context

from hfc_tasks import products


def failure_text(context: Context) -> str:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    params = context.get("params") or {}
    try:
        night = products.night_of_run(params.get("night"), context.get("data_interval_start")).isoformat()
    except ValueError:  # a night param that is no date: say it as given
        night = str(params.get("night") or "?")
    exc = context.get("exception")
    lines = [
        f"HFC nightly: task {ti.task_id if ti else '?'} FAILED for night {night}",
        f"DAG run: {dag_run.run_id if dag_run else context.get('run_id', '?')}, try {getattr(ti, 'try_number', '?')}",
    ]
    if exc:
        lines.append(f"Error: {str(exc)[:1500]}")
    return "\n".join(lines)


class HfcFailureNotifier(BaseNotifier):
    """Send a failure notice through the connection ``conn_id`` (mail or webhook)."""

    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str) -> None:
        super().__init__()
        self.conn_id = conn_id

    def notify(self, context: Context) -> None:
        conn = BaseHook.get_connection(self.conn_id)
        text = failure_text(context)
        kind = (conn.conn_type or "").lower()
        extra = conn.extra_dejson or {}
        if kind in ("smtp", "email"):
            msg = EmailMessage()
            msg["Subject"] = text.splitlines()[0]
            msg["From"] = extra.get("from") or conn.login or "hfc-pipeline@localhost"
            msg["To"] = extra.get("to", "")
            msg.set_content(text)
            send_mail(self.conn_id, conn, extra, msg)
        elif kind in ("http", "https"):
            scheme = conn.schema or kind
            port = f":{conn.port}" if conn.port else ""
            url = f"{scheme}://{conn.host}{port}/{extra.get('path', '').lstrip('/')}"
            req = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        else:
            raise ValueError(f"connection {self.conn_id}: type {kind!r} is not smtp, email, http or https")


class NotifyError(RuntimeError):
    """The notice could not be sent; the message names the connection and the cause."""


def send_mail(conn_id: str, conn, extra: dict, msg: EmailMessage) -> None:
    """Send ``msg`` through the relay of connection ``conn_id``: TLS with a verified certificate
    whenever credentials are involved; never an AUTH over a clear channel."""
    implicit = str(extra.get("ssl", conn.port == 465)).lower() == "true"
    port = conn.port or (465 if implicit else 587)
    starttls = str(extra.get("starttls", "true")).lower() != "false"
    where = f"connection {conn_id} (SMTP {conn.host}:{port})"
    if conn.login and not (implicit or starttls):
        raise NotifyError(f"{where}: refusing to send the login of {conn.login!r} without TLS "
                          "(extra starttls is false): enable STARTTLS or implicit TLS (extra ssl: true)")
    context = ssl.create_default_context(cafile=extra.get("ca_file") or None)
    try:
        if implicit:
            smtp = smtplib.SMTP_SSL(conn.host, port, timeout=30, context=context)
        else:
            smtp = smtplib.SMTP(conn.host, port, timeout=30)
        with smtp:
            if not implicit and starttls:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise NotifyError(f"{where}: the server offers no STARTTLS; refusing to send "
                                      "credentials or mail in clear (use a relay with TLS)")
                smtp.starttls(context=context)
                smtp.ehlo()
            if conn.login:
                smtp.login(conn.login, conn.password or "")
            smtp.send_message(msg)
    except ssl.SSLCertVerificationError as exc:
        raise NotifyError(f"{where}: TLS certificate verification failed: {exc.verify_message}; "
                          "install the relay's CA (extra ca_file) or fix its certificate") from exc
    except ssl.SSLError as exc:
        raise NotifyError(f"{where}: TLS failed: {exc}") from exc
    except smtplib.SMTPException as exc:
        raise NotifyError(f"{where}: {exc}") from exc
