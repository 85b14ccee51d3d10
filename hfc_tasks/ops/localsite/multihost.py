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
  _inside <host>`` run through ``ip netns exec`` + ``unshare --uts`` (own host name), so the
  single-host site's code (postgres.up, the MariaDB/munge/slurmdbd start) runs unchanged inside.
- State: <site state>/multihost. The accounts `cluster` and `archive` are the machine's (shared
  with the single-host site, whose homes they keep); this shape's sshd read the authorized keys
  from its own folder, and products, FRC programs and archive tree are its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import signal
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import postgres, slurm, ssh
from ._util import (
    SiteError,
    clear_stale_pid,
    ensure_dir,
    file_lock,
    pidfile_alive,
    port_open,
    read_pid,
    run,
    stop_pid,
    tail_file,
    wait_for,
    write_file,
)
from .layout import ARCHIVE_USER, CLUSTER_USER, Layout, state_dir
from .system import PACKAGES, ensure_packages, ensure_user, is_root

SUBNET = os.environ.get("HFC_MH_SUBNET", "10.231.0")
BRIDGE = "hfcmh0"
NS_PREFIX = "hfcmh-"
HOSTS = {"login": 10, "node1": 11, "node2": 12, "archive": 13, "catalogue": 14}
# Who may log in on each host's sshd.
SSH_USERS = {"login": CLUSTER_USER, "node1": CLUSTER_USER, "node2": CLUSTER_USER,
             "archive": ARCHIVE_USER, "catalogue": CLUSTER_USER}
# CPUs declared per node (SlurmdParameters=config_overrides): a 2-CPU job fits on node2 only.
NODE_CPUS = {"node1": 1, "node2": 2}
NODE_MEMORY_MB = 4096
PARTITIONS = {"hfc": ("node1", "node2"), "short": ("node1",)}
SSH_PORT = 22
SLURMD_TIMEOUT = 20
# The archive host's own filesystem (an ext4 image, loop-mounted on its archive root), so that
# it can fill up on its own like a real archive server's disk: HFC_MH_ARCHIVE_MB, made once.
ARCHIVE_FS_MB = int(os.environ.get("HFC_MH_ARCHIVE_MB", "512"))
PG_PORT = 5432
# Beyond the single-host site's: namespaces and links (ip), the archive's own filesystem
# (mkfs.ext4, loop mounts) and the network drills of the tests (nft, tc).
MH_PACKAGES = ("iproute2", "e2fsprogs", "util-linux", "nftables")
CONN_IDS = {"cluster": "hfc_mh_cluster", "archive": "hfc_mh_archive", "catalogue": "hfc_mh_catalogue"}


def addr(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def netns(host: str) -> str:
    return NS_PREFIX + host


def veth(host: str) -> str:
    return NS_PREFIX + host  # root-namespace end (<= 15 characters); the other end is eth0


@dataclass(frozen=True)
class MHLayout(Layout):
    """The single-host Layout under <state>/multihost, with this shape's addresses and ports."""

    @classmethod
    def current(cls) -> MHLayout:
        return cls(state_dir() / "multihost")

    @cached_property
    def pg_port(self) -> int:
        return PG_PORT

    @cached_property
    def ssh_port(self) -> int:
        return SSH_PORT

    @cached_property
    def mysql_port(self) -> int:
        return 3306  # on login's own loopback

    @cached_property
    def slurmctld_port(self) -> int:
        return 6817

    @cached_property
    def slurmd_port(self) -> int:
        return 6818

    @cached_property
    def slurmdbd_port(self) -> int:
        return 6819

    @cached_property
    def hostname(self) -> str:
        return "login"

    @property
    def slurmctld_addr(self) -> str:
        return addr("login")

    @property
    def slurm_extra_conf(self) -> str:
        # A node whose slurmd stops answering is DOWN (its jobs NODE_FAIL) after this many
        # seconds, not the default 300: the node-failure drill (tests/multihost) sees it in a
        # test's time. A cluster's admin sets their own; the pipeline only reads the job's end.
        return f"SlurmdTimeout={SLURMD_TIMEOUT}\n"

    def slurm_nodes_conf(self, cpus: int, memory_mb: int) -> str:
        lines = [f"NodeName={n} NodeHostname={n} NodeAddr={addr(n)} CPUs={c} RealMemory={NODE_MEMORY_MB} "
                 "State=UNKNOWN" for n, c in NODE_CPUS.items()]
        for i, (part, nodes) in enumerate(PARTITIONS.items()):
            lines.append(f"PartitionName={part} Nodes={','.join(nodes)} Default={'YES' if i == 0 else 'NO'} "
                         "MaxTime=7-00:00:00 State=UP")
        return "\n".join(lines) + "\n"

    # slurmd: one pid file, spool folder and log per node (SLURM expands %n to the node name).
    def slurm_pid(self, daemon: str) -> Path:
        return self.slurm_run / ("slurmd-%n.pid" if daemon == "slurmd" else f"{daemon}.pid")

    def slurm_log(self, daemon: str) -> Path:
        return self.slurm_log_dir / ("slurmd-%n.log" if daemon == "slurmd" else f"{daemon}.log")

    @property
    def slurmd_spool(self) -> Path:
        return self.slurm_dir / "spool" / "%n"

    def node_file(self, kind: str, node: str) -> Path:
        path = {"pid": self.slurm_pid("slurmd"), "log": self.slurm_log("slurmd"), "spool": self.slurmd_spool}[kind]
        return Path(str(path).replace("%n", node))

    # PostgreSQL on the catalogue's address, TLS only over TCP.
    @property
    def pg_listen_addresses(self) -> str:
        return addr("catalogue")

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def pg_extra_settings(self) -> str:
        return ("ssl = on\n"
                f"ssl_cert_file = '{self.pg_dir / 'server.crt'}'\n"
                f"ssl_key_file = '{self.pg_dir / 'server.key'}'\n"
                "ssl_min_protocol_version = 'TLSv1.2'\n")

    @property
    def pg_hba(self) -> str:
        return ("local all postgres peer\n"
                "local all all scram-sha-256\n"
                f"hostssl all all {SUBNET}.0/24 scram-sha-256\n")

    # sshd per host.
    def host_dir(self, host: str) -> Path:
        return self.ssh_dir / host

    def host_key_of(self, host: str) -> Path:
        return self.host_dir(host) / "ssh_host_ed25519_key"

    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def state_file(self) -> Path:
        return self.root / "hosts.json"


# ------------------------------------------------------------------------------------- network
def _ip(*args: str, check: bool = True):
    return run(["ip", *args], check=check, what=f"ip {' '.join(args)}", timeout=20)


def _ns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _network_up(log) -> None:
    if not _link_exists(BRIDGE):
        log(f"network: bridge {BRIDGE} {SUBNET}.1/24")
        _ip("link", "add", BRIDGE, "type", "bridge")
    if f"{SUBNET}.1/24" not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for host in HOSTS:
        ns = netns(host)
        if not _ns_exists(ns):
            _ip("netns", "add", ns)
        if not _link_exists(veth(host)):
            _ip("link", "add", veth(host), "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth(host), "master", BRIDGE, "up")
        if f"{addr(host)}/24" not in _ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout:
            _ip("-n", ns, "addr", "add", f"{addr(host)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")


def _network_down() -> list[str]:
    removed = []
    for host in HOSTS:
        if _link_exists(veth(host)):
            _ip("link", "del", veth(host), check=False)
            removed.append(f"link {veth(host)}")
        if _ns_exists(netns(host)):
            _ip("netns", "del", netns(host), check=False)
            removed.append(f"netns {netns(host)}")
    if _link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)
        removed.append(f"link {BRIDGE}")
    return removed


def ns_pids(host: str) -> list[int]:
    if not _ns_exists(netns(host)):
        return []
    out = _ip("netns", "pids", netns(host), check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


# ------------------------------------------------------------------------------------ keys/TLS
def _ensure_tls(lay: MHLayout) -> None:
    ensure_dir(lay.tls_dir, "root", 0o755)
    ca_key = lay.tls_dir / "ca.key"
    if not lay.ca_cert.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(lay.ca_cert), "-days", "3650",
             "-subj", "/CN=HFC multihost test site CA"], what="openssl: site CA")
    key, crt = lay.pg_dir / "server.key", lay.pg_dir / "server.crt"
    ensure_dir(lay.pg_dir, "root", 0o755)
    if not crt.exists() or crt.stat().st_mtime < lay.ca_cert.stat().st_mtime:
        csr = lay.tls_dir / "server.csr"
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=catalogue"], what="openssl: server key")
        ext = lay.tls_dir / "server.ext"
        ext.write_text(f"subjectAltName=IP:{addr('catalogue')},DNS:catalogue\n")
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(lay.ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", "3650", "-extfile", str(ext)],
            what="openssl: server certificate")
    uid, gid = pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid
    for f in (key, crt):
        os.chown(f, uid, gid)
    os.chmod(key, 0o600)
    os.chmod(ca_key, 0o600)


def _ensure_accounts(lay: MHLayout) -> None:
    """The machine's `cluster`/`archive` accounts: created if missing, otherwise left alone (the
    single-host site owns their homes). This shape's sshd read keys from AuthorizedKeysFile."""
    for user in (CLUSTER_USER, ARCHIVE_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            home = lay.home(user)
            ensure_dir(home.parent, "root", 0o755)
            ensure_user(user, home, "/bin/bash" if user == CLUSTER_USER else "/bin/sh")
            ensure_dir(home, user, 0o755)


def _prepare_files(lay: MHLayout) -> None:
    ensure_dir(lay.root, "root", 0o755)
    ensure_dir(lay.log_dir, "root", 0o755)
    ensure_dir(lay.ssh_dir, "root", 0o755)
    _ensure_accounts(lay)
    ssh.ensure_keys(lay)  # the cluster and archive client keys (lay.host_key unused here)
    ensure_dir(lay.authorized_keys(), "root", 0o755)
    for user in (CLUSTER_USER, ARCHIVE_USER):
        write_file(lay.authorized_keys() / user, ssh.public_key(lay.client_key(user)) + "\n", "root", 0o644)
    known = []
    for host in HOSTS:
        ensure_dir(lay.host_dir(host), "root", 0o755)
        ssh._keygen(lay.host_key_of(host), f"hfc-multihost-{host}")
        known.append(f"{addr(host)} {ssh.public_key(lay.host_key_of(host))}\n")
    write_file(lay.known_hosts, "".join(known), "root", 0o644)
    # The products filesystem (shared by login and the nodes) and the FRC programs.
    ensure_dir(lay.root / "home", "root", 0o755)
    ensure_dir(lay.home(CLUSTER_USER), CLUSTER_USER, 0o755)
    ensure_dir(lay.products_dir, CLUSTER_USER, 0o755)
    ssh._sync_frcs(lay)
    # The archive host's own tree and forced command.
    ensure_dir(lay.home(ARCHIVE_USER), ARCHIVE_USER, 0o755)
    ensure_dir(lay.archive_root, ARCHIVE_USER, 0o755)
    _archive_filesystem_up(lay)
    write_file(ssh.archive_command(lay), ssh.render_archive_command(lay.archive_root), "root", 0o755)
    for host in HOSTS:
        write_file(lay.host_dir(host) / "sshd_config", ssh.render_config(
            listen_address=addr(host), authorized_keys=f"{lay.authorized_keys()}/%u", port=SSH_PORT,
            host_key=lay.host_key_of(host), pid_file=lay.host_dir(host) / "sshd.pid",
            users=SSH_USERS[host], archive_user=ARCHIVE_USER, archive_command=ssh.archive_command(lay),
            slurm_conf=lay.slurm_conf), "root", 0o644)
    _ensure_tls(lay)


def archive_image(lay: MHLayout) -> Path:
    return lay.root / "archive.ext4"


def archive_mounted(lay: MHLayout) -> bool:
    return os.path.ismount(lay.archive_root)


def _archive_filesystem_up(lay: MHLayout) -> None:
    """Mount the archive's own filesystem on its root (made on first use; an archive tree
    written before this filesystem existed is moved into it, nothing is dropped)."""
    root, img = lay.archive_root, archive_image(lay)
    if archive_mounted(lay):
        return
    if not img.exists():
        run(["truncate", "-s", f"{ARCHIVE_FS_MB}M", str(img)], what="archive filesystem: image")
        # -m 0: no blocks reserved for root, the archive account can fill it up entirely.
        run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "hfc-archive", str(img)], what="archive filesystem: mkfs")
    old = [p for p in root.iterdir()] if root.exists() else []
    if old:
        stage = lay.root / "archive.mnt"
        ensure_dir(stage, "root", 0o755)
        run(["mount", "-o", "loop,nodev,nosuid", str(img), str(stage)], what="archive filesystem: mount")
        try:
            run(["cp", "-a", "--", *map(str, old), str(stage)], what="archive filesystem: move the old tree in",
                timeout=600)
        finally:
            run(["umount", str(stage)], what="archive filesystem: umount")
        for p in old:
            run(["rm", "-rf", "--", str(p)], what="archive filesystem: remove the moved tree")
    run(["mount", "-o", "loop,nodev,nosuid", str(img), str(root)], what="archive filesystem: mount")
    lost = root / "lost+found"
    if lost.is_dir() and not any(lost.iterdir()):
        lost.rmdir()  # not a product folder: the archive lists its root
    os.chown(root, pwd.getpwnam(ARCHIVE_USER).pw_uid, pwd.getpwnam(ARCHIVE_USER).pw_gid)
    os.chmod(root, 0o755)


def _archive_filesystem_down(lay: MHLayout) -> list[str]:
    if not archive_mounted(lay):
        return []
    if run(["umount", str(lay.archive_root)], check=False, what="archive filesystem: umount").returncode != 0:
        run(["umount", "-l", str(lay.archive_root)], check=False, what="archive filesystem: lazy umount")
    return [f"mount {lay.archive_root}"]


# ------------------------------------------------------------- inside a host's namespace (child)
def _sshd_up(lay: MHLayout, host: str, log) -> None:
    pid = lay.host_dir(host) / "sshd.pid"
    if pidfile_alive(pid, "sshd"):
        return
    log(f"{host}: sshd on {addr(host)}:{SSH_PORT}")
    clear_stale_pid(pid, "sshd")
    ensure_dir(Path("/run/sshd"), "root", 0o755)
    conf = lay.host_dir(host) / "sshd_config"
    run([ssh.SSHD, "-t", "-f", str(conf)], what=f"{host}: sshd -t")
    logf = lay.log_dir / f"sshd-{host}.log"
    offset = logf.stat().st_size if logf.exists() else 0

    def failed() -> bool:  # sshd exits after "Cannot bind any address." (its own exit code is 0 here)
        with open(logf, "rb") as fh:
            fh.seek(offset)
            return b"Cannot bind any address" in fh.read()

    run([ssh.SSHD, "-f", str(conf), "-E", str(logf)], what=f"{host}: sshd start", log=logf)
    wait_for(lambda: (pidfile_alive(pid, "sshd") and port_open(SSH_PORT, addr(host))) or failed(), 10)
    if not (pidfile_alive(pid, "sshd") and port_open(SSH_PORT, addr(host))):
        raise SiteError(f"{host}: sshd did not listen on {addr(host)}:{SSH_PORT}; read the log: {logf}\n"
                        "  last lines:\n    " + "\n    ".join(tail_file(logf, 4)))


def _slurmd_up(lay: MHLayout, node: str, log) -> None:
    pid = lay.node_file("pid", node)
    if pidfile_alive(pid, "slurmd"):
        return
    log(f"{node}: slurmd -N {node}")
    ensure_dir(lay.node_file("spool", node), "root", 0o755)
    clear_stale_pid(pid, "slurmd")
    logf = lay.node_file("log", node)
    run(["/usr/sbin/slurmd", "-N", node], env=lay.slurm_env, what=f"{node}: slurmd start", log=logf, timeout=60)
    if not wait_for(lambda: pidfile_alive(pid, "slurmd") and port_open(lay.slurmd_port, addr(node)), 30):
        raise SiteError(f"{node}: slurmd did not listen on {addr(node)}:{lay.slurmd_port}; read the log: {logf}")


def _inside(host: str) -> None:
    """Runs in the host's network (and UTS) namespace: start that host's daemons."""
    lay = MHLayout.current()

    def log(msg: str) -> None:
        print(f"[hfc-site multihost] {msg}", file=sys.stderr, flush=True)

    if host == "login":
        slurm._munge_up(lay, log)
        slurm._mariadb_up(lay, log)
        slurm._write_configs(lay)
        if not slurm.daemon_running(lay, "slurmdbd"):
            slurm._start_daemon(lay, "slurmdbd", lay.slurmdbd_port, log)
        if not slurm.daemon_running(lay, "slurmctld"):
            slurm._ensure_cluster_registered(lay)
            slurm._start_daemon(lay, "slurmctld", lay.slurmctld_port, log)
    elif host in NODE_CPUS:
        _slurmd_up(lay, host, log)
    elif host == "catalogue":
        postgres.up(lay, log)
    _sshd_up(lay, host, log)


def _run_inside(host: str, log) -> None:
    # nsenter --net, not `ip netns exec`: the latter also makes a mount namespace with a fresh
    # /sys, without /sys/fs/cgroup, and slurmd then refuses to start ("Unable to initialize cgroup").
    cmd = ["nsenter", f"--net=/run/netns/{netns(host)}", "unshare", "--uts", "--",
           "sh", "-c", f'hostname {host} && exec "$0" -m hfc_tasks.ops.localsite.multihost _inside {host}',
           sys.executable]
    env = {"HFC_SITE_DIR": str(state_dir())}
    proc = run(cmd, env=env, check=False, timeout=300, what=f"multihost: start {host}")
    for line in proc.stderr.splitlines():
        if line.startswith("[hfc-site multihost]"):
            log(line.removeprefix("[hfc-site multihost] "))
    if proc.returncode != 0:
        detail = "\n".join(line.removeprefix("error: ") for line in proc.stderr.strip().splitlines()
                           if not line.startswith("[hfc-site multihost]"))
        raise SiteError(f"multihost: starting host {host} ({addr(host)}) failed: {detail}")


# ------------------------------------------------------------------------------ up/down/status
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
            _prepare_files(lay)
            _network_up(log)
            for host in ("login", "node1", "node2", "archive", "catalogue"):
                _run_inside(host, log)
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
    return {"stopped": stopped, "removed": _archive_filesystem_down(lay) + _network_down()}


def down() -> dict[str, list[str]]:
    """Stop every process of the shape and remove its namespaces, links and bridge (data stays)."""
    lay = MHLayout.current()
    if not lay.root.exists():
        return {"stopped": [], "removed": _network_down()}
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
        result[f"{host}: namespace"] = _ns_exists(netns(host))
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


def main(argv: list[str] | None = None) -> int:
    """``python -m hfc_tasks.ops.localsite.multihost _inside <host>``: the child that starts a
    host's daemons in its namespace (see _run_inside). Operators use ``hfc site ... --shape multihost``."""
    parser = argparse.ArgumentParser(prog="python -m hfc_tasks.ops.localsite.multihost")
    parser.add_argument("command", choices=["_inside"])
    parser.add_argument("host", choices=list(HOSTS))
    args = parser.parse_args(argv)
    try:
        _inside(args.host)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
