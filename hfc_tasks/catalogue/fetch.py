"""Reading the night's files from the archive, as the manifest recorded them.

A file the archive cannot give (permission denied, file or folder missing, connection lost) or
whose bytes are not those the manifest recorded is the archive's fault, not the FRC's: it raises
:class:`ArchiveReadError`, which rolls the whole load back (the previous batch stays).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from hfc_tasks.manifest import Entry

# What the archive answered when a file cannot be opened: the reason, and what to do about it.
_READ_ERRNOS = {
    errno.ENOENT: ("no such file", "the file or a folder above it was moved or deleted after the archive stage "
                   "wrote the manifest: put it back, or re-run the night (clear its 'submit')"),
    errno.EACCES: ("permission denied", "the archive account may not read the file or a folder above it: "
                   "restore the permissions, then clear the 'catalogue' task"),
    errno.EPERM: ("operation not permitted", "restore the archive account's access, then clear 'catalogue'"),
    errno.EISDIR: ("is a folder", "a folder stands where the manifest lists a file: fix the archive tree"),
    errno.ENOTDIR: ("a path component is not a folder", "fix the archive tree"),
}
_ERRNO_OF = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR,
             NotADirectoryError: errno.ENOTDIR}  # an OSError raised without its errno


class ArchiveReadError(RuntimeError):
    """A file the manifest lists could not be read from the archive, or its bytes are not those
    the manifest recorded: the archive, not the file's content, is at fault. Nothing is loaded
    (the transaction rolls back: the previous batch of the night stays as it was).

    ``path``: the manifest's archive path (relative to the archive root; callers that know the
    root name the full path). ``reason``: what went wrong, ``hint``: what to do. ``transient``:
    the connection was lost (a retry may succeed); else it needs someone to fix the archive.
    """

    def __init__(self, path: str, reason: str, hint: str, *, transient: bool, frc: str = "", night=None):
        self.path, self.reason, self.hint, self.transient = path, reason, hint, transient
        self.frc, self.night = frc, night
        super().__init__(path)

    @classmethod
    def of(cls, path: str, exc: BaseException) -> ArchiveReadError:
        """From what ``read_file`` raised: a refusal of the archive (errno) or a lost connection."""
        code = getattr(exc, "errno", None) or next(
            (c for k, c in _ERRNO_OF.items() if isinstance(exc, k)), None)
        if code in _READ_ERRNOS:
            reason, hint = _READ_ERRNOS[code]
            return cls(path, f"{reason} ({exc})", hint, transient=False)
        return cls(path, f"connection lost or SFTP failure ({type(exc).__name__}: {exc})",
                   "the task is retried; if it keeps failing, check the archive host and its connection",
                   transient=True)

    def message(self, where: str | None = None) -> str:
        """The operator's message; ``where``: the file's full name on the archive (default: its path)."""
        who = f"{self.frc} {self.night}: " if self.frc else ""
        kept = f"the previous batch of {self.frc} {self.night}" if self.frc else "the previous batch"
        return (f"{who}cannot load from the archive: {where or self.path}: {self.reason}. Nothing was loaded: "
                f"{kept} is kept unchanged. {self.hint[:1].upper()}{self.hint[1:]}.")

    def __str__(self) -> str:
        return self.message()


def archive_fault(exc: BaseException) -> bool:
    """Whether a reader's exception is the archive's answer or a lost connection (OS errors,
    end of stream, the SSH libraries' own errors), as opposed to a bug in the caller."""
    return isinstance(exc, OSError | EOFError) or any(
        c.__module__.split(".")[0] in ("paramiko", "asyncssh") for c in type(exc).__mro__)


def fetch(e: Entry, read_file: Callable[[str], bytes], *, frc: str = "", night=None) -> bytes:
    """The file's bytes, checked against the manifest's sha256; :class:`ArchiveReadError` if the
    archive cannot give them or gives other bytes (``frc``, ``night``: for its message)."""
    try:
        data = read_file(e.archive_path)
    except Exception as exc:
        if not archive_fault(exc):
            raise  # a bug, not the archive: as it is
        err = ArchiveReadError.of(e.archive_path, exc)
        err.frc, err.night = frc, night
        raise err from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != e.sha256:
        # Not a content problem of the FRC: the archive stage verified these bytes against the
        # cluster's. The copy was altered, overwritten (a later run, a rewriting tracker) or the
        # manifest is stale: loading it would replace the good batch with unverified rows.
        raise ArchiveReadError(
            e.archive_path, f"sha256 {digest} on the archive, the manifest says {e.sha256} (the archive copy is "
            "not the file the archive stage verified)",
            "find out what changed it (another run, a tracker that rewrites its files, a disk fault); to "
            "recompute the night clear its 'submit' (the archive stage replaces an archive copy only for an FRC "
            "with rewrites: true: else remove the bad copy first)", transient=False, frc=frc, night=night)
    return data


class ReconnectingReader:
    """The loader's ``read_file`` over an archive SFTP session that is opened again when the link
    drops mid-load, like the archive stage does: a dropped link costs a reconnect, not one of the
    task's few Airflow tries (a flaky network could spend them all on one night). A refusal by
    the archive itself (missing file, permission: an errno) is final at once, and after
    ``reconnects`` reconnects in a row the last error is raised, for :func:`fetch` to name.

    ``open_session()``: a context manager yielding an SFTP client (paramiko's interface:
    ``open(path, "rb")`` with ``prefetch()``/``read()``); ``root``: the archive root the
    manifest's paths are relative to; ``say``: where each reconnect is told (the task log).
    """

    def __init__(self, open_session: Callable[[], AbstractContextManager], root: str, *, reconnects: int = 5,
                 delay: float = 1.0, say: Callable[[str], None] = lambda _msg: None,
                 sleep: Callable[[float], None] = time.sleep):
        self._open, self.root, self.reconnects, self.delay = open_session, root, reconnects, delay
        self.say, self.sleep = say, sleep
        self._stack: contextlib.ExitStack | None = None
        self._sftp = None
        self.reconnected = 0  # reconnects done over the whole load

    def session(self):
        """The current SFTP client, opened on first use and after a drop."""
        if self._sftp is None:
            stack = contextlib.ExitStack()
            try:
                self._sftp = stack.enter_context(self._open())
            except BaseException:
                stack.close()
                raise
            self._stack = stack
        return self._sftp

    def _drop(self) -> None:
        stack, self._stack, self._sftp = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):  # the link is already gone: closing may fail too
                stack.close()

    def __call__(self, archive_path: str) -> bytes:
        full = posixpath.join(self.root, archive_path)
        in_a_row = 0
        while True:
            try:
                with self.session().open(full, "rb") as f:
                    f.prefetch()
                    return f.read()
            except Exception as exc:
                refused = getattr(exc, "errno", None) in _READ_ERRNOS or isinstance(exc, tuple(_ERRNO_OF))
                if refused or not archive_fault(exc) or in_a_row >= self.reconnects:
                    raise
                in_a_row += 1
                self.reconnected += 1
                self._drop()
                wait = min(self.delay * in_a_row, 10.0)
                self.say(f"archive link lost reading {full} ({type(exc).__name__}: {exc}); reconnect "
                         f"{in_a_row}/{self.reconnects} in {wait:.0f} s (nothing is loaded before every file is read)")
                self.sleep(wait)

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> ReconnectingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
