"""Where everything of the local site lives, and which loopback ports it uses."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CLUSTER_USER = "cluster"
ARCHIVE_USER = "archive"


def repo_root() -> Path:
    """The folder holding pyproject.toml (the checkout)."""
    from hfc_tasks.registry import REPO_ROOT

    return REPO_ROOT


# Where the state lives when the checkout sits under a folder sshd/munged would refuse
# (/tmp, a user-writable home...): a root-owned place, linked from <repo>/.site.
FALLBACK_ROOT = Path("/var/lib/hfc-site")


def parents_are_safe(path: Path) -> bool:
    """sshd StrictModes and munged refuse paths with a group/world-writable or foreign-owned parent."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        if st.st_uid != 0 or st.st_mode & 0o022:
            return False
    return True


def state_dir() -> Path:
    """Absolute state folder: $HFC_SITE_DIR, else <repo>/.site (git-ignored).

    When the checkout's folders are not safe for sshd (a clone under /tmp, say), the state
    goes to /var/lib/hfc-site/<checkout>-<hash> instead and ``up`` links <repo>/.site to it,
    so every checkout still has its own site and finds it at .site.
    """
    override = os.environ.get("HFC_SITE_DIR")
    if override:
        # Absolute without resolving symlinks away: sshd and munged check every parent folder anyway.
        return Path(os.path.abspath(override))
    link = repo_root() / ".site"
    if link.is_symlink():
        return link.resolve()
    if parents_are_safe(repo_root()):
        return link
    digest = hashlib.sha256(str(repo_root()).encode()).hexdigest()[:8]
    return FALLBACK_ROOT / f"{repo_root().name}-{digest}"


def _port(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def current(cls) -> Layout:
        return cls(state_dir())

    # ---- ports (loopback only) ----
    @cached_property
    def pg_port(self) -> int:
        return _port("HFC_PG_PORT", 55432)

    @cached_property
    def ssh_port(self) -> int:
        return _port("HFC_SSH_PORT", 22022)

    @cached_property
    def mysql_port(self) -> int:
        return _port("HFC_MYSQL_PORT", 53306)

    # SLURM's daemons bind 0.0.0.0 (22.05 has no bind option); the ports are only used on loopback.
    @cached_property
    def slurmctld_port(self) -> int:
        return _port("HFC_SLURMCTLD_PORT", 6817)

    @cached_property
    def slurmd_port(self) -> int:
        return _port("HFC_SLURMD_PORT", 6818)

    @cached_property
    def slurmdbd_port(self) -> int:
        return _port("HFC_SLURMDBD_PORT", 6819)

    @cached_property
    def hqi_port(self) -> int:
        """The HQI query service (``hfc hqi serve``)."""
        return _port("HFC_HQI_PORT", 8191)

    @cached_property
    def archive_http_port(self) -> int:
        """The archive's web server (nginx): the archive tree, read-only, under /hfc/."""
        return _port("HFC_ARCHIVE_HTTP_PORT", 8192)

    @cached_property
    def hostname(self) -> str:
        # SLURM matches NodeName/SlurmctldHost against the short host name of the machine.
        return socket.gethostname().split(".")[0]

    # ---- general ----
    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    # ---- PostgreSQL ----
    @property
    def pg_dir(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_run(self) -> Path:
        # Unix socket folder and server log: owned by postgres, which cannot write elsewhere here.
        return self.pg_dir / "run"

    @property
    def pg_log(self) -> Path:
        return self.pg_run / "postgres.log"

    @property
    def pg_password_file(self) -> Path:
        return self.pg_dir / "hfc.password"

    @property
    def hqi_password_file(self) -> Path:
        """The password of the HQI service's read-only role (hfc_hqi)."""
        return self.pg_dir / "hfc_hqi.password"

    # ---- the HQI query service (hfc hqi serve) ----
    @property
    def hqi_dir(self) -> Path:
        return self.root / "hqi"

    @property
    def hqi_pid(self) -> Path:
        return self.hqi_dir / "hqi.pid"

    @property
    def hqi_log(self) -> Path:
        return self.log_dir / "hqi.log"

    @property
    def hqi_url(self) -> str:
        """The service's public base URL (its WSDL: <this>/HelioTavernaService?wsdl)."""
        return f"http://127.0.0.1:{self.hqi_port}/hfc-hqi"

    # ---- the archive's web server (nginx) ----
    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_dir / "nginx.conf"

    @property
    def nginx_pid(self) -> Path:
        return self.nginx_dir / "nginx.pid"

    @property
    def nginx_log(self) -> Path:
        return self.log_dir / "nginx-error.log"

    @property
    def nginx_access_log(self) -> Path:
        return self.log_dir / "nginx-access.log"

    @property
    def archive_http_url(self) -> str:
        """The archive tree over HTTP: the local site's public_url_base (config/registry.yaml)."""
        return f"http://127.0.0.1:{self.archive_http_port}/hfc"

    # ---- OpenSSH ----
    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def sshd_pid(self) -> Path:
        return self.ssh_dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.log_dir / "sshd.log"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    def client_key(self, user: str) -> Path:
        return self.ssh_dir / f"{user}_ed25519"

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    @property
    def products_dir(self) -> Path:
        return self.home(CLUSTER_USER) / "products"

    @property
    def frcs_dir(self) -> Path:
        return self.home(CLUSTER_USER) / "frcs"

    @property
    def archive_root(self) -> Path:
        return self.home(ARCHIVE_USER) / "hfc"

    # ---- archive_mode direct (issue 15): the cluster account pushes to the archive itself ----
    @property
    def direct_key(self) -> Path:
        """The cluster account's own key to the archive account (site.archive_direct.key_file)."""
        return self.home(CLUSTER_USER) / ".ssh" / "hfc_archive_ed25519"

    @property
    def direct_known_hosts(self) -> Path:
        """The archive's pinned host key, as the cluster account's ssh reads it (archive_direct.known_hosts)."""
        return self.home(CLUSTER_USER) / ".ssh" / "hfc_archive_known_hosts"

    # ---- munge ----
    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket.2"

    @property
    def munge_pid(self) -> Path:
        return self.munge_dir / "munged.pid"

    @property
    def munge_log(self) -> Path:
        return self.munge_dir / "munged.log"

    # ---- MariaDB ----
    @property
    def mysql_dir(self) -> Path:
        return self.root / "mysql"

    @property
    def mysql_data(self) -> Path:
        return self.mysql_dir / "data"

    @property
    def mysql_socket(self) -> Path:
        return self.mysql_dir / "mysqld.sock"

    @property
    def mysql_pid(self) -> Path:
        return self.mysql_dir / "mysqld.pid"

    @property
    def mysql_log(self) -> Path:
        return self.mysql_dir / "mysqld.log"

    @property
    def slurmdb_password_file(self) -> Path:
        return self.mysql_dir / "slurm.password"

    # ---- SLURM ----
    @property
    def slurm_dir(self) -> Path:
        return self.root / "slurm"

    @property
    def slurm_conf(self) -> Path:
        return self.slurm_dir / "etc" / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd finds slurmdbd.conf in the folder of $SLURM_CONF.
        return self.slurm_dir / "etc" / "slurmdbd.conf"

    @property
    def slurm_state(self) -> Path:
        return self.slurm_dir / "state"

    @property
    def slurmd_spool(self) -> Path:
        return self.slurm_dir / "spool"

    @property
    def slurm_log_dir(self) -> Path:
        return self.slurm_dir / "log"

    @property
    def slurm_run(self) -> Path:
        return self.slurm_dir / "run"

    def slurm_pid(self, daemon: str) -> Path:
        return self.slurm_run / f"{daemon}.pid"

    def slurm_log(self, daemon: str) -> Path:
        return self.slurm_log_dir / f"{daemon}.log"

    @property
    def slurm_env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.slurm_conf)}

    # ---- what differs for another site shape (hfc_tasks.ops.localsite.multihost overrides these) ----
    @property
    def slurmctld_addr(self) -> str:
        return "127.0.0.1"

    @property
    def slurm_extra_conf(self) -> str:
        """Lines of slurm.conf that only some shapes of the site add (before the node lines)."""
        return ""

    def slurm_nodes_conf(self, cpus: int, memory_mb: int) -> str:
        """The NodeName and PartitionName lines of slurm.conf."""
        return (f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN\n"
                f"PartitionName=debug Nodes={self.hostname} Default=YES MaxTime=7-00:00:00 State=UP\n")

    @property
    def pg_listen_addresses(self) -> str:
        return "127.0.0.1"

    @property
    def pg_extra_settings(self) -> str:
        return ""

    @property
    def pg_hba(self) -> str:
        # Only loopback TCP (scram) and the local socket (peer, for our own admin as postgres).
        return ("local all postgres peer\n"
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n")
