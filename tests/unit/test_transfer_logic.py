"""Pure parts of the archive engine: name screening, path containment, streaming copy and resume."""

from __future__ import annotations

import asyncio
import hashlib
import stat

import pytest

from hfc_tasks.archive import TransferError, VerifyMode, classify_names, copy_file
from hfc_tasks.archive.files import CHUNK, RESUME_MIN, inside

REG = stat.S_IFREG | 0o644


def test_classify_keeps_products_ignores_the_expected_rest_and_names_the_unmatched():
    products, ignored, unmatched = classify_names([
        ("sdoss_20_20240301T000000_SDO_feat.csv", REG, 10),
        ("hmi_20240301.jpg", REG, 20),
        ("hfc.x.20240301.7.out", REG, 1),
        ("sdoss_20_20240301T000000_SDO_feat.csv.part", REG, 3),
        ("notes.txt", REG, 4),
        ("subdir", stat.S_IFDIR | 0o755, 0),
        ("link.csv", stat.S_IFLNK | 0o777, 0),
    ], "/run")
    assert products == [("hmi_20240301.jpg", 20), ("sdoss_20_20240301T000000_SDO_feat.csv", 10)]
    assert ignored == ["hfc.x.20240301.7.out", "link.csv", "sdoss_20_20240301T000000_SDO_feat.csv.part", "subdir"]
    assert unmatched == ["notes.txt"]


def test_unmatched_are_the_files_that_match_no_product_name():
    """Issue 16 item 5: a typo in the kind, a compressed table, a space, a non-ASCII letter."""
    odd = ["sdoss_20_20240301T000000_SDO_feats.csv", "sdoss_20_20240301T000000_SDO_feat.csv.gz",
           "a b.csv", "café.jpg"]
    products, ignored, unmatched = classify_names(
        [(n, REG, 1) for n in [*odd, "sdoss_20_20240301T000000_SDO_feat.csv", "hfc.x.20240301.7.out"]], "/run")
    assert products == [("sdoss_20_20240301T000000_SDO_feat.csv", 1)]
    assert ignored == ["hfc.x.20240301.7.out"]
    assert unmatched == sorted(odd)


@pytest.mark.parametrize("bad", ["..x_feat.csv", "a\\b.csv", "x..jpg", "tab\there.csv"])
def test_hostile_names_refuse_the_whole_folder(bad):
    with pytest.raises(TransferError, match="nothing was copied"):
        classify_names([("ok_10_20240301T000000_SDO_feat.csv", REG, 1), (bad, REG, 1)], "/run")


@pytest.mark.parametrize("path", ["/a/root/../etc/passwd", "/a/rootx/f", "/a/root", "/a/root//f", "/elsewhere/f"])
def test_inside_refuses_paths_outside_the_root(path):
    with pytest.raises(TransferError, match="refused archive path"):
        inside("/a/root", path)


def test_inside_accepts_plain_paths():
    assert inside("/a/root", "/a/root/F/results/2024/x.csv") == "/a/root/F/results/2024/x.csv"


class FakeFile:
    def __init__(self, store: dict, path: str, mode: str):
        self.store, self.path = store, path
        if "w" in mode:
            store[path] = bytearray()
        self.reads = 0

    async def read(self, size, offset):
        self.reads += 1
        return bytes(self.store[self.path][offset:offset + size])

    async def write(self, data, offset):
        buf = self.store[self.path]
        if len(buf) < offset:
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        return len(data)

    async def truncate(self, size):
        del self.store[self.path][size:]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


class FakeSFTP:
    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = {k: bytearray(v) for k, v in (files or {}).items()}
        self.opened: list[FakeFile] = []

    def open(self, path, mode):
        f = FakeFile(self.files, path, mode)
        self.opened.append(f)
        return f

    async def stat(self, path):
        if path not in self.files:
            import asyncssh

            raise asyncssh.SFTPNoSuchFile("no")

        class A:
            size = len(self.files[path])
        return A()


def test_small_file_is_one_read_request():
    data = b"x" * 20_000
    src, dst = FakeSFTP({"/s": data}), FakeSFTP()
    digest, n = asyncio.run(copy_file(src, "/s", dst, "/d.part", len(data)))
    assert (digest, n) == (hashlib.sha256(data).hexdigest(), 20_000)
    assert bytes(dst.files["/d.part"]) == data
    assert src.opened[0].reads == 1


def test_large_file_streams_in_chunks_and_shrunk_file_is_seen():
    data = bytes(range(256)) * (3 * CHUNK // 256 + 17)
    src, dst = FakeSFTP({"/s": data}), FakeSFTP()
    digest, n = asyncio.run(copy_file(src, "/s", dst, "/d.part", len(data)))
    assert bytes(dst.files["/d.part"]) == data and n == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    _, n = asyncio.run(copy_file(src, "/s", FakeSFTP(), "/d.part", len(data) + 5))
    assert n == len(data), "a file shorter than listed ends early; the caller refuses it"


def test_large_part_is_resumed_and_whole_file_hashed():
    data = bytes(range(256)) * (RESUME_MIN // 256 * 2)
    keep = RESUME_MIN + 12345
    dst = FakeSFTP({"/d.part": data[:keep]})
    src = FakeSFTP({"/s": data})
    written = []
    real_open = dst.open

    def spy(path, mode):
        f = real_open(path, mode)
        orig = f.write

        async def w(chunk, offset):
            written.append(offset)
            return await orig(chunk, offset)
        f.write = w
        return f

    dst.open = spy
    digest, n = asyncio.run(copy_file(src, "/s", dst, "/d.part", len(data)))
    assert bytes(dst.files["/d.part"]) == data and digest == hashlib.sha256(data).hexdigest()
    assert min(written) >= keep - keep % CHUNK, "bytes already there are not sent again"


def test_verify_mode_is_the_operators_string_and_refuses_others():
    assert VerifyMode.of("auto") is VerifyMode.AUTO and VerifyMode.AUTO == "auto"
    assert VerifyMode.of(VerifyMode.READBACK) is VerifyMode.READBACK
    assert [str(m) for m in VerifyMode] == ["auto", "sha256sum", "readback"]
    with pytest.raises(ValueError, match=r"verify='fast': expected auto, sha256sum or readback"):
        VerifyMode.of("fast")
