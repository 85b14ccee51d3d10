"""Small process and file helpers shared by the local-site services (no Airflow import)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Generator, Sequence
from pathlib import Path


class SiteError(RuntimeError):
    """A local-site service could not be prepared or started; the message names the log to read."""


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    what: str = "",
    log: Path | None = None,
    secrets: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure raise SiteError with the output and log path.

    Passwords never go in ``cmd`` (every user of the machine can read a process's argv): give
    them through ``input`` or ``env``, and list them in ``secrets`` so that an error message
    (a client echoing the failing statement) shows ``***`` instead.
    """
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=full_env,
            input=input,
            timeout=timeout,
            # Never let a daemon we start inherit our stdin (pytest, a terminal).
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SiteError(redact(_describe(what, cmd, f"timed out after {timeout:.0f} s", log), secrets)) from exc
    except FileNotFoundError as exc:
        raise SiteError(_describe(what, cmd, f"program not found: {exc.filename}", log)) from exc
    if check and proc.returncode != 0:
        detail = f"exit {proc.returncode}\n{proc.stdout.strip()}\n{proc.stderr.strip()}".strip()
        raise SiteError(redact(_describe(what, cmd, detail, log), secrets))
    return proc


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def write_secret(path: Path, data: str | bytes, owner: str | None = None, mode: int = 0o600,
                 replace: bool = True) -> None:
    """Create a secret file private from its first byte: written to a temporary file opened
    with ``mode`` (0600) and renamed into place; never written wider and chmod-ed after.

    ``replace=False``: keep a file that another process created meanwhile (first one wins).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        if owner is not None:
            pw = pwd.getpwnam(owner)
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe(what: str, cmd: Sequence[str], detail: str, log: Path | None) -> str:
    msg = f"{what or cmd[0]}: command {' '.join(cmd)!r} failed: {detail}"
    if log is not None:
        msg += f"\n  read the log: {log}"
        tail = tail_file(log)
        if tail:
            msg += "\n  last lines:\n    " + "\n    ".join(tail)
    return msg


def tail_file(path: Path, lines: int = 15) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            return fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None, comm: str | None = None) -> bool:
    """True if pid exists, is not a zombie, and (if given) its command name is comm.

    The name check guards against a stale pid file whose number was reused by another process.
    """
    if not pid or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Format: "pid (comm) state ..."; comm may contain spaces or parentheses, so split on the last ')'.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
    if state in ("Z", "X"):
        return False
    # The kernel truncates command names to 15 characters.
    return comm is None or name == comm[:15]


def pidfile_alive(pid_file: Path, comm: str | None = None) -> bool:
    return pid_alive(read_pid(pid_file), comm)


def clear_stale_pid(pid_file: Path, comm: str | None) -> None:
    """Remove a pid file whose process is gone or a zombie before starting a new instance.

    Daemons re-parented to PID 1 may stay zombies for a while on these machines (PID 1 reaps
    lazily), and kill(pid, 0) succeeds on zombies: postgres then refuses to start ("lock file
    already exists") and slurmctld/slurmd wait for the "old instance" to exit.
    """
    if pid_file.exists() and not pidfile_alive(pid_file, comm):
        pid_file.unlink(missing_ok=True)


def stop_pid(pid_file: Path, comm: str | None, timeout: float = 20.0) -> bool:
    """SIGTERM the process named by pid_file, wait, then SIGKILL. Returns True if something was stopped."""
    pid = read_pid(pid_file)
    if not pid_alive(pid, comm):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, comm):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid, comm):
        time.sleep(0.05)
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def ensure_dir(path: Path, owner: str = "root", mode: int = 0o755) -> Path:
    """Create path (and parents, root-owned 755) and force its owner and mode."""
    path.mkdir(parents=True, exist_ok=True)
    _own(path, pwd.getpwnam(owner), mode)
    return path


def _own(path: Path, pw: pwd.struct_passwd, mode: int) -> None:
    """Force path's owner (and group) to pw's and its mode to mode, touching only what differs."""
    st = path.stat()
    if (st.st_uid, st.st_gid) != (pw.pw_uid, pw.pw_gid):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)


def write_file(path: Path, text: str, owner: str = "root", mode: int = 0o644) -> bool:
    """Write text atomically if it differs; fix owner and mode. Returns True if the content changed."""
    changed = True
    try:
        changed = path.read_text() != text
    except OSError:
        pass
    pw = pwd.getpwnam(owner)
    if changed:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    else:
        _own(path, pw, mode)
    return changed


def chown_tree(root: Path, owner: str) -> None:
    pw = pwd.getpwnam(owner)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


@contextlib.contextmanager
def file_lock(path: Path) -> Generator[None]:
    """Exclusive lock so two `up`/`down` calls (two terminals, parallel test sessions) do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def spawn_detached(cmd: Sequence[str], log: Path) -> None:
    """Start a foreground-only program so it outlives us and is not our zombie.

    `setsid -f` forks, so the program is re-parented away from this Python process (a long-lived
    pytest would otherwise hold it as a zombie after it dies, and pid checks would see it alive).
    """
    with open(log, "ab") as out:
        subprocess.run(
            ["setsid", "-f", *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=True,
            close_fds=True,
        )
