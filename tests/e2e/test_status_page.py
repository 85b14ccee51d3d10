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
import time
from pathlib import Path

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
def seeded(site):
    """The ops instance with nights A (both FRCs) and B (ops-sunspots only) really run."""
    ops_instance.ensure_packages()
    api, _ = ops_instance.up()
    api.put_backfill_cancel = lambda i: api.call("PUT", f"/backfills/{i}/cancel")
    api.wait_for_dag(DAG)
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


def test_status_page_in_browser_backfill_and_gallery(seeded):
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
