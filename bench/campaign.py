"""Benchmark of a reprocessing campaign (issue 15): N nights of the demo detector (demo-sunspots),
side by side in one run on the local site.

1. ``floor``: the same work without orchestration. ``sbatch --array`` (over OpenSSH, as the
   cluster account) of the same batch script as the campaign's (the registry's command rendered
   per night: :func:`hfc_tasks.campaign.array_tasks`, :func:`hfc_tasks.slurm.array_batch_script`,
   the same ``sbatch`` options), waited on with ``squeue`` every second, then for each night in
   turn the archive copy (:func:`hfc_tasks.archive.archive_night`, what the ``archive`` task runs:
   copy, sha256 on the archive, manifest, delete on the cluster) and ``hfc ingest <manifest>``
   (the CLI's ``main``, called in this process: no interpreter start per night).
2. ``campaign``: DAG ``hfc_campaign`` triggered through the REST API with ``{frc, first, last,
   campaign_id}`` on an Airflow instance of its own (``HFC_AIRFLOW_INSTANCE=c15bench``, port 8126,
   its own catalogue database ``hfc_c15bench``), waited for. Wall time from the trigger to the
   run's end state; orchestration per night = (campaign wall - floor wall) / N; the metadata
   database's growth (``pg_database_size``, rows per table); CPU seconds of the instance's
   processes during the run (scheduler alone, the scheduler's tree: executor workers and task
   processes, triggerer, dag-processor, api-server).
3. ``backfill`` (``--backfill-nights``, default 30; ``--skip-backfill``): today's way, a backfill of
   ``hfc_nightly`` for demo-sunspots only (``dag_run_conf: {"frcs": ["demo-sunspots"]}``), a
   sample of past nights (2025: a backfill refuses future dates), the same measures; the
   N-night figure is an extrapolation (per night x N) and is labelled so. Unpausing ``hfc_nightly``
   on an instance that never ran it also starts its latest scheduled run (yesterday, every FRC)
   beside the backfill: run the bench once before measuring, or read the backfill's figures with
   that in mind.

Nights: the floor runs year Y, the campaign year Y + 1 (both from 1 January), Y a random even
year of 2100-2198 not yet in the archive (``--year``); nothing else uses those years. Afterwards
(unless ``--keep-data``) the bench removes what it made on the cluster (run folders, the arrays'
log folders) and on the archive (each night's files as its manifest lists them, and the manifest);
the catalogue rows stay in the instance's own database ``hfc_c15bench``. The instance is stopped
at the end unless ``--keep-stack``.

Run (as root, local site up; other helpers run site tests: take the lock)::

    set -a; eval "$(.venv/bin/hfc site env)"; set +a
    flock /tmp/hfc/e2e.lock .venv/bin/python bench/campaign.py --nights 365 --json /tmp/campaign.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HFC_AIRFLOW_INSTANCE", "c15bench")
os.environ.setdefault("HFC_AIRFLOW_PORT", "8126")
os.environ.setdefault("HFC_AIRFLOW_CATALOGUE_DB", "hfc_c15bench")

import psutil  # noqa: E402
import psycopg  # noqa: E402

from hfc_tasks import campaign, products, slurm  # noqa: E402
from hfc_tasks.archive import ArchiveTarget, Endpoint, archive_night  # noqa: E402
from hfc_tasks.ops import airflow_instance, airflow_stack  # noqa: E402
from hfc_tasks.registry import load_registry  # noqa: E402

FRC = "demo-sunspots"
CAMPAIGN_DAG = "hfc_campaign"
NIGHTLY_DAG = "hfc_nightly"
SQUEUE_POLL = 1.0  # the floor's squeue interval (s)


def log(msg: str) -> None:
    print(f"[bench {dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def ts(text: str | None) -> float | None:
    if not text or text in ("Unknown", "None"):
        return None
    if "T" in text and (text.endswith("Z") or "+" in text[10:]):
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    # sacct prints the cluster's local time without zone: the machine's.
    return dt.datetime.fromisoformat(text).timestamp()


# -- the site ------------------------------------------------------------------------------------


def endpoint(which: str) -> Endpoint:
    conn = json.loads(os.environ[f"AIRFLOW_CONN_HFC_{which.upper()}"])
    return Endpoint(host=conn["host"], port=conn["port"], username=conn["login"], key_file=conn["extra"]["key_file"],
                    host_key=conn["extra"]["host_key"], name=which)


def cluster(command: str, stdin: str | None = None, check: bool = True) -> str:
    """``command`` on the cluster's login node as the cluster account (OpenSSH, host key pinned)."""
    conn = json.loads(os.environ["AIRFLOW_CONN_HFC_CLUSTER"])
    args = ["ssh", "-i", conn["extra"]["key_file"], "-p", str(conn["port"]), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={os.environ['HFC_SSH_KNOWN_HOSTS']}",
            f"{conn['login']}@{conn['host']}", command]
    res = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=300)
    if check and res.returncode:
        raise RuntimeError(f"cluster command {command[:200]!r} exited {res.returncode}: {res.stderr.strip()[:2000]}")
    return res.stdout


def array_tasks_states(array_ids: list[str], count: dict[str, int]) -> dict[str, slurm.JobStatus]:
    """Every task of the arrays, once accounting knows them all (sacct lags the controller)."""
    deadline = time.monotonic() + 120
    while True:
        found = slurm.parse_sacct(cluster(slurm.sacct_command([slurm.array_ref(a) for a in array_ids])))
        tasks = {}
        for a in array_ids:
            for i, st in slurm.tasks_of(found, a, count[a]).items():
                tasks[slurm.task_id(a, i)] = st
        if len(tasks) == sum(count.values()) and all(st.is_final for st in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise RuntimeError(f"sacct knows {len(tasks)} final tasks of {sum(count.values())} after 120 s")
        time.sleep(1)


def slurm_span(tasks: dict[str, slurm.JobStatus]) -> dict:
    """What SLURM itself took: first submit → last end, and the tasks' run times."""
    submits = [t for t in (ts(s.submit) for s in tasks.values()) if t]
    starts = [t for t in (ts(s.start) for s in tasks.values()) if t]
    ends = [t for t in (ts(s.end) for s in tasks.values()) if t]
    runs = [e for e in (campaign.parse_elapsed(s.elapsed) for s in tasks.values()) if e is not None]
    states: dict[str, int] = {}
    for s in tasks.values():
        states[s.state] = states.get(s.state, 0) + 1
    return {"tasks": len(tasks), "states": states,
            "submit_to_last_end_s": round(max(ends) - min(submits), 1) if ends and submits else None,
            "first_start_to_last_end_s": round(max(ends) - min(starts), 1) if ends and starts else None,
            "task_run_s_mean": round(statistics.mean(runs), 2) if runs else None,
            "task_run_s_sum": round(sum(runs), 1), "last_end": max(ends) if ends else None}


def nights_of(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]


def archive_target(reg, frc, site, night: dt.date, job_id: str | None) -> ArchiveTarget:
    """As :class:`hfc_tasks.provider.operators.ArchiveProductsOperator` builds it."""
    return ArchiveTarget(frc=frc.name, archive_dir=frc.archive_dir, observatory=frc.observatory,
                         instrument=frc.instrument, night=night,
                         run_dir=products.run_dir(site.products_root, frc.name, night),
                         archive_root=site.archive_root, public_url_base=site.public_url_base, rewrites=frc.rewrites,
                         product_format=frc.product_format, frc_version=frc.version, slurm_job_id=job_id,
                         unknown_files=frc.unknown_files, known=reg.formats)


def manifest_file(site, frc, night: dt.date) -> Path:
    return Path(site.archive_root) / products.manifest_relpath(frc.archive_dir, frc.name, night)


def catalogue_dsn() -> str:
    return airflow_instance.stack_env()["HFC_CATALOGUE_DSN"]


def metadata_dsn() -> str:
    base = airflow_instance.stack_env()["HFC_CATALOGUE_DSN"].rsplit("/", 1)[0]
    return f"{base}/{airflow_instance.database()}"


def batches(frc: str, first: dt.date, last: dt.date) -> dict:
    with psycopg.connect(catalogue_dsn()) as conn:
        rows = conn.execute("select status, count(*), count(distinct dag_run_id) from hfc.batch "
                            "where frc = %s and night between %s and %s group by 1", (frc, first, last)).fetchall()
    return {status: {"nights": n, "dag_run_ids": runs} for status, n, runs in rows}


# -- measures of the Airflow instance --------------------------------------------------------------


def metadata_db() -> dict:
    """Size of the instance's metadata database and the exact row count of each of its tables."""
    with psycopg.connect(metadata_dsn(), autocommit=True) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = 'public' order by 1")]
        rows = {t: conn.execute(f'select count(*) from public."{t}"').fetchone()[0] for t in tables}
    return {"bytes": size, "rows": rows}


def db_growth(before: dict, after: dict, nights: int) -> dict:
    grown = {t: after["rows"].get(t, 0) - before["rows"].get(t, 0) for t in after["rows"]}
    grown = {t: d for t, d in sorted(grown.items(), key=lambda kv: -kv[1]) if d}
    total = sum(grown.values())
    return {"bytes": after["bytes"] - before["bytes"],
            "bytes_per_night": round((after["bytes"] - before["bytes"]) / nights),
            "rows": total, "rows_per_night": round(total / nights, 2), "rows_by_table": grown}


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process and its descendants, live ones and those already reaped
    (``children_*``: a task process reaped by its executor worker counts there)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_snapshot() -> dict:
    run_dir = airflow_instance.run_dir()
    out = {}
    for name in airflow_instance.instance_components():
        try:
            proc = psutil.Process(int((run_dir / f"{name}.pid").read_text()))
            out[name] = _tree_cpu(proc)
            if name == "scheduler":
                t = proc.cpu_times()
                out["scheduler (own process)"] = t.user + t.system
        except (OSError, ValueError, psutil.Error):
            out[name] = None
    return out


def cpu_delta(before: dict, after: dict) -> dict:
    names = {"scheduler (own process)": "scheduler_own_s", "scheduler": "scheduler_tree_s",
             "triggerer": "triggerer_s", "dag-processor": "dag_processor_s", "api-server": "api_server_s"}
    return {label: (round(after[k] - before[k], 1) if after.get(k) is not None and before.get(k) is not None else None)
            for k, label in names.items()}


# -- 1. the floor ---------------------------------------------------------------------------------


def floor(reg, frc, site, nights: list[dt.date], stamp: str) -> dict:
    from hfc_tasks.ops import cli

    camp = campaign.Campaign(frc.name, nights[0], nights[-1], f"benchfloor-{stamp}")
    chunks = campaign.plan_chunks(camp, site)
    log(f"floor: {len(nights)} nights {nights[0]}..{nights[-1]}, {len(chunks)} array(s)")
    t0 = time.monotonic()
    t0_wall = time.time()
    arrays: dict[str, campaign.Chunk] = {}
    for chunk in chunks:
        sbatch = slurm.array_sbatch_command(job_name=chunk.job_name, log_dir=campaign.log_dir(site, chunk),
                                            count=len(chunk.nights), throttle=site.campaign_array_throttle,
                                            resources=frc.slurm, default_partition=site.default_partition)
        script = slurm.array_batch_script(campaign.array_tasks(chunk, frc, site), job_name=chunk.job_name)
        arrays[slurm.parse_sbatch(cluster(sbatch, stdin=script))] = chunk
    t_submitted = time.monotonic()
    ids = ",".join(arrays)
    while cluster(f"squeue -h -j {ids} -o %i", check=False).strip():
        time.sleep(SQUEUE_POLL)
    t_slurm = time.monotonic()
    tasks = array_tasks_states(list(arrays), {a: len(c.nights) for a, c in arrays.items()})
    job_of = {}
    for a, chunk in arrays.items():
        job_of.update(chunk.task_ids(a))
    t_archive = t_ingest = 0.0
    failed: dict[str, str] = {}
    cluster_ep, archive_ep = endpoint("cluster"), endpoint("archive")
    for night in nights:
        status = tasks[job_of[night]]
        if not status.succeeded:
            failed[str(night)] = status.describe()
            continue
        a = time.monotonic()
        try:
            archive_night(cluster_ep, archive_ep, archive_target(reg, frc, site, night, job_of[night]),
                          progress=lambda _m: None, verify="auto")
        except Exception as exc:  # noqa: BLE001 - the night fails, the others go on (as in the DAG)
            failed[str(night)] = f"archive: {type(exc).__name__}: {exc}"[:500]
            t_archive += time.monotonic() - a
            continue
        b = time.monotonic()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cli.main(["ingest", str(manifest_file(site, frc, night)), "--run-id", camp.campaign_id])
        t_ingest += time.monotonic() - b
        t_archive += b - a
        if rc != 0:
            failed[str(night)] = f"hfc ingest exited {rc}: {out.getvalue()[-500:]}"
    wall = time.monotonic() - t0
    span = slurm_span(tasks)
    done = batches(frc.name, nights[0], nights[-1])
    return {"nights": len(nights), "first": str(nights[0]), "last": str(nights[-1]),
            "campaign_id": camp.campaign_id, "arrays": list(arrays), "wall_s": round(wall, 1),
            "sbatch_s": round(t_submitted - t0, 2), "slurm_wait_s": round(t_slurm - t_submitted, 1),
            "squeue_lag_after_last_end_s": (round(t_slurm - t0 + t0_wall - span["last_end"], 1)
                                            if span["last_end"] else None),
            "archive_s": round(t_archive, 1), "ingest_s": round(t_ingest, 1),
            "archive_s_per_night": round(t_archive / max(1, len(nights) - len(failed)), 3),
            "ingest_s_per_night": round(t_ingest / max(1, len(nights) - len(failed)), 3),
            "slurm": {k: v for k, v in span.items() if k != "last_end"}, "failed": failed, "catalogue": done}


# -- the instance ---------------------------------------------------------------------------------


def start_instance():
    from hfc_tasks.airflow_api import AirflowAPI

    if airflow_stack.running_registry() is not None:  # a fresh instance: today's code, nothing cached
        airflow_stack.down()
    os.environ.pop("HFC_REGISTRY", None)
    log(f"Airflow instance {airflow_instance.INSTANCE} on port {airflow_instance.PORT}: up")
    airflow_stack.up(verbose=False)
    env = airflow_instance.stack_env()
    password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())["admin"]
    return AirflowAPI(f"http://127.0.0.1:{airflow_instance.PORT}", "admin", password)


def ensure_catalogue() -> None:
    """The instance's own catalogue database and schema (the floor runs before the stack is up),
    and this process pointed at it: ``hfc ingest`` (the floor) loads where the campaign does."""
    env = airflow_instance.stack_env()
    for name in ("HFC_CATALOGUE_DSN", "AIRFLOW_CONN_HFC_CATALOGUE"):
        os.environ[name] = env[name]
    if not os.environ["HFC_CATALOGUE_DSN"].endswith(f"/{airflow_instance.CATALOGUE_DB}"):
        raise SystemExit(f"the bench's catalogue must be its own database {airflow_instance.CATALOGUE_DB}, "
                         f"not {os.environ['HFC_CATALOGUE_DSN'].rsplit('/', 1)[-1]}")
    airflow_stack._ensure_database(env)
    airflow_stack._migrate_catalogue(env, log)


def phases(tis: list[dict]) -> dict:
    """Per task id: how many (mapped) instances, first start → last end, sum of durations."""
    out: dict[str, dict] = {}
    for ti in tis:
        d = out.setdefault(ti["task_id"], {"n": 0, "states": {}, "starts": [], "ends": [], "sum_s": 0.0})
        d["n"] += 1
        d["states"][ti["state"]] = d["states"].get(ti["state"], 0) + 1
        if ti.get("start_date"):
            d["starts"].append(ts(ti["start_date"]))
        if ti.get("end_date"):
            d["ends"].append(ts(ti["end_date"]))
        d["sum_s"] += ti.get("duration") or 0.0
    for d in out.values():
        starts, ends = d.pop("starts"), d.pop("ends")
        d["first_start"] = min(starts) if starts else None
        d["last_end"] = max(ends) if ends else None
        d["span_s"] = round(d["last_end"] - d["first_start"], 1) if starts and ends else None
        d["sum_s"] = round(d["sum_s"], 1)
    return out


def timeline(p: dict, t0: float) -> dict:
    """Each task id's first start and last end, in seconds since the trigger."""
    return {k: {"n": v["n"], "states": v["states"],
                "start_s": round(v["first_start"] - t0, 1) if v["first_start"] else None,
                "end_s": round(v["last_end"] - t0, 1) if v["last_end"] else None,
                "span_s": v["span_s"], "sum_s": v["sum_s"]} for k, v in p.items()}


# -- 2. the campaign -------------------------------------------------------------------------------


def run_campaign(api, frc, nights: list[dt.date], stamp: str) -> dict:
    cid = f"benchcamp-{stamp}"
    api.wait_for_dag(CAMPAIGN_DAG, timeout=180)
    api.patch(f"/dags/{CAMPAIGN_DAG}", {"is_paused": False})
    log(f"campaign {cid}: {len(nights)} nights {nights[0]}..{nights[-1]}")
    db0, cpu0 = metadata_db(), cpu_snapshot()
    t0_wall = time.time()
    t0 = time.monotonic()
    run_id = api.post(f"/dags/{CAMPAIGN_DAG}/dagRuns",
                      {"logical_date": None, "conf": {"frc": frc.name, "first": str(nights[0]),
                                                      "last": str(nights[-1]), "campaign_id": cid}})["dag_run_id"]
    state = None
    deadline = t0 + max(3600, 20 * len(nights))
    while time.monotonic() < deadline:
        state = api.get(f"/dags/{CAMPAIGN_DAG}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)
    wall = time.monotonic() - t0
    cpu1, db1 = cpu_snapshot(), metadata_db()
    api.patch(f"/dags/{CAMPAIGN_DAG}", {"is_paused": True})
    run = api.get(f"/dags/{CAMPAIGN_DAG}/dagRuns/{run_id}")
    tis = api.task_instances(CAMPAIGN_DAG, [run_id])
    p = phases(tis)
    out = {"nights": len(nights), "first": str(nights[0]), "last": str(nights[-1]), "campaign_id": cid,
           "run_id": run_id, "state": state, "wall_s": round(wall, 1),
           "run_start_to_end_s": (round(ts(run["end_date"]) - ts(run["start_date"]), 1)
                                  if run.get("end_date") and run.get("start_date") else None),
           "task_instances": len(tis), "tasks": timeline(p, t0_wall),
           "metadata_db": db_growth(db0, db1, len(nights)), "cpu_s": cpu_delta(cpu0, cpu1),
           "catalogue": batches(frc.name, nights[0], nights[-1])}
    try:  # the arrays the run submitted: what SLURM itself took
        x = api.get(f"/dags/{CAMPAIGN_DAG}/dagRuns/{run_id}/taskInstances/submit/xcomEntries/return_value")
        value = x["value"]
        arrays = json.loads(value) if isinstance(value, str) else value
        plan = campaign.plan_chunks(campaign.Campaign(frc.name, nights[0], nights[-1], cid),
                                    load_registry().site())
        count = {str(arrays[c.label]): len(c.nights) for c in plan if c.label in arrays}
        span = slurm_span(array_tasks_states(list(count), count))
        out["slurm"] = {k: v for k, v in span.items() if k != "last_end"}
        out["slurm"]["last_end_s"] = round(span["last_end"] - t0_wall, 1) if span["last_end"] else None
    except Exception as exc:  # noqa: BLE001 - a figure less, said so
        out["slurm"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


# -- 3. today's backfill -------------------------------------------------------------------------


def run_backfill(api, frc, n: int, max_active_runs: int, total: int) -> dict:
    api.wait_for_dag(NIGHTLY_DAG, timeout=180)
    api.patch(f"/dags/{NIGHTLY_DAG}", {"is_paused": False})
    # Nights of 2025 this instance never ran (a night with a run is skipped by the backfill).
    with psycopg.connect(metadata_dsn()) as conn:
        taken = {r[0].date() for r in conn.execute(
            "select logical_date from dag_run where dag_id = %s and logical_date is not null", (NIGHTLY_DAG,))}
    starts = [d for d in (dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(365 - n + 1))
              if not any(d + dt.timedelta(days=k) in taken for k in range(n))]
    if not starts:
        raise SystemExit(f"no {n} nights of 2025 without a run of {NIGHTLY_DAG} "
                         f"on instance {airflow_instance.INSTANCE}")
    first = random.choice(starts)
    last = first + dt.timedelta(days=n - 1)
    log(f"backfill of {NIGHTLY_DAG} ({frc.name} only): {n} nights {first}..{last}")
    db0, cpu0 = metadata_db(), cpu_snapshot()
    t0 = time.monotonic()
    bf = api.post("/backfills", {"dag_id": NIGHTLY_DAG, "from_date": f"{first}T00:00:00Z",
                                 "to_date": f"{last}T00:00:00Z", "max_active_runs": max_active_runs,
                                 "reprocess_behavior": "none", "dag_run_conf": {"frcs": [frc.name]}})
    while not api.get(f"/backfills/{bf['id']}")["completed_at"]:
        if time.monotonic() - t0 > 7200:
            raise SystemExit("backfill not done in 2 h")
        time.sleep(2)
    wall = time.monotonic() - t0
    cpu1, db1 = cpu_snapshot(), metadata_db()
    api.patch(f"/dags/{NIGHTLY_DAG}", {"is_paused": True})
    runs = [r for r in api.get(f"/dags/{NIGHTLY_DAG}/dagRuns?limit=1000&run_type=backfill")["dag_runs"]
            if str(first) <= (r.get("data_interval_start") or "")[:10] <= str(last)]
    states: dict[str, int] = {}
    for r in runs:
        states[r["state"]] = states.get(r["state"], 0) + 1
    with psycopg.connect(metadata_dsn()) as conn:  # runs the backfill created (not "already exists")
        created = conn.execute("select count(*) from backfill_dag_run where backfill_id = %s "
                               "and exception_reason is null", (bf["id"],)).fetchone()[0]
    if created != n:
        log(f"backfill created {created} runs for {n} nights: figures per created run")
    n = created or n
    per_night = wall / n
    return {"nights": n, "first": str(first), "last": str(last), "backfill_max_active_runs": max_active_runs,
            "wall_s": round(wall, 1), "per_night_s": round(per_night, 2), "run_states": states,
            f"extrapolated_{total}_nights_s": round(per_night * total), "metadata_db": db_growth(db0, db1, n),
            "cpu_s": cpu_delta(cpu0, cpu1), "catalogue": batches(frc.name, first, last)}


# -- clean-up --------------------------------------------------------------------------------------


def clean(site, frc, nights: list[dt.date], log_dirs: list[str]) -> dict:
    """Remove what the bench made: archive files listed by each night's manifest and the manifest,
    the nights' run folders and the arrays' log folders on the cluster (all local paths here)."""
    files = folders = 0
    for night in nights:
        mf = manifest_file(site, frc, night)
        if mf.exists():
            with contextlib.suppress(ValueError, OSError):
                for f in json.loads(mf.read_text()).get("files", []):
                    p = Path(site.archive_root) / f["archive_path"]
                    if p.is_file():
                        p.unlink()
                        files += 1
            mf.unlink()
        rd = Path(products.run_dir(site.products_root, frc.name, night))
        if rd.is_dir():
            shutil.rmtree(rd)
            folders += 1
    for d in log_dirs:
        if Path(d).is_dir():
            shutil.rmtree(d)
            folders += 1
    # Year folders the bench's nights left empty (results/<Y>, images/.../<Y>): rmdir, never rm.
    years = {str(n.year) for n in nights}
    for y in years:
        for p in sorted(Path(site.archive_root, frc.archive_dir).rglob(y), reverse=True):
            with contextlib.suppress(OSError):
                p.rmdir()
    return {"archive_files_removed": files, "cluster_folders_removed": folders}


def free_year(site, frc) -> int:
    results = Path(site.archive_root, frc.archive_dir, "results")
    taken = {p.name for p in results.iterdir()} if results.is_dir() else set()
    free = [y for y in range(2100, 2199, 2) if str(y) not in taken and str(y + 1) not in taken]
    return random.choice(free)


# -- main ------------------------------------------------------------------------------------------


def table(res: dict) -> str:
    n = res["nights"]
    rows = []
    f, c, b = res.get("floor"), res.get("campaign"), res.get("backfill")
    if f:
        rows.append(("floor: sbatch --array + squeue + archive + hfc ingest", f"{f['wall_s']:.0f}",
                     f"{f['wall_s'] / n:.2f}", "1.00x", "-", "-", "-"))
    if c:
        ratio = f"{c['wall_s'] / f['wall_s']:.2f}x" if f else "-"
        orch = f"{(c['wall_s'] - f['wall_s']) / n:.2f}" if f else "-"
        rows.append((f"campaign: DAG {CAMPAIGN_DAG} ({c['state']})", f"{c['wall_s']:.0f}", f"{c['wall_s'] / n:.2f}",
                     ratio, orch, f"{c['metadata_db']['bytes_per_night'] / 1024:.1f} KiB / "
                     f"{c['metadata_db']['rows_per_night']:.1f} rows",
                     f"{c['cpu_s']['scheduler_own_s']} / {c['cpu_s']['scheduler_tree_s']}"))
    if b:
        ext = b[f"extrapolated_{n}_nights_s"]
        ratio = f"{ext / f['wall_s']:.2f}x" if f else "-"
        orch = f"{(ext - f['wall_s']) / n:.2f}" if f else "-"
        rows.append((f"backfill of {NIGHTLY_DAG}: {b['nights']} nights measured, x{n / b['nights']:.1f} "
                     "EXTRAPOLATED", f"{ext:.0f} (measured {b['wall_s']:.0f})", f"{b['per_night_s']:.2f}", ratio,
                     orch, f"{b['metadata_db']['bytes_per_night'] / 1024:.1f} KiB / "
                     f"{b['metadata_db']['rows_per_night']:.1f} rows",
                     f"{b['cpu_s']['scheduler_own_s']} / {b['cpu_s']['scheduler_tree_s']} "
                     f"(for {b['nights']} nights)"))
    lines = []
    if f:
        lines.append(f"floor, where the time goes: sbatch {f['sbatch_s']} s, SLURM (submit -> last task end) "
                     f"{f['slurm']['submit_to_last_end_s']} s, squeue noticing the end "
                     f"{f['squeue_lag_after_last_end_s']} s, "
                     f"archive {f['archive_s']} s ({f['archive_s_per_night']} s/night), hfc ingest {f['ingest_s']} s "
                     f"({f['ingest_s_per_night']} s/night)")
    if c:
        t = c["tasks"]
        parts = [f"{k} {v['start_s']}-{v['end_s']} (x{v['n']}, sum {v['sum_s']})" for k, v in t.items()]
        lines.append(f"campaign, s since the trigger: {', '.join(parts)}; SLURM tasks' last end "
                     f"{c.get('slurm', {}).get('last_end_s')}, SLURM submit -> last end "
                     f"{c.get('slurm', {}).get('submit_to_last_end_s')} s; run end {c['wall_s']}")
    head = ("way", f"wall s ({n} nights)", "s/night", "x floor", "orchestration s/night",
            "metadata DB growth per night", "scheduler CPU s (own / with executor+tasks)")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out + [""] + lines)


def main() -> int:
    # The archive engine's asyncssh logs every channel at INFO: thousands of lines a night.
    for name in ("asyncssh", "asyncssh.sftp", "paramiko"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nights", type=int, default=365)
    ap.add_argument("--year", type=int, default=None, help="floor's year Y (campaign: Y + 1); default: a free one")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-campaign", action="store_true", help="e.g. while hfc_campaign is not there yet")
    ap.add_argument("--skip-backfill", action="store_true")
    ap.add_argument("--backfill-nights", type=int, default=30)
    ap.add_argument("--backfill-max-active-runs", type=int, default=10)
    ap.add_argument("--keep-data", action="store_true", help="leave the nights' archive files and run folders")
    ap.add_argument("--keep-stack", action="store_true", help="leave the Airflow instance running")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON there too ('-': stdout)")
    args = ap.parse_args()

    reg = load_registry()
    site, frc = reg.site(), reg.frc(FRC)
    year = args.year or free_year(site, frc)
    stamp = dt.datetime.now(dt.UTC).strftime("%m%d%H%M%S")
    n = args.nights
    res: dict = {"nights": n, "frc": FRC, "year_floor": year, "year_campaign": year + 1,
                 "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": {
                     "nproc": os.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
                     "load_before": [round(x, 2) for x in os.getloadavg()]},
                 "slurm_node": cluster("sinfo -h -N -o '%N %c CPUs %m MB'", check=False).strip(),
                 "instance": {"name": airflow_instance.INSTANCE, "port": airflow_instance.PORT,
                              "metadata_db": airflow_instance.database(),
                              "catalogue_db": airflow_instance.CATALOGUE_DB}}
    made: list[dt.date] = []
    log_dirs: list[str] = []
    api = None
    try:
        ensure_catalogue()
        if not args.skip_floor:
            fn = nights_of(dt.date(year, 1, 1), n)
            made += fn
            res["floor"] = floor(reg, frc, site, fn, stamp)
            log_dirs.append(campaign.log_dir(site, campaign.Campaign(FRC, fn[0], fn[-1], res["floor"]["campaign_id"])))
            log(f"floor: {res['floor']['wall_s']} s")
        if not (args.skip_campaign and args.skip_backfill):
            api = start_instance()
        if not args.skip_campaign:
            cn = nights_of(dt.date(year + 1, 1, 1), n)
            made += cn
            res["campaign"] = run_campaign(api, frc, cn, stamp)
            log_dirs.append(campaign.log_dir(site, campaign.Campaign(FRC, cn[0], cn[-1],
                                                                     res["campaign"]["campaign_id"])))
            log(f"campaign: {res['campaign']['state']} in {res['campaign']['wall_s']} s")
        if not args.skip_backfill:
            res["backfill"] = run_backfill(api, frc, args.backfill_nights, args.backfill_max_active_runs, n)
            b = res["backfill"]
            made += nights_of(dt.date.fromisoformat(b["first"]), b["nights"])
            log(f"backfill: {b['wall_s']} s for {b['nights']} nights")
        f, c = res.get("floor"), res.get("campaign")
        if f and c:
            res["campaign_over_floor"] = round(c["wall_s"] / f["wall_s"], 3)
            res["orchestration_s_per_night"] = round((c["wall_s"] - f["wall_s"]) / n, 3)
            res["goal_met"] = {"wall <= 1.5x floor": res["campaign_over_floor"] <= 1.5,
                               "orchestration <= 1 s/night": res["orchestration_s_per_night"] <= 1.0,
                               "campaign run succeeded": c["state"] == "success"}
    finally:
        res["load_after"] = [round(x, 2) for x in os.getloadavg()]
        res["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if not args.keep_data and made:
            res["cleanup"] = clean(site, frc, made, log_dirs)
        if not args.keep_stack and api is not None:
            airflow_stack.down()
    print(table(res))
    if args.json:
        text = json.dumps(res, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
