"""SlurmJobTrigger: serialisation round trip (the triggerer rebuilds it from this) and the
shared poller's bookkeeping, without a cluster."""

import asyncio
import importlib

import pytest

from hfc_tasks import slurm
from hfc_tasks.triggers import SacctPoller, SlurmJobTrigger


def test_serialize_round_trip():
    trig = SlurmJobTrigger(ssh_conn_id="hfc_cluster", job_id="123", poll_interval=2, max_poll_interval=30,
                           missing_timeout=60)
    path, kwargs = trig.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert path == "hfc_tasks.triggers.SlurmJobTrigger"


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
