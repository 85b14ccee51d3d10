"""The local embedded site: PostgreSQL, OpenSSH (cluster + archive accounts) and single-node SLURM
with accounting, the archive over HTTP (nginx, read-only) and the HQI query service for the
catalogue's readers, all on loopback under one state folder. Plain Python, no Airflow import.

    from hfc_tasks.ops import localsite
    localsite.up(); os.environ.update(localsite.env_vars())
"""

from ._util import SiteError
from .layout import state_dir
from .site import SERVICES, down, env_vars, slurm_conf_path, status, up

__all__ = [
    "SERVICES",
    "SiteError",
    "down",
    "env_vars",
    "slurm_conf_path",
    "state_dir",
    "status",
    "up",
]
