"""No password in a process's argv or in an error message; one SSH key per account on the real site.

- The passwords of the site (catalogue role, SLURM accounting database, the UI admin, the JWT
  secret) must not show in the command line of any process on the machine (/proc/*/cmdline),
  neither of the long-running ones nor of the commands the site runs to set them: those are
  recorded with a Python audit hook ("subprocess.Popen": the real argv handed to the kernel)
  while the role/user password statements are re-applied on the real PostgreSQL and MariaDB.
- A failing statement that holds a password does not put the password in the error message.
- The cluster and archive accounts have their own keys: each connection's key_file is
  accepted by its own account only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import paramiko
import pytest

from hfc_tasks.ops import localsite
from hfc_tasks.ops.airflow_instance import airflow_env
from hfc_tasks.ops.localsite import postgres, slurm
from hfc_tasks.ops.localsite.layout import Layout

pytestmark = pytest.mark.site

_argv: list[list[str]] = []
_recording = [False]


def _audit(event: str, args: tuple) -> None:
    if _recording[0] and event == "subprocess.Popen":
        _argv.append([str(a) for a in (args[1] or [])])


sys.addaudithook(_audit)


def _passwords(lay: Layout) -> dict[str, str]:
    home = Path(airflow_env(lay.root)["AIRFLOW_HOME"])
    found = {
        "catalogue role hfc": postgres.password(lay),
        "HQI role hfc_hqi": postgres.hqi_password(lay),
        "slurmdbd database": lay.slurmdb_password_file.read_text().strip(),
        "UI admin": json.loads((home / "passwords.json").read_text())["admin"],
        "JWT secret": (home / "jwt_secret").read_text().strip(),
    }
    # The Redis broker of every Celery instance (hfc airflow up writes one per instance).
    for pw_file in home.glob("stack*/redis.password"):
        found[f"Redis of {pw_file.parent.name}"] = pw_file.read_text().strip()
    return found


def _cmdlines() -> dict[int, str]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return out


def test_no_password_in_any_process_argv(site):
    lay = Layout.current()
    secrets = _passwords(lay)
    _argv.clear()
    _recording[0] = True
    try:
        # What `up` runs when PostgreSQL or MariaDB (re)start: set the passwords (same values).
        postgres._ensure_role(lay)
        postgres.ensure_hqi_role(lay)
        slurm.ensure_slurmdb_user(lay)
    finally:
        _recording[0] = False
    assert any("psql" in " ".join(a) for a in _argv) and any("mariadb" in " ".join(a) for a in _argv), _argv
    leaks = [f"{what} in argv {a[:3]}..." for a in _argv for what, pw in secrets.items() if pw in " ".join(a)]
    assert leaks == [], leaks
    running = [f"{what} in pid {pid}: {cmd[:60]}..." for pid, cmd in _cmdlines().items()
               for what, pw in secrets.items() if pw in cmd]
    assert running == [], running


def test_failing_statement_does_not_show_the_password(site):
    lay = Layout.current()
    pw = postgres.password(lay)
    log_size = lay.pg_log.stat().st_size
    with pytest.raises(localsite.SiteError) as err:
        # A bad statement: psql echoes it ("LINE 1: ...") in its error output, and the server
        # would copy it into its log.
        postgres.set_role_password(lay, "hfc", pw, _suffix=" BOGUS")
    assert 'unrecognized role option "bogus"' in str(err.value)
    assert pw not in str(err.value), "the password shows in the error message"
    with open(lay.pg_log, "rb") as fh:
        fh.seek(log_size)
        assert pw.encode() not in fh.read(), f"the password was written to {lay.pg_log}"


def _login(conn: dict, key_file: str) -> bool:
    client = paramiko.SSHClient()
    key_type, b64 = conn["extra"]["host_key"].split()[:2]
    host_key = paramiko.PKey.from_type_string(key_type, __import__("base64").b64decode(b64))
    client.get_host_keys().add(f"[{conn['host']}]:{conn['port']}", key_type, host_key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(conn["host"], port=conn["port"], username=conn["login"], key_filename=key_file,
                       look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def test_one_key_per_account(site):
    cluster = json.loads(site["AIRFLOW_CONN_HFC_CLUSTER"])
    archive = json.loads(site["AIRFLOW_CONN_HFC_ARCHIVE"])
    assert cluster["extra"]["key_file"] != archive["extra"]["key_file"]
    lay = Layout.current()
    for conn in (cluster, archive):
        key = Path(conn["extra"]["key_file"])
        assert key.stat().st_mode & 0o077 == 0
        authorized = (lay.home(conn["login"]) / ".ssh" / "authorized_keys").read_text().split()
        own = Path(str(key) + ".pub").read_text().split()[1]
        assert own in authorized
    assert _login(cluster, cluster["extra"]["key_file"])
    assert _login(archive, archive["extra"]["key_file"])
    # The other account's key is refused: a leaked archive key does not open the cluster.
    assert not _login(cluster, archive["extra"]["key_file"])
    assert not _login(archive, cluster["extra"]["key_file"])
