"""up / down / status / env_vars for the local embedded site (plain Python, no Airflow import)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import archive_http, hqi, postgres, procs, slurm, ssh
from ._util import SiteError, ensure_dir, file_lock, read_pid
from .layout import ARCHIVE_USER, CLUSTER_USER, Layout, parents_are_safe, repo_root
from .system import ensure_packages, is_root

SERVICES = ("postgres", "sshd", "munged", "mariadb", "slurmdbd", "slurmctld", "slurmd", "nginx", "hqi")


def _logger(verbose: bool):
    def log(msg: str) -> None:
        if verbose:
            print(f"[hfc-site] {msg}", file=sys.stderr, flush=True)

    return log


def up(verbose: bool = True) -> None:
    """Start every service that is not running; idempotent and fast (~1 s) when all are up."""
    if not is_root():
        raise SiteError("the local site must be started as root (it creates accounts and daemons)")
    log = _logger(verbose)
    t0 = time.monotonic()
    lay = Layout.current()
    _check_parents(lay)
    lay.root.mkdir(parents=True, exist_ok=True)
    ensure_dir(lay.root, "root", 0o755)
    link = repo_root() / ".site"
    if lay.root != link and not os.environ.get("HFC_SITE_DIR") and not link.is_symlink():
        if link.is_dir() and not any(link.iterdir()):
            link.rmdir()  # an empty leftover of an earlier, refused attempt
        if not link.exists():
            link.symlink_to(lay.root)  # so operators find the state at .site wherever it lives
    with file_lock(lay.lock_file):
        ensure_packages(log)
        ensure_dir(lay.log_dir, "root", 0o755)
        postgres.up(lay, log, tls=True)
        postgres.ensure_schema(lay, log)
        # The HQI service's read-only role (server-wide) and its grants in the catalogue database.
        if postgres.ensure_hqi_role(lay):
            log("postgres: HQI role hfc_hqi ready (password set)")
        # sshd before SLURM only because it is independent and quick; its config names slurm.conf.
        ssh.up(lay, log)
        slurm.up(lay, log)
        # The archive over HTTP (public_url_base of the local registry), after sshd made the tree.
        archive_http.up(lay, log)
        # The readers' query service: the pipeline does not depend on it, so a service that does
        # not start is said loudly (here, in `status`, in `hfc summary`) but does not keep the
        # pipeline's site down.
        try:
            hqi.up(lay, log)
        except SiteError as exc:
            print(f"[hfc-site] WARNING: the HQI query service is not running: {exc}", file=sys.stderr, flush=True)
    log(f"site up in {time.monotonic() - t0:.1f} s under {lay.root}")


def _check_parents(lay: Layout) -> None:
    # sshd StrictModes and munged refuse paths with a group/world-writable or foreign-owned parent.
    if not parents_are_safe(lay.root):
        raise SiteError(
                f"state folder {lay.root}: every parent must be owned by root and not group/world-writable "
                "(sshd StrictModes and munged check every parent); choose another HFC_SITE_DIR"
            )


def down() -> None:
    """Stop what `up` started (found by the pid files in the state folder); data stays in place."""
    lay = Layout.current()
    if not lay.root.exists():
        return
    with file_lock(lay.lock_file):
        hqi.stop(lay)
        archive_http.stop(lay)
        slurm.stop(lay)
        ssh.stop(lay)
        postgres.stop(lay)


def status(print_table: bool = True) -> dict[str, bool]:
    lay = Layout.current()
    result = {
        "postgres": postgres.running(lay),
        "sshd": ssh.running(lay),
        "munged": slurm.munge_running(lay),
        "mariadb": slurm.mariadb_running(lay),
        "slurmdbd": slurm.daemon_running(lay, "slurmdbd"),
        "slurmctld": slurm.daemon_running(lay, "slurmctld"),
        "slurmd": slurm.daemon_running(lay, "slurmd"),
        "nginx": archive_http.running(lay),
        "hqi": hqi.running(lay),
    }
    if print_table:
        detail = {
            "postgres": f"127.0.0.1:{lay.pg_port}",
            "sshd": f"127.0.0.1:{lay.ssh_port}",
            "munged": str(lay.munge_socket),
            "mariadb": f"127.0.0.1:{lay.mysql_port}",
            "slurmdbd": f":{lay.slurmdbd_port}",
            "slurmctld": f":{lay.slurmctld_port}",
            "slurmd": f":{lay.slurmd_port}",
            "nginx": f"{lay.archive_http_url}/ (the archive, read-only)",
            "hqi": hqi.wsdl_url(lay),
        }
        print(f"state folder: {lay.root}")
        for name, ok in result.items():
            print(f"  {name:<10} {'running' if ok else 'stopped':<8} {detail[name]}")
        others = leftovers(lay, result["slurmctld"])
        print("beyond the site's services:" + (" nothing of the project is running" if not others else ""))
        for line in others:
            print(f"  {line}")
    return result


def _service_pids(lay: Layout) -> set[int]:
    files = [lay.pg_data / "postmaster.pid", lay.sshd_pid, lay.munge_pid, lay.mysql_pid,
             *(lay.slurm_pid(d) for d in ("slurmdbd", "slurmctld", "slurmd")), lay.nginx_pid, lay.hqi_pid]
    return {pid for pid in (read_pid(f) for f in files) if pid}


def leftovers(lay: Layout, slurm_up: bool = True) -> list[str]:
    """One line per thing of the project still running beyond the site's own services: Airflow
    instances (per component, with pid and command), Redis brokers, Celery workers, test runs
    and other processes of this checkout's virtualenv, SLURM jobs still queued or running, and
    network namespaces."""
    lines = []
    for item in procs.project_processes(lay.root, repo_root(), _service_pids(lay)):
        kids = f" (+{item.children} child processes)" if item.children else ""
        lines.append(f"{item.label:<38} {item.proc.describe(160)}{kids}")
    if slurm_up:
        proc = slurm._slurm(lay, ["squeue", "-h", "-o", "%i|%u|%j|%T|%M"], timeout=5, check=False)
        for row in proc.stdout.splitlines():
            job_id, user, name, state, elapsed = (row.split("|") + ["?"] * 5)[:5]
            lines.append(f"{'SLURM job':<38} {job_id} {name} ({user}, {state}, {elapsed})")
    netns = Path("/run/netns")
    if netns.is_dir():
        lines += [f"{'network namespace':<38} {ns.name}" for ns in sorted(netns.iterdir())]
    return lines


def env_vars() -> dict[str, str]:
    """Connection settings for Airflow and the tools; needs a site that `up` has initialised."""
    lay = Layout.current()
    host_key = ssh.host_public_key(lay)

    def ssh_conn(conn_type: str, user: str) -> str:
        return json.dumps({
            "conn_type": conn_type,
            "host": "127.0.0.1",
            "port": lay.ssh_port,
            "login": user,
            # Host-key verification stays on: the key is pinned, never no_host_key_check.
            "extra": {"key_file": str(lay.client_key(user)), "host_key": host_key},
        })

    pw = postgres.password(lay)
    return {
        "HFC_SITE_DIR": str(lay.root),
        "AIRFLOW_CONN_HFC_CLUSTER": ssh_conn("ssh", CLUSTER_USER),
        "AIRFLOW_CONN_HFC_ARCHIVE": ssh_conn("sftp", ARCHIVE_USER),
        "AIRFLOW_CONN_HFC_CATALOGUE": json.dumps({
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": lay.pg_port,
            "login": postgres.ROLE,
            "password": pw,
            "schema": postgres.DATABASE,
            # The server is verified as in production: its name against the site CA's certificate.
            "extra": {"sslmode": "verify-full", "sslrootcert": str(postgres.site_ca(lay))},
        }),
        "HFC_CATALOGUE_DSN": postgres.dsn(lay),
        "HFC_SSH_KNOWN_HOSTS": str(lay.known_hosts),
        # The HQI query service: its read-only role, and its public base URL.
        "HFC_HQI_DSN": postgres.hqi_dsn(lay),
        "HFC_HQI_URL": lay.hqi_url,
    }


def slurm_conf_path() -> str:
    """Where this site's slurm.conf is (for root's own sinfo/sacct: `SLURM_CONF=... sinfo`)."""
    return str(Layout.current().slurm_conf)
