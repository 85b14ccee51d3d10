"""Which processes are the project's: who holds a port, the processes of an Airflow instance, and
what still runs beyond the site's own services. Reads /proc only (no Airflow import).

Every process of an Airflow instance started by :mod:`hfc_tasks.ops.airflow_stack` carries
``HFC_STACK_DIR`` (the instance's run folder), ``HFC_STACK_INSTANCE`` and ``HFC_STACK_COMPONENT``
in its environment, and so do its children (LocalExecutor and Celery pool processes, task
supervisors), and runs in the run folder: a scan finds them even when their pid files are gone.
Both marks are needed: a process that sets its title (the api-server, redis-server) overwrites
its /proc environ, but keeps its working folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MARK_DIR = "HFC_STACK_DIR"
MARK_INSTANCE = "HFC_STACK_INSTANCE"
MARK_COMPONENT = "HFC_STACK_COMPONENT"

# /proc/net/tcp socket states that hold a local port against a new bind: LISTEN, and CLOSE (a
# socket bound but not listening).
_HOLDING_STATES = {"0A", "07"}


@dataclass
class Proc:
    pid: int
    ppid: int
    uid: int
    cmdline: str
    environ: dict[str, str] = field(repr=False)

    def describe(self, width: int = 300) -> str:
        cmd = self.cmdline if len(self.cmdline) <= width else self.cmdline[: width - 3] + "..."
        return f"pid {self.pid} ({cmd or '?'})"


def read(pid: int) -> Proc | None:
    """The process, or None if it is gone or a zombie."""
    base = Path(f"/proc/{pid}")
    try:
        stat = (base / "stat").read_text()
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] in ("Z", "X"):
            return None
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        uid = (base / "status").stat().st_uid
        try:
            raw = (base / "environ").read_bytes()
        except OSError:  # another user's process when not root
            raw = b""
    except (OSError, ValueError, IndexError):
        return None
    environ = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            environ[key.decode(errors="replace")] = value.decode(errors="replace")
    return Proc(pid, int(rest[1]), uid, cmdline, environ)


def processes() -> list[Proc]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            proc = read(int(entry.name))
            if proc is not None:
                out.append(proc)
    return out


def ancestors(pid: int | None = None) -> set[int]:
    """pid (default: this process) and its parents: never stopped by a scan, never listed."""
    seen: set[int] = set()
    pid = os.getpid() if pid is None else pid
    while pid > 1 and pid not in seen:
        seen.add(pid)
        proc = read(pid)
        if proc is None:
            break
        pid = proc.ppid
    return seen


def port_holders(port: int) -> list[Proc]:
    """The processes holding TCP ``port`` (listening, or bound) on any local address."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in _HOLDING_STATES and fields[9] != "0":
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        proc = read(int(entry.name))
                        if proc is not None:
                            holders.append(proc)
                        break
    return holders


def describe_holders(port: int) -> str:
    holders = port_holders(port)
    if not holders:
        return f"127.0.0.1:{port} is in use (by no process this user can see)"
    return f"127.0.0.1:{port} is already in use by " + ", ".join(h.describe() for h in holders)


def instance_processes(run_dir: Path, legacy: Callable[[Proc], bool] | None = None,
                       component: str | None = None) -> list[Proc]:
    """The live processes of the Airflow instance whose run folder is ``run_dir`` (optionally of
    one component), this process and its parents excluded. ``legacy`` recognises processes
    started before the markers existed."""
    skip = ancestors()
    found = []
    for proc in processes():
        if proc.pid in skip:
            continue
        # The folder alone is not enough (an operator's shell may sit in it): the process must
        # also look like a component (airflow, celery, redis-server).
        in_folder = cwd(proc.pid) == str(run_dir) and (
            component_of(proc) is not None or "airflow" in proc.cmdline or "celery" in proc.cmdline)
        if proc.environ.get(MARK_DIR) == str(run_dir) or in_folder:
            if component is None or component_of(proc) == component:
                found.append(proc)
        elif component is None and legacy is not None and legacy(proc):
            found.append(proc)
    return found


def component_of(proc: Proc) -> str | None:
    """The instance component a process belongs to: its marker, else its (re-set) title."""
    if MARK_COMPONENT in proc.environ:
        return proc.environ[MARK_COMPONENT]
    if proc.cmdline.startswith("redis-server"):
        return "redis"
    if proc.cmdline.startswith("airflow api_server"):
        return "api-server"
    if proc.cmdline.startswith("[celeryd: "):  # a Celery worker's title: [celeryd: worker1@host:...]
        return proc.cmdline[len("[celeryd: "):].split("@", 1)[0]
    return None


def cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def terminate(procs: Iterable[Proc], timeout: float = 30.0) -> list[Proc]:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the processes that were signalled."""
    procs = [p for p in procs if p.pid not in ancestors()]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_same(p) for p in procs):
        time.sleep(0.2)
    for proc in procs:
        if _same(proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_same(p) for p in procs):
        time.sleep(0.1)
    return procs


def _same(proc: Proc) -> bool:
    """Still the same live process (not gone, not a zombie, pid not reused by another command)."""
    now = read(proc.pid)
    return now is not None and now.cmdline == proc.cmdline


def descendants(roots: set[int], procs: list[Proc]) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc.pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class Leftover:
    label: str
    proc: Proc
    children: int = 0


def project_processes(state_root: Path, repo_root: Path, service_pids: set[int]) -> list[Leftover]:
    """What of the project runs beyond the site's services (and their children: database
    backends, SSH sessions, SLURM steps), this process and its parents excluded.

    Airflow instances (their component marker, or an old-style stack's settings), and any other
    process started from this checkout's virtualenv (a test run, ``airflow dags test``, an
    ``hfc`` command...). Children of a listed process are counted, not listed.
    """
    allp = processes()
    skip = ancestors() | descendants(service_pids, allp)
    venv = str(repo_root / ".venv") + "/"
    airflow_home = str(state_root / "airflow")
    picked: dict[int, str] = {}
    for proc in allp:
        if proc.pid in skip:
            continue
        env = proc.environ
        label = None
        folder = env.get(MARK_DIR) or cwd(proc.pid)
        conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
        if Path(folder).parent == Path(airflow_home) and Path(folder).name.startswith("stack"):
            name = Path(folder).name
            instance = env.get(MARK_INSTANCE) or (name.removeprefix("stack-") if name != "stack" else "main")
            label = f"airflow instance {instance}: {component_of(proc) or '?'}"
        elif env.get("AIRFLOW_HOME") == airflow_home and conn.startswith("postgresql"):
            db = conn.rsplit("/", 1)[-1]
            label = f"airflow instance {db.removeprefix('airflow_') if db != 'airflow' else 'main'} (old style)"
        elif proc.cmdline.startswith("airflow api_server"):
            label = "airflow api-server"
        elif venv in proc.cmdline or (".venv/bin/" in proc.cmdline and cwd(proc.pid).startswith(str(repo_root))):
            label = "project process"
        if label:
            picked[proc.pid] = label
    out = []
    for pid, label in picked.items():
        proc = next(p for p in allp if p.pid == pid)
        if picked.get(proc.ppid) == label:
            continue  # counted under its parent
        kids = descendants({pid}, allp) - {pid}
        out.append(Leftover(label, proc, sum(1 for k in kids if picked.get(k) == label)))
    return sorted(out, key=lambda item: (item.label, item.proc.pid))
