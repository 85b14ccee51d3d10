"""The multihost shape of the local site: login, node1, node2, archive and catalogue as Linux
network namespaces on a bridge of their own, each with its own address, sshd and host key.

    hfc site up|down|status|env --shape multihost

- Addresses: 10.231.0.0/24 only (``HFC_MH_SUBNET`` overrides the first three octets), the root
  namespace is .1 on the bridge; no route, NAT or forwarding to anywhere else.
- login: munged, MariaDB + slurmdbd (on login's own loopback), slurmctld, sshd (`cluster`).
  node1/node2: slurmd (``-N nodeX``, pid/spool/log per node through ``%n``), sshd (`cluster`).
  archive: sshd (`archive`, the same forced command as the single-host site, its own tree).
  catalogue: PostgreSQL over TCP, scram password, TLS with a site CA (hostssl only), sshd.
- Every daemon of a host is started by a child ``python -m hfc_tasks.ops.localsite.multihost
  _inside <host>`` run through ``nsenter --net`` + ``unshare --uts`` (own host name), so the
  single-host site's code (postgres.up, the MariaDB/munge/slurmdbd start) runs unchanged inside.
- State: <site state>/multihost. The accounts `cluster` and `archive` are the machine's (shared
  with the single-host site, whose homes they keep); this shape's sshd read the authorized keys
  from its own folder, and products, FRC programs and archive tree are its own.

The package: layout (hosts, addresses, ports, MHLayout), network (bridge, namespaces, links),
files (accounts, keys, TLS, sshd configs, the archive's filesystem), hosts (a host's daemons,
started inside its namespace); this module brings the shape up and down, and reports its status
and connections (``env_vars``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

from .. import postgres, slurm, ssh
from .._util import SiteError, ensure_dir, file_lock, pidfile_alive, port_open, read_pid, run, stop_pid, wait_for
from ..layout import ARCHIVE_USER, CLUSTER_USER
from ..system import PACKAGES, ensure_packages, is_root
from .files import archive_filesystem_down, archive_mounted, prepare_files
from .hosts import run_inside
from .layout import (
    BRIDGE,
    CONN_IDS,
    HOSTS,
    NODE_CPUS,
    NS_PREFIX,
    PARTITIONS,
    PG_PORT,
    SSH_PORT,
    SUBNET,
    MHLayout,
    addr,
    netns,
    veth,
)
from .network import network_down, network_up, ns_exists, ns_pids

# Beyond the single-host site's: namespaces and links (ip), the archive's own filesystem
# (mkfs.ext4, loop mounts) and the network drills of the tests (nft, tc).
MH_PACKAGES = ("iproute2", "e2fsprogs", "util-linux", "nftables")
# What tests/multihost use beside up/down/status/env_vars: start one host's daemons again.
_run_inside = run_inside

__all__ = ["BRIDGE", "CONN_IDS", "HOSTS", "NODE_CPUS", "NS_PREFIX", "PARTITIONS", "SUBNET", "MHLayout",
           "SiteError", "addr", "daemon_pids", "down", "env_vars", "netns", "ns_pids", "postgres", "sinfo_nodes",
           "status", "up", "veth"]


def sinfo_nodes(lay: MHLayout) -> dict[str, set[str]]:
    """{node: {state per partition...}} through `sinfo` run on login."""
    proc = run(["ip", "netns", "exec", netns("login"), "timeout", "5", "sinfo", "-h", "-N", "-o", "%N|%P|%T"],
               env=lay.slurm_env, check=False, what="sinfo on login")
    out: dict[str, set[str]] = {}
    for row in proc.stdout.splitlines():
        node, _part, state = row.split("|")
        out.setdefault(node, set()).add(state)
    return out


def _wait_nodes(lay: MHLayout, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    resumed: set[str] = set()
    nodes: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        nodes = sinfo_nodes(lay)
        ready = 0
        for node in NODE_CPUS:
            states = {s.rstrip("*~#!%$@^-+").lower() for s in nodes.get(node, set())}
            if states and states <= {"idle", "mixed", "allocated", "completing"}:
                ready += 1
            elif states & {"drained", "draining", "down", "fail"} and node not in resumed:
                run(["ip", "netns", "exec", netns("login"), "timeout", "5", "scontrol", "update",
                     f"nodename={node}", "state=resume"], env=lay.slurm_env, check=False)
                resumed.add(node)
        if ready == len(NODE_CPUS):
            return
        time.sleep(0.3)
    raise SiteError(f"multihost: SLURM nodes not ready ({nodes}); read the logs in {lay.slurm_log_dir}")


def up(verbose: bool = True) -> None:
    """Create the network and start every host; idempotent. On failure, everything is removed
    again (all or nothing) and the error says why."""
    if not is_root():
        raise SiteError("the multihost site must be started as root (namespaces, accounts, daemons)")

    def log(msg: str) -> None:
        if verbose:
            print(f"[hfc-site multihost] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    lay = MHLayout.current()
    ensure_dir(lay.root.parent, "root", 0o755)
    ensure_dir(lay.root, "root", 0o755)
    with file_lock(lay.lock_file):
        try:
            ensure_packages(log, PACKAGES + MH_PACKAGES)
            prepare_files(lay)
            network_up(log)
            for host in ("login", "node1", "node2", "archive", "catalogue"):
                run_inside(host, log)
            _wait_nodes(lay)
        except BaseException as exc:
            log(f"up failed, removing what was started: {exc}")
            _down_locked(lay)
            raise
    log(f"multihost site up in {time.monotonic() - t0:.1f} s under {lay.root}")


def _down_locked(lay: MHLayout) -> dict[str, list[str]]:
    stopped: list[str] = []
    with contextlib.suppress(SiteError):
        if postgres.running(lay):
            postgres.stop(lay)
            stopped.append("postgres")
    for node in NODE_CPUS:
        if stop_pid(lay.node_file("pid", node), "slurmd"):
            stopped.append(f"slurmd {node}")
    stopped += slurm.stop(lay)  # slurmctld, slurmdbd, mariadb, munged (pid files)
    for host in HOSTS:
        if stop_pid(lay.host_dir(host) / "sshd.pid", "sshd"):
            stopped.append(f"sshd {host}")
    # Anything else still in a host's namespace (SSH sessions, job steps): TERM, then KILL.
    left = [p for h in HOSTS for p in ns_pids(h)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not wait_for(lambda: not any(ns_pids(h) for h in HOSTS), 10, 0.1):
            left = [p for h in HOSTS for p in ns_pids(h)]
        else:
            break
    stopped += [f"pid {p}" for p in left]
    return {"stopped": stopped, "removed": archive_filesystem_down(lay) + network_down()}


def down() -> dict[str, list[str]]:
    """Stop every process of the shape and remove its namespaces, links and bridge (data stays)."""
    lay = MHLayout.current()
    if not lay.root.exists():
        return {"stopped": [], "removed": network_down()}
    with file_lock(lay.lock_file):
        return _down_locked(lay)


def daemon_pids(lay: MHLayout | None = None) -> dict[str, int | None]:
    """The pid of every daemon of the shape, from its pid file (None: no pid file)."""
    lay = lay or MHLayout.current()
    files = {f"sshd {h}": lay.host_dir(h) / "sshd.pid" for h in HOSTS}
    files |= {f"slurmd {n}": lay.node_file("pid", n) for n in NODE_CPUS}
    files |= {d: lay.slurm_pid(d) for d in ("slurmctld", "slurmdbd")}
    files |= {"munged": lay.munge_pid, "mariadb": lay.mysql_pid, "postgres": lay.pg_data / "postmaster.pid"}
    return {name: read_pid(path) for name, path in files.items()}


def status(print_table: bool = True) -> dict[str, bool]:
    lay = MHLayout.current()
    result: dict[str, bool] = {}
    for host in HOSTS:
        result[f"{host}: namespace"] = ns_exists(netns(host))
        result[f"{host}: sshd"] = (pidfile_alive(lay.host_dir(host) / "sshd.pid", "sshd")
                                   and port_open(SSH_PORT, addr(host)))
    result["login: munged"] = slurm.munge_running(lay)
    result["login: mariadb"] = slurm.mariadb_running(lay)
    result["login: slurmdbd"] = slurm.daemon_running(lay, "slurmdbd")
    result["login: slurmctld"] = slurm.daemon_running(lay, "slurmctld") and port_open(6817, addr("login"))
    for node in NODE_CPUS:
        result[f"{node}: slurmd"] = pidfile_alive(lay.node_file("pid", node), "slurmd")
    result["catalogue: postgres"] = postgres.running(lay) and port_open(PG_PORT, addr("catalogue"))
    result["archive: filesystem"] = archive_mounted(lay)
    if print_table:
        print(f"state folder: {lay.root}   bridge {BRIDGE} {SUBNET}.1/24")
        for name, ok in result.items():
            host = name.split(":")[0]
            print(f"  {name:<22} {'running' if ok else 'stopped':<8} {addr(host)}")
    return result


def env_vars() -> dict[str, str]:
    lay = MHLayout.current()

    def ssh_conn(conn_type: str, host: str, user: str) -> str:
        return json.dumps({
            "conn_type": conn_type, "host": addr(host), "port": SSH_PORT, "login": user,
            "extra": {"key_file": str(lay.client_key(user)), "host_key": ssh.public_key(lay.host_key_of(host))},
        })

    pw = postgres.password(lay)
    return {
        "HFC_MH_SITE_DIR": str(lay.root),
        f"AIRFLOW_CONN_{CONN_IDS['cluster'].upper()}": ssh_conn("ssh", "login", CLUSTER_USER),
        f"AIRFLOW_CONN_{CONN_IDS['archive'].upper()}": ssh_conn("sftp", "archive", ARCHIVE_USER),
        f"AIRFLOW_CONN_{CONN_IDS['catalogue'].upper()}": json.dumps({
            "conn_type": "postgres", "host": addr("catalogue"), "port": PG_PORT, "login": postgres.ROLE,
            "password": pw, "schema": postgres.DATABASE,
            "extra": {"sslmode": "verify-full", "sslrootcert": str(lay.ca_cert)},
        }),
        "HFC_MH_CATALOGUE_DSN": (f"postgresql://{postgres.ROLE}:{pw}@{addr('catalogue')}:{PG_PORT}/"
                                 f"{postgres.DATABASE}?sslmode=verify-full&sslrootcert={lay.ca_cert}"),
        "HFC_MH_KNOWN_HOSTS": str(lay.known_hosts),
        "HFC_MH_PRODUCTS_ROOT": str(lay.products_dir),
        "HFC_MH_ARCHIVE_ROOT": str(lay.archive_root),
    }
