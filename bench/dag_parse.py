"""Benchmark: parse time of dags/hfc_nightly.py with the full registry vs a trivial DAG file.

Measured the way the dag-processor pays it: in a fresh interpreter that has already imported
Airflow's SDK (the processor forks from such a process), time the DagBag fill of one file.
Each figure is the median of N fresh interpreters.

    .venv/bin/python bench/dag_parse.py --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = '''
import datetime as dt
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="trivial", schedule="@daily", start_date=dt.datetime(2024, 1, 1)):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
'''
SAME_SHAPE = '''
import datetime as dt
from airflow.sdk import DAG, TaskGroup
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="same_shape", schedule="@daily", start_date=dt.datetime(2024, 1, 1)):
    for i in range(11):
        with TaskGroup(group_id=f"frc{i}"):
            a, b, c, d = (EmptyOperator(task_id=t) for t in ("submit", "wait", "archive", "catalogue"))
            a >> b >> c >> d
'''
PROBE = '''
import sys, time
import airflow.sdk  # already paid by the dag-processor's parent
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
dt = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print("RESULT", dt, sum(len(d.tasks) for d in bag.dags.values()))
'''


def measure(folder: Path, env: dict, runs: int) -> tuple[float, int]:
    times, tasks = [], 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True,
                             env=env, check=True).stdout
        seconds, tasks = out.split("RESULT ", 1)[1].split()[:2]
        times.append(float(seconds))
    return statistics.median(times), int(tasks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "trivial").mkdir()
        (tmp / "trivial" / "trivial.py").write_text(TRIVIAL)
        (tmp / "same_shape").mkdir()
        (tmp / "same_shape" / "same_shape.py").write_text(SAME_SHAPE)
        # The full registry: every FRC of config/registry.yaml on one site at once.
        raw = yaml.safe_load((REPO / "config" / "registry.yaml").read_text())
        for frc in raw["frcs"]:
            frc.pop("sites", None)
        full = tmp / "registry-full.yaml"
        full.write_text(yaml.safe_dump(raw))
        base = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        trivial_s, trivial_tasks = measure(tmp / "trivial", base, args.runs)
        shape_s, shape_tasks = measure(tmp / "same_shape", base, args.runs)
        local_s, local_tasks = measure(REPO / "dags", base, args.runs)
        full_s, full_tasks = measure(REPO / "dags", {**base, "HFC_REGISTRY": str(full)}, args.runs)
    print(json.dumps({
        "runs": args.runs,
        "trivial": {"seconds": round(trivial_s, 4), "tasks": trivial_tasks},
        "trivial_same_shape": {"seconds": round(shape_s, 4), "tasks": shape_tasks},
        "hfc_nightly_local_site": {"seconds": round(local_s, 4), "tasks": local_tasks},
        "hfc_nightly_full_registry": {"seconds": round(full_s, 4), "tasks": full_tasks,
                                      "ratio_to_trivial": round(full_s / trivial_s, 2),
                                      "ratio_to_same_shape": round(full_s / shape_s, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
