"""Starting one host's daemons inside its namespace: ``run_inside`` (in the parent) runs
``python -m hfc_tasks.ops.localsite.multihost _inside <host>`` in the host's network and UTS
namespaces, which calls ``inside``: the single-host site's code (postgres.up, the MariaDB, munge
and slurmdbd start) runs there unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import postgres, slurm, ssh
from .._util import SiteError, clear_stale_pid, ensure_dir, pidfile_alive, port_open, run, tail_file, wait_for
from ..layout import state_dir
from .layout import NODE_CPUS, SSH_PORT, MHLayout, addr, netns


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


def inside(host: str) -> None:
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


def run_inside(host: str, log) -> None:
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
