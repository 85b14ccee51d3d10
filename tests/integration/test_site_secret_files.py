"""The local site's secrets are born private (mode 0600 from the first byte, never written 0644
and chmod-ed afterwards): the catalogue roles' (hfc, and the HQI service's hfc_hqi) and the SLURM
accounting database's passwords (owned by their system users, so created as root) and the SSH
keys. The files of the Airflow settings and of make-secrets.sh: tests/unit/test_secret_files.py."""

from __future__ import annotations

import stat

import pytest
from helpers import born_private, is_private

pytestmark = pytest.mark.site


def test_site_keys_and_passwords_are_created_private(site, tmp_path):
    from hfc_tasks.ops.localsite import postgres, slurm, ssh
    from hfc_tasks.ops.localsite.layout import Layout

    lay = Layout(tmp_path / "site")
    lay.pg_dir.mkdir(parents=True)
    lay.mysql_dir.mkdir(parents=True)
    lay.ssh_dir.mkdir(parents=True)
    secrets = [lay.pg_password_file, lay.hqi_password_file, lay.slurmdb_password_file, lay.client_key("cluster"),
               lay.client_key("archive"), lay.host_key]
    with born_private(*secrets) as seen:
        postgres.ensure_password(lay)
        postgres.ensure_hqi_password(lay)
        slurm.ensure_slurmdb_password(lay)
        ssh.ensure_keys(lay)
        for path in secrets:
            assert is_private(path), f"{path}: {stat.filemode(path.stat().st_mode)}"
        assert seen == [], f"a secret was readable by others while being written: {seen}"
        # One key per account: the cluster and the archive accounts never share a key.
        assert ssh.public_key(lay.client_key("cluster")) != ssh.public_key(lay.client_key("archive"))
        # Idempotent: a second call keeps every secret.
        before = {p: p.read_bytes() for p in secrets}
        postgres.ensure_password(lay)
        postgres.ensure_hqi_password(lay)
        slurm.ensure_slurmdb_password(lay)
        ssh.ensure_keys(lay)
        assert {p: p.read_bytes() for p in secrets} == before
