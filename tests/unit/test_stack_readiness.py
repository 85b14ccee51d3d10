"""`hfc airflow up` waits for the Celery workers IT started to say 'ready' in their logs, read
from where each log stood when that worker was started.

Found by the multihost drills in CI (issue 10): after a worker was killed, `hfc airflow up`
restarted it, but also required the *other*, long-running worker's log to hold ' ready.' in its
last 200 kB; after 20 minutes of tasks it no longer did, and `up` failed ("components not healthy
after 120 s") and stopped the worker it had just started. Conversely an old ' ready.' line of a
restarted worker's appended log must not count for the new process.
"""

from __future__ import annotations

from hfc_tasks.ops import airflow_instance, airflow_stack

READY = b"2026-12-02T05:26:47Z [info ] worker2@vm ready. [celery.apps.worker]\n"


def test_a_worker_running_for_long_is_not_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(airflow_instance, "EXECUTOR", "CeleryExecutor")
    monkeypatch.setattr(airflow_instance, "CELERY_WORKERS", 2)
    # worker2 has run for long: its 'ready' is far back, under 300 kB of task output.
    (tmp_path / "worker2.log").write_bytes(READY + b"task output line\n" * 20_000)
    # worker1 was just started by this `up`: its log had old content, then its new 'ready'.
    old = b"old run\n" + READY.replace(b"worker2", b"worker1")
    (tmp_path / "worker1.log").write_bytes(old)
    offsets = {"worker1": len(old)}
    assert not airflow_stack._workers_ready(tmp_path, offsets)  # the old 'ready' does not count
    with open(tmp_path / "worker1.log", "ab") as fh:
        fh.write(READY.replace(b"worker2", b"worker1"))
    assert airflow_stack._workers_ready(tmp_path, offsets)


def test_no_worker_started_means_nothing_to_wait_for(tmp_path, monkeypatch):
    monkeypatch.setattr(airflow_instance, "EXECUTOR", "CeleryExecutor")
    assert airflow_stack._workers_ready(tmp_path, {})
