"""Benchmark of the catalogue loader (issue 5): a big SDOSS night through the real loader, against
``psql \\copy`` of the same rows into the same table and against row-by-row INSERT (the old
Java hfc_insert's way), on the same database in the same run.

    set -a; eval "$(.venv/bin/hfc site env)"; set +a
    .venv/bin/python bench/catalogue_load.py --files 10000 --rows 100 --repeat 3   # 1M sunspots
    .venv/bin/python bench/catalogue_load.py --files 200 --rows 100 --repeat 1     # a quick look

Data files go to ``--data`` (default /tmp/hfc-bench-catalogue, re-used when present); each
measurement runs in a brand-new database (created and dropped here, owned by the catalogue
role) so nothing else on the machine is touched. Reported per method: seconds, rows/s, and
the loader's peak RSS (``ru_maxrss`` of a child process that does only the load).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))  # catalogue_files imports helpers, as under pytest

# The SDOSS night of the catalogue tests (same columns, same init files).
from catalogue_files import FEAT_COLUMNS, SDOSS_FEAT, init_csv  # noqa: E402

SAMPLES = REPO / "tests" / "data" / "hfc_samples"
NIGHT = dt.date(2024, 3, 1)


def _feat(t: dt.datetime, n: int, name: str, rnd: random.Random) -> str:
    lines = [";".join(FEAT_COLUMNS)]
    run = t.strftime("%Y-%m-%dT%H:%M:%S")
    for k in range(1, n + 1):
        vals = []
        for col in SDOSS_FEAT.columns:
            if col.name == "ID_SUNSPOT":
                vals.append(str(k))
            elif col.name == "FRC_INFO_ID":
                vals.append("1")
            elif col.name == "OBSERVATIONS_ID_IC":
                vals.append("1")
            elif col.name == "OBSERVATIONS_ID_M":
                vals.append("2")
            elif col.name in ("FEAT_TOT_BZ", "UMBRA_MIN_BZ"):
                vals.append("NULL")
            elif col.name == "CC":
                vals.append("".join(rnd.choice("01234567") for _ in range(40)))
            elif col.name == "RS":
                vals.append(" ".join(str(rnd.randint(0, 4096)) for _ in range(6)))
            elif col.name == "SNAPSHOT_FN":
                vals.append(f"sdoss_{t:%Y%m%dT%H%M%S}_{k}.png")
            elif col.name == "SNAPSHOT_PATH":
                vals.append("http://hfc.example.org/sdoss/snapshots/")
            elif col.name == "FEAT_FILENAME":
                vals.append(name)
            elif col.type == "int":
                vals.append(str(rnd.randint(0, 4096)))
            elif col.type == "float":
                vals.append(f"{rnd.uniform(-1000, 1000):.6f}")
            elif col.type == "datetime":
                vals.append(run)
            else:
                vals.append("x")
        lines.append(";".join(vals))
    return "\n".join(lines) + "\n"


def make_night(folder: Path, files: int, rows: int) -> dict:
    """Write the night's files under ``folder`` (re-used when the same shape is there)."""
    stamp = folder / f"shape-{files}x{rows}.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    results = folder / "sdoss" / "results" / "2024"
    results.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(5)
    entries = []

    def add(name: str, kind: str, data: bytes) -> None:
        (results / name).write_bytes(data)
        entries.append({"name": name, "kind": kind, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "archive_path": f"sdoss/results/2024/{name}", "url_base": "file:///archive/sdoss/results/2024"})

    add("sdoss_106_frc_info.csv", "frc_info", (SAMPLES / "sdoss_106_frc_info.csv").read_bytes())
    add("sdoss_106_observatory.csv", "observatory", (SAMPLES / "sdoss_106_observatory.csv").read_bytes())
    start = dt.datetime.combine(NIGHT, dt.time())
    for i in range(files):
        t = start + dt.timedelta(seconds=8 * i)  # 10,000 observation times within the night
        stem = f"sdoss_106_{t:%Y%m%dT%H%M%S}_sdo"
        add(f"{stem}_init.csv", "init", init_csv(t))
        add(f"{stem}_feat.csv", "feat", _feat(t, rows, f"{stem}_feat.csv", rnd).encode())
    manifest = {"format": "hfc-manifest/1", "frc": "sdoss", "night": NIGHT.isoformat(), "product_format": "sdoss",
                "frc_version": "1.0.6", "slurm_job_id": "1", "files": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    stamp.write_text(json.dumps(manifest))
    return manifest


def new_db(admin_dsn: str) -> str:
    import psycopg

    name = f"hfc_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


def drop_db(admin_dsn: str, dsn: str) -> None:
    import psycopg

    name = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def run_loader(dsn: str, folder: Path) -> dict:
    """In a child process (its own peak RSS): upgrade, then time load_night alone."""
    code = f"""
import json, os, resource, time, psycopg, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from hfc_tasks.catalogue import load_night, upgrade
folder = Path({str(folder)!r})
manifest = json.loads((folder / "manifest.json").read_text())
with psycopg.connect(os.environ["HFC_BENCH_DSN"]) as conn:
    upgrade(conn); conn.commit()
    t0 = time.perf_counter()
    report = load_night(conn, manifest, lambda p: (folder / p).read_bytes())
    seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "rows": report.rows, "rejected": len(report.rejected),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    # The DSN holds the password: it goes through the environment, never the child's argv.
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "HFC_BENCH_DSN": dsn}).stdout
    return json.loads(out.strip().splitlines()[-1])


def export_rows(dsn: str, path: Path) -> int:
    """The loaded sunspot rows exactly as stored, as a CSV for psql \\copy (same columns)."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur, path.open("wb") as out:
        with cur.copy("copy (select * from hfc.sunspots) to stdout (format csv)") as copy:
            for block in copy:
                out.write(block)
        return cur.execute("select count(*) from hfc.sunspots").fetchone()[0]


def prepare_copy_target(dsn: str) -> None:
    """Empty sunspots (observations, frc_info, batch rows stay: the FKs are checked as in a load)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("truncate hfc.sunspots cascade")  # noaa_sp, sunspots_tracking: empty here


def libpq_env(dsn: str) -> dict[str, str]:
    """The DSN as libpq's PG* variables: psql gets the password from its environment, not argv."""
    from psycopg.conninfo import conninfo_to_dict

    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}
    return {names[k]: str(v) for k, v in conninfo_to_dict(dsn).items() if k in names and v is not None}


def run_psql_copy(dsn: str, csv_path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy hfc.sunspots from '{csv_path}' (format csv)"], check=True,
                   env={**os.environ, **libpq_env(dsn)})
    return time.perf_counter() - t0


def run_row_by_row(dsn: str, csv_path: Path, limit: int, autocommit: bool = False) -> tuple[float, int]:
    """INSERT one row per statement (server-side prepared), like the old Java inserter; in one
    transaction, or committing every row (JDBC's default autocommit)."""
    import csv as csvmod

    import psycopg

    with psycopg.connect(dsn, autocommit=autocommit) as conn, conn.cursor() as cur:
        cur.execute("truncate hfc.sunspots cascade")
        cols = [r[0] for r in cur.execute(
            "select column_name from information_schema.columns where table_schema='hfc' and table_name='sunspots'"
            " order by ordinal_position")]
        sql = f"insert into hfc.sunspots ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})"
        n = 0
        t0 = time.perf_counter()
        with csv_path.open() as f:
            for rec in csvmod.reader(f):
                cur.execute(sql, [v if v != "" else None for v in rec], prepare=True)
                n += 1
                if n >= limit:
                    break
        if not autocommit:
            conn.commit()
        return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=100, help="sunspots per feat file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--insert-rows", type=int, default=20_000, help="rows for the row-by-row INSERT run")
    ap.add_argument("--data", default="/tmp/hfc-bench-catalogue")
    args = ap.parse_args()
    admin = os.environ["HFC_CATALOGUE_DSN"]
    folder = Path(args.data) / f"{args.files}x{args.rows}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_night(folder, args.files, args.rows)
    print(f"data: {folder} ({time.perf_counter() - t0:.1f}s to prepare)", flush=True)
    results: dict[str, list] = {"loader": [], "copy": [], "insert": [], "insert_ac": []}
    for i in range(args.repeat):
        dsn = new_db(admin)
        try:
            r = run_loader(dsn, folder)
            n = r["rows"]["sunspots"]
            results["loader"].append((r["seconds"], n, r["rss_mb"]))
            print(f"run {i + 1}: loader {r['seconds']:.1f}s {n / r['seconds']:,.0f} rows/s "
                  f"(rss {r['rss_mb']:.0f} MB, rows {r['rows']})", flush=True)
            csv_path = folder / "sunspots.csv"
            n = export_rows(dsn, csv_path)
            prepare_copy_target(dsn)
            s = run_psql_copy(dsn, csv_path)
            results["copy"].append((s, n))
            print(f"run {i + 1}: psql \\copy {s:.1f}s {n / s:,.0f} rows/s", flush=True)
            s, k = run_row_by_row(dsn, csv_path, args.insert_rows)
            results["insert"].append((s, k))
            print(f"run {i + 1}: row-by-row INSERT {k} rows {s:.1f}s {k / s:,.0f} rows/s", flush=True)
            s, k = run_row_by_row(dsn, csv_path, args.insert_rows, autocommit=True)
            results["insert_ac"].append((s, k))
            print(f"run {i + 1}: row-by-row INSERT, autocommit, {k} rows {s:.1f}s {k / s:,.0f} rows/s", flush=True)
        finally:
            drop_db(admin, dsn)
    print("\n| method | best rows/s | median rows/s | runs |")
    print("|---|---:|---:|---:|")
    for name, label in (("loader", "loader (parse + remap + COPY)"), ("copy", "psql \\copy of the same rows"),
                        ("insert", "row-by-row INSERT, one transaction"),
                        ("insert_ac", "row-by-row INSERT, autocommit")):
        rates = [r[1] / r[0] for r in results[name]]
        print(f"| {label} | {max(rates):,.0f} | {statistics.median(rates):,.0f} | {len(rates)} |")
    best = {k: max(r[1] / r[0] for r in v) for k, v in results.items()}
    med = {k: statistics.median([r[1] / r[0] for r in v]) for k, v in results.items()}
    print(f"\nloader / \\copy: best {best['loader'] / best['copy']:.2f}x, median {med['loader'] / med['copy']:.2f}x")
    for k in ("insert", "insert_ac"):
        print(f"loader / {k}: best {best['loader'] / best[k]:.0f}x, median {med['loader'] / med[k]:.0f}x")
    print(f"loader peak RSS: {max(r[2] for r in results['loader']):.0f} MB")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
