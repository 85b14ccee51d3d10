"""The catalogue status page in a real browser: headless Debian chromium driven by Playwright.

On the ``ops`` instance (tests/e2e/ops_instance.py, its own catalogue and FRCs): two nights are
seeded by real pipeline runs (night A: both FRCs; night B: ``ops-sunspots`` only, so
``ops-spots-b`` has a gap there). The test logs in to the Airflow UI as an operator would,
opens the "HFC catalogue" entry of the navigation, checks the heat map cells of the seeded
nights, clicks "Backfill" on the gap of night B, and checks through Airflow's REST API that the
backfill exists (the DAG stays paused, so its run waits and is cancelled at the end). It then
opens the night's quicklook gallery (contours from the catalogue drawn on the archived images).
Screenshots: ``artifacts/status_page.png`` and ``artifacts/status_gallery.png``.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import re
import time
from pathlib import Path

import httpx
import ops_instance  # tests/e2e is on sys.path (pytest prepend import mode)
import psycopg
import pytest

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TODAY = dt.datetime.now(dt.UTC).date()
NIGHT_A = (TODAY - dt.timedelta(days=5)).isoformat()  # both FRCs
NIGHT_B = (TODAY - dt.timedelta(days=4)).isoformat()  # ops-sunspots only: a gap of ops-spots-b


def _batches(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select frc, night::text from hfc.batch where night in (%s, %s)",
                            (NIGHT_A, NIGHT_B)).fetchall()
    return {(frc, night) for frc, night in rows}


def _cancel_active_backfills(api) -> None:
    for b in api.get(f"/backfills?dag_id={DAG}&limit=100")["backfills"]:
        if not b.get("completed_at"):
            api.put_backfill_cancel(b["id"])


@pytest.fixture(scope="module")
def ops(site):
    """The ops instance, started fresh for this module (this checkout's plugin, its users admin,
    viewer and nobody) and stopped at the end, pass or fail."""
    ops_instance.ensure_packages()
    ops_instance.hfc("airflow", "down")
    try:
        api, _ = ops_instance.up()
        api.put_backfill_cancel = lambda i: api.call("PUT", f"/backfills/{i}/cancel")
        api.wait_for_dag(DAG)
        yield api
    finally:
        proc = ops_instance.hfc("airflow", "down")
        assert proc.returncode == 0, f"hfc airflow down (ops) failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def seeded(ops):
    """The ops instance with nights A (both FRCs) and B (ops-sunspots only) really run."""
    api = ops
    dsn = ops_instance.stack_env()["HFC_CATALOGUE_DSN"]
    wanted = {("ops-sunspots", NIGHT_A), ("ops-spots-b", NIGHT_A), ("ops-sunspots", NIGHT_B)}
    have = _batches(dsn)
    assert ("ops-spots-b", NIGHT_B) not in have, "night B of ops-spots-b must stay a gap"
    if not wanted <= have:
        t0 = time.monotonic()
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        try:
            runs = [api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
                    for conf in ({"night": NIGHT_A}, {"night": NIGHT_B, "frcs": ["ops-sunspots"]})]
            states = [api.wait_run(DAG, r, timeout=600) for r in runs]
        finally:
            api.patch(f"/dags/{DAG}", {"is_paused": True})
        assert states == ["success", "success"], states
        print(f"\n[status page] seeded nights {NIGHT_A} and {NIGHT_B} in {time.monotonic() - t0:.1f} s")
    assert wanted <= _batches(dsn)
    _cancel_active_backfills(api)
    return api


NIGHT_D = (TODAY - dt.timedelta(days=8)).isoformat()  # ops-sunspots not clean, ops-spots-b no data
UNMATCHED = {"issue": "unmatched", "name": "a b.csv"}


@pytest.fixture
def night_states(seeded):
    """Night D in the ops catalogue as the archive and catalogue stages record it (migration
    0005): ops-spots-b ran and found no observation, ops-sunspots left a file on the cluster."""
    dsn = ops_instance.stack_env()["HFC_CATALOGUE_DSN"]
    with psycopg.connect(dsn) as conn:
        conn.execute("delete from hfc.batch where night = %s", (NIGHT_D,))
        conn.execute("insert into hfc.batch (frc, night, status, row_counts, slurm_job_id, issues) values "
                     "('ops-spots-b', %s, 'no_data', '{}', '7', '[]'), "
                     "('ops-sunspots', %s, 'loaded', '{\"sunspots\": 12}', '8', %s)",
                     (NIGHT_D, NIGHT_D, json.dumps([UNMATCHED])))
    try:
        yield seeded
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute("delete from hfc.batch where night = %s", (NIGHT_D,))


def test_status_page_in_browser_backfill_and_gallery(seeded, night_states):
    from playwright.sync_api import expect, sync_playwright

    api = seeded
    ARTIFACTS.mkdir(exist_ok=True)
    before = {b["id"] for b in api.get(f"/backfills?dag_id={DAG}&limit=100")["backfills"]}
    base = f"http://127.0.0.1:{ops_instance.PORT}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            # Log in as an operator would.
            page.goto(f"{base}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ops_instance.password())
            page.click("button[type=submit]")
            nav = page.get_by_role("link", name="HFC catalogue")
            expect(nav).to_be_visible(timeout=30_000)
            nav.click()
            frame = page.frame_locator("iframe").first
            heat = frame.locator("#heatmap")
            expect(heat).to_be_visible(timeout=30_000)

            def cell(frc: str, night: str):
                return frame.locator(f'td.c[data-frc="{frc}"][data-night="{night}"]')

            # The seeded nights, as the catalogue and Airflow have them.
            expect(cell("ops-sunspots", NIGHT_A)).to_have_attribute("data-state", "loaded")
            expect(cell("ops-spots-b", NIGHT_A)).to_have_attribute("data-state", "loaded")
            expect(cell("ops-sunspots", NIGHT_B)).to_have_attribute("data-state", "loaded")
            state_b = cell("ops-spots-b", NIGHT_B).get_attribute("data-state")
            assert state_b in ("missing", "failed"), state_b
            assert int(cell("ops-sunspots", NIGHT_A).inner_text()) > 0  # rows in the catalogue
            expect(cell("ops-sunspots", NIGHT_A)).to_have_attribute("data-clean", "true")

            # Night D: "no data" is a state of its own, "not clean" is marked; neither is a gap.
            no_data, unclean = cell("ops-spots-b", NIGHT_D), cell("ops-sunspots", NIGHT_D)
            expect(no_data).to_have_attribute("data-state", "no_data")
            expect(no_data).to_have_attribute("title", re.compile(r"no data \(the FRC ran and found no observation"))
            expect(no_data).to_have_text("∅")
            expect(unclean).to_have_attribute("data-state", "not_clean")
            expect(unclean).to_have_attribute("data-clean", "false")
            expect(unclean).to_have_attribute("title", re.compile(r"not clean: unmatched: a b\.csv"))
            expect(unclean).to_have_text("12!")
            assert no_data.evaluate("e => getComputedStyle(e).backgroundColor") != unclean.evaluate(
                "e => getComputedStyle(e).backgroundColor")
            assert "dashed" in unclean.evaluate("e => getComputedStyle(e).outlineStyle")
            for gap in frame.locator("li.gap").all():
                assert not gap.get_attribute("data-first") <= NIGHT_D <= gap.get_attribute("data-last"), (
                    gap.inner_text())

            # One click on the backfill of night B's gap (ops-spots-b only).
            button = frame.locator(f'button.backfill[data-first="{NIGHT_B}"]')
            expect(button).to_have_count(1)
            assert "ops-spots-b" in button.get_attribute("data-frcs")
            button.click()
            msg = frame.locator(f'li.gap[data-first="{NIGHT_B}"] .msg')
            expect(msg).to_contain_text("created", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "status_page.png"), full_page=True)

            # The night's quicklooks, contours drawn (click the heat map cell).
            cell("ops-sunspots", NIGHT_A).locator("a").click()
            gallery = frame.locator("#gallery img")
            expect(gallery.first).to_be_visible(timeout=30_000)
            n_images = gallery.count()
            frame.locator("#gallery img").last.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => [...document.querySelector('iframe').contentDocument.querySelectorAll('#gallery img')]"
                ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "status_gallery.png"), full_page=True)
        finally:
            browser.close()

    # The backfill exists in Airflow, for night B and ops-spots-b only.
    backfills = [b for b in api.get(f"/backfills?dag_id={DAG}&limit=100")["backfills"] if b["id"] not in before]
    assert len(backfills) == 1, backfills
    bf = backfills[0]
    assert bf["from_date"].startswith(NIGHT_B) and bf["to_date"].startswith(NIGHT_B), bf
    assert bf["dag_run_conf"] == {"frcs": ["ops-spots-b"]}, bf
    runs = api.get(f"/dags/{DAG}/dagRuns?run_type=backfill&logical_date_gte={NIGHT_B}T00:00:00Z"
                   f"&logical_date_lte={NIGHT_B}T00:00:00Z&limit=10")["dag_runs"]
    assert runs, "the backfill created no DAG run for night B"
    # Created with the logged-in user's own token: Airflow records who asked.
    assert all(r["triggering_user_name"] == "admin" and r["conf"] == {"frcs": ["ops-spots-b"]} for r in runs), runs
    print(f"\n[status page] backfill #{bf['id']} {bf['from_date']} → {bf['to_date']} conf {bf['dag_run_conf']}, "
          f"{len(runs)} run(s); gallery of ops-sunspots {NIGHT_A}: {n_images} quicklooks\n"
          f"[status page] screenshots: {ARTIFACTS / 'status_page.png'} and {ARTIFACTS / 'status_gallery.png'}")
    api.put_backfill_cancel(bf["id"])  # the DAG is paused: the run never started; leave nothing active
    assert n_images >= 1


# --------------------------------------------------------------------------- hostile input (issue 16, item 10)

BASE = f"http://127.0.0.1:{ops_instance.PORT}"
PAGE = f"{BASE}/hfc-status"
NIGHT_H = (TODAY - dt.timedelta(days=12)).isoformat()  # hostile manifest and catalogue rows
SAMPLE = {"frc": "ops-sunspots", "night": NIGHT_A, "name": "x.png"}
EVIL_ORIGIN = "http://evil.example"


def _passwords() -> dict[str, str]:
    with open(ops_instance.stack_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
        return json.load(f)


def _token(user: str) -> str:
    r = httpx.post(f"{BASE}/auth/token", json={"username": user, "password": _passwords()[user]}, timeout=30)
    assert r.status_code in (200, 201), f"login of {user}: {r.status_code} {r.text}"
    return r.json()["access_token"]


def _client(user: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {_token(user)}"} if user else {}
    return httpx.Client(headers=headers, timeout=120, follow_redirects=False)


def _route_table() -> list[tuple[str, str]]:
    """(method, path) of every route of the app, as its own route table lists them, plus the
    docs FastAPI would add (whatever the app says) and a path that matches no route."""
    from hfc_tasks.provider.status_app import create_app

    out = set()
    for route in create_app().routes:
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLE.get(m[1], "x"), route.path)
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            out.add((method, path))
    for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/no-such-route"):
        out.add(("GET", path))
    return sorted(out)


def _backfill_ids(api) -> set[int]:
    return {b["id"] for b in api.get(f"/backfills?dag_id={DAG}&limit=100")["backfills"]}


def test_anonymous_gets_401_on_every_route(ops):
    routes = _route_table()
    assert ("GET", "/") in routes and ("POST", "/api/backfill") in routes and len(routes) >= 14, routes
    answers = {}
    with _client(None) as http:
        for method, path in routes:
            r = http.request(method, PAGE + path, json={} if method == "POST" else None)
            answers[f"{method} {path}"] = r.status_code
            if method != "HEAD":
                assert "HFC catalogue" not in r.text and "openapi" not in r.text, (method, path, r.text[:300])
    assert set(answers.values()) == {401}, answers
    print(f"\n[status page] anonymous: 401 on {len(answers)} routes: {sorted(answers)}")


def test_permissions_through_airflows_auth_manager(ops):
    api = ops
    before = _backfill_ids(api)
    body = {"first": "2020-01-01", "last": "2020-01-01", "frcs": ["ops-spots-b"]}
    with _client("viewer") as http:
        # A viewer reads everything of the DAG...
        for path in ("/", "/api/heatmap", f"/batch/ops-sunspots/{NIGHT_A}?format=json"):
            r = http.get(PAGE + path)
            assert r.status_code == 200, (path, r.status_code, r.text[:500])
        # ...but may not create runs of it: refused by the auth manager, before any REST call.
        r = http.post(PAGE + "/api/backfill", json=body, headers={"Origin": BASE})
        assert r.status_code == 403, r.text
        assert "viewer" in r.json()["detail"] and f"create runs of DAG {DAG}" in r.json()["detail"], r.text
    with _client("nobody") as http:  # logged in, but no right on the DAG at all
        for path in ("/", "/api/heatmap", "/api/gaps", f"/gallery?frc=ops-sunspots&night={NIGHT_A}",
                     f"/batch/ops-sunspots/{NIGHT_A}", f"/archive/ops-sunspots/{NIGHT_A}",
                     f"/quicklook/ops-sunspots/{NIGHT_A}/x.png", f"/job-output/ops-sunspots/{NIGHT_A}?job_id=1"):
            r = http.get(PAGE + path)
            detail = r.json()["detail"]
            assert r.status_code == 403 and "'nobody' may not read" in detail and f"DAG {DAG}" in detail, (path, detail)
        r = http.post(PAGE + "/api/backfill", json=body, headers={"Origin": BASE})
        assert r.status_code == 403, r.text
    assert _backfill_ids(api) == before


def test_backfill_checks_origin_and_content_type(ops):
    api = ops
    before = _backfill_ids(api)
    # A body that would be refused (400) after the checks: a wrong request never gets that far.
    body = {"first": "2020-01-01", "last": "2020-01-01", "reprocess_behavior": "bogus"}
    token = _token("admin")
    with _client("admin") as http:
        for origin in (EVIL_ORIGIN, "null", f"{BASE}.evil.example", "http://127.0.0.1:8080"):
            r = http.post(PAGE + "/api/backfill", json=body, headers={"Origin": origin})
            assert r.status_code == 403 and "Origin" in r.json()["detail"], (origin, r.status_code, r.text)
        for ctype, data in (("text/plain", json.dumps(body)), ("application/x-www-form-urlencoded", "first=2020-01-01"),
                            ("multipart/form-data; boundary=x", "--x--"), (None, json.dumps(body))):
            headers = {"Origin": BASE, **({"Content-Type": ctype} if ctype else {})}
            r = http.post(PAGE + "/api/backfill", content=data.encode(), headers=headers)
            assert r.status_code == 415 and "application/json" in r.json()["detail"], (ctype, r.status_code, r.text)
        r = http.post(PAGE + "/api/backfill", json=body, headers={"Origin": BASE})
        assert r.status_code == 400 and "bogus" in r.json()["detail"], r.text  # the checks passed
    # A browser session (cookie) must send an Origin: none at all is refused too.
    with httpx.Client(cookies={"_token": token}, timeout=60) as browser:
        r = browser.post(PAGE + "/api/backfill", json=body)
        assert r.status_code == 403 and "Origin" in r.json()["detail"], r.text
        r = browser.post(PAGE + "/api/backfill", json=body, headers={"Origin": EVIL_ORIGIN})
        assert r.status_code == 403, r.text
    assert _backfill_ids(api) == before


def test_bad_parameters_answer_400_with_the_reason(ops):
    cases = {
        "/api/heatmap?first=2024-03-10&last=2024-03-01": "after",
        "/?first=2024-03-10&last=2024-03-01": "after",
        "/api/gaps?last=9999-12-31": "future",
        "/api/heatmap?first=9999-12-31&last=9999-12-31": "future",
        "/api/heatmap?first=not-a-date": "not a date",
        "/api/heatmap?first=2000-01-01&last=2024-01-01": "366",
        "/gallery?frc=ops-sunspots&night=2024-02-30": "not a date",
        "/gallery?frc=..%2Fetc&night=2024-02-01": "FRC name",
        "/gallery?frc=ops-sunspots&night=2024-02-01&overlay=yes": "overlay",
        "/gallery?night=2024-02-01": "frc",
        "/batch/ops%3Bsunspots/2024-02-01": "FRC name",
        "/batch/ops-sunspots/20240201x": "not a date",
        "/batch/ops-sunspots/2024-02-01?format=xml": "format",
        "/archive/OPS<script>/2024-02-01": "FRC name",
        "/quicklook/ops-sunspots/2024-02-01/x..y.png": "name",
        "/quicklook/ops-sunspots/2024-02-01/%3Cscript%3E.png": "name",
        "/quicklook/ops-sunspots/2024-02-01/a%20b.png": "name",
        "/job-output/ops-sunspots/2024-02-01?job_id=1;id": "job id",
        "/job-output/ops-sunspots/2024-02-01?job_id=1&lines=-5": "lines",
        "/job-output/ops-sunspots/2024-02-01?job_id=1&lines=many": "lines",
    }
    seen = {}
    with _client("admin") as http:
        for path, words in cases.items():
            r = http.get(PAGE + path)
            seen[path] = r.status_code
            assert r.status_code in (400, 404), (path, r.status_code, r.text[:500])
            detail = r.json()["detail"]
            assert r.status_code == 400 and words in detail, (path, r.status_code, detail)
            # The reason may quote the input: as JSON, never sniffed as HTML.
            assert r.headers["content-type"] == "application/json", r.headers
            assert r.headers["x-content-type-options"] == "nosniff", r.headers
        # A name with slashes matches no route at all: 404 (never a file read).
        r = http.get(PAGE + "/quicklook/ops-sunspots/2024-02-01/..%2F..%2Fetc%2Fpasswd")
        assert r.status_code == 404 and "root:" not in r.text, r.text
        # An FRC name of the right form that the registry does not know: 404, naming it.
        r = http.get(PAGE + "/batch/no-such-frc/2024-02-01")
        assert r.status_code == 404 and "no-such-frc" in r.json()["detail"], r.text
        r = http.post(PAGE + "/api/backfill", json={"first": "2024-03-05", "last": "2024-03-01"},
                      headers={"Origin": BASE})
        assert r.status_code == 400 and "after" in r.json()["detail"], r.text
        r = http.post(PAGE + "/api/backfill", content=b"{not json", headers={"Origin": BASE,
                                                                           "Content-Type": "application/json"})
        assert r.status_code == 400, r.text
    print(f"\n[status page] bad parameters: {seen}")


def _manifest_path(frc: str, night: str) -> str:
    """The manifest of (frc, night) on the ops archive (whatever products.manifest_relpath takes)."""
    import inspect

    from hfc_tasks import products
    from hfc_tasks.registry import load_registry

    reg = load_registry(ops_instance.env()["HFC_REGISTRY"])
    day = dt.date.fromisoformat(night)
    args = (reg.frc(frc).archive_dir, frc, day)
    if len(inspect.signature(products.manifest_relpath).parameters) == 2:
        args = (reg.frc(frc).archive_dir, day)
    return posixpath.join(reg.site().archive_root, products.manifest_relpath(*args))


HOSTILE = [
    {"name": "<script>alert('name')</script>.png", "kind": "<img src=x onerror=alert('kind')>",
     "size": "<b>size</b>", "sha256": "<i>sha</i>", "archive_path": "/etc/passwd"},
    {"name": "up.csv", "kind": "feat", "size": 1, "sha256": "0" * 64, "archive_path": "../../../../etc/passwd"},
    {"name": "dotdot.csv", "kind": "feat", "size": 1, "sha256": "0" * 64, "archive_path": "ops/../../x"},
    {"name": "fine.csv", "kind": "feat", "size": 12, "sha256": "1" * 64, "archive_path": "ops/2024/fine.csv"},
    "<script>alert('entry')</script>",
]


@pytest.fixture
def hostile(ops):
    """A hostile manifest written on the real archive over SFTP (night H of ops-sunspots), and a
    catalogue batch of that night whose files name paths outside the archive and carry markup."""
    from hfc_tasks.provider.hooks import sftp_session
    from hfc_tasks.registry import load_registry

    site = load_registry(ops_instance.env()["HFC_REGISTRY"]).site()
    path = _manifest_path("ops-sunspots", NIGHT_H)
    manifest = {"format": 1, "frc": "ops-sunspots", "night": NIGHT_H, "files": HOSTILE,
                "slurm_job_id": "<script>alert('job')</script>", "unmatched": ["<script>alert('left')</script>"],
                "stale": [{"name": "<script>alert('stale')</script>", "kind": "feat", "archive_path": "/etc/shadow"}]}
    dsn = ops_instance.stack_env()["HFC_CATALOGUE_DSN"]
    with sftp_session(site.archive_conn_id) as sftp:
        parts = path.split("/")
        for i in range(2, len(parts)):
            try:
                sftp.mkdir("/".join(parts[:i]))
            except OSError:
                pass
        with sftp.open(path, "wb") as f:
            f.write(json.dumps(manifest).encode())
    with psycopg.connect(dsn) as conn:
        conn.execute("delete from hfc.batch where frc = 'ops-sunspots' and night = %s", (NIGHT_H,))
        bid = conn.execute("insert into hfc.batch (frc, night, status, row_counts, slurm_job_id) "
                           "values ('ops-sunspots', %s, 'loaded', '{}', '1') returning id", (NIGHT_H,)).fetchone()[0]
        for name, kind, sha, apath in (("evil.png", "quicklook", "0" * 64, "/etc/passwd"),
                                       ("evil2.png", "quicklook", "0" * 64, "../../../../../../etc/passwd"),
                                       ("<script>alert('file')</script>", "<img src=x onerror=alert(1)>",
                                        "<b>sha</b>", "ops/x.csv")):
            conn.execute("insert into hfc.batch_file (batch_id, name, archive_path, sha256, kind) "
                         "values (%s, %s, %s, %s, %s)", (bid, name, apath, sha, kind))
    try:
        yield path
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute("delete from hfc.batch where frc = 'ops-sunspots' and night = %s", (NIGHT_H,))
        with sftp_session(site.archive_conn_id) as sftp:
            sftp.remove(path)


def test_hostile_manifest_and_catalogue_paths_are_escaped_and_refused(hostile):
    passwd = Path("/etc/passwd").read_text().splitlines()[0]  # root:x:0:0:...
    with _client("admin") as http:
        r = http.get(f"{PAGE}/archive/ops-sunspots/{NIGHT_H}")
        assert r.status_code == 200, r.text[:500]
        page = r.text
        # Markup from the manifest is shown as text, never as markup.
        for raw in ("<script>alert", "<img src=x", "<b>size", "<i>sha"):
            assert raw not in page, raw
        assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;.png" in page
        assert "&lt;img src=x onerror=alert(&#x27;kind&#x27;)&gt;" in page
        # Paths out of the archive are refused, row by row; the good entry keeps its public URL.
        # /etc/passwd, ../.., ops/../.., an entry that is no object, the stale entry's /etc/shadow
        assert page.count('class="refused"') == 5, page
        assert "&lt;script&gt;alert(&#x27;left&#x27;)&lt;/script&gt;" in page  # the unmatched file's name
        assert "ops/2024/fine.csv" in page and "file:///etc/passwd" not in page and passwd not in page
        # The catalogue's copy of such a path is never served either.
        for name in ("evil.png", "evil2.png"):
            for overlay in (0, 1):
                r = http.get(f"{PAGE}/quicklook/ops-sunspots/{NIGHT_H}/{name}?overlay={overlay}")
                assert r.status_code == 403, (name, r.status_code, r.text[:300])
                assert "outside the archive root" in r.json()["detail"] and passwd not in r.text
        r = http.get(f"{PAGE}/batch/ops-sunspots/{NIGHT_H}")
        assert r.status_code == 200 and "<script>alert" not in r.text and "<img src=x" not in r.text, r.text
        assert "&lt;script&gt;alert(&#x27;file&#x27;)&lt;/script&gt;" in r.text
        r = http.get(f"{PAGE}/gallery?frc=ops-sunspots&night={NIGHT_H}")
        assert r.status_code == 200 and "<script>alert" not in r.text, r.text
        # Every HTML page forbids scripts other than its own (nonce), and sniffing.
        assert "script-src 'nonce-" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
