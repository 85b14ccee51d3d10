"""The cluster's tar stream as the archive stage reads it (hfc_tasks.archive.files.tar_members):
GNU and pax streams as tar writes them, long names, empty files; a cut or foreign stream is a
StreamError (its files then go over SFTP)."""

from __future__ import annotations

import asyncio
import io
import tarfile

import pytest

from hfc_tasks.archive.files import StreamError, stream_command, tar_members


class Reader:
    """asyncssh's stream reader, as far as tar_members uses it."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    async def readexactly(self, n: int) -> bytes:
        got = self.buf.read(n)
        if len(got) < n:
            raise asyncio.IncompleteReadError(got, n)
        return got


def make_tar(files: dict[str, bytes], fmt) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def members(data: bytes) -> list[tuple[str, bytes]]:
    async def collect():
        return [m async for m in tar_members(Reader(data))]
    return asyncio.run(collect())


FILES = {"a_10_20240301T000000_SDO_feat.csv": b"x" * 513, "b" * 150 + ".csv": b"long name", "empty.csv": b"",
         "c.jpg": bytes(range(256)) * 40}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_in_order_with_their_bytes(fmt):
    files = FILES if fmt != tarfile.USTAR_FORMAT else {k: v for k, v in FILES.items() if len(k) < 100}
    assert members(make_tar(files, fmt)) == list(files.items())


def test_a_cut_stream_or_a_foreign_one_is_refused():
    data = make_tar(FILES, tarfile.GNU_FORMAT)
    with pytest.raises(StreamError, match="ended early"):
        members(data[:1500])
    with pytest.raises(StreamError, match="checksum"):
        members(b"not a tar stream\n".ljust(512, b"x"))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_dir("d"))
    with pytest.raises(StreamError, match="not a regular file"):
        members(out.getvalue())


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_the_run_folder_is_quoted_and_names_never_reach_the_shell():
    cmd = stream_command("/p/it's $(rm -rf ~) ☉")
    assert cmd == "exec tar -c -f - -b 1 --no-recursion --null -C '/p/it'\"'\"'s $(rm -rf ~) ☉' -T -"
