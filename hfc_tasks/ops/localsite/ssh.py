"""Private OpenSSH server: the `cluster` (SLURM submit) and `archive` (SFTP only) accounts."""

from __future__ import annotations

import os
import pwd
import shutil
from importlib import resources
from pathlib import Path
from string import Template

from ._util import (
    SiteError,
    chown_tree,
    clear_stale_pid,
    ensure_dir,
    pidfile_alive,
    port_open,
    run,
    stop_pid,
    wait_for,
    write_file,
)
from .layout import ARCHIVE_USER, CLUSTER_USER, Layout, repo_root
from .system import ensure_user

SSHD = "/usr/sbin/sshd"


def running(lay: Layout) -> bool:
    return pidfile_alive(lay.sshd_pid, "sshd")


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    for stale in (path, path.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        what=f"ssh-keygen {path.name}")


def public_key(path: Path) -> str:
    """'ssh-ed25519 AAAA...' without the comment."""
    parts = path.with_suffix(".pub").read_text().split()
    return f"{parts[0]} {parts[1]}"


def host_public_key(lay: Layout) -> str:
    try:
        return public_key(lay.host_key)
    except (OSError, IndexError) as exc:
        raise SiteError(f"sshd: no host key at {lay.host_key}: run `up` first") from exc


def known_hosts_line(lay: Layout) -> str:
    host = "127.0.0.1" if lay.ssh_port == 22 else f"[127.0.0.1]:{lay.ssh_port}"
    return f"{host} {host_public_key(lay)}\n"


def _home(lay: Layout, user: str, shell: str, extra_keys: str = "") -> pwd.struct_passwd:
    home = lay.home(user)
    ensure_dir(home.parent, "root", 0o755)
    pw = ensure_user(user, home, shell)
    # StrictModes: home and ~/.ssh owned by the user and not group/world-writable. Every parent
    # (the state folder and above) must be root-owned and not writable by others as well.
    ensure_dir(home, user, 0o755)
    ensure_dir(home / ".ssh", user, 0o700)
    write_file(home / ".ssh" / "authorized_keys", public_key(lay.client_key(user)) + "\n" + extra_keys, user, 0o600)
    return pw


def _sync_frcs(lay: Layout) -> None:
    """Mirror <repo>/site/frcs into ~cluster/frcs: the cluster runs its own copy of the programs."""
    src = repo_root() / "site" / "frcs"
    dst = lay.frcs_dir
    ensure_dir(dst, CLUSTER_USER, 0o755)
    wanted: set[Path] = set()
    if src.is_dir():
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = Path(dirpath).relative_to(src)
            (dst / rel).mkdir(parents=True, exist_ok=True)
            wanted.add(dst / rel)
            for name in filenames:
                if name.endswith(".pyc"):
                    continue
                s, d = Path(dirpath) / name, dst / rel / name
                wanted.add(d)
                if not d.exists() or s.stat().st_mtime_ns != d.stat().st_mtime_ns or \
                        s.stat().st_size != d.stat().st_size:
                    shutil.copy2(s, d)
    # Remove what disappeared from the repo (but keep __pycache__ the programs may create).
    for dirpath, dirnames, filenames in os.walk(dst, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            if p not in wanted and "__pycache__" not in p.parts:
                p.unlink()
        for name in dirnames:
            p = Path(dirpath) / name
            if p not in wanted and name != "__pycache__":
                shutil.rmtree(p, ignore_errors=True)
    chown_tree(dst, CLUSTER_USER)


def ensure_keys(lay: Layout) -> None:
    """The host key and one client key per account (cluster, archive), generated once.

    ssh-keygen creates private keys mode 0600 itself (readable by root, the runner, only); each
    account's authorized_keys lists its own key only (``_home``), so the archive key cannot
    open a shell on the cluster account and the cluster key cannot reach the archive.
    """
    _keygen(lay.host_key, "hfc-local-site-host")
    for user in (CLUSTER_USER, ARCHIVE_USER):
        _keygen(lay.client_key(user), f"hfc-local-site-{user}")
        if lay.client_key(user).stat().st_mode & 0o077:  # an older site's key: tighten it
            os.chmod(lay.client_key(user), 0o600)


def _prepare(lay: Layout) -> None:
    ensure_dir(lay.ssh_dir, "root", 0o755)
    ensure_dir(lay.log_dir, "root", 0o755)
    ensure_keys(lay)
    write_file(lay.known_hosts, known_hosts_line(lay), "root", 0o644)

    _home(lay, CLUSTER_USER, "/bin/bash")
    ensure_dir(lay.products_dir, CLUSTER_USER, 0o755)
    _sync_frcs(lay)
    direct_line = ensure_direct_push(lay)
    # The archive account never gets a shell session: its ForceCommand (archive_command) allows
    # SFTP and `sha256sum` of files in the archive tree only. sshd runs a forced command through
    # the account's shell, hence /bin/sh rather than nologin.
    _home(lay, ARCHIVE_USER, "/bin/sh", extra_keys=direct_line)
    ensure_dir(lay.archive_root, ARCHIVE_USER, 0o755)
    write_file(archive_command(lay), render_archive_command(lay.archive_root), "root", 0o755)


def direct_authorized_line(lay: Layout) -> str:
    """The archive account's authorized_keys line for the cluster's push key (archive_mode direct).

    ``restrict`` (no forwarding, no pty, no ~/.ssh/rc) and a forced ``sftp-server`` started in the
    archive tree: the key can do SFTP and nothing else. On this site sshd's ``ForceCommand`` of the
    archive account (archive_command) takes precedence over a key's ``command=`` (sshd(8):
    "ForceCommand ... overrides any command= in authorized_keys"), so here the key gets what
    archive_command allows (SFTP, and ``sha256sum`` of files in the tree); on an archive host
    without ForceCommand the line alone restricts it to SFTP.
    """
    sftp_server = f"/usr/lib/openssh/sftp-server -d {lay.archive_root}"
    return f'restrict,command="{sftp_server}" {public_key(lay.direct_key)} hfc-direct-push\n'


def ensure_direct_push(lay: Layout) -> str:
    """What the cluster account needs to push to the archive itself (``archive_mode: direct``):
    its own key pair (private key 0600, owned by the cluster account, in its ~/.ssh) and a
    known_hosts file pinning the site's host key (``StrictHostKeyChecking=yes`` needs it). Returns
    the archive's authorized_keys line for the key (:func:`direct_authorized_line`). The
    registry's ``archive_direct`` names these paths (``lay.direct_key``, ``lay.direct_known_hosts``)."""
    _keygen(lay.direct_key, "hfc-local-site-direct-push")
    pw = pwd.getpwnam(CLUSTER_USER)
    for path, mode in ((lay.direct_key, 0o600), (lay.direct_key.with_suffix(".pub"), 0o644)):
        os.chown(path, pw.pw_uid, pw.pw_gid)  # ssh reads its key as the cluster account
        os.chmod(path, mode)
    write_file(lay.direct_known_hosts, known_hosts_line(lay), CLUSTER_USER, 0o644)
    return direct_authorized_line(lay)


def archive_command(lay: Layout) -> Path:
    """The archive account's forced command (root-owned, outside the account's home)."""
    return lay.ssh_dir / "archive_command"


def render_config(**values: object) -> str:
    """The sshd_config template with these values (also used by the multihost site)."""
    tmpl = Template(resources.files(__package__).joinpath("templates/sshd_config").read_text())
    return tmpl.substitute(**values)


def render_archive_command(archive_root: Path) -> str:
    script = Template(resources.files(__package__).joinpath("templates/archive_command").read_text())
    return script.substitute(archive_root=archive_root)


def _config(lay: Layout) -> str:
    return render_config(
        listen_address="127.0.0.1",
        authorized_keys=".ssh/authorized_keys",
        port=lay.ssh_port,
        host_key=lay.host_key,
        pid_file=lay.sshd_pid,
        users=f"{CLUSTER_USER} {ARCHIVE_USER}",
        archive_user=ARCHIVE_USER,
        archive_command=archive_command(lay),
        slurm_conf=lay.slurm_conf,
    )


def up(lay: Layout, log=print) -> None:
    _prepare(lay)
    changed = write_file(lay.sshd_config, _config(lay), "root", 0o644)
    # sshd refuses to start without its privilege-separation folder.
    ensure_dir(Path("/run/sshd"), "root", 0o755)
    if running(lay) and changed:
        log("sshd: configuration changed, restarting")
        stop(lay)
    if running(lay):
        return
    log("sshd: starting")
    clear_stale_pid(lay.sshd_pid, "sshd")
    run([SSHD, "-t", "-f", str(lay.sshd_config)], what="sshd: config check (sshd -t)")
    run([SSHD, "-f", str(lay.sshd_config), "-E", str(lay.sshd_log)],
        what="sshd: start", log=lay.sshd_log)
    if not wait_for(lambda: running(lay) and port_open(lay.ssh_port), 10):
        raise SiteError(f"sshd did not start listening on 127.0.0.1:{lay.ssh_port}; "
                        f"read the log: {lay.sshd_log}")


def stop(lay: Layout) -> bool:
    return stop_pid(lay.sshd_pid, "sshd")
