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
import uuid
from pathlib import Path

import pytest

from hfc_tasks import transfer
from hfc_tasks.transfer import ArchiveTarget, Endpoint, HostKeyError, TransferError, archive_night

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
        return self.archive_root / FRC_DIR / "manifests/20240301.json"

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
    assert summary.verification == "sha256sum on the archive"
    assert summary.ignored == ["hfc.test.20240301.42.out"]
    assert (night.run_dir / "hfc.test.20240301.42.out").exists()
    (night.run_dir / "hfc.test.20240301.42.out").unlink()
    night.assert_all_archived()
    out = capsys.readouterr().out
    assert "files 47/47" in out and "MB/s" in out and "sha256 computed on the archive by sha256sum" in out

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
        if os.path.basename(part) == victim + ".part":
            with open(part, "r+b") as fh:  # the archive copy altered between write and verification
                fh.seek(100)
                fh.write(b"X")

    monkeypatch.setattr(transfer._Night, "_after_write", tamper)
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
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            cw.close()
            return

        async def pipe(r, w):
            while data := await r.read(65536):
                if budget is not None:
                    if len(data) >= budget[0]:
                        w.write(data[: budget[0]])
                        raise ConnectionAbortedError
                    budget[0] -= len(data)
                w.write(data)
                await w.drain()

        tasks = [asyncio.ensure_future(pipe(cr, sw)), asyncio.ensure_future(pipe(sr, cw))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        cut = any(t.done() and not t.cancelled() and isinstance(t.exception(), ConnectionAbortedError)
                  for t in tasks)
        for t in tasks:
            t.cancel()
        for w in (cw, sw):
            if cut:
                w.transport.abort()
            else:
                w.close()
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
            summary, _ = await transfer.archive_night_async(
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
        async with await transfer.connect(endpoint(site, "archive")) as conn:
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
