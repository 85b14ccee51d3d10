"""The HQI query service on the local site: ``hfc hqi serve`` in the background, on 127.0.0.1
(``Layout.hqi_port``, ``$HFC_HQI_PORT``, default 8191), as the read-only role ``hfc_hqi``
(``postgres.ensure_hqi_role`` makes it), at ``Layout.hqi_url``.

It runs as its own system account (``hfc-hqi``) when that account can read this checkout's
virtualenv and code, else as root (a checkout under /root), with an environment of its own:
the connection of the read-only role and nothing of the operators' (no owner DSN, no Airflow
connection). Its pid file and a fingerprint of what it runs (its command and the code of
``hfc_tasks/hqi``) are in ``<site>/hqi``; ``up`` restarts it when the fingerprint changed, so a
site never serves yesterday's code. Its log: ``<site>/log/hqi.log``.
"""

from __future__ import annotations

import hashlib
import json
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import postgres
from ._util import (
    SiteError,
    clear_stale_pid,
    ensure_dir,
    pid_alive,
    pidfile_alive,
    read_pid,
    stop_pid,
    tail_file,
    write_file,
)
from .layout import Layout, repo_root
from .system import ensure_system_user

USER = "hfc-hqi"
COMM = "hfc"  # the command name of the process: the venv's `hfc` script
START_TIMEOUT_S = 60.0


def running(lay: Layout) -> bool:
    return pidfile_alive(lay.hqi_pid, COMM)


def wsdl_url(lay: Layout) -> str:
    return f"{lay.hqi_url}/HelioTavernaService?wsdl"


def _hfc() -> Path:
    return Path(sys.executable).with_name("hfc")


def _command(lay: Layout) -> list[str]:
    # No --dsn: the password stays out of the command line (every user can read it in /proc).
    return [str(_hfc()), "hqi", "serve", "--host", "127.0.0.1", "--port", str(lay.hqi_port),
            "--base-url", lay.hqi_url]


def _fingerprint(lay: Layout) -> str:
    digest = hashlib.sha256(json.dumps(_command(lay)).encode())
    package = repo_root() / "hfc_tasks"
    for path in sorted([*package.glob("hqi/*.py"), package / "ops" / "hqi_serve.py"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _fingerprint_file(lay: Layout) -> Path:
    return lay.hqi_dir / "hqi.fingerprint"


def _account() -> str:
    """hfc-hqi when it can run this checkout's code (its virtualenv and the package), else root."""
    ensure_system_user(USER)
    probe = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
             sys.executable, "-c", "import starlette, uvicorn, hfc_tasks.hqi"]
    ok = subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL, cwd="/",
                        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}).returncode == 0
    return USER if ok else "root"


def _environment(lay: Layout, home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HFC_HQI_DSN": postgres.hqi_dsn(lay),
        "HFC_HQI_URL": lay.hqi_url,
    }


def _answers(lay: Layout) -> bool:
    try:
        with urllib.request.urlopen(wsdl_url(lay), timeout=5) as response:
            return response.status == 200 and b"HelioTavernaService" in response.read()
    except (urllib.error.URLError, OSError):
        return False


def up(lay: Layout, log=print) -> None:
    ensure_dir(lay.hqi_dir, "root", 0o755)
    ensure_dir(lay.log_dir, "root", 0o755)
    fingerprint = _fingerprint(lay)
    fp_file = _fingerprint_file(lay)
    if running(lay) and (not fp_file.exists() or fp_file.read_text().strip() != fingerprint):
        log("hqi: its code or command changed, restarting")
        stop(lay)
    if running(lay):
        return
    clear_stale_pid(lay.hqi_pid, COMM)
    user = _account()
    log(f"hqi: starting `hfc hqi serve` as {user} ({wsdl_url(lay)})")
    home = ensure_dir(lay.hqi_dir / "home", user, 0o700)
    account = pwd.getpwnam(user)
    # setsid -f: the service outlives us and is not our zombie. The shell writes its own pid,
    # then becomes the service (exec), so the pid file names the service itself.
    cmd = ["setsid", "-f", "sh", "-c", 'echo $$ > "$0"; exec "$@"', str(lay.hqi_pid),
           "setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--",
           *_command(lay)]
    with open(lay.hqi_log, "ab") as out:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True, close_fds=True,
                       env=_environment(lay, home), cwd=str(lay.hqi_dir))
    write_file(fp_file, fingerprint + "\n", "root", 0o644)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(lay):
            return
        pid = read_pid(lay.hqi_pid)
        if pid and not pid_alive(pid):  # it wrote its pid, then died (not just "not exec-ed yet")
            break
        time.sleep(0.2)
    stop(lay)
    last = "\n    ".join(tail_file(lay.hqi_log))
    raise SiteError(f"hqi: `hfc hqi serve` did not answer at {wsdl_url(lay)}; read the log: {lay.hqi_log}"
                    + (f"\n  last lines:\n    {last}" if last else ""))


def stop(lay: Layout) -> bool:
    return stop_pid(lay.hqi_pid, COMM)
