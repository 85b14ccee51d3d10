"""ReconnectingReader: which archive errors cost a reconnect and which are final at once (pure
logic with stand-in sessions; the real SFTP drop is tests/integration/test_catalogue_archive_faults.py)."""

from __future__ import annotations

import contextlib
import io

import pytest

from hfc_tasks.catalogue.fetch import ReconnectingReader


class Session:
    def __init__(self, log: list, faults: list):
        self.log, self.faults = log, faults

    def open(self, path: str, mode: str):
        self.log.append(path)
        if self.faults:
            raise self.faults.pop(0)
        f = io.BytesIO(b"bytes of " + path.encode())
        f.prefetch = lambda: None
        return f


def reader(faults: list, **kw):
    opened, reads, said = [], [], []

    @contextlib.contextmanager
    def open_session():
        opened.append(1)
        yield Session(reads, faults)

    r = ReconnectingReader(open_session, "/arch", say=said.append, sleep=lambda s: None, **kw)
    return r, opened, reads, said


def test_a_dropped_link_is_opened_again_and_the_read_repeated():
    r, opened, reads, said = reader([EOFError("closed"), OSError("Socket is closed")])
    assert r("a/b.csv") == b"bytes of /arch/a/b.csv"
    assert len(opened) == 3 and reads == ["/arch/a/b.csv"] * 3 and r.reconnected == 2
    assert "reconnect 1/5" in said[0] and "reconnect 2/5" in said[1]
    assert r("a/c.csv") == b"bytes of /arch/a/c.csv" and len(opened) == 3  # the new session is kept


@pytest.mark.parametrize("exc", [FileNotFoundError(2, "No such file"), PermissionError(13, "Permission denied")])
def test_a_refusal_of_the_archive_is_final_at_once(exc):
    r, opened, _, said = reader([exc])
    with pytest.raises(type(exc)):
        r("a/b.csv")
    assert len(opened) == 1 and said == []


def test_a_bug_is_not_retried():
    r, opened, _, _ = reader([ValueError("not the archive's fault")])
    with pytest.raises(ValueError):
        r("a/b.csv")
    assert len(opened) == 1


def test_after_its_reconnects_in_a_row_the_last_error_is_raised():
    r, opened, reads, said = reader([EOFError(str(i)) for i in range(10)], reconnects=3)
    with pytest.raises(EOFError, match="3"):
        r("a/b.csv")
    assert len(reads) == 4 and len(said) == 3
