"""COPY into the catalogue: the rows of a batch, in a savepoint, from a worker thread.

A COPY PostgreSQL refuses is located (the file, line and column of the first refused row) so
the loader can read that file again with the exact reader or reject it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg

from hfc_tasks.catalogue.bulk import Rows
from hfc_tasks.catalogue.formats import KindSpec
from hfc_tasks.catalogue.readers import Problem

COPY_CHUNK_ROWS = 50_000  # rows per COPY write: bounds memory on big nights


class CopyPipeline:
    """COPYs run in one worker thread while the main thread reads and checks the next chunk.

    PostgreSQL parses, checks foreign keys and updates indexes on one core while Python reads the
    next files on the other. The connection's own lock serialises any other statement the main
    thread sends meanwhile (id reservations), so nothing runs concurrently on the connection.
    ``on_done`` callbacks run in the main thread, in order, when the job is collected.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hfc-copy")
        self._pending: list[tuple[Future, Callable]] = []

    def submit(self, job: Callable, on_done: Callable) -> None:
        self.flush()  # one COPY in flight at most: its result may change what comes next
        self._pending.append((self._pool.submit(job), on_done))

    def flush(self) -> None:
        while self._pending:
            future, on_done = self._pending.pop(0)
            on_done(future.result())

    def shutdown(self) -> None:
        """Wait for the worker (a COPY in flight finishes or fails) without running callbacks:
        after an error nothing more is sent, the caller's transaction is rolled back."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


_LINE = re.compile(r"line (\d+)")
_COLUMN = re.compile(r"column (\w+)")
_KEY = re.compile(r"Key \((\w+)\)=")


def copy_rows(conn, spec: KindSpec, rows: Rows, columns: list[str], options: str, lines: list[str]):
    """COPY the rows in a savepoint. None when done; else (file, problem) of the first row
    PostgreSQL refused (the savepoint is rolled back: nothing of these rows stays)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            copy_lines(cur, spec.table, columns, options, lines)
    except (
        psycopg.errors.DataError,
        psycopg.errors.NotNullViolation,
        psycopg.errors.CheckViolation,
        psycopg.errors.UniqueViolation,  # e.g. a PR_LOCFNAME another night already loaded
    ) as exc:
        context = exc.diag.context or ""
        m = _LINE.search(context)
        if not m:
            raise
        r = int(m.group(1)) - 1
        i_file = int(rows.file_idx[r])
        col = _COLUMN.search(context) or _KEY.search(exc.diag.message_detail or "")
        column = col.group(1) if col else getattr(exc.diag, "column_name", None)
        header = next((c.name for c in spec.columns if c.target == column), column)
        reason = (exc.diag.message_primary or str(exc)).strip()
        if exc.diag.message_detail and isinstance(exc, psycopg.errors.UniqueViolation):
            reason += f" ({exc.diag.message_detail.strip()})"
        return rows.names[i_file], Problem(rows.names[i_file], int(rows.lines[r]), header and header.upper(), reason)
    return None


def copy_lines(cur, table: str, columns: list[str], options: str, lines: list[str]) -> None:
    """COPY prepared lines into hfc.<table>, written in pieces (bounded memory)."""
    with cur.copy(f"copy hfc.{table} ({', '.join(columns)}) from stdin{options}") as copy:
        for start in range(0, len(lines), COPY_CHUNK_ROWS):
            copy.write("\n".join(lines[start : start + COPY_CHUNK_ROWS]) + "\n")
