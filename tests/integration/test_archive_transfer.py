"""Archive stage against the real local sshd: copy, archive-side verification, manifest, delete.

Every test works in its own run folder (``products/_test_archive/<uuid>``) and archive root
(``hfc/_test/<uuid>``), so it never meets other tests running on the same site. Outcomes are
checked on disk: bytes and sha256 of the archive copies, sources present or gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import pwd
import random
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import asyncssh
import pytest
from helpers import relay

from hfc_tasks.archive import (
    ArchiveTarget,
    Endpoint,
    HostKeyError,
    TransferError,
    archive_night,
    archive_night_async,
    connect,
    deletion,
)
from hfc_tasks.archive.night import _Night

pytestmark = pytest.mark.site

NIGHT = dt.date(2024, 3, 1)
FRC_DIR = "TESTFRC"


def endpoint(site: dict[str, str], which: str, **over) -> Endpoint:
    conn = json.loads(site[f"AIRFLOW_CONN_HFC_{which.upper()}"])
    params = dict(host=conn["host"], port=conn["port"], username=conn["login"],
                  key_file=conn["extra"]["key_file"], host_key=conn["extra"]["host_key"], name=which,
                  connect_timeout=10)
    params.update(over)
    return Endpoint(**params)


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


class Night:
    """One test's run folder on the cluster and archive root, with the files it wrote."""

    def __init__(self, site: dict[str, str], *, root_name: str | None = None):
        state = Path(site["HFC_SITE_DIR"])
        tag = uuid.uuid4().hex[:12]
        self.run_dir = state / "home/cluster/products/_test_archive" / tag
        self.archive_root = state / "home/archive/hfc/_test" / (root_name or tag)
        for path, user in ((self.run_dir, "cluster"), (self.archive_root, "archive")):
            for p in reversed([path, *path.parents][:3]):
                if not p.exists():
                    p.mkdir(mode=0o755)
                    _chown(p, user)
        self.files: dict[str, bytes] = {}

    def add(self, name: str, data: bytes) -> None:
        path = self.run_dir / name
        path.write_bytes(data)
        _chown(path, "cluster")
        self.files[name] = data

    def add_set(self, n_csv: int = 20, csv_size: int = 20_000, n_jpg: int = 4, jpg_size: int = 200_000,
                big: int = 0, seed: int = 1) -> None:
        rnd = random.Random(seed)
        for i in range(n_csv):
            self.add(f"test_10_20240301T{i:06d}_SDO_feat.csv", rnd.randbytes(csv_size))
        for i in range(n_jpg):
            self.add(f"hmi_ic_20240301_{i:06d}.jpg", rnd.randbytes(jpg_size))
        if big:
            self.add("test_10_20240301T235959_SDO_track.csv", rnd.randbytes(big))

    def target(self, **over) -> ArchiveTarget:
        params = dict(frc="test-frc", archive_dir=FRC_DIR, observatory="SDO", instrument="HMI", night=NIGHT,
                      run_dir=str(self.run_dir), archive_root=str(self.archive_root),
                      public_url_base=f"file://{self.archive_root}", frc_version="1.0")
        params.update(over)
        return ArchiveTarget(**params)

    def archived(self, name: str) -> Path:
        if name.endswith(".jpg"):
            return self.archive_root / FRC_DIR / "images/full/SDO/HMI/2024" / name
        return self.archive_root / FRC_DIR / "results/2024" / name

    @property
    def manifest(self) -> Path:
        return self.manifest_of("test-frc")

    def manifest_of(self, frc: str) -> Path:
        """One manifest per (FRC, night), in a folder of the FRC's own (issue 16 item 1)."""
        return self.archive_root / FRC_DIR / "manifests" / frc / "20240301.json"

    def parts(self) -> list[Path]:
        return sorted(self.archive_root.rglob("*.part"))

    def real_files(self) -> list[Path]:
        return sorted(p for p in self.archive_root.rglob("*") if p.is_file() and not p.name.endswith(".part"))

    def check_invariants(self) -> None:
        """No corrupt file under a real name; no source gone without a verified copy."""
        for path in self.real_files():
            if path == self.manifest:
                continue
            assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(self.files[path.name]).digest(), \
                f"corrupt archive file under its real name: {path}"
        for name, data in self.files.items():
            if not (self.run_dir / name).exists():
                assert self.archived(name).read_bytes() == data, f"source {name} deleted without a verified copy"

    def assert_all_archived(self) -> None:
        assert sorted(p.name for p in self.run_dir.iterdir()) == []
        for name, data in self.files.items():
            assert self.archived(name).read_bytes() == data
        assert self.parts() == []
        manifest = json.loads(self.manifest.read_text())
        assert manifest["format"] == "hfc-manifest/1"
        assert {f["name"]: f["sha256"] for f in manifest["files"]} == {
            n: hashlib.sha256(d).hexdigest() for n, d in self.files.items()}
        for f in manifest["files"]:
            assert (self.archive_root / f["archive_path"]).stat().st_size == f["size"] == len(self.files[f["name"]])
            assert f["url_base"] == f"file://{self.archive_root}/{os.path.dirname(f['archive_path'])}"

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.archive_root, ignore_errors=True)


@pytest.fixture
def night(site):
    n = Night(site)
    yield n
    n.cleanup()


def run(site, night: Night, **kw):
    kw.setdefault("progress", print)
    return archive_night(endpoint(site, "cluster"), endpoint(site, "archive"), night.target(**kw.pop("t", {})), **kw)


def test_copy_verify_manifest_delete_then_nothing_to_do(site, night, capsys):
    night.add_set(n_csv=40, n_jpg=5, big=9 * 1024 * 1024 + 123)
    night.add("test_10_SDO_frc_info.csv", b"a;b\n1;2\n")
    (night.run_dir / "hfc.test.20240301.42.out").write_text("slurm output\n")
    summary, manifest = run(site, night)
    assert (summary.copied, summary.skipped, summary.deleted) == (47, 0, 47)
    assert summary.bytes_copied == sum(len(d) for d in night.files.values())
    assert summary.verification == "openssl dgst -sha256 on the archive"  # the forced command allows it (4x sha256sum)
    assert summary.ignored == ["hfc.test.20240301.42.out"]
    assert (night.run_dir / "hfc.test.20240301.42.out").exists()
    (night.run_dir / "hfc.test.20240301.42.out").unlink()
    night.assert_all_archived()
    out = capsys.readouterr().out
    assert "files 47/47" in out and "MB/s" in out and "sha256 computed on the archive by openssl" in out

    before = night.manifest.read_bytes(), night.manifest.stat().st_mtime_ns
    summary2, manifest2 = run(site, night)
    assert (summary2.copied, summary2.skipped, summary2.deleted, summary2.manifest_written) == (0, 0, 0, False)
    assert (night.manifest.read_bytes(), night.manifest.stat().st_mtime_ns) == before
    assert manifest2 == manifest
    assert "nothing was changed" in capsys.readouterr().out


def test_readback_verification(site, night, capsys):
    night.add_set(n_csv=10, n_jpg=2, big=2 * 1024 * 1024)
    summary, _ = run(site, night, verify="readback")
    assert summary.verification == "read-back from the archive"
    night.assert_all_archived()


def test_auto_falls_back_to_readback_when_the_account_may_not_run_sha256sum(site, capsys):
    # '@' is a character the archive's forced command refuses: `sha256sum` is denied for this
    # root, as on an SFTP-only production archive, and `auto` must read the copies back.
    night = Night(site, root_name=f"ro@{uuid.uuid4().hex[:8]}")
    try:
        night.add_set(n_csv=5, n_jpg=1)
        summary, _ = run(site, night)
        assert summary.verification == "read-back from the archive"
        assert "cannot run sha256sum" in capsys.readouterr().out
        night.assert_all_archived()
    finally:
        night.cleanup()


def test_resumes_after_a_crash(site, night):
    night.add_set(n_csv=6, n_jpg=1, big=10 * 1024 * 1024)
    names = sorted(night.files)
    # The crashed run had renamed two copies into place, left a garbage .part and half of the
    # big file's .part, deleted nothing and written no manifest.
    for name in names[:2]:
        night.archived(name).parent.mkdir(parents=True, exist_ok=True)
        night.archived(name).write_bytes(night.files[name])
    garbage = night.archived(names[3]).with_name(names[3] + ".part")
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"half a file")
    big = "test_10_20240301T235959_SDO_track.csv"
    night.archived(big).with_name(big + ".part").write_bytes(night.files[big][: 9 * 1024 * 1024 + 5])
    for p in night.archive_root.rglob("*"):
        _chown(p, "archive")
    summary, _ = run(site, night)
    assert summary.skipped == 2 and summary.copied == len(names) - 2
    night.assert_all_archived()


def test_a_manifest_half_written_by_a_cut_run_is_removed(site, night):
    """Found by the multihost fault test (HFC_FAULT_SEED=225926311): the link dropped while a
    try wrote the manifest's .part; the next try wrote and renamed its own, and the cut one's
    .part stayed in the manifests folder (only product folders were swept). Both a night that
    writes its manifest now and a retry whose manifest is already right remove it."""
    from hfc_tasks.archive.tree import night_tag

    night.add_set(n_csv=3, n_jpg=1)
    t = night.target()
    left = night.manifest.with_name(f"{night.manifest.name}.{night_tag(t.frc, t.night)}0a1b2c.part")
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b'{"format": "hfc-manif')
    for p in night.archive_root.rglob("*"):
        _chown(p, "archive")
    run(site, night)
    night.assert_all_archived()  # no .part anywhere
    left.write_bytes(b'{"format": "hfc-manif')  # again, and a retry with nothing new to write
    _chown(left, "archive")
    run(site, night)
    assert night.parts() == []


def test_existing_copy_with_other_sha256_fails_unless_the_frc_rewrites(site, night):
    night.add_set(n_csv=3, n_jpg=0)
    name = sorted(night.files)[1]
    night.archived(name).parent.mkdir(parents=True)
    night.archived(name).write_bytes(b"an older, different version")
    for p in night.archive_root.rglob("*"):
        _chown(p, "archive")
    with pytest.raises(TransferError, match=name) as err:
        run(site, night)
    assert "does not rewrite" in str(err.value)
    assert all((night.run_dir / n).exists() for n in night.files), "sources must be kept"
    assert night.archived(name).read_bytes() == b"an older, different version"
    assert not night.manifest.exists()

    # The two other files were verified into place by the failed run: now skipped.
    summary, _ = run(site, night, t={"rewrites": True})
    assert (summary.copied, summary.skipped, summary.deleted) == (1, 2, 3)
    night.assert_all_archived()


def test_checksum_mismatch_keeps_the_source(site, night, monkeypatch):
    night.add_set(n_csv=4, n_jpg=1)
    victim = sorted(night.files)[2]

    async def tamper(self, part: str) -> None:
        if os.path.basename(part).startswith(victim + ".") and part.endswith(".part"):
            with open(part, "r+b") as fh:  # the archive copy altered between write and verification
                fh.seek(100)
                fh.write(b"X")

    monkeypatch.setattr(_Night, "_after_write", tamper)
    with pytest.raises(TransferError, match=rf"{victim}: archive copy sha256 \w+ != source") as err:
        run(site, night)
    assert "kept all 5 source files" in str(err.value)
    assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())
    assert not night.archived(victim).exists()
    assert night.parts() == [] and not night.manifest.exists()
    night.check_invariants()


def test_archive_not_writable(site, night):
    night.add_set(n_csv=4, n_jpg=0)
    results = night.archive_root / FRC_DIR / "results" / "2024"
    results.mkdir(parents=True)
    _chown(night.archive_root / FRC_DIR, "archive")
    _chown(night.archive_root / FRC_DIR / "results", "archive")
    os.chmod(results, 0o755)  # owned by root: the archive account may not write here
    with pytest.raises(TransferError, match="permission denied on the archive"):
        run(site, night)
    assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())
    assert list(results.iterdir()) == [] and not night.manifest.exists()


def test_archive_full(site, night):
    night.add_set(n_csv=30, csv_size=100_000, n_jpg=0)
    results = night.archive_root / FRC_DIR / "results" / "2024"
    results.mkdir(parents=True)
    for p in (night.archive_root / FRC_DIR, results.parent, results):
        _chown(p, "archive")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(results)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        _chown(results, "archive")
        with pytest.raises(TransferError, match="archive is full|refused the write") as err:
            run(site, night)
        assert "source kept" in str(err.value)
        assert all((night.run_dir / n).read_bytes() == d for n, d in night.files.items())
        night.check_invariants()
        assert night.parts() == [], "no half copies left behind"
    finally:
        subprocess.run(["umount", str(results)], check=True)


@pytest.mark.parametrize("bad", ["..hidden_feat.csv", "a..b.jpg", "x\\..\\..\\evil.csv", "evil\\name.png"])
def test_hostile_names_are_refused_and_nothing_is_written(site, night, bad):
    night.add_set(n_csv=2, n_jpg=0)
    night.add(bad, b"owned")
    outside = sorted(p.name for p in night.archive_root.parent.iterdir())
    with pytest.raises(TransferError, match="not allowed; nothing was copied"):
        run(site, night)
    assert list(night.archive_root.iterdir()) == []
    assert sorted(p.name for p in night.archive_root.parent.iterdir()) == outside
    assert all((night.run_dir / n).exists() for n in night.files)


def test_changed_host_key_is_refused(site, night):
    night.add_set(n_csv=2, n_jpg=0)
    impostor = (Path(site["HFC_SITE_DIR"]) / "ssh" / "cluster_ed25519.pub").read_text()
    archive = endpoint(site, "archive", host_key=" ".join(impostor.split()[:2]))
    with pytest.raises(HostKeyError, match=r"host key of archive archive@127\.0\.0\.1:\d+ is not the one configured"):
        archive_night(endpoint(site, "cluster"), archive, night.target(), attempts=3)
    with pytest.raises(HostKeyError, match="never connects to a host it cannot verify"):
        archive_night(endpoint(site, "cluster"), endpoint(site, "archive", host_key=None), night.target())
    assert list(night.archive_root.iterdir()) == []
    assert all((night.run_dir / n).exists() for n in night.files)


# ---------------------------------------------------------------------------- connection cuts


class Cuts:
    """Shared by the proxies: cut connections after a random byte count until ``target`` cuts."""

    def __init__(self, target: int, max_bytes: int, seed: int, on_cut):
        self.target, self.max_bytes, self.rnd, self.on_cut = target, max_bytes, random.Random(seed), on_cut
        self.done = 0

    def budget(self) -> list[int] | None:
        return [self.rnd.randint(1, self.max_bytes)] if self.done < self.target else None


class CuttingProxy:
    """TCP proxy on loopback (bounded: one task pair per connection) that drops a connection
    after the byte budget ``cuts`` gives it (either direction counts), else passes it through."""

    def __init__(self, port: int, cuts: Cuts):
        self.port, self.cuts = port, cuts
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, cr, cw) -> None:
        budget = self.cuts.budget()
        cut, _ = await relay(cr, cw, self.port, None if budget is None else budget[0])
        if cut:
            self.cuts.done += 1
            self.cuts.on_cut()

    def close(self) -> None:
        if self.server:
            self.server.close()


def test_connection_cut_mid_file_20_plus_times(site, night):
    night.add_set(n_csv=150, n_jpg=15, big=12 * 1024 * 1024, seed=7)
    checks = []

    def on_cut():
        night.check_invariants()
        checks.append(1)

    async def main():
        port = endpoint(site, "archive").port
        # At most 1.5 MB per connection until 24 cuts: the 12 MB file cannot pass before then, so
        # every run sees all 24 cuts, at random points of handshakes, small files and the big one.
        cuts = Cuts(24, 1_500_000, 20240301, on_cut)
        cproxy, aproxy = CuttingProxy(port, cuts), CuttingProxy(port, cuts)
        cport, aport = await cproxy.start(), await aproxy.start()
        try:
            summary, _ = await archive_night_async(
                endpoint(site, "cluster", port=cport), endpoint(site, "archive", port=aport), night.target(),
                attempts=80, retry_pause=0.01, progress=print,
            )
        finally:
            cproxy.close()
            aproxy.close()
        return summary, cuts.done

    summary, cuts = asyncio.run(main())
    assert cuts >= 20, f"only {cuts} cuts"
    assert len(checks) == cuts
    assert summary.reconnects >= 10
    night.assert_all_archived()
    night.check_invariants()


def test_archive_account_runs_sha256sum_in_its_tree_only(site, night):
    (night.archive_root / "f.csv").write_bytes(b"abc")
    inside = f"{night.archive_root}/f.csv"

    async def main():
        async with await connect(endpoint(site, "archive")) as conn:
            out = {}
            for cmd in (f"sha256sum -- {inside}", "sha256sum -- /etc/passwd", f"sha256sum -- {inside}/../f.csv",
                        f"sha256sum -- {inside}; id", "echo SHELL-$((6*7))", "sh -c id"):
                r = await conn.run(cmd, check=False, input="")
                out[cmd] = (r.exit_status, r.stdout, r.stderr)
            return out

    out = asyncio.run(main())
    status, stdout, _ = out[f"sha256sum -- {inside}"]
    assert (status, stdout) == (0, f"{hashlib.sha256(b'abc').hexdigest()}  {inside}\n")
    for cmd, (status, stdout, stderr) in out.items():
        if cmd != f"sha256sum -- {inside}":
            assert status == 126 and stdout == "" and "refused" in stderr, cmd


# ---------------------------------------------------------------------------- issue 16


def test_frcs_sharing_an_archive_folder_keep_their_own_manifests(site):
    """Item 1: a detector and its tracker archive into the same folder (archive_name): each
    FRC's manifest lists exactly the files its own job produced, and neither run touches the
    other's manifest, also when run again."""
    det = Night(site)
    trk = Night(site, root_name=det.archive_root.name)
    try:
        det.add_set(n_csv=3, n_jpg=1)
        trk.add("trk_10_20240301T000000_SDO_track.csv", b"TRACK_ID;ID_SUNSPOT\n1;1\n")
        trk.add("trk_10_frc_info.csv", b"CODE;VERSION\ntrk;10\n")
        _, m_det = run(site, det, t={"frc": "det-frc", "slurm_job_id": "11"})
        _, m_trk = run(site, trk, t={"frc": "trk-frc", "slurm_job_id": "12", "rewrites": True})
        assert sorted(f["name"] for f in m_det["files"]) == sorted(det.files)
        assert sorted(f["name"] for f in m_trk["files"]) == sorted(trk.files)
        on_disk = {frc: det.manifest_of(frc) for frc in ("det-frc", "trk-frc")}
        for frc, night in (("det-frc", det), ("trk-frc", trk)):
            stored = json.loads(on_disk[frc].read_text())
            assert stored["frc"] == frc
            assert sorted(f["name"] for f in stored["files"]) == sorted(night.files)
        assert not (det.archive_root / FRC_DIR / "manifests" / "20240301.json").exists()
        before = {frc: path.read_bytes() for frc, path in on_disk.items()}
        run(site, trk, t={"frc": "trk-frc", "slurm_job_id": "12", "rewrites": True})
        run(site, det, t={"frc": "det-frc", "slurm_job_id": "11"})
        assert {frc: path.read_bytes() for frc, path in on_disk.items()} == before
    finally:
        det.cleanup()
        trk.cleanup()


def test_two_archives_of_one_night_at_once_leave_one_valid_manifest(site, night, monkeypatch):
    """Item 2 (archive part): two archive runs of the same (FRC, night) at once. The second
    starts while the first holds its manifest written and not yet renamed into place; both
    then rename at once. Each writer has its own .part: both succeed, the manifest is valid
    JSON listing every file, and no half file is left."""
    night.add_set(n_csv=20, n_jpg=2)
    first_waiting = threading.Event()
    both = threading.Barrier(2, timeout=120)
    real_rename = asyncssh.SFTPClient.posix_rename

    waited = threading.local()

    async def rename(self, old, new):
        if new.endswith(".json") and not getattr(waited, "once", False):
            # Once per run: a run whose .part the other swept writes it again (and renames again).
            waited.once = True
            first_waiting.set()
            both.wait()  # blocks this run's own event loop (its own thread) until the other arrives
        return await real_rename(self, old, new)

    monkeypatch.setattr(asyncssh.SFTPClient, "posix_rename", rename)
    results: dict[str, object] = {}

    def archive(which: str) -> None:
        try:
            results[which] = run(site, night, progress=lambda msg: None, t={"slurm_job_id": "21"})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[which] = exc

    one = threading.Thread(target=archive, args=("first",))
    one.start()
    assert first_waiting.wait(120), "the first run never reached its manifest"
    two = threading.Thread(target=archive, args=("second",))
    two.start()
    one.join(180)
    two.join(180)
    assert all(isinstance(r, tuple) for r in results.values()) and len(results) == 2, results
    manifest = json.loads(night.manifest.read_text())
    assert sorted(f["name"] for f in manifest["files"]) == sorted(night.files)
    assert [p.name for p in night.manifest.parent.iterdir()] == [night.manifest.name]
    night.assert_all_archived()


@pytest.mark.parametrize("cluster", ["shell", "sftp-only"])
def test_a_source_changed_after_verification_is_kept_even_with_the_same_size(site, night, monkeypatch, cluster):
    """Item 2 (archive part): a cluster file is deleted only if its sha256, not its size,
    still equals the verified archive copy's: by ``sha256sum`` on the cluster, or where the
    cluster account may not run commands (``sftp-only``: they answer 127) by reading it back."""
    if cluster == "sftp-only":
        real_run = deletion.run_command

        async def no_commands(conn, command):
            return None if command.startswith("cd -- ") else await real_run(conn, command)

        monkeypatch.setattr(deletion, "run_command", no_commands)
    night.add_set(n_csv=4, n_jpg=1)
    victim = sorted(night.files)[1]
    real_write = _Night._write_manifest

    async def write_then_tamper(self, dst) -> None:
        await real_write(self, dst)
        path = night.run_dir / victim
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF  # the FRC rewrote the file after its copy was verified: same size
        path.write_bytes(bytes(data))

    monkeypatch.setattr(_Night, "_write_manifest", write_then_tamper)
    with pytest.raises(TransferError, match=rf"{victim}: changed on the cluster after its copy was verified"):
        run(site, night)
    assert (night.run_dir / victim).exists(), "a changed source must stay on the cluster"
    assert night.archived(victim).read_bytes() == night.files[victim]
    assert sorted(p.name for p in night.run_dir.iterdir()) == [victim]


def test_files_that_are_not_products_fail_the_night_and_stay_on_the_cluster(site, night):
    """Item 5: names that match no product pattern fail the task (registry default), naming
    each file and the run folder; the real products are archived; the others stay."""
    night.add_set(n_csv=3, n_jpg=1)
    odd = ["test_10_20240301T000000_SDO_feats.csv", "test_10_20240301T000000_SDO_feat.csv.gz",
           "a b.csv", "café.jpg"]
    for name in odd:
        path = night.run_dir / name
        path.write_bytes(b"x")
        _chown(path, "cluster")
    (night.run_dir / "hfc.test.20240301.42.out").write_text("slurm output\n")
    with pytest.raises(TransferError) as err:
        run(site, night)
    for name in odd:
        assert repr(name) in str(err.value)
    assert str(night.run_dir) in str(err.value) and "test-frc" in str(err.value)
    assert sorted(p.name for p in night.run_dir.iterdir()) == sorted([*odd, "hfc.test.20240301.42.out"])
    manifest = json.loads(night.manifest.read_text())
    assert sorted(f["name"] for f in manifest["files"]) == sorted(night.files)
    assert manifest["unmatched"] == sorted(odd)
    for name, data in night.files.items():
        assert night.archived(name).read_bytes() == data


def test_files_that_are_not_products_warn_when_the_frc_says_so(site, night, caplog):
    night.add_set(n_csv=2, n_jpg=0)
    (night.run_dir / "notes.txt").write_text("x")
    warnings: list[str] = []
    summary, manifest = run(site, night, t={"unknown_files": "warn"}, warn=warnings.append)
    assert manifest["unmatched"] == ["notes.txt"]
    assert len(warnings) == 1 and "'notes.txt'" in warnings[0] and str(night.run_dir) in warnings[0]
    assert sorted(p.name for p in night.run_dir.iterdir()) == ["notes.txt"]
    assert summary.unmatched == ["notes.txt"]


def test_a_job_that_wrote_nothing_is_a_no_data_night(site, night):
    """Item 6: the run folder and the job's SLURM output exist, no product: success, an
    empty manifest that says so. Without the job's output (or its folder) it still fails."""
    with pytest.raises(TransferError, match="did the FRC job run"):
        run(site, night, t={"slurm_job_id": "42"})  # the folder exists but holds nothing
    night.run_dir.rmdir()
    with pytest.raises(TransferError, match="did the FRC job run"):
        run(site, night, t={"slurm_job_id": "42"})
    night.run_dir.mkdir()
    _chown(night.run_dir, "cluster")
    (night.run_dir / "hfc.test-frc.20240301.42.out").write_text("no observation this night\n")
    summary, manifest = run(site, night, t={"slurm_job_id": "42"})
    assert manifest["files"] == [] and manifest["no_data"] is True and manifest["slurm_job_id"] == "42"
    assert json.loads(night.manifest.read_text()) == manifest
    before = night.manifest.read_bytes()
    summary2, _ = run(site, night, t={"slurm_job_id": "42"})
    assert not summary2.manifest_written and night.manifest.read_bytes() == before


def test_a_rerun_that_produces_fewer_files_lists_only_its_own(site, night, capsys):
    """Item 7: a new job's manifest holds exactly the files it produced; those of the earlier
    job it did not produce are reported, recorded as stale and kept on the archive. A retry of
    the same job merges (its sources may be gone already); a second run changes nothing."""
    night.add_set(n_csv=5, n_jpg=1)
    first = dict(night.files)
    _, m1 = run(site, night, t={"slurm_job_id": "100"})
    assert len(m1["files"]) == 6
    dropped = sorted(first)[:2]
    for name in sorted(first)[2:]:
        night.add(name, first[name])  # the new job writes the same files but two
    capsys.readouterr()
    _, m2 = run(site, night, t={"slurm_job_id": "101"})
    assert sorted(f["name"] for f in m2["files"]) == sorted(first)[2:]
    assert [s["name"] for s in m2["stale"]] == dropped
    assert all(s["slurm_job_id"] == "100" for s in m2["stale"])
    out = capsys.readouterr().out
    assert all(name in out for name in dropped) and "stale" in out
    for name in dropped:
        assert night.archived(name).read_bytes() == first[name], "stale files stay on the archive"
    before = night.manifest.read_bytes()
    summary, _ = run(site, night, t={"slurm_job_id": "101"})
    assert not summary.manifest_written and night.manifest.read_bytes() == before
    # The same job retried with one more file (an archive cut after some deletions): merged.
    late = "test_10_20240301T235959_SDO_feat.csv"
    night.add(late, b"late")
    _, m3 = run(site, night, t={"slurm_job_id": "101"})
    assert sorted(f["name"] for f in m3["files"]) == sorted([*sorted(first)[2:], late])
    assert [s["name"] for s in m3["stale"]] == dropped


# ---------------------------------------------------------------------------- issue 15: the tar stream


def test_a_run_folder_with_shell_characters_is_streamed_verbatim(site, capsys):
    """The small files come from the cluster as one tar stream (an exec channel): the run
    folder's path (spaces, quotes, ``$(...)``, ``;``, non-ASCII) is quoted for the shell and the
    names go to tar on stdin, NUL-separated: nothing is run, every file arrives whole."""
    night = Night(site)
    tag = f"hfc-canary-{uuid.uuid4().hex[:8]}"  # a shell would create it in the cluster's home
    canary = Path(site["HFC_SITE_DIR"]) / "home/cluster" / tag
    awkward = night.run_dir.parent / f"it's a \"run\" $(touch {tag}) `touch {tag}`; café ☉ -x"
    night.run_dir.rmdir()
    night.run_dir = awkward
    night.run_dir.mkdir()
    _chown(night.run_dir, "cluster")
    try:
        night.add_set(n_csv=30, n_jpg=3, big=3 * 1024 * 1024)
        night.add("test_10_SDO_frc_info.csv", b"")  # an empty member
        summary, _ = run(site, night)
        assert summary.copied == 35
        night.assert_all_archived()
        assert not night.run_dir.exists() or list(night.run_dir.iterdir()) == []
        assert not canary.exists(), "a shell ran part of the run folder's name"
        assert "reading small files from the cluster as tar streams" in capsys.readouterr().out
    finally:
        canary.unlink(missing_ok=True)
        night.cleanup()


@pytest.mark.parametrize("command", ["exit 127", "echo not a tar stream; exit 0", "tar-then-exit-1"])
def test_a_cluster_that_cannot_stream_gets_every_file_over_sftp(site, night, monkeypatch, capsys, command):
    """No tar (127), garbage on stdout, or a whole stream whose tar exits 1 (a file changed as
    tar read it): the streamed copies are never renamed into place; the files go over SFTP."""
    from hfc_tasks.archive import files
    from hfc_tasks.archive import night as night_mod

    real = files.stream_command
    if command == "tar-then-exit-1":
        monkeypatch.setattr(night_mod, "stream_command", lambda d: real(d).replace("exec ", "") + "; exit 1")
    else:
        monkeypatch.setattr(night_mod, "stream_command", lambda d: command)
    monkeypatch.setattr(night_mod, "STREAM_BATCH", 7)
    night.add_set(n_csv=20, n_jpg=2)
    summary, _ = run(site, night)
    assert summary.copied == 22
    night.assert_all_archived()
    night.check_invariants()
    out = capsys.readouterr().out
    if command == "tar-then-exit-1":
        assert "not whole (tar exit 1, 7/7 files)" in out
    else:
        assert "cannot stream the run folder with tar" in out


def test_connection_cut_during_the_cluster_stream(site, night):
    """Cuts of the cluster connection while tar streams: what was verified stays verified, no
    half file under a real name, no source deleted without a verified copy; all archived."""
    night.add_set(n_csv=400, csv_size=10_000, n_jpg=10, jpg_size=150_000, seed=11)
    checks = []

    def on_cut():
        night.check_invariants()
        checks.append(1)

    async def main():
        port = endpoint(site, "cluster").port
        cuts = Cuts(8, 1_500_000, 15, on_cut)  # the stream is ~5.5 MB: every cut falls in it or the handshake
        proxy = CuttingProxy(port, cuts)
        cport = await proxy.start()
        try:
            summary, _ = await archive_night_async(
                endpoint(site, "cluster", port=cport), endpoint(site, "archive"), night.target(),
                attempts=40, retry_pause=0.01, progress=print,
            )
        finally:
            proxy.close()
        return summary, cuts.done

    summary, cuts = asyncio.run(main())
    assert cuts == 8 and len(checks) == cuts
    assert summary.reconnects >= 4
    night.assert_all_archived()
    night.check_invariants()
