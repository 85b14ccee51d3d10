"""The multihost shape of the local site (issue 10's foundation): five hosts as network
namespaces, each with its own address, sshd and host key; a real two-node SLURM; the archive's
forced command; PostgreSQL over TLS. Checked with real clients from the root namespace, as
Airflow will reach them. Run alone: `pytest -m multihost tests/multihost` (as root)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paramiko
import psycopg
import pytest
from helpers import pinned_ssh_client

from hfc_tasks.ops.localsite import multihost

pytestmark = pytest.mark.multihost

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
TIMINGS: dict[str, float] = {}


def _netns_and_links() -> tuple[str, str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return netns, links


def test_up_is_all_or_nothing():
    """A host that cannot start (port 22 of `archive` already taken inside its namespace) makes
    `up` fail naming the host and the log, and removes everything it had started."""
    multihost.down()
    ns = multihost.netns("archive")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    squatter = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", "python3", "-c",
         "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         "s.bind(('0.0.0.0', 22)); s.listen(); print('bound', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "bound"
        with pytest.raises(multihost.SiteError) as err:
            multihost.up(verbose=False)
        msg = str(err.value)
        assert "archive (10.231.0.13)" in msg.replace(multihost.SUBNET, "10.231.0") and "sshd" in msg
        assert "sshd-archive.log" in msg and "Address already in use" in msg
        # What had started (login's SLURM and databases, the nodes' slurmd, their sshd) is gone,
        # and so is the squatter: it lived in one of the site's namespaces.
        assert squatter.wait(timeout=15) is not None
        netns, links = _netns_and_links()
        assert multihost.NS_PREFIX not in netns and "hfcmh" not in links
        assert _project_pids_of_shape() == set()
    finally:
        if squatter.poll() is None:
            squatter.kill()
        multihost.down()


@pytest.fixture(scope="module")
def mh() -> dict[str, str]:
    """The multihost site from cold (down first), removed again at the end, pass or fail."""
    multihost.down()
    t0 = time.monotonic()
    multihost.up(verbose=False)
    TIMINGS["up"] = time.monotonic() - t0
    try:
        yield multihost.env_vars()
    finally:
        multihost.down()
        print(f"\nmultihost timings (s): {json.dumps({k: round(v, 2) for k, v in TIMINGS.items()})}")


def _conn(env: dict[str, str], what: str) -> dict:
    return json.loads(env[f"AIRFLOW_CONN_HFC_MH_{what.upper()}"])


def _exec(client: paramiko.SSHClient, cmd: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(cmd, timeout=30)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def test_each_host_answers_on_its_own_address_with_its_own_host_key(mh):
    known = {}
    for line in Path(mh["HFC_MH_KNOWN_HOSTS"]).read_text().splitlines():
        host, kind, b64 = line.split()
        known[host] = f"{kind} {b64}"
    seen = {}
    for host in multihost.HOSTS:
        address = multihost.addr(host)
        with paramiko.Transport((address, 22)) as transport:
            transport.start_client(timeout=10)
            key = transport.get_remote_server_key()
        seen[host] = f"{key.get_name()} {key.get_base64()}"
        assert seen[host] == known[address], host
    assert len(set(seen.values())) == len(multihost.HOSTS)  # five hosts, five different keys
    assert _conn(mh, "cluster")["extra"]["host_key"] == seen["login"]
    assert _conn(mh, "archive")["extra"]["host_key"] == seen["archive"]
    # The login's connection with the archive's key is refused: the pin is per host.
    with pytest.raises(paramiko.BadHostKeyException):
        pinned_ssh_client(_conn(mh, "cluster"), host_key=seen["archive"])


def test_no_route_beyond_the_site(mh):
    # Inside a host: the site's /24 and nothing else (no default route, no NAT).
    routes = subprocess.run(["ip", "-n", multihost.netns("login"), "route"], capture_output=True, text=True,
                            check=True).stdout
    assert "default" not in routes
    assert f"{multihost.SUBNET}.0/24" in routes


def test_sinfo_on_login_shows_both_nodes_idle_in_their_partitions(mh):
    client = pinned_ssh_client(_conn(mh, "cluster"))
    try:
        rc, out, err = _exec(client, "hostname; sinfo -h -N -o '%N|%P|%T|%c'")
    finally:
        client.close()
    assert rc == 0, err
    lines = out.split()
    assert lines[0] == "login"
    rows = {tuple(r.split("|")[:2]): r.split("|")[2:] for r in lines[1:]}
    assert rows == {("node1", "hfc*"): ["idle", "1"], ("node1", "short"): ["idle", "1"],
                    ("node2", "hfc*"): ["idle", "2"]}


def _sacct(client: paramiko.SSHClient, job: str, deadline: float = 60) -> list[str]:
    end = time.monotonic() + deadline
    row: list[str] = []
    while time.monotonic() < end:
        rc, out, _ = _exec(client, f"sacct -X -n -P -j {job} -o State,NodeList,AllocCPUS,Partition")
        row = out.strip().split("|") if rc == 0 and out.strip() else []
        if row and row[0].split()[0] in FINAL_STATES:
            return row
        time.sleep(0.3)
    raise AssertionError(f"job {job} not final after {deadline} s: {row}")


def test_jobs_run_on_the_expected_node(mh):
    products = Path(mh["HFC_MH_PRODUCTS_ROOT"])
    client = pinned_ssh_client(_conn(mh, "cluster"))
    try:
        cases = {"short": ("-p short", "node1", "1"), "hfc_2cpus": ("-p hfc -c 2", "node2", "2")}
        jobs = {}
        for name, (opts, _, _) in cases.items():
            out_file = products / f"mh-test-{name}.out"
            out_file.unlink(missing_ok=True)
            rc, out, err = _exec(client, f"sbatch --parsable {opts} --chdir {products} -o {out_file} "
                                         "--wrap 'hostname; hostname -I'")
            assert rc == 0, err
            jobs[name] = out.strip()
        for name, (_, node, cpus) in cases.items():
            state, nodelist, alloc, _ = _sacct(client, jobs[name])
            assert (state, nodelist, alloc) == ("COMPLETED", node, cpus), name
            # Written on the node, read here: one products filesystem; the job ran in the node's
            # namespace (its host name and only its address).
            host, ips = (products / f"mh-test-{name}.out").read_text().split("\n", 1)
            assert host == node and ips.split() == [multihost.addr(node)]
        # Two CPUs on the one-CPU partition: accepted but never started (PartitionConfig).
        rc, out, err = _exec(client, f"sbatch --parsable -p short -c 2 --chdir {products} -o /dev/null --wrap true")
        assert rc == 0, err
        job = out.strip()
        try:
            rc, out, _ = _exec(client, f"squeue -h -j {job} -o '%T|%r'")
            assert out.strip() == "PENDING|PartitionConfig"
        finally:
            _exec(client, f"scancel {job}")
        assert _sacct(client, job)[0].startswith("CANCELLED")
    finally:
        client.close()


def test_archive_forced_command_and_own_tree(mh, tmp_path):
    root = mh["HFC_MH_ARCHIVE_ROOT"]
    client = pinned_ssh_client(_conn(mh, "archive"))
    try:
        rc, out, err = _exec(client, "echo SHELL-$((6*7))")
        assert rc == 126 and "SHELL-42" not in out and "archive account: refused" in err
        payload = b"multihost archive\n" * 100
        remote = f"{root}/mh-test.dat"
        sftp = client.open_sftp()
        with sftp.open(remote, "wb") as fh:
            fh.write(payload)
        sftp.close()
        assert Path(remote).read_bytes() == payload
        assert Path(remote).owner() == "archive"
        import hashlib
        rc, out, err = _exec(client, f"sha256sum -- {remote}")
        assert rc == 0 and out.split()[0] == hashlib.sha256(payload).hexdigest(), err
        rc, _, err = _exec(client, "sha256sum -- /etc/passwd")
        assert rc == 126 and "is not under" in err
        Path(remote).unlink()
    finally:
        client.close()


def test_catalogue_tls_verify_full_and_wrong_ca(mh, tmp_path):
    with psycopg.connect(mh["HFC_MH_CATALOGUE_DSN"], connect_timeout=10) as conn:
        ssl, addr, user = conn.execute(
            "SELECT s.ssl, inet_server_addr()::text, current_user FROM pg_stat_ssl s "
            "WHERE s.pid = pg_backend_pid()").fetchone()
    assert (ssl, addr, user) == (True, f"{multihost.addr('catalogue')}/32", "hfc")
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "k"), "-out", str(other_ca), "-days", "1",
                    "-subj", "/CN=impostor CA"], check=True, capture_output=True)
    wrong = mh["HFC_MH_CATALOGUE_DSN"].replace(_conn(mh, "catalogue")["extra"]["sslrootcert"], str(other_ca))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(wrong, connect_timeout=10)
    plain = mh["HFC_MH_CATALOGUE_DSN"].split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(plain, connect_timeout=10)


def test_up_again_changes_nothing(mh):
    lay = multihost.MHLayout.current()
    before = multihost.daemon_pids()
    assert all(before.values()) and len(before) == 12
    t0 = time.monotonic()
    multihost.up(verbose=False)
    TIMINGS["up again"] = time.monotonic() - t0
    assert multihost.daemon_pids() == before  # nothing restarted
    assert all(multihost.status(print_table=False).values())
    assert lay.root.is_dir()


def _project_pids_of_shape() -> set[int]:
    marker = "/multihost/"
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd or "hfcmh-" in cmd or "slurmd -N node" in cmd:
                out.add(int(entry.name))
    return out


def test_down_removes_every_namespace_link_and_process(mh):
    from hfc_tasks.ops import localsite

    single_before = localsite.status(print_table=False)
    pids = {p for h in multihost.HOSTS for p in multihost.ns_pids(h)}
    assert len(pids) >= 12  # 5 sshd, munged, mariadbd, slurmdbd, slurmctld, 2 slurmd, postgres...
    t0 = time.monotonic()
    multihost.down()
    TIMINGS["down"] = time.monotonic() - t0
    assert not [p for p in pids if Path(f"/proc/{p}").exists()
                and Path(f"/proc/{p}/stat").read_text().split(") ", 1)[1][0] not in "ZX"]
    assert _project_pids_of_shape() == set()
    netns, links = _netns_and_links()
    assert multihost.NS_PREFIX not in netns
    assert "hfcmh" not in links
    assert not all(multihost.status(print_table=False).values())
    # The single-host site was not touched.
    assert localsite.status(print_table=False) == single_before
