"""The archive stage's digest commands (hfc_tasks.archive.verification, deletion): the output of
``openssl dgst -sha256 -r`` and of ``sha256sum`` read alike; the archive-side Verifier uses
openssl where the account runs it and falls back to sha256sum (once per connection) where a
restricted account refuses it, then to read-back where it runs neither; direct mode's deletion
removes the files whose stat identity did not change in one stat and one rm (names on stdin)."""

from __future__ import annotations

import asyncio
import hashlib
import shlex
from types import SimpleNamespace

import pytest

from hfc_tasks.archive import verification
from hfc_tasks.archive.deletion import STAT_FORMAT, delete_unchanged, digest_command, parse_stat
from hfc_tasks.archive.errors import TransferError
from hfc_tasks.archive.verification import Verifier, parse_digests

A, B = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()


def test_both_output_formats_are_read_and_noise_is_ignored():
    text = (f"{A}  /arch/x.csv\n{B} */arch/y z.jpg\n"
            "4087:error:80000002:system library:file_ctrl:No such file or directory\n"
            f"\\{A}  /arch/esc\\nname\n{A[:63]}  /short\n{A.upper()}  /upper\n")
    assert parse_digests(text) == {"/arch/x.csv": A, "/arch/y z.jpg": B}


def test_stat_identity_keeps_the_name_after_the_first_bar():
    text = "20 123 2026-12-03 08:00:00.546728595 +0000 2026-12-03 08:00:01.000000001 +0000|./a|b.csv\n"
    assert parse_stat(text) == {"a|b.csv": "20 123 2026-12-03 08:00:00.546728595 +0000 "
                                           "2026-12-03 08:00:01.000000001 +0000"}
    assert STAT_FORMAT.endswith("|%n")


def test_cluster_digest_command_prefers_openssl_and_quotes_nothing_itself():
    cmd = digest_command("'./a b.csv'")
    assert cmd.index("openssl dgst -sha256 -r -- './a b.csv'") < cmd.index("sha256sum -- './a b.csv'")


class FakeArchive:
    """An archive connection whose account runs the tools in ``allowed`` (others: exit 126)."""

    def __init__(self, files: dict[str, bytes], allowed: set[str]):
        self.files, self.allowed, self.commands = files, allowed, []

    async def run(self, cmd, check=False, input=""):
        self.commands.append(cmd)
        words = shlex.split(cmd)
        tool = words[0]
        if tool not in self.allowed:
            return SimpleNamespace(exit_status=126, exit_signal=None, stdout="",
                                   stderr="archive account: refused: not 'sha256sum -- <files>'\n")
        paths = words[words.index("--") + 1:]
        sep = " *" if tool == "openssl" else "  "
        out = "".join(f"{hashlib.sha256(self.files[p]).hexdigest()}{sep}{p}\n" for p in paths if p in self.files)
        return SimpleNamespace(exit_status=0 if all(p in self.files for p in paths) else 1, exit_signal=None,
                               stdout=out, stderr="")


def verify_all(conn, paths, mode="auto"):
    said: list[str] = []

    async def main():
        v = Verifier(conn, sftp=None, mode=mode, say=said.append)

        async def read_back(path):
            return "readback:" + path
        v.read_back = read_back
        got = await asyncio.gather(*(v.sha256(p) for p in paths))
        await v.aclose()
        return v, got
    v, got = asyncio.run(main())
    return v, got, said


def test_openssl_is_used_where_the_archive_account_runs_it(monkeypatch):
    monkeypatch.setattr(verification, "VERIFY_BATCH", 4)
    files = {f"/arch/f{i}": bytes([i]) * 100 for i in range(10)}
    conn = FakeArchive(files, {"openssl", "sha256sum"})
    v, got, said = verify_all(conn, list(files))
    assert got == [hashlib.sha256(d).hexdigest() for d in files.values()]
    assert all(c.startswith("openssl dgst -sha256 -r -- ") for c in conn.commands)
    # auto: the first file alone decides whether the account runs a command; then batches of 4
    assert [len(c.split()) - 5 for c in conn.commands] == [1, 4, 4, 1]
    assert v.method == "openssl dgst -sha256 on the archive"


def test_a_restricted_account_refusing_openssl_gets_sha256sum_after_one_probe(monkeypatch):
    monkeypatch.setattr(verification, "VERIFY_BATCH", 4)
    files = {f"/arch/f{i}": bytes([i]) * 100 for i in range(10)}
    conn = FakeArchive(files, {"sha256sum"})
    v, got, said = verify_all(conn, list(files), mode="sha256sum")
    assert got == [hashlib.sha256(d).hexdigest() for d in files.values()]
    assert [c.split()[0] for c in conn.commands] == ["openssl", "sha256sum", "sha256sum", "sha256sum"]
    assert v.method == "sha256sum on the archive"
    assert any("does not run openssl (exit 126: archive account: refused" in m for m in said)


def test_an_account_running_neither_reads_copies_back():
    files = {"/arch/a": b"a", "/arch/b": b"b"}
    conn = FakeArchive(files, set())
    v, got, said = verify_all(conn, list(files))
    assert got == ["readback:/arch/a", "readback:/arch/b"]
    assert v.method == "read-back from the archive" and v.remote_ok is False
    assert len(conn.commands) == 2  # openssl refused, sha256sum refused: then no command again


class FakeCluster:
    """A cluster connection answering ``xargs -0 stat`` / ``xargs -0 rm`` from a dict of identities."""

    def __init__(self, files: dict[str, str], rm_status: int = 0):
        self.files, self.rm_status, self.calls = dict(files), rm_status, []

    async def run(self, cmd, check=False, input=""):
        self.calls.append((cmd, input))
        names = [n.removeprefix("./") for n in input.split("\0") if n]
        if "xargs -0 stat" in cmd:
            out = "".join(f"{self.files[n]}|./{n}\n" for n in names if n in self.files)
            return SimpleNamespace(exit_status=0 if all(n in self.files for n in names) else 123, exit_signal=None,
                                   stdout=out, stderr="")
        if "xargs -0 rm -f" in cmd:
            if self.rm_status == 0:
                for n in names:
                    self.files.pop(n, None)
            return SimpleNamespace(exit_status=self.rm_status, exit_signal=None, stdout="",
                                   stderr="rm: cannot remove" if self.rm_status else "")
        raise AssertionError(cmd)


def test_only_files_whose_identity_did_not_change_are_removed_in_two_commands():
    names = [f"f{i}.csv" for i in range(1200)]
    files = {n: f"20 {i} t0 c0" for i, n in enumerate(names)}
    identity = dict(files)
    files["f3.csv"] = "20 3 t0 c1"  # rewritten since its sha256 (ctime moved)
    del files["f5.csv"]  # gone already (an attempt cut after its rm)
    conn, deleted = FakeCluster(files), set()
    asyncio.run(delete_unchanged(conn, "/run/d ir", names, identity, deleted=deleted))
    assert len(conn.calls) == 2 and all(c.startswith("cd -- '/run/d ir' || exit 3; xargs -0 ") for c, _ in conn.calls)
    assert deleted == set(names) - {"f3.csv", "f5.csv"}
    assert set(conn.files) == {"f3.csv"}  # left for the hash check (which keeps it if it changed)


def test_a_refused_rm_is_an_error_and_nothing_is_counted_deleted():
    conn, deleted = FakeCluster({"a.csv": "1 1 t c"}, rm_status=123), set()
    with pytest.raises(TransferError, match=r"cannot remove files in /run on the cluster \(exit 123"):
        asyncio.run(delete_unchanged(conn, "/run", ["a.csv"], {"a.csv": "1 1 t c"}, deleted=deleted))
    assert deleted == set()
