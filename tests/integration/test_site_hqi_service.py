"""The local site runs the HQI query service (hfc_tasks/ops/localsite/hqi.py) and the archive's web
server in the background like its other daemons: started by `hfc site up`, stopped by what `hfc
site down` calls, listed by `status`; the service apart from the operators (its own account,
only its read-only connection in its environment), at the URL `hfc site env` exports."""

from __future__ import annotations

import pwd
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hfc_tasks.ops import localsite
from hfc_tasks.ops.localsite import archive_http, hqi
from hfc_tasks.ops.localsite._util import read_pid
from hfc_tasks.ops.localsite.layout import Layout

pytestmark = pytest.mark.site


def wsdl(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/HelioTavernaService?wsdl", timeout=10) as response:
        assert response.status == 200
        return response.read()


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_service_answers_at_the_exported_url_as_the_read_only_role(site):
    lay = Layout.current()
    assert site["HFC_HQI_URL"] == lay.hqi_url == f"http://127.0.0.1:{lay.hqi_port}/hfc-hqi"
    assert site["HFC_HQI_DSN"].startswith("postgresql://hfc_hqi:") and site["HFC_HQI_DSN"].endswith(
        f"@127.0.0.1:{lay.pg_port}/hfc")
    assert f'location="{site["HFC_HQI_URL"]}/HelioTavernaService"' in wsdl(site["HFC_HQI_URL"]).decode()
    pid = read_pid(lay.hqi_pid)
    env = environ(pid)
    # Only what it needs: its read-only connection and its URL; nothing of the operators'.
    assert env["HFC_HQI_DSN"] == site["HFC_HQI_DSN"] and env["HFC_HQI_URL"] == site["HFC_HQI_URL"]
    assert not {k for k in env if k.startswith(("AIRFLOW", "HFC_CATALOGUE"))}
    assert site["HFC_CATALOGUE_DSN"].split("@")[0].split(":")[-1] not in Path(f"/proc/{pid}/environ").read_text()
    # Its own account when it can read the checkout (it can here), and no password in its argv.
    owner = pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name
    assert owner == hqi.USER
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "hqi serve" in cmdline and "--dsn" not in cmdline and "postgresql://" not in cmdline


def test_stopped_and_started_again_with_the_site(site):
    lay = Layout.current()
    before = read_pid(lay.hqi_pid), read_pid(lay.nginx_pid)
    # What `hfc site down` stops first (it stops the rest of the site after them).
    assert hqi.stop(lay) and archive_http.stop(lay)
    try:
        status = localsite.status(print_table=False)
        assert (status["hqi"], status["nginx"]) == (False, False)
        for url in (f"{lay.hqi_url}/HelioTavernaService?wsdl", f"{lay.archive_http_url}/"):
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(url, timeout=5)
    finally:
        localsite.up(verbose=False)
    status = localsite.status(print_table=False)
    assert (status["hqi"], status["nginx"]) == (True, True)
    assert (read_pid(lay.hqi_pid), read_pid(lay.nginx_pid)) != before
    wsdl(lay.hqi_url)


def test_hfc_site_status_lists_them(site):
    proc = subprocess.run([str(Path(sys.executable).with_name("hfc")), "site", "status"], capture_output=True,
                          text=True, timeout=60)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    lay = Layout.current()
    assert "running" in lines["nginx"] and lay.archive_http_url in lines["nginx"]
    assert "running" in lines["hqi"] and f"{lay.hqi_url}/HelioTavernaService?wsdl" in lines["hqi"]
    # Its own process is one of the site's services, not a leftover of the project.
    assert "hqi serve" not in proc.stdout.split("beyond the site's services:")[1]
