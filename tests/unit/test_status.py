"""The status page's logic without Airflow: cells, gaps, backfill bodies, contours on quicklooks."""

from __future__ import annotations

import datetime as dt
import io

from PIL import Image

from hfc_tasks import gallery, status

D = dt.date
FRCS = ["a", "b"]
NIGHTS = status.night_range(D(2024, 3, 1), D(2024, 3, 6))


def batch(frc, night, status_="loaded", rows=10, rejected=0, issues=None):
    return status.Batch(id=hash((frc, night)) % 1000, frc=frc, night=night, status=status_, rows=rows,
                        row_counts={"sunspots": rows}, rejected_files=rejected, issues=issues or [])


def run(run_id, night=None, state="success", interval=None, frcs=None, after="2024-03-10T00:00:00Z"):
    conf = {}
    if night:
        conf["night"] = night
    if frcs:
        conf["frcs"] = frcs
    return {"dag_run_id": run_id, "state": state, "conf": conf, "data_interval_start": interval,
            "logical_date": interval, "run_after": after}


def ti(run_id, task_id, state):
    return {"dag_run_id": run_id, "task_id": task_id, "state": state}


def test_run_night_from_conf_or_interval():
    assert status.run_night(run("r", night="2024-03-02")) == D(2024, 3, 2)
    assert status.run_night(run("r", interval="2024-03-03T00:00:00Z")) == D(2024, 3, 3)
    assert status.run_night(run("r")) is None
    assert status.run_frcs(run("r", frcs=["b"]), FRCS) == ["b"]
    assert status.run_frcs(run("r"), FRCS) == FRCS


def test_heatmap_states():
    batches = {("a", D(2024, 3, 1)): batch("a", D(2024, 3, 1)),
               ("b", D(2024, 3, 1)): batch("b", D(2024, 3, 1), "partial", rejected=2),
               ("a", D(2024, 3, 2)): batch("a", D(2024, 3, 2))}
    runs = [run("r2", night="2024-03-02", state="failed"),
            run("r3", interval="2024-03-03T00:00:00Z", state="running"),
            run("r4", night="2024-03-04", frcs=["a"], state="success")]
    tis = [ti("r2", "a.catalogue", "success"), ti("r2", "b.wait", "failed"), ti("r2", "b.archive", "upstream_failed"),
           ti("r3", "a.submit", "success"), ti("r3", "a.wait", "deferred"), ti("r3", "b.catalogue", "success")]
    heat = status.build_heatmap(FRCS, NIGHTS, batches, runs, tis)
    state = {k: c.state for k, c in heat.cells.items()}
    assert state[("a", "2024-03-01")] == "loaded" and heat.cell("a", "2024-03-01").rows == 10
    assert state[("b", "2024-03-01")] == "rejected" and heat.cell("b", "2024-03-01").rejected_files == 2
    assert state[("a", "2024-03-02")] == "loaded"
    assert state[("b", "2024-03-02")] == "failed" and heat.cell("b", "2024-03-02").tasks["wait"] == "failed"
    assert state[("a", "2024-03-03")] == "running"
    assert state[("b", "2024-03-03")] == "missing"  # its tasks are done in that run, and no batch
    assert state[("a", "2024-03-04")] == "missing"  # the run succeeded but loaded nothing
    assert heat.cell("b", "2024-03-04").run_id is None  # that run did not cover b
    assert heat.counts() == {"loaded": 2, "not_clean": 0, "rejected": 1, "no_data": 0, "running": 1, "failed": 1,
                            "missing": 7}


def test_gaps_split_by_frcs_and_skip_running_nights():
    batches = {(f, n): batch(f, n) for f in FRCS for n in NIGHTS}
    for key in [("a", D(2024, 3, 2)), ("b", D(2024, 3, 2)), ("a", D(2024, 3, 3)), ("b", D(2024, 3, 3)),
                ("b", D(2024, 3, 4)), ("b", D(2024, 3, 6))]:
        del batches[key]
    runs = [run("r4", night="2024-03-04", state="success"), run("r6", night="2024-03-06", state="running")]
    heat = status.build_heatmap(FRCS, NIGHTS, batches, runs, [ti("r6", "b.wait", "running")])
    gaps = status.find_gaps(heat)
    assert [(g.first, g.last, g.frcs, g.nights, g.reprocess_behavior) for g in gaps] == [
        ("2024-03-02", "2024-03-03", ["a", "b"], 2, "none"),
        ("2024-03-04", "2024-03-04", ["b"], 1, "completed"),  # its run succeeded: re-run it
    ]  # 2024-03-06 is running: no gap


def test_backfill_body():
    gap = status.Gap(first="2024-03-02", last="2024-03-03", frcs=["b"], nights=2, reprocess_behavior="failed")
    body = status.backfill_body(gap, dag_params={"night": {}, "frcs": {}})
    assert body == {"dag_id": "hfc_nightly", "from_date": "2024-03-02T00:00:00Z", "to_date": "2024-03-03T00:00:00Z",
                    "reprocess_behavior": "failed", "max_active_runs": 3, "run_backwards": False,
                    "dag_run_conf": {"frcs": ["b"]}}
    # A DAG without the frcs param runs whole nights.
    assert status.backfill_body(gap, dag_params={"night": {}})["dag_run_conf"] == {}


def test_chain_code_contour_and_drawing():
    # A 3x3 square from (10, 20): E E N N W W S S in the FRC's frame (+y north).
    feat = gallery.Feature(x=11, y=21, cc_x=10, cc_y=20, cc="00224466")
    pts = feat.contour()
    assert pts[0] == (10, 20) and pts[2] == (12, 20) and pts[4] == (12, 22) and pts[-1] == (10, 20)
    assert gallery.Feature(x=1, y=2).contour() == []
    # A black 64x64 quicklook of a 128x128 image: contour drawn red, north up (y flipped).
    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="JPEG")
    png = gallery.draw_features(buf.getvalue(), [feat, gallery.Feature(x=100, y=100)], 128, 128)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (64, 64)
    px = img.load()
    red = [(x, y) for x in range(64) for y in range(64) if px[x, y][0] > 200 and px[x, y][1] < 100]
    assert red and all(4 <= x <= 7 and 52 <= y <= 59 for x, y in red), red  # rows 20..22 -> near the bottom
    yellow = img.getpixel((50, 13))  # the position-only feature at (100, 100): a cross
    assert yellow[0] > 200 and yellow[1] > 150


# --------------------------------------------------------------------------- issue 16

def test_no_data_and_not_clean_cells_are_not_gaps():
    """A night the FRC ran and found nothing is 'no_data' (not a gap); a night whose manifest
    reported unmatched or stale files is 'not_clean' (not green, not a gap either)."""
    issues = [{"issue": "unmatched", "name": "a b.csv"},
              {"issue": "stale", "name": "old_feat.csv", "archive_path": "x/old_feat.csv", "slurm_job_id": "41"}]
    batches = {("a", D(2024, 3, 1)): batch("a", D(2024, 3, 1), "no_data", rows=0),
               ("b", D(2024, 3, 1)): batch("b", D(2024, 3, 1), issues=issues),
               ("a", D(2024, 3, 2)): batch("a", D(2024, 3, 2), "partial", rejected=1, issues=issues),
               ("b", D(2024, 3, 2)): batch("b", D(2024, 3, 2), "no_data", rows=0, issues=issues[:1])}
    heat = status.build_heatmap(FRCS, NIGHTS[:3], batches, [], [])
    state = {k: c.state for k, c in heat.cells.items()}
    assert state[("a", "2024-03-01")] == "no_data" and heat.cell("a", "2024-03-01").clean
    assert state[("b", "2024-03-01")] == "not_clean" and not heat.cell("b", "2024-03-01").clean
    assert heat.cell("b", "2024-03-01").issues == issues
    assert state[("a", "2024-03-02")] == "rejected" and not heat.cell("a", "2024-03-02").clean
    assert state[("b", "2024-03-02")] == "no_data" and not heat.cell("b", "2024-03-02").clean
    assert heat.counts() == {"loaded": 0, "not_clean": 1, "rejected": 1, "no_data": 2, "running": 0,
                             "failed": 0, "missing": 2}
    # Only 2024-03-03 (nothing at all) is a gap: no_data and not_clean nights are never backfilled.
    assert [(g.first, g.last, g.frcs) for g in status.find_gaps(heat)] == [("2024-03-03", "2024-03-03", ["a", "b"])]
    assert status.issue_text(issues[0]) == "unmatched: a b.csv (left on the cluster: not an HFC product name)"
    assert status.issue_text(issues[1]) == ("stale: old_feat.csv (produced by an earlier job of the night, not by "
                                            "this one: kept on the archive, not loaded (job 41))")
    assert status.issue_text({"issue": "odd"}) == 'odd: {"issue": "odd"}'
    assert status.issue_text("free text") == "free text"


def test_archive_paths_stay_under_the_archive_root():
    root = "/srv/archive/hfc"
    assert status.archive_file(root, "demo/2024/a.csv") == "/srv/archive/hfc/demo/2024/a.csv"
    for bad in ("/etc/passwd", "../../x", "demo/../../x", "demo/../x", "", ".", "a/./../b", "a\x00b",
                "a\\..\\b", None, 7, ["a"]):
        try:
            status.archive_file(root, bad)
        except ValueError as exc:
            assert "archive_path" in str(exc) and "archive root" in str(exc), exc
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_night_range_of_a_query():
    today = D(2024, 3, 10)
    assert status.query_range(None, None, today) == (D(2024, 2, 9), D(2024, 3, 9))
    assert status.query_range("2024-03-01", "20240305", today) == (D(2024, 3, 1), D(2024, 3, 5))
    bad = [("2024-03-05", "2024-03-01", "after"), (None, "9999-12-31", "future"),
           ("9999-12-31", "9999-12-31", "future"), ("2024-13-01", None, "not a date"),
           ("x<script>", None, "not a date"), ("2020-01-01", "2024-03-01", "at most 366"),
           ("1066-10-14", "1066-10-15", "before")]
    for first, last, words in bad:
        try:
            status.query_range(first, last, today)
        except ValueError as exc:
            assert words in str(exc), (first, last, exc)
        else:
            raise AssertionError(f"{first}..{last} accepted")
