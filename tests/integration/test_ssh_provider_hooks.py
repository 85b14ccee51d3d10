"""The providers' SSH hooks, fed by the one host-key policy, against the real local sshd (issue 14).

``submit`` and the SFTP reads go through the ssh provider's ``SSHHook``/sftp provider's ``SFTPHook``
and the wait's trigger through ``SSHHookAsync``; every one of them gets its endpoint settings from
:func:`hfc_tasks.sshpolicy.resolve`. So the extras the providers document work in every stage,
sync and async alike: a ``private_key`` given as text and encrypted with ``private_key_passphrase``
(the trigger once ignored the passphrase: its poller died on the key and the wait hung), and a
``known_hosts`` file instead of a ``host_key``.
"""

from __future__ import annotations

import asyncio
import json

import asyncssh
import pytest
from test_ssh_policy import STAGES, _conn, cases

pytestmark = pytest.mark.site

PREFIX = "h14_hooks"
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def sshd(site):
    conn = json.loads(site["AIRFLOW_CONN_HFC_CLUSTER"])
    key = asyncssh.read_private_key(conn["extra"]["key_file"])
    return {"host": conn["host"], "port": conn["port"], "key_file": conn["extra"]["key_file"],
            "host_key": conn["extra"]["host_key"],
            "other_key": asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip(),
            "encrypted": key.export_private_key("openssh", PASSPHRASE).decode()}


def encrypted_key_conn(sshd, passphrase: str = PASSPHRASE, extra_name: str = "private_key_passphrase") -> str:
    conn = json.loads(_conn(sshd, {"host_key": sshd["host_key"], "private_key": sshd["encrypted"],
                                   extra_name: passphrase}))
    del conn["extra"]["key_file"]  # the key is given as text only
    return json.dumps(conn)


async def first_event(conn_id: str, within: float = 60.0) -> dict:
    """The trigger's first event on a job SLURM does not know: ``missing`` once the poller has
    asked the cluster (``sacct``, ``squeue``) twice over the connection, ``error`` if it could not."""
    from hfc_tasks.provider.triggers import SlurmJobTrigger

    SlurmJobTrigger.MIN_EVENT_DELAY = 0.0  # the scheduler race it guards against needs a scheduler
    trigger = SlurmJobTrigger(ssh_conn_id=conn_id, job_id="999999998", poll_interval=0.5, max_poll_interval=1.0,
                              missing_timeout=1.0, unreachable_timeout=3600.0)
    gen = trigger.run()
    try:
        return (await asyncio.wait_for(gen.__anext__(), within)).payload
    finally:
        await gen.aclose()


@pytest.mark.parametrize("extra_name", ["private_key_passphrase", "passphrase"])
def test_encrypted_private_key_text_works_in_every_stage(sshd, monkeypatch, extra_name):
    conn_id = f"{PREFIX}_enc_{extra_name}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", encrypted_key_conn(sshd, extra_name=extra_name))
    outcome = {}
    for stage, connect in STAGES.items():
        try:
            outcome[stage] = connect(conn_id)
        except Exception as exc:  # noqa: BLE001 - the table shows every stage's outcome
            outcome[stage] = f"{type(exc).__name__}: {exc}"
    assert outcome == dict.fromkeys(STAGES, "ok")


def test_encrypted_private_key_text_works_for_the_trigger(sshd, monkeypatch):
    conn_id = f"{PREFIX}_enc_trigger"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", encrypted_key_conn(sshd))
    event = asyncio.run(first_event(conn_id, within=60))
    assert event["status"] == "missing" and event["job_id"] == "999999998", event


def test_wrong_passphrase_is_a_configuration_error_everywhere(sshd, monkeypatch):
    from hfc_tasks.sshpolicy import SshConfigError

    conn_id = f"{PREFIX}_enc_wrong"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", encrypted_key_conn(sshd, passphrase="wrong"))
    for stage, connect in STAGES.items():
        with pytest.raises(SshConfigError) as info:
            connect(conn_id)
        assert conn_id in str(info.value) and "passphrase" in str(info.value), (stage, info.value)
    event = asyncio.run(first_event(conn_id, within=30))
    assert event["status"] == "error" and event["config"] is True and "passphrase" in event["message"], event


def test_known_hosts_file_works_for_the_trigger_and_a_changed_one_is_refused(sshd, tmp_path, monkeypatch):
    table = cases(sshd, tmp_path)
    good, changed = f"{PREFIX}_kh_good", f"{PREFIX}_kh_changed"
    monkeypatch.setenv(f"AIRFLOW_CONN_{good.upper()}", table["known_hosts_file"][1])
    monkeypatch.setenv(f"AIRFLOW_CONN_{changed.upper()}", table["changed_known_hosts"][1])
    assert asyncio.run(first_event(good, within=60))["status"] == "missing"
    event = asyncio.run(first_event(changed, within=30))
    assert event["status"] == "error" and event["config"] is True, event
    assert "not the one configured" in event["message"] and "known_hosts file" in event["message"], event
