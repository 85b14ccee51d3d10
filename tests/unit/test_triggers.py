"""SlurmJobTrigger: serialisation round trip (the triggerer rebuilds it from this) and the
shared poller's bookkeeping, without a cluster."""

import asyncio
import importlib

import pytest

from hfc_tasks import slurm
from hfc_tasks.provider.triggers import SacctPoller, SlurmJobTrigger


def test_serialize_round_trip():
    trig = SlurmJobTrigger(ssh_conn_id="hfc_cluster", job_id="123", poll_interval=2, max_poll_interval=30,
                           missing_timeout=60)
    path, kwargs = trig.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert path == "hfc_tasks.provider.triggers.SlurmJobTrigger"


def test_hostile_job_id_refused():
    with pytest.raises(slurm.SlurmError):
        SlurmJobTrigger(ssh_conn_id="c", job_id="1; rm -rf /")


def test_poller_batches_and_delivers(monkeypatch):
    calls = []

    async def fake_command(self, command):
        calls.append(command)
        if command.startswith("sacct"):
            return "1|a|RUNNING|0:0|00:00:01|x|y|n|None\n2|b|COMPLETED|0:0|00:00:02|x|y|n|None\n"
        return ""  # squeue knows nothing of job 3

    monkeypatch.setattr(SacctPoller, "_command", fake_command)

    async def scenario():
        poller = SacctPoller.get("c", 1.0, 5.0)
        queues = {j: poller.subscribe(j) for j in ("1", "2", "3")}
        poller.task.cancel()  # drive one poll by hand
        changed = await poller.poll_once()
        got = {j: q.get_nowait() for j, q in queues.items()}
        return changed, got

    changed, got = asyncio.run(scenario())
    assert changed
    assert got["1"].state == "RUNNING" and got["2"].succeeded and got["3"] is None
    # one sacct for all three jobs, then one squeue for the one sacct did not know
    assert calls == ["sacct -X -n -P -j 1,2,3 -o " + ",".join(slurm.SACCT_FIELDS), slurm.squeue_command(["3"])]


def test_poller_hands_configuration_errors_to_subscribers_and_stops(monkeypatch):
    from hfc_tasks.provider.triggers import PollFailure
    from hfc_tasks.sshpolicy import SshConfigError

    calls = []

    async def refused(self, command):
        calls.append(command)
        raise SshConfigError("connection 'c' has no host_key extra")

    monkeypatch.setattr(SacctPoller, "_command", refused)

    async def scenario():
        poller = SacctPoller("c-config", 0.01, 0.02)
        queues = [poller.subscribe("1"), poller.subscribe("2")]
        await asyncio.wait_for(poller.task, 5)  # the poller ends by itself: no retry loop
        return poller, [q.get_nowait() for q in queues]

    poller, got = asyncio.run(scenario())
    assert got == [PollFailure("connection 'c' has no host_key extra", config=True)] * 2
    assert len(calls) == 1 and poller.subscribers == {}


def test_poller_reports_transient_errors_and_keeps_trying(monkeypatch):
    from hfc_tasks.provider.triggers import PollFailure

    answers = [ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
               "1|a|RUNNING|0:0|00:00:01|x|y|n|None\n"]

    async def flaky(self, command):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(SacctPoller, "_command", flaky)

    async def scenario():
        poller = SacctPoller("c-flaky", 0.01, 0.02)
        queue = poller.subscribe("1")
        got = [await asyncio.wait_for(queue.get(), 5) for _ in range(3)]
        poller.unsubscribe("1", queue)
        poller.wake.set()
        await asyncio.wait_for(poller.task, 5)
        return got

    first, second, third = asyncio.run(scenario())
    assert first == PollFailure("ConnectionRefusedError: [Errno 111] Connection refused", config=False)
    assert second == PollFailure("TimeoutError: timed out", config=False)
    assert third.state == "RUNNING"


@pytest.mark.parametrize(("limit", "seconds"), [
    ("10", 600), ("10:30", 630), ("01:00:00", 3600), ("2-3", 2 * 86400 + 3 * 3600),
    ("1-02:03", 86400 + 7200 + 180), ("1-00:00:05", 86405),
])
def test_wait_bound_comes_from_the_slurm_time_limit(limit, seconds):
    # the wait's deferral timeout is this + the site's wait_margin_seconds
    from hfc_tasks.registry import SlurmResources

    assert SlurmResources(time=limit).time_limit_seconds == seconds
