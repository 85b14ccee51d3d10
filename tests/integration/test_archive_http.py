"""The local site's archive web server (hfc_tasks/ops/localsite/archive_http.py): the archive tree
over HTTP at the local registry's public_url_base, the way the HFC's clients open an archived
quicklook (pyhfc/hfcviewer: urlopen(QCLK_URL + '/' + QCLK_FNAME)): a file the archive account
wrote comes back byte for byte; nothing else of the machine, no file in progress, no write."""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hfc_tasks.ops.localsite.layout import ARCHIVE_USER, Layout
from hfc_tasks.registry import load_registry

pytestmark = pytest.mark.site


@pytest.fixture
def folder(site) -> tuple[Path, str]:
    """A folder of the site's archive tree owned by the archive account, and its public URL."""
    lay = Layout.current()
    base = load_registry().site("local").public_url_base
    name = f"_http_test_{secrets.token_hex(4)}"
    path = lay.archive_root / name / "images" / "full"
    path.mkdir(parents=True)
    account = pwd.getpwnam(ARCHIVE_USER)
    for p in (lay.archive_root / name, path.parent, path):
        os.chown(p, account.pw_uid, account.pw_gid)
    try:
        yield path, f"{base}/{name}/images/full"
    finally:
        shutil.rmtree(lay.archive_root / name)


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    account = pwd.getpwnam(ARCHIVE_USER)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o644)
    return path


def get(url: str, method: str = "GET") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_the_local_registry_publishes_the_archive_over_http(site):
    lay = Layout.current()
    base = load_registry().site("local").public_url_base
    assert base == lay.archive_http_url == f"http://127.0.0.1:{lay.archive_http_port}/hfc"


def test_a_quicklook_comes_back_byte_for_byte(folder):
    path, url = folder
    # A quicklook-like file: binary, every byte value, larger than one TCP window.
    data = bytes(range(256)) * 4096 + secrets.token_bytes(100_003)
    name = "hmi.ic_45s.2024.03.01_00_00_00_TAI.continuum.jpg"
    put(path / name, data)
    qclk_url, qclk_fname = url, name  # what the catalogue holds; pyhfc opens QCLK_URL + '/' + QCLK_FNAME
    with urllib.request.urlopen(qclk_url + "/" + qclk_fname, timeout=10) as response:
        got = response.read()
        assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
        assert int(response.headers["Content-Length"]) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest() and got == data
    status, body, _ = get(f"{url}/{name}", "HEAD")
    assert status == 200 and body == b""


def test_only_the_archive_tree_and_only_finished_files(folder):
    path, url = folder
    put(path / "quicklook.png.part", b"half a copy")
    put(path / ".hidden", b"dot file")
    (path / "passwd.png").symlink_to("/etc/passwd")
    (path / "inside.png").symlink_to(path / "quicklook.png.part")
    for name in ("quicklook.png.part", ".hidden", "passwd.png", "inside.png", "missing.png"):
        status, body, _ = get(f"{url}/{name}")
        assert status in (403, 404), (name, status)
        assert b"root:" not in body and b"half a copy" not in body and b"dot file" not in body
    lay = Layout.current()
    origin = f"http://127.0.0.1:{lay.archive_http_port}"
    for target in ("/", "/etc/passwd", "/hfc/../etc/passwd", "/hfc/%2e%2e/%2e%2e/etc/passwd", "/hfc../"):
        status, body, _ = get(origin + target)
        assert status in (400, 403, 404), (target, status)
        assert b"root:" not in body


def test_nothing_is_written_through_it(folder):
    path, url = folder
    put(path / "kept.jpg", b"original")
    for method in ("PUT", "DELETE", "POST", "MKCOL"):
        status, _, _ = get(f"{url}/kept.jpg", method)
        assert status in (403, 405), (method, status)
    assert (path / "kept.jpg").read_bytes() == b"original"
    assert sorted(p.name for p in path.iterdir()) == ["kept.jpg"]


def test_it_listens_on_loopback_only(site):
    port = Layout.current().archive_http_port
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, p = fields[1].split(":")
            if fields[3] == "0A" and int(p, 16) == port:
                listening.add(addr)
    assert listening == {"0100007F"}
