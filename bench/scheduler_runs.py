"""Benchmarks on the real scheduler stack (issue 6): orchestration overhead of one night, and
a backfill of many nights.

Runs its own stack instance (``HFC_AIRFLOW_INSTANCE=bench``, port 8178) so it never disturbs
another stack, with the project's registry, or a copy whose demo commands first ``sleep S``
seconds (``--job-seconds``) to stand for the minutes a production FRC computes.

Overhead = run wall time (DAG run start → end) minus the critical path of SLURM job run
times (detector job + tracker job: the tracker starts after the detector's catalogue stage).

    set -a; eval "$(.venv/bin/hfc site env)"; set +a
    .venv/bin/python bench/scheduler_runs.py night --job-seconds 0
    .venv/bin/python bench/scheduler_runs.py night --job-seconds 120
    .venv/bin/python bench/scheduler_runs.py backfill --nights 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HFC_AIRFLOW_INSTANCE", "bench")
os.environ.setdefault("HFC_AIRFLOW_PORT", "8178")

from hfc_tasks import airflow_stack  # noqa: E402 - instance chosen above
from hfc_tasks.airflow_api import AirflowAPI  # noqa: E402
from hfc_tasks.ops.localsite import slurm_conf_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DAG = "hfc_nightly"


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def start(job_seconds: int) -> AirflowAPI:
    if job_seconds:
        raw = yaml.safe_load((REPO / "config" / "registry.yaml").read_text())
        for frc in raw["frcs"]:
            if frc["name"].startswith("demo-"):
                frc["command"] = f"sleep {job_seconds} && {frc['command']}"
        path = Path(tempfile.mkdtemp()) / "registry.yaml"
        path.write_text(yaml.safe_dump(raw))
        wanted = str(path)
    else:
        wanted = ""
    if airflow_stack.running_registry() not in (None, wanted):
        airflow_stack.down()
    if wanted:
        os.environ["HFC_REGISTRY"] = wanted
    airflow_stack.up(verbose=False)
    env = airflow_stack.stack_env()
    password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())["admin"]
    api = AirflowAPI(f"http://127.0.0.1:{airflow_stack.PORT}", "admin", password)
    api.wait_for_dag(DAG)
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    return api


def sacct_elapsed(job_id: str) -> float:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "ElapsedRaw"], capture_output=True,
                         text=True, check=True, env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin"})
    return float(out.stdout.split()[-1])


def night(args) -> dict:
    api = start(args.job_seconds)
    the_night = (dt.date(2080, 1, 1) + dt.timedelta(days=random.randrange(3000))).isoformat()
    run_id = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": the_night}})["dag_run_id"]
    state = api.wait_run(DAG, run_id, timeout=3600)
    run = api.get(f"/dags/{DAG}/dagRuns/{run_id}")
    wall = ts(run["end_date"]) - ts(run["start_date"])
    tis = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    jobs = {}
    for ti in tis:
        if ti["task_id"].endswith(".submit"):
            job_id = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/xcomEntries/return_value")
            jobs[ti["task_id"].split(".")[0]] = sacct_elapsed(str(json.loads(job_id["value"])
                                                                   if isinstance(job_id["value"], str)
                                                                   and job_id["value"].startswith('"')
                                                                   else job_id["value"]))
    critical = sum(jobs.values())  # detector then tracker: the only path
    api.patch(f"/dags/{DAG}", {"is_paused": True})
    return {"bench": "night", "state": state, "job_seconds_added": args.job_seconds, "run_wall_s": round(wall, 1),
            "slurm_job_elapsed_s": jobs, "critical_path_s": critical, "overhead_s": round(wall - critical, 1),
            "overhead_pct_of_wall": round(100 * (wall - critical) / wall, 1)}


def backfill(args) -> dict:
    api = start(0)
    first = dt.date(2018, 1, 1) + dt.timedelta(days=random.randrange(0, 300))
    last = first + dt.timedelta(days=args.nights - 1)
    t0 = time.monotonic()
    bf = api.post("/backfills", {"dag_id": DAG, "from_date": f"{first}T00:00:00Z", "to_date": f"{last}T00:00:00Z",
                                 "max_active_runs": args.max_active_runs, "reprocess_behavior": "none"})
    while True:
        b = api.get(f"/backfills/{bf['id']}")
        if b["completed_at"]:
            break
        if time.monotonic() - t0 > 7200:
            raise SystemExit("backfill not done in 2 h")
        time.sleep(5)
    wall = time.monotonic() - t0
    runs = [r for r in api.get(f"/dags/{DAG}/dagRuns?limit=1000&run_type=backfill")["dag_runs"]
            if str(first) <= r["data_interval_start"][:10] <= str(last)]
    api.patch(f"/dags/{DAG}", {"is_paused": True})
    states: dict[str, int] = {}
    for r in runs:
        states[r["state"]] = states.get(r["state"], 0) + 1
    return {"bench": "backfill", "nights": args.nights, "max_active_runs_of_dag": 3,
            "backfill_max_active_runs": args.max_active_runs, "wall_s": round(wall, 1),
            "per_night_s": round(wall / args.nights, 1), "run_states": states}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("night")
    p.add_argument("--job-seconds", type=int, default=0)
    p = sub.add_parser("backfill")
    p.add_argument("--nights", type=int, default=30)
    p.add_argument("--max-active-runs", type=int, default=10)
    a = ap.parse_args()
    print(json.dumps(night(a) if a.what == "night" else backfill(a)))
    sys.stdout.flush()
