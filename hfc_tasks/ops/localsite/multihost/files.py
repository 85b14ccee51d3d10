"""What the multihost shape's hosts read before they start: the accounts, client and host keys,
authorized keys and known_hosts, the sshd configs, the site CA and the catalogue's TLS certificate,
and the archive host's own filesystem (an ext4 image loop-mounted on its archive root)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from .. import ssh, tls
from .._util import ensure_dir, run, write_file
from ..layout import ARCHIVE_USER, CLUSTER_USER
from ..system import ensure_user
from .layout import ARCHIVE_FS_MB, HOSTS, SSH_PORT, SSH_USERS, MHLayout, addr


def _ensure_tls(lay: MHLayout) -> None:
    tls.ensure_server_cert(tls_dir=lay.tls_dir, ca_cert=lay.ca_cert, key=lay.pg_dir / "server.key",
                           crt=lay.pg_dir / "server.crt", ca_name="HFC multihost test site CA", cn="catalogue",
                           san=f"IP:{addr('catalogue')},DNS:catalogue")


def _ensure_accounts(lay: MHLayout) -> None:
    """The machine's `cluster`/`archive` accounts: created if missing, otherwise left alone (the
    single-host site owns their homes). This shape's sshd read keys from AuthorizedKeysFile."""
    for user in (CLUSTER_USER, ARCHIVE_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            home = lay.home(user)
            ensure_dir(home.parent, "root", 0o755)
            ensure_user(user, home, "/bin/bash" if user == CLUSTER_USER else "/bin/sh")
            ensure_dir(home, user, 0o755)


def prepare_files(lay: MHLayout) -> None:
    ensure_dir(lay.root, "root", 0o755)
    ensure_dir(lay.log_dir, "root", 0o755)
    ensure_dir(lay.ssh_dir, "root", 0o755)
    _ensure_accounts(lay)
    ssh.ensure_keys(lay)  # the cluster and archive client keys (lay.host_key unused here)
    ensure_dir(lay.authorized_keys(), "root", 0o755)
    for user in (CLUSTER_USER, ARCHIVE_USER):
        write_file(lay.authorized_keys() / user, ssh.public_key(lay.client_key(user)) + "\n", "root", 0o644)
    known = []
    for host in HOSTS:
        ensure_dir(lay.host_dir(host), "root", 0o755)
        ssh._keygen(lay.host_key_of(host), f"hfc-multihost-{host}")
        known.append(f"{addr(host)} {ssh.public_key(lay.host_key_of(host))}\n")
    write_file(lay.known_hosts, "".join(known), "root", 0o644)
    # The products filesystem (shared by login and the nodes) and the FRC programs.
    ensure_dir(lay.root / "home", "root", 0o755)
    ensure_dir(lay.home(CLUSTER_USER), CLUSTER_USER, 0o755)
    ensure_dir(lay.products_dir, CLUSTER_USER, 0o755)
    ssh._sync_frcs(lay)
    # The archive host's own tree and forced command.
    ensure_dir(lay.home(ARCHIVE_USER), ARCHIVE_USER, 0o755)
    ensure_dir(lay.archive_root, ARCHIVE_USER, 0o755)
    archive_filesystem_up(lay)
    write_file(ssh.archive_command(lay), ssh.render_archive_command(lay.archive_root), "root", 0o755)
    for host in HOSTS:
        write_file(lay.host_dir(host) / "sshd_config", ssh.render_config(
            listen_address=addr(host), authorized_keys=f"{lay.authorized_keys()}/%u", port=SSH_PORT,
            host_key=lay.host_key_of(host), pid_file=lay.host_dir(host) / "sshd.pid",
            users=SSH_USERS[host], archive_user=ARCHIVE_USER, archive_command=ssh.archive_command(lay),
            slurm_conf=lay.slurm_conf), "root", 0o644)
    _ensure_tls(lay)


def archive_image(lay: MHLayout) -> Path:
    return lay.root / "archive.ext4"


def archive_mounted(lay: MHLayout) -> bool:
    return os.path.ismount(lay.archive_root)


def archive_filesystem_up(lay: MHLayout) -> None:
    """Mount the archive's own filesystem on its root (made on first use; an archive tree
    written before this filesystem existed is moved into it, nothing is dropped)."""
    root, img = lay.archive_root, archive_image(lay)
    if archive_mounted(lay):
        return
    if not img.exists():
        run(["truncate", "-s", f"{ARCHIVE_FS_MB}M", str(img)], what="archive filesystem: image")
        # -m 0: no blocks reserved for root, the archive account can fill it up entirely.
        run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "hfc-archive", str(img)], what="archive filesystem: mkfs")
    old = [p for p in root.iterdir()] if root.exists() else []
    if old:
        stage = lay.root / "archive.mnt"
        ensure_dir(stage, "root", 0o755)
        run(["mount", "-o", "loop,nodev,nosuid", str(img), str(stage)], what="archive filesystem: mount")
        try:
            run(["cp", "-a", "--", *map(str, old), str(stage)], what="archive filesystem: move the old tree in",
                timeout=600)
        finally:
            run(["umount", str(stage)], what="archive filesystem: umount")
        for p in old:
            run(["rm", "-rf", "--", str(p)], what="archive filesystem: remove the moved tree")
    run(["mount", "-o", "loop,nodev,nosuid", str(img), str(root)], what="archive filesystem: mount")
    lost = root / "lost+found"
    if lost.is_dir() and not any(lost.iterdir()):
        lost.rmdir()  # not a product folder: the archive lists its root
    os.chown(root, pwd.getpwnam(ARCHIVE_USER).pw_uid, pwd.getpwnam(ARCHIVE_USER).pw_gid)
    os.chmod(root, 0o755)


def archive_filesystem_down(lay: MHLayout) -> list[str]:
    if not archive_mounted(lay):
        return []
    if run(["umount", str(lay.archive_root)], check=False, what="archive filesystem: umount").returncode != 0:
        run(["umount", "-l", str(lay.archive_root)], check=False, what="archive filesystem: lazy umount")
    return [f"mount {lay.archive_root}"]
