"""The local embedded site does what the pipeline relies on, checked through real services."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import paramiko
import psycopg
import pytest
from helpers import pinned_ssh_client

from hfc_tasks.ops import localsite
from hfc_tasks.ops.localsite.layout import Layout

pytestmark = pytest.mark.site

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _conn(env: dict[str, str], name: str) -> dict:
    return json.loads(env[f"AIRFLOW_CONN_HFC_{name.upper()}"])


def _client(env: dict[str, str], name: str, host_key: str | None = None) -> paramiko.SSHClient:
    """Connect as the connection's login, verifying the host key (RejectPolicy: no trust on first use)."""
    return pinned_ssh_client(_conn(env, name), host_key)


def _run(client: paramiko.SSHClient, cmd: str, timeout: float = 30) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(cmd, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def test_connection_variables_shape(site):
    assert set(site) == {
        "HFC_SITE_DIR", "AIRFLOW_CONN_HFC_CLUSTER", "AIRFLOW_CONN_HFC_ARCHIVE",
        "AIRFLOW_CONN_HFC_CATALOGUE", "HFC_CATALOGUE_DSN", "HFC_SSH_KNOWN_HOSTS", "HFC_HQI_DSN", "HFC_HQI_URL",
    }
    cluster, archive = _conn(site, "cluster"), _conn(site, "archive")
    assert (cluster["conn_type"], cluster["login"]) == ("ssh", "cluster")
    assert (archive["conn_type"], archive["login"]) == ("sftp", "archive")
    for conn in (cluster, archive):
        assert conn["host"] == "127.0.0.1"
        assert "no_host_key_check" not in conn["extra"]
        assert conn["extra"]["host_key"].startswith("ssh-ed25519 AAAA")
        assert len(conn["extra"]["host_key"].split()) == 2
        key_file = Path(conn["extra"]["key_file"])
        assert key_file.stat().st_mode & 0o077 == 0, "private key must be readable by its owner only"
    known = Path(site["HFC_SSH_KNOWN_HOSTS"]).read_text().split()
    assert known == [f"[127.0.0.1]:{cluster['port']}", *cluster["extra"]["host_key"].split()]


def test_services_listen_on_loopback_only(site):
    lay = Layout.current()
    # sshd, PostgreSQL, the archive's web server and the HQI query service
    ports = {_conn(site, "cluster")["port"], _conn(site, "catalogue")["port"], lay.archive_http_port, lay.hqi_port}
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr, port = fields[1].split(":")
            listening.setdefault(int(port, 16), set()).add(addr)
    for port in ports:
        assert listening.get(port) == {"0100007F"}, f"port {port} must listen on 127.0.0.1 only"


def test_slurm_jobs_end_with_recorded_states(site):
    client = _client(site, "cluster")
    try:
        code, out, err = _run(client, "sbatch --parsable --wrap 'exit 3'")
        assert code == 0, err
        failing = out.strip().split(";")[0]
        code, out, err = _run(client, "sbatch --parsable --wrap true")
        assert code == 0, err
        succeeding = out.strip().split(";")[0]

        deadline = time.monotonic() + 60
        states: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            code, out, err = _run(
                client, f"sacct -X -n -P -o JobIDRaw,State,ExitCode -j {failing},{succeeding}"
            )
            assert code == 0, err
            states = {
                row.split("|")[0]: (row.split("|")[1].split()[0], row.split("|")[2])
                for row in out.splitlines() if row.count("|") == 2
            }
            if len(states) == 2 and all(s in FINAL_STATES for s, _ in states.values()):
                break
            time.sleep(0.3)
        assert states.get(succeeding) == ("COMPLETED", "0:0")
        assert states.get(failing) == ("FAILED", "3:0")
    finally:
        client.close()


def test_cluster_has_products_and_frcs_and_system_python(site):
    client = _client(site, "cluster")
    try:
        code, out, err = _run(
            client,
            "test -d ~/products -a -w ~/products && test -d ~/frcs && "
            "/usr/bin/python3 -c 'import numpy, PIL; print(\"ok\")'",
        )
        assert (code, out.strip()) == (0, "ok"), err
    finally:
        client.close()


def test_archive_sftp_round_trip(site, tmp_path):
    payload = secrets.token_bytes(70_000)
    local = tmp_path / "product.bin"
    local.write_bytes(payload)
    name = f"hfc/test-{secrets.token_hex(4)}.bin"
    client = _client(site, "archive")
    try:
        sftp = client.open_sftp()
        sftp.put(str(local), name)
        with sftp.open(name, "rb") as fh:
            assert fh.read() == payload
        on_disk = Path(site["HFC_SITE_DIR"]) / "home" / "archive" / name
        assert on_disk.read_bytes() == payload
        assert on_disk.stat().st_uid == Path(on_disk.parent).stat().st_uid  # written as `archive`
        sftp.remove(name)
        assert not on_disk.exists()
    finally:
        client.close()


def test_archive_cannot_run_shell_commands(site):
    client = _client(site, "archive")
    try:
        stdin, stdout, _ = client.exec_command("echo SHELL-$((6*7))", timeout=10)
        # ForceCommand internal-sftp answers instead of a shell; it exits on end of input.
        stdin.channel.shutdown_write()
        out = stdout.read()
        assert b"SHELL-42" not in out
    finally:
        client.close()


def test_archive_account_hashes_files_of_its_tree_only(site):
    """The archive account's forced command runs sha256sum or openssl's SHA-256 (4x faster on a big
    file here) of files under the archive tree, and nothing else: no other tool, no other path."""
    import hashlib

    root = Path(site["HFC_SITE_DIR"]) / "home" / "archive"
    name = f"hfc/test-{secrets.token_hex(4)}.bin"
    payload = secrets.token_bytes(50_000)
    client = _client(site, "archive")
    try:
        sftp = client.open_sftp()
        with sftp.open(name, "wb") as fh:
            fh.write(payload)
        path = (root / name).resolve()
        want = hashlib.sha256(payload).hexdigest()
        for command in (f"sha256sum -- {path}", f"openssl dgst -sha256 -r -- {path}"):
            rc, out, err = _run(client, command)
            assert rc == 0 and out.split()[0] == want, (command, err)
        for command in ("openssl dgst -sha256 -r -- /etc/passwd", f"openssl dgst -md5 -r -- {path}",
                        f"openssl enc -d -- {path}", f"openssl dgst -sha256 -r -out {path}.x -- {path}",
                        f"openssl dgst -sha256 -r -- {root}/../cluster/x"):
            rc, out, err = _run(client, command)
            assert rc == 126 and "archive account: refused" in err and not out, command
        sftp.remove(name)
    finally:
        client.close()


def test_wrong_host_key_is_refused(site):
    # Any other ed25519 key stands in for an impostor's host key.
    impostor = (Path(site["HFC_SITE_DIR"]) / "ssh" / "cluster_ed25519.pub").read_text()
    with pytest.raises(paramiko.BadHostKeyException):
        _client(site, "cluster", host_key=impostor)


def test_openssh_client_verifies_with_known_hosts(site):
    conn = _conn(site, "cluster")
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={site['HFC_SSH_KNOWN_HOSTS']}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-i", conn["extra"]["key_file"], "-p", str(conn["port"]), f"cluster@{conn['host']}",
         "echo $SLURM_CONF"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).name == "slurm.conf"


def test_catalogue_dsn_connects(site):
    with psycopg.connect(site["HFC_CATALOGUE_DSN"], connect_timeout=10) as conn:
        row = conn.execute("SELECT current_user, current_database(), inet_server_addr()::text").fetchone()
    assert row == ("hfc", "hfc", "127.0.0.1/32")
    catalogue = _conn(site, "catalogue")
    assert (catalogue["login"], catalogue["schema"]) == ("hfc", "hfc")


_seen_fresh: list[str] = []


def test_empty_db_is_empty_and_owned_by_hfc(empty_db):
    with psycopg.connect(empty_db) as conn:
        name, owner = conn.execute(
            "SELECT current_database(), pg_get_userbyid(datdba) FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()
        assert name.startswith("hfc_test_") and owner == "hfc"
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
        assert tables == 0
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    _seen_fresh.append(name)


def test_empty_db_is_dropped_afterwards(site):
    if not _seen_fresh:
        pytest.skip("runs after test_empty_db_is_empty_and_owned_by_hfc")
    with psycopg.connect(site["HFC_CATALOGUE_DSN"]) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (_seen_fresh[0],))
        assert left.fetchone()[0] == 0


def _pids() -> dict[str, str]:
    root = localsite.state_dir()
    files = {
        "postgres": root / "pg/data/postmaster.pid",
        "sshd": root / "ssh/sshd.pid",
        "munged": root / "munge/munged.pid",
        "mariadb": root / "mysql/mysqld.pid",
        **{d: root / f"slurm/run/{d}.pid" for d in ("slurmdbd", "slurmctld", "slurmd")},
        "nginx": root / "nginx/nginx.pid",
        "hqi": root / "hqi/hqi.pid",
    }
    return {name: path.read_text().split()[0] for name, path in files.items()}


def test_up_is_idempotent_and_fast(site):
    before = _pids()
    localsite.up(verbose=False)
    t0 = time.monotonic()
    localsite.up(verbose=False)
    elapsed = time.monotonic() - t0
    assert _pids() == before, "a second up must not restart running services"
    assert elapsed < 3, f"warm up took {elapsed:.1f} s"
    assert localsite.env_vars() == site


def test_status_all_running(site, capsys):
    result = localsite.status()
    assert set(result) == set(localsite.SERVICES)
    assert all(result.values()), result
    assert "slurmctld" in capsys.readouterr().out
