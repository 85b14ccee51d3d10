"""The pipeline's own metrics: names, values, and one place that sends them.

Sent through Airflow's own StatsD client (``[metrics]`` settings: ``statsd_on``, host, port,
prefix), so one configuration governs Airflow's metrics and ours: in a task process the task SDK
initialises that client from the same settings as the scheduler's. With the prefix ``airflow``
a metric below arrives as ``airflow.hfc.<frc>.archive.files`` and so on. StatsD has no tags:
the FRC is part of the name (characters other than letters, digits, ``_`` and ``-`` become ``_``).

Per FRC and night:

=================================  =======  ===============================================
``hfc.<frc>.archive.files``        counter  files copied to the archive
``hfc.<frc>.archive.bytes``        counter  bytes copied to the archive
``hfc.<frc>.catalogue.rows``       counter  catalogue rows loaded (all tables of the batch)
``hfc.<frc>.catalogue.rejected_files`` counter  files rejected by the load
``hfc.<frc>.slurm.queue_seconds``  gauge    the job's wait in the queue (sacct Start - Submit)
``hfc.<frc>.slurm.run_seconds``    gauge    the job's run time (sacct End - Start)
=================================  =======  ===============================================

No Airflow import: :func:`send` takes the client (Airflow's ``Stats`` in the operators, a fake
in the tests).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Metric:
    kind: str  # "incr" (counter) or "gauge"
    name: str  # without Airflow's prefix
    value: float


class StatsClient(Protocol):
    def incr(self, stat: str, count: int | None = None, rate: float | None = None) -> None: ...
    def gauge(self, stat: str, value: float, rate: float | None = None, delta: bool | None = None) -> None: ...


def metric_name(frc: str, what: str) -> str:
    """``hfc.<frc>.<what>``, the FRC made safe for a StatsD name (no dots, colons or pipes in it)."""
    return f"hfc.{_UNSAFE.sub('_', frc)}.{what}"


def archive_metrics(frc: str, *, copied: int, bytes_copied: int) -> list[Metric]:
    return [Metric("incr", metric_name(frc, "archive.files"), copied),
            Metric("incr", metric_name(frc, "archive.bytes"), bytes_copied)]


def catalogue_metrics(frc: str, *, rows: dict[str, int], rejected_files: int) -> list[Metric]:
    return [Metric("incr", metric_name(frc, "catalogue.rows"), sum(rows.values())),
            Metric("incr", metric_name(frc, "catalogue.rejected_files"), rejected_files)]


def _sacct_time(text: str) -> dt.datetime | None:
    """A sacct date (``2026-12-02T22:40:01``); None for ``Unknown``, ``None`` or empty."""
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def slurm_metrics(frc: str, *, submit: str, start: str, end: str) -> list[Metric]:
    """Queue and run seconds from sacct's Submit, Start and End; a time sacct does not know
    (``Unknown``: a job cancelled while pending never started) gives no metric, not a wrong one."""
    t_submit, t_start, t_end = _sacct_time(submit), _sacct_time(start), _sacct_time(end)
    out = []
    if t_submit and t_start:
        out.append(Metric("gauge", metric_name(frc, "slurm.queue_seconds"), (t_start - t_submit).total_seconds()))
    if t_start and t_end:
        out.append(Metric("gauge", metric_name(frc, "slurm.run_seconds"), (t_end - t_start).total_seconds()))
    return out


def send(client: Any, metrics: Iterable[Metric], warn=None) -> None:
    """Send ``metrics`` with ``client``; a failure to send is a warning, never the task's failure."""
    for m in metrics:
        try:
            if m.kind == "incr":
                client.incr(m.name, count=int(m.value))
            else:
                client.gauge(m.name, m.value)
        except Exception as exc:  # noqa: BLE001 - metrics are a by-product: the night's work is done
            if warn:
                warn("metric %s not sent: %s", m.name, exc)
