"""Archive direct mode (issue 15) against the real local site: the cluster account pushes the
night to the archive with its own OpenSSH ``sftp``; the task verifies sha256 on both ends,
renames, writes the manifest and deletes the sources, exactly as in relay mode.

The site here is a registry :class:`~hfc_tasks.registry.Site` with ``archive_mode: direct``,
its ``archive_direct`` pointing at what ``hfc site up`` provisions for the cluster account (its
key to the archive, a known_hosts file pinning the site's host key). Outcomes are checked on
disk: bytes and sha256 of the archive copies, sources present or gone, no ``.part`` left.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from test_archive_transfer import FRC_DIR, Cuts, CuttingProxy, Night, endpoint

from hfc_tasks.archive import ArchiveFullError, HostKeyError, TransferError, deletion
from hfc_tasks.archive.direct import _DirectNight, archive_night_direct, archive_night_direct_async
from hfc_tasks.ops.localsite.layout import Layout
from hfc_tasks.registry import Site

pytestmark = pytest.mark.site


def direct_site(site: dict[str, str], night: Night, *, port: int | None = None,
                known_hosts: Path | None = None) -> Site:
    """A registry site in direct mode over the local site's accounts."""
    lay = Layout(Path(site["HFC_SITE_DIR"]))
    archive = json.loads(site["AIRFLOW_CONN_HFC_ARCHIVE"])
    return Site(
        products_root=str(lay.products_dir), frc_root=str(lay.frcs_dir), archive_root=str(night.archive_root),
        public_url_base=f"file://{night.archive_root}", archive_mode="direct",
        archive_direct={"host": archive["host"], "port": port or archive["port"], "login": archive["login"],
                        "key_file": str(lay.direct_key), "known_hosts": str(known_hosts or lay.direct_known_hosts)},
    )


def run(site, night: Night, direct: Site | None = None, **kw):
    kw.setdefault("progress", print)
    s = direct or direct_site(site, night)
    assert s.archive_mode == "direct"
    return archive_night_direct(endpoint(site, "cluster"), endpoint(site, "archive"), s.archive_direct,
                                night.target(**kw.pop("t", {})), **kw)


def cluster_file(night: Night, name: str, text: str) -> Path:
    """A file the cluster account can read (beside the test's run folder)."""
    path = night.run_dir.parent / f"{night.run_dir.name}.{name}"
    path.write_text(text)
    pw = pwd.getpwnam("cluster")
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def host_key(site) -> str:
    return " ".join((Path(site["HFC_SITE_DIR"]) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2])


@pytest.fixture
def night(site):
    n = Night(site)
    yield n
    n.cleanup()
    for extra in n.run_dir.parent.glob(n.run_dir.name + ".*"):
        extra.unlink()


def test_direct_push_verifies_on_both_ends_and_a_rerun_changes_nothing(site, night, capsys):
    night.add_set(n_csv=40, n_jpg=5, big=9 * 1024 * 1024 + 123)
    night.add("test_10_SDO_frc_info.csv", b"a;b\n1;2\n")
    sshd_log = Layout(Path(site["HFC_SITE_DIR"])).sshd_log
    log_before = sshd_log.stat().st_size
    summary, manifest = run(site, night)
    assert (summary.files_total, summary.copied, summary.skipped, summary.deleted) == (47, 47, 0, 47)
    assert summary.manifest_written and summary.verification.startswith("openssl dgst -sha256 on the archive")
    assert "pushed by the cluster: OpenSSH sftp" in summary.verification
    night.assert_all_archived()  # bytes, sha256 in the manifest == sha256 of the archive files, no .part
    night.check_invariants()
    assert len(manifest["files"]) == 47 and manifest["slurm_job_id"] is None
    # The copy came from the cluster account's own key (not the worker's archive key).
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(Layout(Path(site["HFC_SITE_DIR"])).direct_key) + ".pub"],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    with open(sshd_log, "rb") as fh:
        fh.seek(log_before)
        assert re.search(rf"Accepted publickey for archive .* ED25519 {re.escape(fingerprint)}", fh.read().decode())

    manifest_bytes = night.manifest.read_bytes()
    again, manifest2 = run(site, night)
    assert (again.copied, again.deleted, again.manifest_written) == (0, 0, False)
    assert night.manifest.read_bytes() == manifest_bytes and manifest2 == manifest
    assert "nothing to do" in capsys.readouterr().out


def test_a_push_cut_many_times_completes_and_a_rerun_finishes_what_a_failed_run_left(site, night):
    night.add_set(n_csv=120, n_jpg=10, big=12 * 1024 * 1024, seed=11)
    port = endpoint(site, "archive").port
    checks = []

    def on_cut():
        night.check_invariants()
        checks.append(1)

    async def main(cuts_wanted: int, attempts: int):
        # Both links cut at random points: the worker's SSH to the cluster (the push's control
        # session) and the cluster's sftp to the archive (the push itself).
        cuts = Cuts(cuts_wanted, 1_500_000, 20260315 + cuts_wanted, on_cut)
        cproxy, aproxy = CuttingProxy(port, cuts), CuttingProxy(port, cuts)
        cport, aport = await cproxy.start(), await aproxy.start()
        kh = cluster_file(night, f"kh{aport}", f"[127.0.0.1]:{aport} {host_key(site)}\n")
        s = direct_site(site, night, port=aport, known_hosts=kh)
        try:
            return await archive_night_direct_async(
                endpoint(site, "cluster", port=cport), endpoint(site, "archive"), s.archive_direct, night.target(),
                attempts=attempts, retry_pause=0.01, progress=print)
        finally:
            cproxy.close()
            aproxy.close()

    # A run that gives up (2 attempts, more cuts than that): nothing lost, a TransferError to retry.
    with pytest.raises(TransferError, match="connection lost 2 times.*run the task again"):
        asyncio.run(main(50, 2))
    night.check_invariants()
    assert not night.manifest.exists()
    # The same night again, cut 12 more times: it carries on and completes.
    summary, _ = asyncio.run(main(12, 60))
    assert len(checks) >= 12 and summary.reconnects >= 6
    night.assert_all_archived()
    night.check_invariants()


def test_archive_full_in_direct_mode(site, night):
    night.add_set(n_csv=30, csv_size=100_000, n_jpg=0)
    results = night.archive_root / FRC_DIR / "results" / "2024"
    results.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(results)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a small tmpfs: {proc.stderr}"
    try:
        for p in (night.archive_root / FRC_DIR, results.parent, results):
            os.chown(p, pwd.getpwnam("archive").pw_uid, pwd.getpwnam("archive").pw_gid)
        with pytest.raises(ArchiveFullError, match=r"archive host archive@127\.0\.0\.1:\d+ is FULL") as err:
            run(site, night)
        assert "No space left on device (ENOSPC)" in str(err.value) and "source kept" in str(err.value)
        assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())
        night.check_invariants()
        assert night.parts() == [] and not night.manifest.exists()
    finally:
        subprocess.run(["umount", str(results)], check=True)


def test_checksum_mismatch_in_direct_mode_deletes_nothing(site, night, monkeypatch):
    night.add_set(n_csv=4, n_jpg=1)
    victim = sorted(night.files)[2]

    async def tamper(self, part: str) -> None:
        if os.path.basename(part).startswith(victim + ".") and part.endswith(".part"):
            with open(part, "r+b") as fh:  # the pushed copy altered between landing and verification
                fh.seek(100)
                fh.write(b"X")

    monkeypatch.setattr(_DirectNight, "_after_write", tamper)
    with pytest.raises(TransferError, match=rf"{victim}: archive copy sha256 \w+ != source") as err:
        run(site, night)
    assert "kept all 5 source files" in str(err.value)
    assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())
    assert not night.archived(victim).exists()
    assert night.parts() == [] and not night.manifest.exists()
    night.check_invariants()


@pytest.mark.parametrize("mtime", ["new", "restored"])
def test_a_source_rewritten_after_its_push_is_kept_and_unchanged_ones_are_not_hashed_again(site, night, monkeypatch,
                                                                                           mtime):
    """Delete-after-verify in direct mode: the sha256 computed on the cluster for the push is
    reused at the deletion only for files not written since (same inode, size, mtime, ctime);
    a file rewritten to the same size, even with its old mtime put back (ctime still moves), is
    hashed again and kept."""
    night.add_set(n_csv=6, n_jpg=1)
    victim = sorted(night.files)[1]
    real_write = _DirectNight._write_manifest

    async def write_then_tamper(self, dst) -> None:
        await real_write(self, dst)
        path = night.run_dir / victim
        before = path.stat()
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF  # the FRC rewrote the file after its copy was verified: same size
        path.write_bytes(bytes(data))
        if mtime == "restored":
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    commands: list[str] = []
    real_run = deletion.run_command

    async def spy(conn, command):
        commands.append(command)
        return await real_run(conn, command)

    monkeypatch.setattr(_DirectNight, "_write_manifest", write_then_tamper)
    monkeypatch.setattr(deletion, "run_command", spy)
    with pytest.raises(TransferError, match=rf"{victim}: changed on the cluster after its copy was verified"):
        run(site, night)
    assert (night.run_dir / victim).exists(), "a changed source must stay on the cluster"
    assert night.archived(victim).read_bytes() == night.files[victim]
    assert sorted(p.name for p in night.run_dir.iterdir()) == [victim]
    hashed = [c for c in commands if "sha256" in c]
    assert len(hashed) == 1 and victim in hashed[0], commands
    assert not any(n in hashed[0] for n in night.files if n != victim), "unchanged files were hashed again"


def test_changed_archive_host_key_is_refused_by_the_clusters_ssh(site, night):
    night.add_set(n_csv=3, n_jpg=0)
    impostor = " ".join((Path(site["HFC_SITE_DIR"]) / "ssh" / "cluster_ed25519.pub").read_text().split()[:2])
    port = endpoint(site, "archive").port
    kh = cluster_file(night, "known_hosts", f"[127.0.0.1]:{port} {impostor}\n")
    with pytest.raises(HostKeyError, match=rf"host key verification failed for 127\.0\.0\.1:{port}") as err:
        run(site, night, direct_site(site, night, known_hosts=kh), attempts=3)
    assert str(kh) in str(err.value)
    assert [p for p in night.archive_root.rglob("*") if p.is_file()] == []
    assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())


def test_the_clusters_archive_key_opens_no_shell_on_the_archive(site, night):
    lay = Layout(Path(site["HFC_SITE_DIR"]))
    proc = subprocess.run(
        ["runuser", "-u", "cluster", "--", "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={lay.direct_known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(lay.direct_key),
         "-p", str(lay.ssh_port), "archive@127.0.0.1", "id"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "uid=" not in proc.stdout
    assert oct(lay.direct_key.stat().st_mode & 0o777) == "0o600"
    assert lay.direct_key.stat().st_uid == pwd.getpwnam("cluster").pw_uid
    keys = (lay.home("archive") / ".ssh/authorized_keys").read_text().splitlines()
    line = [ln for ln in keys if "hfc-direct-push" in ln]
    assert len(line) == 1 and line[0].startswith('restrict,command="/usr/lib/openssh/sftp-server -d ')
