"""Secrets are born private: created mode 0600, never written 0644 and chmod-ed afterwards.

The generation functions run on a fresh temporary state folder while a Python audit hook looks
at the secret files at every file-system event (open, chmod, rename...; helpers.born_private): a
secret that exists with group/other permission at any of those moments is a failure, not only one
that ends so. The local site's own secrets (owned by its system users, so created as root):
tests/integration/test_site_secret_files.py.
The compose secrets come from running docker/site/make-secrets.sh in a temporary copy of the
repository layout.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from helpers import born_private, is_private

REPO = Path(__file__).resolve().parents[2]


def test_airflow_secrets_are_created_private(tmp_path):
    from hfc_tasks.ops.airflow_instance import airflow_env

    home = tmp_path / "airflow"
    with born_private(home / "jwt_secret", home / "passwords.json") as seen:
        env = airflow_env(tmp_path)
        for path in (home / "jwt_secret", home / "passwords.json"):
            assert is_private(path), f"{path}: {stat.filemode(path.stat().st_mode)}"
        assert seen == [], f"a secret was readable by others while being written: {seen}"
        assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
        assert json.loads((home / "passwords.json").read_text())["admin"]
        # A second call keeps them (same secret) and keeps them private.
        assert airflow_env(tmp_path)["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert seen == []


def _make_secrets(root: Path) -> subprocess.CompletedProcess:
    script = root / "docker" / "site" / "make-secrets.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "docker" / "site" / "make-secrets.sh", script)
    # The usual umask 022: the script must make its files private itself.
    return subprocess.run(["bash", "-c", f"umask 022 && exec {script}"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": sys.executable})


def _dotenv(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_make_secrets_writes_private_files_host_keys_and_one_key_per_account(tmp_path):
    proc = _make_secrets(tmp_path)
    assert proc.returncode == 0, proc.stderr
    secrets = tmp_path / "secrets"
    env_file = tmp_path / ".env"
    private = [env_file, secrets / "airflow" / "passwords.json", secrets / "site" / "ssh_host_ed25519_key",
               secrets / "ssh" / "cluster_ed25519", secrets / "ssh" / "archive_ed25519"]
    for path in private:
        assert is_private(path), f"{path.relative_to(tmp_path)}: {stat.filemode(path.stat().st_mode)}"
    env = _dotenv(env_file)
    host_key = " ".join((secrets / "site" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    keys = {}
    for name, login, host in (("CLUSTER", "cluster", "slurm-head"), ("ARCHIVE", "archive", "sftp-archive")):
        conn = json.loads(env[f"AIRFLOW_CONN_HFC_{name}"])
        assert (conn["login"], conn["host"]) == (login, host)
        assert conn["extra"]["host_key"] == host_key, f"{name}: no/other host_key extra: {conn}"
        assert "no_host_key_check" not in conn["extra"]
        key_file = conn["extra"]["key_file"]
        assert key_file == f"/opt/airflow/ssh/{login}_ed25519", conn
        keys[login] = (secrets / "ssh" / f"{login}_ed25519.pub").read_text().split()[1]
        # Each account's authorized_keys holds its own key only.
        authorized = (secrets / "site" / f"authorized_keys_{login}").read_text().split()
        assert keys[login] in authorized
    assert keys["cluster"] != keys["archive"], "one key for both accounts"
    assert keys["archive"] not in (secrets / "site" / "authorized_keys_cluster").read_text()
    assert keys["cluster"] not in (secrets / "site" / "authorized_keys_archive").read_text()
    assert len(env["AIRFLOW_JWT_SECRET"]) >= 32
    # The entrypoint of the example site installs each account's own authorized_keys.
    entrypoint = (REPO / "docker" / "site" / "entrypoint.sh").read_text()
    assert 'authorized_keys_$user' in entrypoint
    # No secret in the script's output (the UI password is read from the file, not printed).
    password = json.loads((secrets / "airflow" / "passwords.json").read_text())["admin"]
    assert password not in proc.stdout + proc.stderr
    assert env["AIRFLOW_JWT_SECRET"] not in proc.stdout + proc.stderr
    # The HQI service's database password: URL-safe (it goes into a DSN), never printed.
    hqi_password = env["HFC_HQI_DB_PASSWORD"]
    assert len(hqi_password) >= 32 and hqi_password.replace("-", "").replace("_", "").isalnum()
    assert env["HFC_HQI_DB_PASSWORD"] not in proc.stdout + proc.stderr


def test_make_secrets_migrates_an_old_env_and_keeps_its_secrets(tmp_path):
    """An .env written by the old script (one shared key, no host_key) is brought to the new
    layout; the JWT secret and other settings stay; running again changes nothing."""
    old = ("AIRFLOW_UID=0\nAIRFLOW_JWT_SECRET=old-secret-kept-0123456789abcdefghijkl\nHFC_SITE=production\n"
           'AIRFLOW_CONN_HFC_CLUSTER={"conn_type":"ssh","host":"slurm-head","port":22,"login":"cluster",'
           '"extra":{"key_file":"/opt/airflow/ssh/id_ed25519"}}\n'
           'AIRFLOW_CONN_HFC_ARCHIVE={"conn_type":"sftp","host":"sftp-archive","port":22,"login":"archive",'
           '"extra":{"key_file":"/opt/airflow/ssh/id_ed25519"}}\n')
    (tmp_path / ".env").write_text(old)
    os.chmod(tmp_path / ".env", 0o644)
    proc = _make_secrets(tmp_path)
    assert proc.returncode == 0, proc.stderr
    env = _dotenv(tmp_path / ".env")
    assert env["AIRFLOW_JWT_SECRET"] == "old-secret-kept-0123456789abcdefghijkl"
    assert env["HFC_SITE"] == "production"
    hqi_password = env["HFC_HQI_DB_PASSWORD"]  # added to an .env that had none
    for name in ("CLUSTER", "ARCHIVE"):
        extra = json.loads(env[f"AIRFLOW_CONN_HFC_{name}"])["extra"]
        assert extra["host_key"].startswith("ssh-ed25519 AAAA") and "id_ed25519" not in extra["key_file"]
    assert is_private(tmp_path / ".env")
    first = (tmp_path / ".env").read_text()
    assert _make_secrets(tmp_path).returncode == 0
    assert (tmp_path / ".env").read_text() == first
    assert _dotenv(tmp_path / ".env")["HFC_HQI_DB_PASSWORD"] == hqi_password
