"""Debian packages and system accounts the local site needs (installed/created only when missing)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from ._util import SiteError, run

# python3-numpy/python3-pil: the demo FRC programs run on the "cluster" with /usr/bin/python3,
# because the project venv lives under /root, which the cluster account cannot read.
PACKAGES = (
    "postgresql",
    "openssh-server",
    "munge",
    "slurm-wlm",
    "slurmdbd",
    "mariadb-server",
    "python3-numpy",
    "python3-pil",
    # The archive's web server (localsite/archive_http.py): the archive tree over HTTP, as the
    # HFC's clients open quicklooks.
    "nginx",
)


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
    )
    installed = {
        line.split()[0] for line in proc.stdout.splitlines() if line.strip().endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def ensure_packages(log=print, packages: tuple[str, ...] = PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
    # policy-rc.d on these machines (and in containers) keeps apt from starting the daemons;
    # we start our own private instances anyway.
    run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        env=env,
        timeout=1800,
        what="apt-get install",
    )
    still = missing_packages(packages)
    if still:
        raise SiteError(f"packages still missing after apt-get install: {' '.join(still)}")


def ensure_user(name: str, home: Path, shell: str, system_group: bool = True) -> pwd.struct_passwd:
    """Create (or fix) a login account whose key logins sshd accepts.

    The password field must be `*` (no password, not locked): with `UsePAM no`, sshd treats `!`
    (useradd's default) as a locked account and refuses even public-key logins.
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        run(
            ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", shell,
             "--user-group", "--password", "*", name],
            what=f"useradd {name}",
        )
        pw = pwd.getpwnam(name)
    if pw.pw_dir != str(home) or pw.pw_shell != shell:
        # The state folder may have moved (HFC_SITE_DIR); keep the account pointing at this site.
        run(["usermod", "--home", str(home), "--shell", shell, name], what=f"usermod {name}")
        pw = pwd.getpwnam(name)
    if _shadow_field(name).startswith("!"):
        run(["usermod", "--password", "*", name], what=f"usermod {name}")
    return pw


def _shadow_field(name: str) -> str:
    # Read /etc/shadow directly: the spwd module is gone from Python 3.13.
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    except OSError:
        pass
    return "*"


def ensure_system_user(name: str, home: str = "/nonexistent") -> None:
    """Daemon accounts (postgres, munge, mysql) normally come with their packages; create if absent."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
             "--shell", "/usr/sbin/nologin", name], what=f"useradd {name}")


def is_root() -> bool:
    return os.geteuid() == 0
