"""The real Airflow scheduler stack on the local site: ``hfc airflow up | down | status``.

api-server (127.0.0.1:8080), scheduler, dag-processor and triggerer, LocalExecutor, with
Airflow's metadata in the site's PostgreSQL (database ``airflow``). This is what operators
run in production shape on one machine, and what the end-to-end tests drive through the
REST API (trigger, backfill, clear, mark failed). Scheduler and triggerer run with
``--skip-serve-logs`` since their log servers would bind every interface.

What the instance runs with (settings, components, environment) is
:mod:`hfc_tasks.ops.airflow_instance`; this module starts, checks and stops its processes.
Plain process management, no Airflow import.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from hfc_tasks.ops import airflow_instance as inst
from hfc_tasks.ops.localsite import procs

# What callers (the CLI, tests, benches) read here; the instance's settings live in airflow_instance.
INSTANCE, PORT = inst.INSTANCE, inst.PORT
run_dir, stack_env = inst.run_dir, inst.stack_env
# [core] hostname_callable of Celery workers started before airflow_instance existed (their
# environment names this path): keep it while such workers may run.
worker_hostname = inst.worker_hostname


class StackError(RuntimeError):
    """The instance could not be brought up (or down); the message says which component and why."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _pid(run_dir: Path, name: str) -> int | None:
    f = run_dir / f"{name}.pid"
    if f.exists():
        try:
            pid = int(f.read_text().strip())
        except ValueError:
            return None
        return pid if _alive(pid) else None
    return None


def _ensure_database(env: dict[str, str]) -> None:
    import psycopg

    from hfc_tasks.ops import localsite

    with psycopg.connect(localsite.env_vars()["HFC_CATALOGUE_DSN"], autocommit=True) as conn:
        for name in (inst.database(), inst.CATALOGUE_DB):
            if name and not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
                conn.execute(f'create database "{name}"')


def _migrate_catalogue(env: dict[str, str], say) -> None:
    """`hfc airflow up` is a deploy step: it migrates the catalogue that this stack's registry
    names (``site.catalogue_conn_id``, through the stack's own connections: on the multihost site
    the catalogue host's, over TLS), since the tasks only check the schema."""
    from unittest import mock

    from hfc_tasks.catalogue import schema
    from hfc_tasks.provider.catalogue_db import catalogue_connect
    from hfc_tasks.registry import load_registry

    with mock.patch.dict(os.environ, env):
        conn_id = load_registry(env.get("HFC_REGISTRY") or None).site().catalogue_conn_id
        with catalogue_connect(conn_id, application_name="hfc-airflow-up") as conn:
            done = schema.upgrade(conn)
            conn.commit()
    if done:
        say(f"[hfc-airflow] catalogue ({conn_id}) migrated: {', '.join(done)}")


def _pools(env: dict[str, str]) -> None:
    from hfc_tasks.registry import load_registry

    # The registry sizes the pools (Site.airflow_pools, also `hfc config pools` for compose).
    for name, pool in load_registry().site().airflow_pools().items():
        subprocess.run([inst.airflow_bin(), "pools", "set", name, str(pool["slots"]), pool["description"]],
                       env=env, check=True, capture_output=True)


def up(wait: float = 120.0, verbose: bool = True) -> dict[str, int]:
    """Start the components that are not running; wait until the API says all are healthy."""
    from hfc_tasks.ops import localsite

    say = print if verbose else (lambda *a, **k: None)
    localsite.up(verbose=False)
    if inst.celery():
        home_run_dir = inst.instance_run_dir({"AIRFLOW_HOME": str(localsite.state_dir() / "airflow")})
        if _pid(home_run_dir, "redis") is None:
            inst.write_redis_conf(home_run_dir)  # before stack_env(): the broker URL carries its password
    env = inst.stack_env()
    run_dir = inst.instance_run_dir(env)
    # Every component must read the same registry: remember which one this stack runs with.
    (run_dir / "registry").write_text(env.get("HFC_REGISTRY", ""))
    _ensure_database(env)
    _migrate_catalogue(env, say)
    marker = run_dir / "db-migrated"
    if not marker.exists():
        say(f"[hfc-airflow] migrating the metadata database (PostgreSQL '{inst.database()}')")
        subprocess.run([inst.airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True)
        marker.touch()
    _pools(env)
    comps = inst.instance_components()
    _check_ports(run_dir, [n for n in comps if _pid(run_dir, n) is None])
    started: dict[str, subprocess.Popen] = {}
    try:
        log_offsets: dict[str, int] = {}
        pids = _start_components(comps, env, run_dir, started, say, log_offsets)
        _wait_healthy(run_dir, started, wait, log_offsets)
    except BaseException as exc:
        # All or nothing: stop what this call started (never what was running before it).
        stopped = down(tuple(started)) if started else []
        for proc in started.values():
            with contextlib.suppress(Exception):
                proc.wait(5)  # reap our children (a long-lived caller would keep zombies)
        if isinstance(exc, StackError):
            what = ", ".join(stopped) if stopped else "nothing was running"
            raise StackError(f"{exc}\n  stopped what this `up` had started: {what}") from None
        raise
    say(f"[hfc-airflow] healthy: http://127.0.0.1:{inst.PORT} (user admin, password in "
        f"{env['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']})")
    return pids


def _check_ports(run_dir: Path, to_start: list[str]) -> None:
    """Before starting anything: the ports of the components to start must be free."""
    for name in to_start:
        port = inst.component_port(name)
        if port is None:
            continue
        holders = procs.port_holders(port[0])
        if not holders:
            continue
        ours = [h for h in holders if h.environ.get(procs.MARK_DIR) == str(run_dir)]
        hint = (f"it belongs to this instance ({inst.INSTANCE}) but its pid file is lost: run `hfc airflow down` first"
                if ours else f"stop that process, or give this instance another port ({port[1]})")
        raise StackError(f"cannot start {name} of Airflow instance {inst.INSTANCE}: "
                         f"{procs.describe_holders(port[0])}; {hint}")


def _start_components(comps: dict[str, list[str]], env: dict[str, str], run_dir: Path,
                      started: dict[str, subprocess.Popen], say, log_offsets: dict[str, int]) -> dict[str, int]:
    """Start what is not running; ``started`` and ``log_offsets`` (each log's size at its start)
    are filled as it goes, so that a failure part-way still knows what to stop."""
    pids = {}
    for name, args in comps.items():
        pid = _pid(run_dir, name)
        if pid is None:
            cmd = inst.command(name, args, run_dir)
            # cwd: the run folder marks the instance's processes (see localsite.procs).
            with open(run_dir / f"{name}.log", "ab") as log:
                log_offsets[name] = log.tell()
                proc = subprocess.Popen(cmd, env=inst.component_env(name, env, run_dir), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=run_dir)
            started[name] = proc
            (run_dir / f"{name}.pid").write_text(str(proc.pid))
            pid = proc.pid
            say(f"[hfc-airflow] {name}: started (pid {pid}, log {run_dir / (name + '.log')})")
            if name == "redis":
                # The broker must answer before anything that uses it starts.
                if not _wait(lambda p=proc: p.poll() is not None or _port_is(inst.REDIS_PORT, p.pid), 15):
                    raise StackError(f"redis of instance {inst.INSTANCE} did not listen on 127.0.0.1:{inst.REDIS_PORT} "
                                     f"within 15 s; read {run_dir / 'redis.log'}")
                if proc.poll() is not None:
                    raise StackError(_exited(name, proc, run_dir))
        pids[name] = pid
    return pids


def _wait_healthy(run_dir: Path, started: dict[str, subprocess.Popen], wait: float,
                  log_offsets: dict[str, int]) -> None:
    workers = {n: o for n, o in log_offsets.items() if n.startswith("worker")}
    deadline = time.monotonic() + wait
    last = None
    components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    while time.monotonic() < deadline:
        for name, proc in started.items():
            if proc.poll() is not None:
                raise StackError(_exited(name, proc, run_dir))
        for name in inst.instance_components():
            if name not in started and _pid(run_dir, name) is None:
                raise StackError(f"{name} of instance {inst.INSTANCE} exited: read {run_dir / (name + '.log')}")
        last = health()
        ready = _workers_ready(run_dir, workers)
        if last and all(last.get(k, {}).get("status") == "healthy" for k in components) and ready:
            return
        time.sleep(1)
    waiting = [n for n in workers if not _workers_ready(run_dir, {n: workers[n]})]
    raise StackError(f"Airflow instance {inst.INSTANCE}: components not healthy after {wait:.0f} s: {last}"
                     + (f"; Celery workers that never said 'ready': {', '.join(waiting)}" if waiting else "")
                     + f"; logs in {run_dir}")


def _exited(name: str, proc: subprocess.Popen, run_dir: Path) -> str:
    """Why a component exited during start-up: its exit code, its log's last lines, and the
    process holding its port if it could not bind."""
    log = run_dir / f"{name}.log"
    tail = _tail(log)
    msg = f"{name} of Airflow instance {inst.INSTANCE} exited during start-up (exit code {proc.returncode})"
    port = inst.component_port(name)
    if port and "in use" in "\n".join(tail).lower():
        msg += f": {procs.describe_holders(port[0])}"
    msg += f"\n  last lines of {log}:\n    " + "\n    ".join(tail)
    return msg


def _tail(path: Path, lines: int = 12) -> list[str]:
    try:
        data = path.read_bytes()[-6000:]
    except OSError:
        return []
    return [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()][-lines:]


def _port_is(port: int, pid: int) -> bool:
    return any(h.pid == pid for h in procs.port_holders(port))


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _workers_ready(run_dir: Path, log_offsets: dict[str, int]) -> bool:
    """Every Celery worker this `up` started has said 'ready' in its log since it was started
    (``log_offsets``: each one's log size at its start; logs are appended to). Workers that were
    already running are not waited for: their 'ready' may be far back in a long log."""
    for name, offset in log_offsets.items():
        log = run_dir / f"{name}.log"
        try:
            with open(log, "rb") as fh:
                fh.seek(offset)
                if b" ready." not in fh.read():
                    return False
        except FileNotFoundError:
            return False
    return True


def health() -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.PORT}/api/v2/monitor/health", timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def down(names: tuple[str, ...] | None = None) -> list[str]:
    """Stop the instance: every component whose pid file is in the run folder (whole process
    groups: LocalExecutor and Celery pool processes included), then every other process of the
    instance a scan finds (a lost pid file, an `up` killed half-way, another executor setting).
    ``names``: only those components. Returns what was stopped.

    With Celery: workers first, the broker last, so that nothing is left waiting on a dead Redis.
    """
    env = inst.stack_env()
    run_dir = inst.instance_run_dir(env)
    everything = names is None
    if names is None:
        names = tuple(sorted({p.stem for p in run_dir.glob("*.pid")} | set(inst.instance_components())))
    names = tuple([n for n in names if n.startswith("worker")]
                  + [n for n in names if not n.startswith("worker") and n != "redis"]
                  + [n for n in names if n == "redis"])
    stopped: list[str] = []
    for name in names:
        pid = _pid(run_dir, name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        (run_dir / f"{name}.pid").unlink(missing_ok=True)
    # What the pid files did not name: by the instance's markers (and, for an instance started
    # before they existed, its metadata database and AIRFLOW_HOME). Broker last again.
    if everything:
        found = procs.instance_processes(run_dir, legacy=_legacy_matcher(env))
        groups = [[p for p in found if procs.component_of(p) != "redis"],
                  [p for p in found if procs.component_of(p) == "redis"]]
    else:
        groups = [[p for n in names if n != "redis" for p in procs.instance_processes(run_dir, component=n)],
                  [p for p in procs.instance_processes(run_dir, component="redis") if "redis" in names]]
    for left in groups:
        if left:
            procs.terminate(left, timeout=30)
            stopped += sorted({f"{procs.component_of(p) or 'process'} (pid {p.pid})" for p in left})
    return stopped


def _legacy_matcher(env: dict[str, str]):
    """Processes of this instance started before the markers: its metadata database and
    AIRFLOW_HOME in their environment, or (titled processes, whose environ is gone) the
    api-server or Redis holding this instance's ports."""
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    home = env["AIRFLOW_HOME"]
    holders = {p.pid for p in procs.port_holders(inst.PORT) if p.cmdline.startswith("airflow api_server")}
    if inst.celery():
        holders |= {p.pid for p in procs.port_holders(inst.REDIS_PORT) if p.cmdline.startswith("redis-server")}

    def match(proc: procs.Proc) -> bool:
        return proc.pid in holders or (proc.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == conn
                                       and proc.environ.get("AIRFLOW_HOME") == home)

    return match


def restart(names: tuple[str, ...]) -> list[str]:
    """Stop the named components and start them again with the current environment (a changed
    ``AIRFLOW_CONN_*``: the workers, the triggerer and the api-server hold connections); the other
    components keep running. Returns the components restarted."""
    known = inst.instance_components()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise StackError(f"restart: name components of instance {inst.INSTANCE} ({', '.join(known)})"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    down(tuple(names))
    up(verbose=False)
    return list(names)


def running_registry() -> str | None:
    """The HFC_REGISTRY the running stack was started with ('' = the project's), None if down."""
    run_dir = inst.instance_run_dir(inst.stack_env())
    if not any(status().values()):
        return None
    f = run_dir / "registry"
    return f.read_text() if f.exists() else ""


def status() -> dict[str, bool]:
    run_dir = inst.instance_run_dir(inst.stack_env())
    return {name: _pid(run_dir, name) is not None for name in inst.instance_components()}
