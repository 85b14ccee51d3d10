"""The site's Airflow pools come from the registry (issue 14: "pools sized from the registry,
generated, not hard-coded in compose"): `hfc config pools` is imported by Airflow's own
`airflow pools import` into a fresh metadata database, with the registry's sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]
BIN = Path(sys.executable).parent

REGISTRY = """
default_site: obs
sites:
  obs:
    products_root: /p
    frc_root: /f
    archive_root: /a
    public_url_base: file:///a
    cluster_pool: obs_login
    cluster_pool_slots: 3
    archive_pool_slots: 7
frcs: []
"""


def test_airflow_imports_the_pools_the_registry_sizes(tmp_path):
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "HFC_REGISTRY": str(tmp_path / "registry.yaml"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db"}
    env.pop("HFC_SITE", None)
    pools = subprocess.run([BIN / "hfc", "config", "pools"], env=env, capture_output=True, text=True, check=True).stdout
    (tmp_path / "pools.json").write_text(pools)
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, capture_output=True, text=True, check=True)
    imported = subprocess.run([BIN / "airflow", "pools", "import", tmp_path / "pools.json"], env=env,
                              capture_output=True, text=True, check=True)
    assert "Uploaded 2 pool(s)" in imported.stdout, imported.stdout + imported.stderr
    listed = subprocess.run([BIN / "airflow", "pools", "list", "-o", "json"], env=env, capture_output=True,
                            text=True, check=True).stdout
    got = {p["pool"]: (int(p["slots"]), p["description"]) for p in json.loads(listed)}
    assert got["obs_login"] == (3, "SSH sessions to the cluster's login node")
    assert got["hfc_archive"] == (7, "sessions to the HFC archive")
