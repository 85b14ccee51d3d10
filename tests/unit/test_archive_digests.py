"""The archive stage's digest commands (hfc_tasks.archive.verification, deletion): the output of
``openssl dgst -sha256 -r`` and of ``sha256sum`` read alike; the archive-side Verifier uses
openssl where the account runs it and falls back to sha256sum (once per connection) where a
restricted account refuses it, then to read-back where it runs neither."""

from __future__ import annotations

import asyncio
import hashlib
import shlex
from types import SimpleNamespace

from hfc_tasks.archive import verification
from hfc_tasks.archive.deletion import STAT_FORMAT, digest_command, parse_stat
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
