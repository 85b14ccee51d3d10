"""SlurmJobTrigger: serialisation round trip (the triggerer rebuilds it from this) and the
shared poller's bookkeeping, without a cluster."""

import asyncio
import importlib
import json

import asyncssh
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


# The wait's trigger (asyncssh, open_cluster_connection) and the submit (paramiko, ssh_client) read the
# host_key extra by the one policy (hfc_tasks.sshpolicy): the same forms are trusted, the same refused.
# The trigger once split the extra itself (``key_type, data = host_key.split()[:2]``) and crashed
# on a bare base64 key, where the archive's endpoint took it as ssh-rsa: now both accept the
# key with its type (with or without a host field or a comment) and refuse a bare blob alike.
KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
ACCEPTED = [KEY, f"{KEY} admin@cluster", f"[h]:2222 {KEY}", f"# the cluster's key\n{KEY}"]


def _connection(monkeypatch, host_key: str) -> None:
    from types import SimpleNamespace

    from airflow.sdk import BaseHook

    conn = SimpleNamespace(conn_id="c", host="h", port=2222, login="u", password=None,
                           extra=json.dumps({"host_key": host_key}), extra_dejson={"host_key": host_key})

    async def aget(cls, conn_id):
        return conn

    monkeypatch.setattr(BaseHook, "aget_connection", classmethod(aget))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda cls, conn_id: conn))


def _trigger_trusts(monkeypatch) -> list[str]:
    from hfc_tasks.provider.triggers import open_cluster_connection

    seen = {}

    async def connect(host, port, **options):
        seen.update(options, host=host, port=port)
        return "connection"

    monkeypatch.setattr(asyncssh, "connect", connect)
    assert asyncio.run(open_cluster_connection("c")) == "connection"
    assert (seen["host"], seen["port"]) == ("h", 2222)
    trusted, ca_keys, revoked = seen["known_hosts"]
    assert ca_keys == [] and revoked == []
    return [k.export_public_key().decode().strip() for k in trusted]


def _submit_trusts(monkeypatch) -> list[str]:
    import paramiko

    from hfc_tasks.provider.hooks import ssh_client

    def connect(self, hostname, port, **kwargs):
        self.seen = [f"{k.get_name()} {k.get_base64()}" for k in self.get_host_keys().lookup("[h]:2222").values()]

    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    return ssh_client("c").seen


@pytest.mark.parametrize("host_key", ACCEPTED)
def test_trigger_and_submit_trust_the_same_host_key_forms(monkeypatch, host_key):
    _connection(monkeypatch, host_key)
    assert _trigger_trusts(monkeypatch) == [KEY] == _submit_trusts(monkeypatch)


def test_trigger_refuses_a_bare_base64_key_as_the_submit_does(monkeypatch):
    from hfc_tasks.provider.hooks import ssh_client
    from hfc_tasks.provider.triggers import open_cluster_connection
    from hfc_tasks.sshpolicy import SshConfigError

    _connection(monkeypatch, KEY.split()[1])
    with pytest.raises(SshConfigError) as trigger:  # a configuration error: the wait fails at once
        asyncio.run(open_cluster_connection("c"))
    with pytest.raises(SshConfigError) as submit:
        ssh_client("c")
    assert str(trigger.value) == str(submit.value)
    assert "bare base64 key" in str(trigger.value) and "'ssh-ed25519 " in str(trigger.value)
