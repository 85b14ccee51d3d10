"""One host-key policy in every stage (issue 16, items 8 and 9), against the real local sshd.

Every stage opens its SSH connection through its own entry point: ``submit`` and the status
page (``SlurmHook`` / paramiko), the catalogue's SFTP reads (``sftp_session``), ``archive``
(``ssh_endpoint`` + the asyncssh engine) and ``wait`` (the trigger's asyncssh connection).
A table of connection forms is given to each of them: they must all accept the same forms and
refuse the same others, with a message naming the connection. The wait's trigger is also run
in-process against the real sshd: a configuration error ends the wait at once with an
``error`` event (it used to retry forever), an unreachable cluster after the bounded time.
"""

from __future__ import annotations

import asyncio
import json
import os

import asyncssh
import pytest

pytestmark = pytest.mark.site

PREFIX = "h2_policy"


@pytest.fixture(scope="module")
def sshd(site):
    conn = json.loads(site["AIRFLOW_CONN_HFC_CLUSTER"])
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    return {"host": conn["host"], "port": conn["port"], "key_file": conn["extra"]["key_file"],
            "host_key": conn["extra"]["host_key"], "other_key": other}


def _conn(sshd, extra: dict, **over) -> str:
    base = {"conn_type": "ssh", "host": sshd["host"], "port": sshd["port"], "login": "cluster",
            "extra": {"key_file": sshd["key_file"], **extra}}
    base.update(over)
    return json.dumps(base)


def cases(sshd, tmp) -> dict[str, tuple[bool, str]]:
    """name -> (accepted, connection JSON)."""
    key = sshd["host_key"]
    bare = key.split()[1]
    entry = f"[{sshd['host']}]:{sshd['port']}"
    good_file = tmp / "good_known_hosts"
    good_file.write_text(f"# comment\nsomewhere.example ssh-rsa AAAAB3NzaC1yc2E=\n{entry} {key}\n")
    empty_file = tmp / "empty_known_hosts"
    empty_file.write_text("")
    bad_line_file = tmp / "bad_known_hosts"
    bad_line_file.write_text(f"{entry} ssh-ed25519 not-base64!!\n")
    changed_file = tmp / "changed_known_hosts"
    changed_file.write_text(f"{entry} {sshd['other_key']}\n")
    plain_host_file = tmp / "plain_host_known_hosts"  # an entry without a port is for port 22 only
    plain_host_file.write_text(f"{sshd['host']} {key}\n")
    return {
        "host_key": (True, _conn(sshd, {"host_key": key})),
        "host_key_with_comment": (True, _conn(sshd, {"host_key": f"{key} root@cluster"})),
        "host_key_known_hosts_line": (True, _conn(sshd, {"host_key": f"{entry} {key}"})),
        "known_hosts_file": (True, _conn(sshd, {"known_hosts": str(good_file)})),
        "no_host_key_check_false": (True, _conn(sshd, {"host_key": key, "no_host_key_check": "false"})),
        "bare_base64": (False, _conn(sshd, {"host_key": bare})),
        "malformed_key": (False, _conn(sshd, {"host_key": "ssh-ed25519 AAAA%%%%"})),
        "type_mismatch": (False, _conn(sshd, {"host_key": f"ssh-rsa {bare}"})),
        "line_for_other_host": (False, _conn(sshd, {"host_key": f"otherhost.example {key}"})),
        "no_host_key_check": (False, _conn(sshd, {"host_key": key, "no_host_key_check": True})),
        "allow_host_key_change": (False, _conn(sshd, {"host_key": key, "allow_host_key_change": "true"})),
        "no_key_no_entry": (False, _conn(sshd, {"known_hosts": str(empty_file)})),
        "known_hosts_missing_file": (False, _conn(sshd, {"known_hosts": str(tmp / "nowhere")})),
        "known_hosts_malformed_line": (False, _conn(sshd, {"known_hosts": str(bad_line_file)})),
        "known_hosts_port_22_entry": (False, _conn(sshd, {"known_hosts": str(plain_host_file)})),
        "changed_host_key": (False, _conn(sshd, {"host_key": sshd["other_key"]})),
        "changed_known_hosts": (False, _conn(sshd, {"known_hosts": str(changed_file)})),
        "auth_refused": (False, _conn(sshd, {"host_key": key}, login="h2-nobody")),
    }


# --- each stage's own way of connecting ------------------------------------------------------


def via_submit(conn_id: str) -> str:
    from hfc_tasks.provider.hooks import SlurmHook

    hook = SlurmHook(conn_id)
    try:
        return hook.run("echo ok")[1].strip()
    finally:
        hook.close()


def via_sftp(conn_id: str) -> str:
    from hfc_tasks.provider.hooks import sftp_session

    with sftp_session(conn_id) as sftp:
        sftp.listdir(".")
        return "ok"


def via_archive(conn_id: str) -> str:
    from hfc_tasks.archive import connect
    from hfc_tasks.provider.hooks import ssh_endpoint

    async def go():
        async with await connect(ssh_endpoint(conn_id)) as conn:
            return (await conn.run("echo ok", check=True)).stdout.strip()

    return asyncio.run(go())


def via_wait(conn_id: str) -> str:
    from hfc_tasks.provider.triggers import open_cluster_connection

    async def go():
        conn = await asyncio.wait_for(open_cluster_connection(conn_id), 60)
        try:
            return (await conn.run("echo ok", check=True)).stdout.strip()
        finally:
            conn.close()

    return asyncio.run(go())


STAGES = {"submit": via_submit, "sftp": via_sftp, "archive": via_archive, "wait": via_wait}


def test_every_stage_accepts_and_refuses_the_same_host_key_forms(sshd, tmp_path, monkeypatch):
    table = cases(sshd, tmp_path)
    outcome: dict[tuple[str, str], str] = {}
    for i, (name, (_, conn)) in enumerate(table.items()):
        conn_id = f"{PREFIX}_{i}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn)
        for stage, connect in STAGES.items():
            try:
                outcome[name, stage] = "accepted" if connect(conn_id) == "ok" else "no output"
            except Exception as exc:  # the message must name the connection
                outcome[name, stage] = f"refused: {conn_id in str(exc)}: {type(exc).__name__}: {exc}"
    wrong = {
        k: v for k, v in outcome.items()
        if (v != "accepted" if table[k[0]][0] else not v.startswith("refused: True"))
    }
    assert wrong == {}, "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items()))


def test_refusals_say_how_to_fix(sshd, tmp_path, monkeypatch):
    table = cases(sshd, tmp_path)
    expect = {
        "bare_base64": "ssh-ed25519 AAAA",  # the form to write, with this key's own type
        "no_key_no_entry": "host_key",
        "no_host_key_check": "no_host_key_check",
        "allow_host_key_change": "allow_host_key_change",
        "changed_host_key": "changed",
        "auth_refused": "refused the login",
    }
    for name, needle in expect.items():
        conn_id = f"{PREFIX}_fix_{name}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", table[name][1])
        with pytest.raises(Exception) as info:
            via_submit(conn_id)
        assert needle in str(info.value), f"{name}: {info.value}"


def test_unknown_connection_is_a_configuration_error_in_every_stage():
    from hfc_tasks.sshpolicy import SshConfigError

    for stage, connect in STAGES.items():
        with pytest.raises(Exception) as info:
            connect(f"{PREFIX}_not_defined")
        assert f"{PREFIX}_not_defined" in str(info.value) and "not defined" in str(info.value), stage
        exc = info.value
        assert isinstance(exc, SshConfigError) or type(exc).__name__ == "ConnectionConfigError", (stage, exc)


# --- the wait's shared poller, in-process against the real sshd ------------------------------


async def first_event(conn_id: str, *, unreachable: float = 3600.0, within: float = 60.0):
    from hfc_tasks.provider.triggers import SlurmJobTrigger

    SlurmJobTrigger.MIN_EVENT_DELAY = 0.0  # the scheduler race it guards against needs a scheduler
    trigger = SlurmJobTrigger(ssh_conn_id=conn_id, job_id="999999999", poll_interval=0.5, max_poll_interval=1.0,
                              unreachable_timeout=unreachable)
    gen = trigger.run()
    try:
        return (await asyncio.wait_for(gen.__anext__(), within)).payload
    finally:
        await gen.aclose()


@pytest.mark.parametrize("case", ["bare_base64", "no_key_no_entry", "changed_host_key", "auth_refused",
                                  "no_host_key_check"])
def test_wait_trigger_ends_at_once_on_a_configuration_error(sshd, tmp_path, monkeypatch, case):
    conn_id = f"{PREFIX}_trig_{case}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", cases(sshd, tmp_path)[case][1])
    event = asyncio.run(first_event(conn_id, within=30))
    assert event["status"] == "error" and event["config"] is True, event
    assert conn_id in event["message"], event


def test_wait_trigger_unknown_connection(monkeypatch):
    event = asyncio.run(first_event(f"{PREFIX}_trig_undefined", within=30))
    assert event["status"] == "error" and event["config"] is True and "not defined" in event["message"], event


def test_wait_trigger_gives_up_on_an_unreachable_cluster_after_the_bound(sshd, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn_id = f"{PREFIX}_trig_unreachable"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       _conn(sshd, {"host_key": sshd["host_key"]}, port=port))
    event = asyncio.run(first_event(conn_id, unreachable=3.0, within=60))
    assert event["status"] == "error" and event["config"] is False, event
    assert "unreachable" in event["message"] and conn_id in event["message"], event
    assert "refused" in event["message"].lower(), event  # the last error is given


def test_ssh_conn_env_untouched():
    # the table's connections are test-only variables: the site's own stay as they are
    assert not any(k.startswith(f"AIRFLOW_CONN_{PREFIX.upper()}") for k in os.environ)
