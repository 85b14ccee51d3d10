"""The status page's logic without Airflow: cells, gaps, backfill bodies, contours on quicklooks."""

from __future__ import annotations

import datetime as dt
import io

from PIL import Image

from hfc_tasks import status

D = dt.date
FRCS = ["a", "b"]
NIGHTS = status.night_range(D(2024, 3, 1), D(2024, 3, 6))


def batch(frc, night, status_="loaded", rows=10, rejected=0):
    return status.Batch(id=hash((frc, night)) % 1000, frc=frc, night=night, status=status_, rows=rows,
                        row_counts={"sunspots": rows}, rejected_files=rejected)


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
    assert heat.counts() == {"loaded": 2, "rejected": 1, "running": 1, "failed": 1, "missing": 7}


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
    feat = status.Feature(x=11, y=21, cc_x=10, cc_y=20, cc="00224466")
    pts = feat.contour()
    assert pts[0] == (10, 20) and pts[2] == (12, 20) and pts[4] == (12, 22) and pts[-1] == (10, 20)
    assert status.Feature(x=1, y=2).contour() == []
    # A black 64x64 quicklook of a 128x128 image: contour drawn red, north up (y flipped).
    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="JPEG")
    png = status.draw_features(buf.getvalue(), [feat, status.Feature(x=100, y=100)], 128, 128)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (64, 64)
    px = img.load()
    red = [(x, y) for x in range(64) for y in range(64) if px[x, y][0] > 200 and px[x, y][1] < 100]
    assert red and all(4 <= x <= 7 and 52 <= y <= 59 for x, y in red), red  # rows 20..22 -> near the bottom
    yellow = img.getpixel((50, 13))  # the position-only feature at (100, 100): a cross
    assert yellow[0] > 200 and yellow[1] > 150
