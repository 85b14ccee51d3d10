"""No process outlives its purpose: `hfc airflow up` is all-or-nothing, `down` stops everything.

Instance ``h5proc`` (its own metadata database, api-server on 127.0.0.1:8103, CeleryExecutor with
its own Redis on 127.0.0.1:6403 and one Celery worker), driven through the ``hfc`` command as an
operator would. After each test a scan of /proc (environment ``HFC_AIRFLOW_INSTANCE=h5proc``,
the instance's ports, its Redis command line) must find no process of the instance:

- the Redis port held by another process: `up` fails, names the holder (pid, command) and leaves
  nothing running;
- a component that cannot start (a worker given a bad setting) after others started: `up` stops
  what it started and says which component failed and why;
- an `up` killed half-way, then `down` run without the executor settings: nothing is left;
- a healthy instance is listed by `hfc site status`; `down` stops it all, also a worker whose pid
  file was lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.site, pytest.mark.slow]

INSTANCE = "h5proc"
PORT = 8103
REDIS_PORT = 6403
HFC = str(Path(sys.executable).with_name("hfc"))


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HFC_AIRFLOW_INSTANCE": INSTANCE, "HFC_AIRFLOW_PORT": str(PORT),
           "HFC_AIRFLOW_EXECUTOR": "CeleryExecutor", "HFC_REDIS_PORT": str(REDIS_PORT),
           "HFC_CELERY_WORKERS": "1", "HFC_CELERY_CONCURRENCY": "1"}
    env.pop("HFC_REGISTRY", None)
    env.update(extra)
    return env


def hfc(*args: str, env: dict[str, str] | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([HFC, *args], env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _listening_inodes(ports: set[int]) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) in ports and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def instance_processes(exclude: set[int] = frozenset()) -> dict[int, str]:
    """Every live process of the instance: its environment, its Redis, or a socket on its ports."""
    found = {}
    skip = _ancestors() | set(exclude)
    inodes = _listening_inodes({PORT, REDIS_PORT})
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        mine = f"HFC_AIRFLOW_INSTANCE={INSTANCE}".encode() in environ
        mine = mine or ("redis-server" in cmd and str(REDIS_PORT) in cmd)
        if not mine and inodes:
            with contextlib.suppress(OSError):
                mine = any(os.readlink(fd).strip("socket:[]") in inodes for fd in (proc / "fd").iterdir())
        if mine:
            found[int(proc.name)] = cmd
    return found


def _cmdlines() -> dict[int, str]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                out[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return out


def _kill_all(exclude: set[int] = frozenset()) -> None:
    for pid in instance_processes(exclude):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def instance(site):
    """Finaliser, pass or fail: `hfc airflow down`, then SIGKILL whatever of the instance is left
    (so that a broken `down` fails its test but never leaves processes to the next tests)."""
    from hfc_tasks.ops.localsite import state_dir

    run_dir = state_dir() / "airflow" / f"stack-{INSTANCE}"
    yield run_dir
    hfc("airflow", "down", timeout=120)
    _kill_all()


@pytest.fixture
def port_holder():
    """A process (not of the instance) listening on the instance's Redis port."""
    code = ("import socket, sys, time\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {REDIS_PORT})); s.listen(); print('ready', flush=True); time.sleep(900)\n")
    env = {k: v for k, v in os.environ.items() if k != "HFC_AIRFLOW_INSTANCE"}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_up_fails_on_a_held_redis_port_names_the_holder_and_leaves_nothing(instance, port_holder):
    assert instance_processes(exclude={port_holder.pid}) == {}
    proc = hfc("airflow", "up")
    out = proc.stdout + proc.stderr
    print(out[-3000:])
    assert proc.returncode != 0, out
    assert f"127.0.0.1:{REDIS_PORT}" in out, out
    assert f"pid {port_holder.pid}" in out, f"the holder (pid {port_holder.pid}) is not named:\n{out}"
    assert "time.sleep(900)" in out or sys.executable in out, f"the holder's command is not shown:\n{out}"
    assert "Traceback" not in out, out
    left = instance_processes(exclude={port_holder.pid})
    assert left == {}, f"`up` failed but left processes of the instance running: {left}"


def test_up_part_way_failure_stops_what_it_started(instance):
    # The worker is the last component started: it exits at once on a bad Celery pool setting
    # (read by the worker only), after Redis, the api-server, scheduler, dag-processor and
    # triggerer are running.
    proc = hfc("airflow", "up", env=_env(AIRFLOW__CELERY__POOL="nosuchpool"))
    out = proc.stdout + proc.stderr
    print(out[-3000:])
    assert proc.returncode != 0, out
    assert "worker1" in out and "exited" in out, out
    assert "nosuchpool" in out, f"the worker's own error (its log) is not in the message:\n{out}"
    assert "stopped" in out, out
    left = instance_processes()
    assert left == {}, f"`up` failed part-way and left processes of the instance running: {left}"


def test_down_after_a_killed_up_leaves_nothing(instance):
    run_dir = instance
    for pid_file in run_dir.glob("*.pid") if run_dir.exists() else []:
        pid_file.unlink()
    up = subprocess.Popen([HFC, "airflow", "up"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run_dir / "worker1.pid").exists():
            assert up.poll() is None, "`hfc airflow up` ended before starting the worker"
            time.sleep(0.2)
        assert (run_dir / "worker1.pid").exists()
    finally:
        up.kill()  # killed half-way: no chance to clean up after itself
        up.wait()
    assert len(instance_processes()) >= 6
    # An operator's `down`, without the executor settings the instance was started with.
    env = _env()
    for name in ("HFC_AIRFLOW_EXECUTOR", "HFC_REDIS_PORT", "HFC_CELERY_WORKERS", "HFC_CELERY_CONCURRENCY"):
        env.pop(name)
    proc = hfc("airflow", "down", env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = instance_processes()
    assert left == {}, f"`down` left processes of the instance running: {left}"


def test_site_status_lists_a_running_instance_and_down_stops_all(instance):
    run_dir = instance
    proc = hfc("airflow", "up")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pids = {name: int((run_dir / f"{name}.pid").read_text()) for name in
            ("redis", "api-server", "scheduler", "dag-processor", "triggerer", "worker1")}
    status = hfc("site", "status", timeout=60)
    print(status.stdout)
    for name, pid in pids.items():
        line = next((ln for ln in status.stdout.splitlines() if f"pid {pid} " in ln + " "), None)
        assert line is not None, f"{name} (pid {pid}) of instance {INSTANCE} not listed:\n{status.stdout}"
        assert INSTANCE in line, line
    # The broker has a password (item 11): in a 0600 file and the components' environment, never
    # in a command line; a client without it is refused.
    redis_pw = (run_dir / "redis.password").read_text().strip()
    for secret in (run_dir / "redis.password", run_dir / "redis.conf"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    leaks = {pid: cmd for pid, cmd in _cmdlines().items() if redis_pw in cmd}
    assert leaks == {}, f"the Redis password is in a command line: {list(leaks)}"
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=10) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(200).startswith(b"-NOAUTH"), "the instance's Redis answers without a password"
    # The worker's pid file is lost (an operator's cleanup, a crashed up): down still stops it.
    (run_dir / "worker1.pid").unlink()
    proc = hfc("airflow", "down", env=_env(HFC_AIRFLOW_EXECUTOR="LocalExecutor"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = instance_processes()
    assert left == {}, f"`down` left processes of the instance running: {left}"
    status = hfc("site", "status", timeout=60)
    assert INSTANCE not in status.stdout, status.stdout
