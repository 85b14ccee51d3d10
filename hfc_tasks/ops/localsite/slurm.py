"""Single-node SLURM 22.05 with accounting: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Start order matters: munged (everything authenticates through it) → MariaDB → slurmdbd →
cluster registered with sacctmgr → slurmctld → slurmd.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import time
from importlib import resources
from string import Template

from ._util import (
    SiteError,
    clear_stale_pid,
    ensure_dir,
    pidfile_alive,
    port_open,
    run,
    spawn_detached,
    stop_pid,
    wait_for,
    write_file,
    write_secret,
)
from .layout import Layout
from .system import ensure_system_user

CLUSTER_NAME = "hfclocal"
# config_overrides lets the node declare more than the real CPUs and memory: the demo jobs are
# small, and several must run side by side.
NODE_CPUS = 8
NODE_MEMORY_MB = 8192

MARIADBD = "/usr/sbin/mariadbd"


def _template(name: str, **values: object) -> str:
    text = resources.files(__package__).joinpath(f"templates/{name}").read_text()
    return Template(text).substitute(**values)


# ---------------------------------------------------------------------------------------- munge
def munge_running(lay: Layout) -> bool:
    return pidfile_alive(lay.munge_pid, "munged")


def _munge_up(lay: Layout, log) -> None:
    ensure_system_user("munge")
    # munged insists its folders are not writable by anyone else; clients (the cluster account's
    # sbatch) must still reach the socket, hence 755.
    ensure_dir(lay.munge_dir, "munge", 0o755)
    if not lay.munge_key.exists():
        # Generated once; a fresh random key per site (the Debian package's /etc/munge key is not used).
        fd = os.open(lay.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))
    os.chown(lay.munge_key, *_ids("munge"))
    os.chmod(lay.munge_key, 0o400)
    if munge_running(lay):
        return
    log("munged: starting")
    clear_stale_pid(lay.munge_pid, "munged")
    # A stale socket from a killed munged makes the new one refuse to start.
    lay.munge_socket.unlink(missing_ok=True)
    run(
        ["runuser", "-u", "munge", "--", "/usr/sbin/munged",
         f"--key-file={lay.munge_key}", f"--socket={lay.munge_socket}",
         f"--pid-file={lay.munge_pid}", f"--log-file={lay.munge_log}",
         f"--seed-file={lay.munge_dir / 'munged.seed'}"],
        what="munged: start", log=lay.munge_log,
    )
    if not wait_for(lambda: munge_running(lay) and lay.munge_socket.exists(), 10):
        raise SiteError(f"munged did not start; read the log: {lay.munge_log}")


def _ids(user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


# -------------------------------------------------------------------------------------- MariaDB
def mariadb_running(lay: Layout) -> bool:
    return pidfile_alive(lay.mysql_pid, "mariadbd")


def _mysql(lay: Layout, sql: str, secrets: tuple[str, ...] = ()) -> str:
    # Debian's MariaDB root authenticates by unix socket: root needs no password on our socket.
    # The SQL goes through stdin, never argv (a password in it would show in /proc/<pid>/cmdline).
    proc = run(
        ["mariadb", "--no-defaults", "-uroot", f"--socket={lay.mysql_socket}", "-N", "-B"],
        input=sql, what="mariadb: client", log=lay.mysql_log, secrets=secrets,
    )
    return proc.stdout.strip()


def ensure_slurmdb_password(lay: Layout) -> None:
    """slurmdbd's database password, generated once, created 0600 (root only)."""
    if not lay.slurmdb_password_file.exists():
        write_secret(lay.slurmdb_password_file, secrets.token_hex(16) + "\n", "root")


def ensure_slurmdb_user(lay: Layout) -> None:
    """The MariaDB account of slurmdbd, with the password of the state folder (re-applied)."""
    pw = lay.slurmdb_password_file.read_text().strip()
    stmts = []
    for host in ("127.0.0.1", "localhost"):
        stmts += [
            f"CREATE USER IF NOT EXISTS 'slurm'@'{host}' IDENTIFIED BY '{pw}'",
            f"ALTER USER 'slurm'@'{host}' IDENTIFIED BY '{pw}'",
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}'",
        ]
    _mysql(lay, ";\n".join(stmts) + ";\n", secrets=(pw,))


def _mariadb_up(lay: Layout, log) -> bool:
    """Returns True if MariaDB was (re)started by this call."""
    ensure_system_user("mysql")
    ensure_dir(lay.mysql_dir, "mysql", 0o755)
    ensure_slurmdb_password(lay)
    if not (lay.mysql_data / "mysql").is_dir():
        log("mariadb: initialising the data folder")
        ensure_dir(lay.mysql_data, "mysql", 0o700)
        run(
            ["mariadb-install-db", "--no-defaults", "--user=mysql", "--basedir=/usr",
             f"--datadir={lay.mysql_data}", "--auth-root-authentication-method=socket",
             "--skip-test-db", "--skip-name-resolve"],
            what="mariadb: mariadb-install-db", timeout=300,
        )
    if mariadb_running(lay):
        return False
    log("mariadb: starting")
    clear_stale_pid(lay.mysql_pid, "mariadbd")
    lay.mysql_socket.unlink(missing_ok=True)
    spawn_detached(
        [MARIADBD, "--no-defaults", "--user=mysql", "--basedir=/usr", f"--datadir={lay.mysql_data}",
         f"--socket={lay.mysql_socket}", f"--pid-file={lay.mysql_pid}", f"--port={lay.mysql_port}",
         "--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
         f"--log-error={lay.mysql_log}"],
        lay.mysql_log,
    )

    def ready() -> bool:
        if not lay.mysql_socket.exists():
            return False
        proc = subprocess.run(
            ["mariadb-admin", "--no-defaults", "-uroot", f"--socket={lay.mysql_socket}", "ping"],
            capture_output=True, stdin=subprocess.DEVNULL,
        )
        return proc.returncode == 0

    if not wait_for(ready, 60, 0.1):
        raise SiteError(f"mariadb did not start; read the log: {lay.mysql_log}")
    ensure_slurmdb_user(lay)
    return True


def _mariadb_stop(lay: Layout) -> bool:
    return stop_pid(lay.mysql_pid, "mariadbd", timeout=60)


# ----------------------------------------------------------------------------------------- SLURM
def _slurm(lay: Layout, args: list[str], timeout: float = 10, check: bool = True, what: str = ""):
    # `timeout` guards client commands: with slurmctld dead, sinfo/scontrol retry for minutes.
    return run(["timeout", str(int(timeout)), *args], env=lay.slurm_env, check=check,
               timeout=timeout + 5, what=what or f"slurm: {args[0]}")


def _write_configs(lay: Layout) -> tuple[bool, bool]:
    """Returns (slurm.conf changed, slurmdbd.conf changed)."""
    ensure_dir(lay.slurm_dir, "root", 0o755)
    ensure_dir(lay.slurm_conf.parent, "root", 0o755)
    for d in (lay.slurm_state, lay.slurmd_spool, lay.slurm_run):
        ensure_dir(d, "root", 0o755)
    ensure_dir(lay.slurm_log_dir, "root", 0o755)
    conf = _template(
        "slurm.conf",
        cluster_name=CLUSTER_NAME,
        hostname=lay.hostname,
        slurmctld_port=lay.slurmctld_port,
        slurmd_port=lay.slurmd_port,
        slurmdbd_port=lay.slurmdbd_port,
        munge_socket=lay.munge_socket,
        state_dir=lay.slurm_state,
        spool_dir=lay.slurmd_spool,
        ctld_pid=lay.slurm_pid("slurmctld"),
        slurmd_pid=lay.slurm_pid("slurmd"),
        ctld_log=lay.slurm_log("slurmctld"),
        slurmd_log=lay.slurm_log("slurmd"),
        jobcomp=lay.slurm_log_dir / "jobcomp.txt",
        ctld_addr=lay.slurmctld_addr,
        nodes=lay.slurm_nodes_conf(NODE_CPUS, NODE_MEMORY_MB),
        extra=lay.slurm_extra_conf,
    )
    dbd = _template(
        "slurmdbd.conf",
        munge_socket=lay.munge_socket,
        slurmdbd_port=lay.slurmdbd_port,
        pid_file=lay.slurm_pid("slurmdbd"),
        log_file=lay.slurm_log("slurmdbd"),
        mysql_port=lay.mysql_port,
        mysql_password=lay.slurmdb_password_file.read_text().strip(),
    )
    # slurm.conf must be readable by the cluster account's client commands.
    c1 = write_file(lay.slurm_conf, conf, "root", 0o644)
    # slurmdbd refuses a slurmdbd.conf readable by others (it holds the database password).
    c2 = write_file(lay.slurmdbd_conf, dbd, "root", 0o600)
    return c1, c2


def daemon_running(lay: Layout, daemon: str) -> bool:
    return pidfile_alive(lay.slurm_pid(daemon), daemon)


def _start_daemon(lay: Layout, daemon: str, port: int, log) -> None:
    log(f"{daemon}: starting")
    clear_stale_pid(lay.slurm_pid(daemon), daemon)
    logfile = lay.slurm_log(daemon)
    # The daemons fork into the background themselves and write the pid file named in the conf.
    run([f"/usr/sbin/{daemon}"], env=lay.slurm_env, what=f"{daemon}: start", log=logfile, timeout=60)
    if not wait_for(lambda: daemon_running(lay, daemon) and port_open(port), 30, 0.05):
        raise SiteError(f"{daemon} did not start listening on port {port}; read the log: {logfile}")


def _ensure_cluster_registered(lay: Layout) -> None:
    out = _slurm(lay, ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
                 what="sacctmgr list cluster").stdout.split()
    if CLUSTER_NAME not in out:
        _slurm(lay, ["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], what="sacctmgr add cluster")


def node_state(lay: Layout) -> str:
    proc = _slurm(lay, ["sinfo", "-h", "-N", "-o", "%T"], timeout=5, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _wait_node_ready(lay: Layout, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    resumed = False
    state = ""
    while time.monotonic() < deadline:
        state = node_state(lay)
        base = state.rstrip("*~#!%$@^-+").lower()
        if base in ("idle", "mixed", "allocated", "completing"):
            return
        if not resumed and base in ("drained", "draining", "down", "fail", "failing"):
            # A previous launch failure (e.g. a job without cgroups running out of memory) or an
            # unclean stop can leave the node drained/down; this is a test site: put it back.
            _slurm(lay, ["scontrol", "update", f"nodename={lay.hostname}", "state=resume"], check=False)
            resumed = True
        time.sleep(0.2)
    raise SiteError(
        f"slurm node {lay.hostname} not ready (state {state!r}); read the logs: "
        f"{lay.slurm_log('slurmctld')} and {lay.slurm_log('slurmd')}"
    )


def up(lay: Layout, log=print) -> None:
    ensure_dir(lay.slurm_dir, "root", 0o755)
    _munge_up(lay, log)
    _mariadb_up(lay, log)
    conf_changed, dbd_changed = _write_configs(lay)
    if dbd_changed and daemon_running(lay, "slurmdbd"):
        stop_pid(lay.slurm_pid("slurmdbd"), "slurmdbd")
    if conf_changed:
        # `scontrol reconfigure` does not switch everything (e.g. accounting); restart instead.
        for daemon in ("slurmd", "slurmctld"):
            if daemon_running(lay, daemon):
                log(f"{daemon}: slurm.conf changed, restarting")
                stop_pid(lay.slurm_pid(daemon), daemon)
    if not daemon_running(lay, "slurmdbd"):
        _start_daemon(lay, "slurmdbd", lay.slurmdbd_port, log)
    if not daemon_running(lay, "slurmctld"):
        # Registered before slurmctld starts, so its first contact with slurmdbd succeeds.
        _ensure_cluster_registered(lay)
        _start_daemon(lay, "slurmctld", lay.slurmctld_port, log)
        if daemon_running(lay, "slurmd"):
            # A new slurmctld shows the node as `unknown` until its next ping (~4 s); a fresh
            # slurmd registers at once. Running jobs survive: their slurmstepd are separate.
            log("slurmd: restarting so it registers with the new slurmctld")
            stop_pid(lay.slurm_pid("slurmd"), "slurmd")
    if not daemon_running(lay, "slurmd"):
        _start_daemon(lay, "slurmd", lay.slurmd_port, log)
    _wait_node_ready(lay)


def stop(lay: Layout) -> list[str]:
    stopped = []
    for daemon in ("slurmd", "slurmctld", "slurmdbd"):
        if stop_pid(lay.slurm_pid(daemon), daemon):
            stopped.append(daemon)
    if _mariadb_stop(lay):
        stopped.append("mariadb")
    if stop_pid(lay.munge_pid, "munged"):
        stopped.append("munged")
    return stopped
