"""Failure notifications for the operators: mail or a chat webhook, chosen by an Airflow
connection (the site's ``notify_conn_id``), off when the site names none.

- connection type ``smtp`` (or ``email``): a mail; extras ``to`` (comma-separated) and
  ``from``; host/port/login/password of the mail relay; ``starttls`` extra (default true
  unless port 25).
- connection type ``http``/``https``: a JSON POST ``{"text": ...}`` to
  ``<schema>://<host>:<port>/<path extra>`` (Mattermost, Slack and Rocket.Chat webhooks take it).

Secrets stay in the connection; the message holds no credentials.
"""

from __future__ import annotations

import json
import smtplib
import urllib.request
from email.message import EmailMessage

from airflow.sdk import BaseHook, BaseNotifier


def failure_text(context) -> str:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    params = context.get("params") or {}
    night = params.get("night") or (
        context.get("data_interval_start").date().isoformat() if context.get("data_interval_start") else "?"
    )
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

    def notify(self, context) -> None:
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
            port = conn.port or 25
            with smtplib.SMTP(conn.host, port, timeout=30) as smtp:
                if str(extra.get("starttls", port != 25)).lower() == "true":
                    smtp.starttls()
                if conn.login:
                    smtp.login(conn.login, conn.password or "")
                smtp.send_message(msg)
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
