"""Which state changes make the API server's listener cancel a job (pure logic: the cancellation
itself runs against the real site in tests/e2e/test_slurm_on_scheduler.py)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from hfc_tasks.provider import listeners
from hfc_tasks.registry import load_registry

FRC = load_registry().enabled_frcs[0].name


class Started(list):
    """Stands for threading.Thread: records the cancellations that would start."""

    def __call__(self, *, target, name, daemon):
        self.append(name)
        return SimpleNamespace(start=lambda: None)


@pytest.fixture
def started(monkeypatch) -> Started:
    threads = Started()
    monkeypatch.setattr(listeners.threading, "Thread", threads)
    return threads


def ti(task_id: str = f"{FRC}.wait", operator: str = "SlurmJobSensor", conf=None, start=None):
    run = SimpleNamespace(run_id="r1", conf=conf if conf is not None else {"night": "2024-05-06"},
                          data_interval_start=start)
    return SimpleNamespace(task_id=task_id, dag_id="hfc_nightly", run_id="r1", operator=operator, dag_run=run)


def test_a_wait_marked_failed_or_success_by_hand_starts_a_cancellation(started):
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti(), error="manually set")
    listeners.on_task_instance_success(previous_state=None, task_instance=ti())
    assert started == [f"hfc-cancel-{FRC}-2024-05-06"] * 2


def test_the_night_of_a_scheduled_run_is_its_data_interval(started):
    start = dt.datetime(2024, 7, 8, tzinfo=dt.UTC)
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti(conf={}, start=start), error="x")
    assert started == [f"hfc-cancel-{FRC}-2024-07-08"]


@pytest.mark.parametrize("task", [
    ti(operator="SlurmSubmitOperator", task_id=f"{FRC}.submit"),  # not a wait
    ti(task_id="not-an-frc.wait"),  # a wait of another registry's FRC
    ti(conf={}, start=None),  # no night: logged with what to do, nothing cancelled
])
def test_other_tasks_and_unknown_nights_start_nothing(started, task):
    listeners.on_task_instance_failed(previous_state=None, task_instance=task, error="x")
    assert started == []


def test_a_wait_that_ends_by_itself_starts_nothing(started):
    # Workers call the same hooks with previous_state RUNNING when a task ends: the job has ended.
    listeners.on_task_instance_failed(previous_state="running", task_instance=ti(), error="job failed")
    listeners.on_task_instance_success(previous_state="running", task_instance=ti())
    assert started == []
