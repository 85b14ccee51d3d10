"""The multihost registry's FRCs run on the multihost SLURM as the pipeline submits them: each job
script and sbatch line built from config/registry.multihost.yaml (hfc_tasks.slurm, the `submit`
stage's functions), sent over the registry's cluster connection. The demo active-region code asks
2 CPUs on `hfc`, so it runs on node2, the only node where that fits. Run alone:
`pytest -m multihost tests/multihost/test_registry_multihost_jobs.py` (as root)."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import pytest

from hfc_tasks import products, slurm
from hfc_tasks.ops.localsite import multihost
from hfc_tasks.provider import hooks
from hfc_tasks.registry import load_registry

pytestmark = pytest.mark.multihost

REGISTRY = Path(__file__).resolve().parents[2] / "config" / "registry.multihost.yaml"
NIGHT = dt.date(2024, 3, 2)  # lag_nights 1: the window is 2024-03-01


@pytest.fixture(scope="module")
def mh_env():
    was_up = all(multihost.status(print_table=False).values())
    if not was_up:
        multihost.up(verbose=False)  # idempotent
    yield multihost.env_vars()
    if not was_up:
        multihost.down()


def test_demo_active_regions_runs_on_node2_with_two_cpus(mh_env, monkeypatch):
    for k, v in mh_env.items():
        monkeypatch.setenv(k, v)
    registry = load_registry(REGISTRY)
    site = registry.site("multihost")
    frc = registry.frc("demo-active-regions")
    # our own products sub-tree, so that a night run by another test is not touched
    root = f"{site.products_root}/h9-registry-check"
    run_dir = products.run_dir(root, frc.name, NIGHT)
    job_name = f"{products.job_name(frc.name, NIGHT)}.h9"
    command = frc.render_command(night=NIGHT, run_dir=run_dir, frc_root=site.frc_root,
                                 archive_url=site.public_url_base)
    client = hooks.ssh_client(site.cluster_conn_id)
    try:
        sbatch = slurm.sbatch_command(job_name=job_name, run_dir=run_dir, resources=frc.slurm,
                                      default_partition=site.default_partition)
        chan_in, out, err = client.exec_command(
            f"rm -rf {shlex.quote(root)} && {sbatch.replace('sbatch ', 'sbatch --wait ', 1)}", timeout=300)
        chan_in.write(slurm.batch_script(command, job_name=job_name))
        chan_in.channel.shutdown_write()
        job_id = slurm.parse_sbatch(out.read().decode())
        assert out.channel.recv_exit_status() == 0, err.read().decode()
        _, out, _ = client.exec_command(
            f"sacct -j {job_id} -X -n -P -o State,ExitCode,NodeList,AllocCPUS; "
            f"scontrol show job -o {job_id} | grep -o 'Partition=[^ ]*'; ls {shlex.quote(run_dir)}", timeout=60)
        lines = out.read().decode().split()
        # (sacct's Partition field may still be empty just after the job ends: the controller's is read)
        assert lines[:2] == ["COMPLETED|0:0|node2|2", "Partition=hfc"], lines[:2]
        names = [n for n in lines[2:] if not n.endswith(".out")]
        kinds = [products.parse_product_name(n).kind for n in names]
        # window 2024-03-01, every 2 h: 12 observations, each an init and a quicklook
        assert kinds.count("init") == 12 and kinds.count("quicklook") == 12
        assert "demoar_100_20240301T000000_sdo_init.csv" in names
        assert {"frc_info", "observatory"} <= set(kinds)
    finally:
        client.exec_command(f"rm -rf {shlex.quote(root)}", timeout=60)[1].channel.recv_exit_status()
        client.close()
