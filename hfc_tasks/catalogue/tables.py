"""What the loader asks of the catalogue's tables: their columns and primary key, ids drawn
from a table's identity sequence, shared metadata rows found or inserted by their content."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hfc_tasks.catalogue.formats import FormatError


@dataclass
class Table:
    """What the loader needs to know about a catalogue table (read once per load)."""

    name: str
    columns: set[str]
    pk: str | None
    unique_keys: tuple[frozenset[str], ...] = ()  # column sets of its unique indexes (ON CONFLICT targets)


def table_info(cur, table: str, cache: dict) -> Table:
    if table not in cache:
        cur.execute(
            "select column_name from information_schema.columns where table_schema = 'hfc' and table_name = %s",
            (table,),
        )
        columns = {r[0] for r in cur.fetchall()}
        if not columns:
            raise FormatError(f"catalogue table hfc.{table} does not exist")
        cur.execute(
            """
            select a.attname from pg_index i
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = %s::regclass and i.indisprimary
            """,
            (f"hfc.{table}",),
        )
        row = cur.fetchone()
        # Unique indexes ON CONFLICT (columns) can infer: on plain columns, not partial.
        cur.execute(
            """
            select array_agg(a.attname::text) from pg_index i
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
            where i.indrelid = %s::regclass and i.indisunique and i.indpred is null and i.indexprs is null
            group by i.indexrelid
            """,
            (f"hfc.{table}",),
        )
        unique = tuple(frozenset(r[0]) for r in cur.fetchall())
        cache[table] = Table(table, columns, row[0] if row else None, unique)
    return cache[table]


def check_owned(table: Table, kind: str) -> None:
    """A kind's rows are owned by the night's batch: its table needs batch_id, or re-running the
    night (delete of hfc.batch, which cascades) would leave the old rows beside the new ones."""
    if "batch_id" not in table.columns:
        raise FormatError(
            f"kind {kind}: hfc.{table.name} has no batch_id column, so its rows could not be replaced when "
            "the night is re-run; declare the table in metadata_tables with a content key (its rows are then "
            f"matched, never owned), or give hfc.{table.name} a batch_id (a migration)")


def check_match_key(table: Table, key: tuple[str, ...]) -> None:
    """Metadata rows are found or inserted with ON CONFLICT on their key: PostgreSQL needs a unique
    index (or constraint) on exactly those columns, else every insert fails."""
    missing = sorted(set(key) - table.columns)
    if missing:
        raise FormatError(f"metadata table hfc.{table.name}: its match key ({', '.join(key)}) names "
                          f"column(s) {missing} it does not have (formats metadata_tables)")
    if frozenset(key) not in table.unique_keys:
        have = "; ".join("(" + ", ".join(sorted(k)) + ")" for k in table.unique_keys) or "none"
        raise FormatError(
            f"metadata table hfc.{table.name}: no unique index or constraint on exactly its match key "
            f"({', '.join(key)}) (formats metadata_tables; its unique keys: {have}); its rows are matched by "
            "content with ON CONFLICT on that key: declare a key the table has a unique index on, or add "
            "that index (a migration)")


def reserve_ids(cur, table: Table, n: int) -> np.ndarray:
    """n ids from the table's identity sequence, ascending (concurrent loaders may interleave)."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    cur.execute(
        "select min(v), max(v) from (select nextval(pg_get_serial_sequence(%s, %s)) v"
        " from generate_series(1, %s)) s",
        (f"hfc.{table.name}", table.pk, n),
    )
    low, high = cur.fetchone()
    if high - low + 1 == n:  # the usual case: one block, nobody else drew from the sequence meanwhile
        return np.arange(low, high + 1, dtype=np.int64)
    cur.execute(
        "select nextval(pg_get_serial_sequence(%s, %s)) from generate_series(1, %s)",
        (f"hfc.{table.name}", table.pk, n),
    )
    return np.sort(np.fromiter((r[0] for r in cur.fetchall()), dtype=np.int64, count=n))


def _py(value):
    """A pandas/numpy cell as a plain Python value for psycopg (NA/NaN/NaT -> None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and np.isnan(value):
            return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def match_metadata(cur, table: str, key: tuple[str, ...], columns: dict[str, pd.Series]) -> tuple[np.ndarray, int]:
    """Find or insert each metadata row by its content key; return each row's catalogue id.

    The unique content index makes concurrent loaders agree: ON CONFLICT DO NOTHING waits for
    the other transaction's row and then uses it. Existing rows are never rewritten (other
    nights point at them). Identical rows are looked up once.
    """
    pk = table_info(cur, table, {}).pk
    cols = list(columns)
    insert = (
        f"insert into hfc.{table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))}) "
        f"on conflict ({', '.join(key)}) do nothing returning {pk}"
    )
    select = f"select {pk} from hfc.{table} where " + " and ".join(f"{k} is not distinct from %s" for k in key)
    records = [tuple(_py(v) for v in row) for row in zip(*(columns[c] for c in cols), strict=True)]
    found: dict[tuple, int] = {}
    new = 0
    for rec in records:
        if rec in found:
            continue
        row = dict(zip(cols, rec, strict=True))
        cur.execute(insert, rec)
        got = cur.fetchone()
        if got is None:
            cur.execute(select, [row[k] for k in key])
            got = cur.fetchone()
        else:
            new += 1
        found[rec] = got[0]
    return np.array([found[r] for r in records], dtype=np.int64), new
