"""The multihost shape's hosts, addresses and ports, and its Layout (the single-host Layout under
<state>/multihost with this shape's SLURM nodes, PostgreSQL over TLS and one sshd per host)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..layout import ARCHIVE_USER, CLUSTER_USER, Layout, state_dir

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
