"""Benchmark of the HQI query service (issue 12): 20 concurrent clients on a catalogue of
1,000,000 sunspots, the service (``hfc hqi serve``, SOAP over HTTP as pyhfc sends it) side by
side with the same SQL run directly through psycopg, in the same run.

    set -a; eval "$(.venv/bin/hfc site env)"; set +a
    .venv/bin/python bench/hqi_service.py                      # build once, then measure
    .venv/bin/python bench/hqi_service.py --rebuild            # build the catalogue again
    .venv/bin/python bench/hqi_service.py --seconds 10 --workers 1   # a quick look
    .venv/bin/python bench/hqi_service.py --rounds 2 --render --profile \
        --py-spy /path/to/py-spy --json /tmp/hfc-bench-hqi/run.json   # as in docs/benchmarks.md

The catalogue: a database of its own on the site's PostgreSQL (``--db``, default
``hfc_bench_hqi``), created by the catalogue role (``HFC_CATALOGUE_DSN``), migrated by the
project's migrations and filled with COPY through the tables behind ``VIEW_SP_HQI``: one SDOSS
batch per night, four HMI times a night (continuum + magnetogram observations, 45 s each), and
their sunspots, a few hundred a day following solar cycle 24 from May 2010 (few at the minima,
~10x more at the maximum), with plausible positions, areas, intensities, chain codes and raster
scans. Kept between runs (a table ``public.bench_hqi_build`` records a finished build); built
again when missing, when ``--sunspots`` differs, or with ``--rebuild``. ``VACUUM ANALYZE`` after.

The measurement, per operation (one-day ``TimeQuery`` on VIEW_SP_HQI; ``SQLSelect`` with a WHERE
on the indexed ``FEAT_AREA_DEG2``, ``hfc.sunspots_feat_area_deg2_idx``, ranges of ~300 rows, as
``pyhfc`` ``select(where={"FEAT_AREA_DEG2": (lo, hi)})`` sends it), each contender for
``--seconds`` after ``--warmup``, ``--clients`` at once, the same sequence of parameters:

- ``psycopg``: the SQL the service runs (its VOTable's ``QUERY_STRING``, checked at start), by
  ``--clients`` threads with one connection each, rows fetched as Python objects;
- ``psycopg+guard``: the service's own reader (``hfc_tasks.hqi.reader.Reader``, one connection
  per client thread as in the service): the SQL exactly as the service sends it (read-only
  transaction, its ``set_config``, the describe, the values as text, the row and answer guards,
  rollback, ``pg_advisory_unlock_all()``), without HTTP, SOAP and the VOTable;
- ``psycopg+render`` (``--render``): a prototype, for its cost: PostgreSQL writes each row as
  its TABLEDATA ``<TR>`` text (:func:`render_sql`), the client joins them;
- ``service wN``: ``hfc hqi serve --workers N`` in a subprocess on a free loopback port, SOAP
  POSTs (the envelope suds builds from the service's WSDL, suds' headers) sent by httpx, one
  keep-alive connection per client; each answer checked (HTTP 200, QUERY_STATUS OK, its row count
  equal to the bare query's for the same parameters).

Where the service's time goes: ``--py-spy PATH`` samples the 1-worker service with ``py-spy
record --gil`` over each measured window and sums the samples by stage (VOTable, reader,
row-size check, HTTP, SOAP); ``--profile`` times one request's stages alone, in this process
(SOAP parsing, the reader, VOTable writing, the envelope, and the bare SQL), with a cProfile.

The service logs in with ``HFC_HQI_DSN`` (the read-only role) pointed at the benchmark database,
else with the catalogue role (said in the output). Results as a table, and as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import math
import os
import platform
import pstats
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORK = Path("/tmp/hfc-bench-hqi")
FIRST_NIGHT = dt.date(2010, 5, 1)
HOURS = (0, 6, 12, 18)  # four HMI times a night
CYCLE_MIN = 2008.96  # solar cycle 24 began in December 2008 and peaked in April 2014
CYCLE_YEARS = 11.0
ARCHIVE = "http://127.0.0.1/hfc-archive/sdoss"
SEED = 12

# ------------------------------------------------------------------ the catalogue


def with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def build_state(dsn: str) -> dict | None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "select sunspots, observations, nights, seed, seconds, first_night, last_night "
                "from public.bench_hqi_build").fetchone()
    except psycopg.OperationalError:
        return None  # no such database
    except psycopg.errors.UndefinedTable:
        return None  # an unfinished build
    if row is None:
        return None
    keys = ("sunspots", "observations", "nights", "seed", "seconds", "first_night", "last_night")
    return dict(zip(keys, row, strict=True))


def cycle(t_year: float) -> float:
    """Solar cycle 24's shape, 0 at the minima, 1 at the maximum."""
    return math.sin(math.pi * (t_year - CYCLE_MIN) / CYCLE_YEARS) ** 2


def plan(total: int, rnd: random.Random) -> list[tuple[dt.datetime, int]]:
    """(time, number of sunspots) of every observation until ``total`` sunspots: ~76 a time
    on average over the cycle (10 at the minimum, 130 at the maximum), Poisson-like noise."""
    out: list[tuple[dt.datetime, int]] = []
    left = total
    night = FIRST_NIGHT
    while left > 0:
        year = night.year + (night.timetuple().tm_yday - 0.5) / 365.25
        mean = 10 + 120 * cycle(year)
        for h in HOURS:
            n = max(0, int(round(rnd.gauss(mean, math.sqrt(mean) * 1.5))))
            n = min(n, left)
            if n:
                out.append((dt.datetime(night.year, night.month, night.day, h, 0, 0), n))
                left -= n
            if left == 0:
                break
        night += dt.timedelta(days=1)
    return out


def _julian(t: dt.datetime) -> float:
    return 2440587.5 + (t - dt.datetime(1970, 1, 1)).total_seconds() / 86400.0


def build(owner_dsn: str, name: str, total: int, *, rebuild: bool) -> dict:
    """The benchmark catalogue ``name``: reused when complete, else (re)built. Returns its state."""
    import psycopg

    dsn = with_db(owner_dsn, name)
    state = None if rebuild else build_state(dsn)
    if state is not None and state["sunspots"] == total:
        print(f"catalogue {name}: reused ({state['sunspots']:,} sunspots, {state['observations']:,} "
              f"observations, nights {state['first_night']} .. {state['last_night']}, built in "
              f"{state['seconds']:.0f} s)", flush=True)
        return state
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    print(f"catalogue {name}: building {total:,} sunspots ...", flush=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    from hfc_tasks.catalogue.schema import upgrade

    rnd = random.Random(SEED)
    obs_plan = plan(total, rnd)
    with psycopg.connect(dsn) as conn:
        upgrade(conn)
        conn.commit()
        t = time.perf_counter()
        nights, n_obs = _fill(conn, obs_plan, rnd)
        conn.commit()
        timings["copy"] = time.perf_counter() - t
    with psycopg.connect(dsn, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute("vacuum analyze")
        timings["vacuum_analyze"] = time.perf_counter() - t
        seconds = time.perf_counter() - t0
        conn.execute(
            "create table public.bench_hqi_build as select %s::int as sunspots, %s::int as observations, "
            "%s::int as nights, %s::int as seed, %s::float8 as seconds, %s::date as first_night, "
            "%s::date as last_night",
            (total, n_obs, nights, SEED, seconds, obs_plan[0][0].date(), obs_plan[-1][0].date()))
    print(f"catalogue {name}: built in {seconds:.0f} s (COPY {timings['copy']:.0f} s, VACUUM ANALYZE "
          f"{timings['vacuum_analyze']:.0f} s; {n_obs:,} observations, {nights:,} nights, "
          f"{obs_plan[0][0]:%Y-%m-%d} .. {obs_plan[-1][0]:%Y-%m-%d})", flush=True)
    return build_state(dsn) or {}


def _fill(conn, obs_plan: list[tuple[dt.datetime, int]], rnd: random.Random) -> tuple[int, int]:
    """COPY frc_info, observatory, batch, observations and sunspots; returns (nights, observations)."""
    import numpy as np
    from psycopg.copy import QueuedLibpqWriter

    cur = conn.cursor()
    cur.execute(
        "insert into hfc.frc_info (id_frc_info, institut, code, version, feature_name, enc_met, person, "
        "contact, reference) values (1, 'MSSL', 'SDOSS', '1.06', 'SUNSPOTS', 'RASTERSCAN/CHAINCODE', "
        "'Sergei Zharkov', 'sz2@mssl.ucl.ac.uk', 'DOI: 10.1007/s11207-005-5623-0')")
    cur.execute(
        "insert into hfc.observatory (id_observatory, observat, instrume, telescop, units, wavemin, wavemax, "
        "wavename, waveunit, spectral_name, obs_type) values "
        "(1, 'SDO', 'HMI', 'Continuum', 'Counts', 617.133, 617.133, 'Fe I', 'nm', 'Visible', 'REMOTE-SENSING'), "
        "(2, 'SDO', 'HMI', 'Magnetogram', 'Gauss', 617.133, 617.133, 'Fe I', 'nm', "
        "'Line_of_sight magnetic field', 'REMOTE-SENSING')")
    nights = sorted({t.date() for t, _ in obs_plan})
    finished = dt.datetime.now(dt.UTC)
    with cur.copy("copy hfc.batch (frc, night, product_format, manifest_sha256, slurm_job_id, frc_version, "
                  "finished_at, status, row_counts) from stdin") as copy:
        for i, night in enumerate(nights):
            copy.write_row(("sdoss", night, "sdoss", f"{i:064x}", str(100000 + i), "1.06", finished, "loaded",
                            "{}"))
    batch_of = dict(cur.execute("select night, id from hfc.batch").fetchall())

    # Observations: for time i, continuum id 2i+1 and magnetogram id 2i+2.
    buf = io.StringIO()
    for i, (t, _) in enumerate(obs_plan):
        jd = _julian(t)
        jdint, jdfrac = int(jd), jd - int(jd)
        rot = int((jd - 2398140.2270) / 27.2752316) + 1
        r_sun = 1920.0 + 32.0 * math.cos(2 * math.pi * (t.timetuple().tm_yday - 3) / 365.25)
        end = t + dt.timedelta(seconds=45)
        batch = batch_of[t.date()]
        src = f"sdoss_106_hmi_{t:%Y%m%dT%H%M%S}_init.csv"
        for k, kind in ((1, "continuum"), (2, "magnetogram")):
            fits = f"hmi.{'ic_45s' if k == 1 else 'm_45s'}.{t:%Y.%m.%d_%H_%M_%S}_TAI.{kind}.fits"
            qclk = f"hmi.ic_45s.{t:%Y.%m.%d_%H_%M_%S}_TAI.continuum.jpg" if k == 1 else "\\N"
            qurl = f"{ARCHIVE}/images/full/SDO/HMI/{t:%Y}/" if k == 1 else "\\N"
            buf.write("\t".join((
                str(2 * i + k), str(k), f"{t:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}", str(jdint),
                f"{jdfrac:.6f}", "45.0", str(rot), "1.0", "0.0", "32", "4096", "4096", f"{r_sun:.3f}",
                f"{2048 + rnd.uniform(-2, 2):.3f}", f"{2048 + rnd.uniform(-2, 2):.3f}", "0.504", "0.504", "0",
                fits, "FITS", "\\N", f"/data/sdo/hmi/{t:%Y/%m/%d}/{fits}",
                f"http://jsoc.stanford.edu/data/hmi/fits/{t:%Y/%m/%d}/{fits}", qurl, qclk, str(batch), src,
            )) + "\n")
    with cur.copy("copy hfc.observations (id_observations, observatory_id, date_obs, date_end, jdint, jdfrac, "
                  "exp_time, c_rotation, bscale, bzero, bitpix, naxis1, naxis2, r_sun, center_x, center_y, "
                  "cdelt1, cdelt2, quality, filename, file_format, comment, loc_filename, url, qclk_url, "
                  "qclk_fname, batch_id, src_file) from stdin") as copy:
        copy.write(buf.getvalue())

    cols = SUNSPOT_COLUMNS
    fmt = "\t".join(f for _, f in cols) + "\n"
    digits = "".join(rnd.choice("01234567") for _ in range(1 << 16))
    numbers = " ".join(str(rnd.randint(0, 4095)) for _ in range(1 << 14))
    gen = np.random.default_rng(SEED)
    sid = 0
    chunk = 200  # observations per generated block
    with cur.copy(f"copy hfc.sunspots ({', '.join(c for c, _ in cols)}) from stdin",
                  writer=QueuedLibpqWriter(cur)) as copy:
        for start in range(0, len(obs_plan), chunk):
            block = obs_plan[start:start + chunk]
            counts = np.array([n for _, n in block])
            n = int(counts.sum())
            obs_i = np.repeat(np.arange(start, start + len(block)), counts)
            local = np.concatenate([np.arange(1, c + 1) for c in counts])
            year = np.array([t.year + t.timetuple().tm_yday / 365.25 for t, c in block for _ in range(c)])
            # Spörer's law: spots start at ~30 deg and drift towards the equator over the cycle.
            phase = np.clip((year - CYCLE_MIN) / CYCLE_YEARS, 0, 1)
            lat = gen.choice([-1.0, 1.0], n) * np.abs(gen.normal(28 - 20 * phase, 5, n))
            lon = gen.uniform(-80, 80, n)
            l0 = (349.0 - 13.1763 * (year - 2010.0) * 365.25) % 360.0
            carr = (lon + l0) % 360.0
            r_arc = 959.6
            x = r_arc * np.cos(np.radians(lat)) * np.sin(np.radians(lon))
            y = r_arc * np.sin(np.radians(lat))
            xp, yp = 2048 + x / 0.504, 2048 + y / 0.504
            mu = np.cos(np.radians(lat)) * np.cos(np.radians(lon))
            area = np.exp(gen.normal(-0.3, 1.1, n))  # deg^2, pores to big spots
            half = np.sqrt(area) / 2 + 0.05  # degrees
            area_pix = np.maximum(1, (area * 1100 * mu)).astype(int)
            diam = 2 * np.sqrt(area / np.pi)
            side = np.sqrt(area_pix)
            umbrae = np.where(area > 1.5, gen.integers(1, 5, n), 0)
            uarea = umbrae * area * gen.uniform(0.1, 0.25, n)
            mean_int = gen.uniform(25000, 45000, n)
            bz = gen.normal(0, 900, n)
            cc_len = np.minimum(4 * side + gen.integers(0, 20, n), 2000).astype(int)
            rs_len = np.minimum(2 * side + 2, 600).astype(int)
            cc_at = gen.integers(0, len(digits) - 2100, n)
            rs_at = gen.integers(0, len(numbers) - 4000, n)
            null_bz = gen.random(n) < 0.02
            per_obs = {}
            for k, (t, _) in enumerate(block):
                stamp = f"{t:%Y%m%dT%H%M%S}"
                per_obs[start + k] = (stamp, f"{ARCHIVE}/snapshots/{t:%Y}/", f"sdoss_106_hmi_{stamp}_feat.csv",
                                      f"{t + dt.timedelta(hours=30):%Y-%m-%d %H:%M:%S}", batch_of[t.date()])
            (obs_l, local_l, lat, lon, half, x, y, xp, yp, carr, area, area_pix, diam, mu, mean_int, bz, null_l,
             umbrae, uarea, cc_len, rs_len, cc_at, rs_at) = (
                a.tolist() for a in (obs_i, local, lat, lon, half, x, y, xp, yp, carr, area, area_pix, diam, mu,
                                     mean_int, bz, null_bz, umbrae, uarea, cc_len, rs_len, cc_at, rs_at))
            lines = []
            for j in range(n):
                sid += 1
                i = obs_l[j]
                stamp, snap_path, feat_file, run_date, batch = per_obs[i]
                la, lo, hw, ca = lat[j], lon[j], half[j], carr[j]
                xa, ya, px, py = x[j], y[j], xp[j], yp[j]
                h = hw * 16.7  # arcsec per degree near disc centre
                hp = h / 0.504
                b = bz[j]
                nb = null_l[j]
                ua, m, loc = uarea[j], mean_int[j], local_l[j]
                ud = 2 * math.sqrt(ua / math.pi)
                ap = area_pix[j]
                lines.append(fmt % (
                    sid, 1, 2 * i + 1, 2 * i + 2, loc,
                    xa, ya, px, py, lo, la, ca, la,
                    xa - h, ya - h, xa + h, ya - h, xa + h, ya + h, xa - h, ya + h,
                    px - hp, py - hp, px + hp, py - hp, px + hp, py + hp, px - hp, py + hp,
                    lo - hw, la - hw, lo + hw, la - hw, lo + hw, la + hw, lo - hw, la + hw,
                    ca - hw, la - hw, ca + hw, la - hw, ca + hw, la + hw, ca - hw, la + hw,
                    ap, area[j], area[j] * 147.6, diam[j], diam[j] * 12.15, 0.55 + 0.4 * mu[j],
                    m * 1.3, m * 0.4, m,
                    "\\N" if nb else f"{b * ap:.3f}", abs(b) * ap,
                    "\\N" if nb else f"{b + 600:.3f}", "\\N" if nb else f"{b - 600:.3f}",
                    "\\N" if nb else f"{b:.3f}",
                    umbrae[j], int(ua * 1100), ua * 147.6, ua, ud, ud * 12.15, m * 0.6, m * 0.2, m * 0.35,
                    abs(b) * ua * 1100, abs(b) * 1.2, b * 1.5, b * 0.5, b,
                    px, py - hp, xa, ya - h,
                    digits[cc_at[j]:cc_at[j] + cc_len[j]], cc_len[j],
                    numbers[rs_at[j]:rs_at[j] + 6 * rs_len[j]].strip(), rs_len[j],
                    f"sdoss_106_hmi_{stamp}_{loc}.png", snap_path, 100000 + sid, feat_file, run_date, batch,
                ))
            copy.write("".join(lines))
    cur.execute("select setval(pg_get_serial_sequence('hfc.observations', 'id_observations'), "
                "(select max(id_observations) from hfc.observations))")
    cur.execute("select setval(pg_get_serial_sequence('hfc.sunspots', 'id_sunspot'), "
                "(select max(id_sunspot) from hfc.sunspots))")
    cur.execute("select setval(pg_get_serial_sequence('hfc.frc_info', 'id_frc_info'), 1)")
    cur.execute("select setval(pg_get_serial_sequence('hfc.observatory', 'id_observatory'), 2)")
    return len(nights), 2 * len(obs_plan)


F, INT, D = "%.4f", "%d", "%.6f"
SUNSPOT_COLUMNS = [
    ("id_sunspot", INT), ("frc_info_id", INT), ("observations_id_ic", INT), ("observations_id_m", INT),
    ("local_id", INT),
    ("feat_x_arcsec", F), ("feat_y_arcsec", F), ("feat_x_pix", INT), ("feat_y_pix", INT),
    ("feat_hg_long_deg", D), ("feat_hg_lat_deg", D), ("feat_carr_long_deg", D), ("feat_carr_lat_deg", D),
    *[(f"br_{a}{k}_arcsec", F) for k in range(4) for a in "xy"],
    *[(f"br_{a}{k}_pix", INT) for k in range(4) for a in "xy"],
    *[(f"br_hg_{a}{k}_deg", D) for k in range(4) for a in ("long", "lat")],
    *[(f"br_carr_{a}{k}_deg", D) for k in range(4) for a in ("long", "lat")],
    ("feat_area_pix", INT), ("feat_area_deg2", D), ("feat_area_mm2", F), ("feat_diam_deg", D), ("feat_diam_mm", F),
    ("feat_mean2qsun", D), ("feat_max_int", F), ("feat_min_int", F), ("feat_mean_int", F),
    ("feat_tot_bz", "%s"), ("feat_abs_bz", F), ("feat_max_bz", "%s"), ("feat_min_bz", "%s"), ("feat_mean_bz", "%s"),
    ("umbra_number", INT), ("umbra_area_pix", INT), ("umbra_area_mm2", F), ("umbra_area_deg2", D),
    ("umbra_diam_deg", D), ("umbra_diam_mm", F), ("umbra_max_int", F), ("umbra_min_int", F), ("umbra_mean_int", F),
    ("umbra_tot_bz", F), ("umbra_abs_bz", F), ("umbra_max_bz", F), ("umbra_min_bz", F), ("umbra_mean_bz", F),
    ("cc_x_pix", INT), ("cc_y_pix", INT), ("cc_x_arcsec", F), ("cc_y_arcsec", F),
    ("cc", "%s"), ("cc_length", INT), ("rs", "%s"), ("rs_length", INT),
    ("snapshot_fn", "%s"), ("snapshot_path", "%s"), ("helio_ss_number", INT), ("feat_filename", "%s"),
    ("run_date", "%s"), ("batch_id", INT),
]

# ------------------------------------------------------------------ the requests

TIMEQUERY_SQL = ('select *\nfrom "hfc"."view_sp_hqi"\nwhere "date_obs" >= %s AND "date_end" <= %s\n'
                 'order by "date_obs", "id_sunspot"\nlimit %s offset %s')
SQLSELECT_SQL = 'select *\nfrom "hfc"."view_sp_hqi"\nwhere {where}\nlimit 10001 offset 0'


class Request:
    """One request of the benchmark: its SOAP call and the same SQL for psycopg."""

    def __init__(self, operation: str, soap_params: dict, sql: str, params: tuple):
        self.operation, self.soap_params, self.sql, self.params = operation, soap_params, sql, params
        self.body: bytes = b""
        self.rows = -1  # rows of the bare query
        self.render_sql = ""


def requests_for(operation: str, dsn: str, state: dict, count: int, rnd: random.Random,
                 sql_rows: int) -> list[Request]:
    import psycopg

    out = []
    if operation == "TimeQuery":
        first, last = state["first_night"], state["last_night"]
        for _ in range(count):
            day = first + dt.timedelta(days=rnd.randrange((last - first).days + 1))
            start, end = f"{day:%Y-%m-%d}T00:00:00", f"{day:%Y-%m-%d}T23:59:59"
            params = (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end), 10001, 0)
            out.append(Request(operation, {"STARTTIME": [start], "ENDTIME": [end], "FROM": ["VIEW_SP_HQI"]},
                               TIMEQUERY_SQL, params))
    else:
        # FEAT_AREA_DEG2 ranges of about sql_rows sunspots, from the table's own quantiles.
        qs = []
        for _ in range(count):
            q = rnd.uniform(0.02, 0.98)
            qs += [q, q + sql_rows / state["sunspots"]]
        with psycopg.connect(dsn) as conn:
            bounds = conn.execute("select percentile_disc(%s::float8[]) within group (order by feat_area_deg2) "
                                  "from hfc.sunspots", (qs,)).fetchone()[0]
        for k in range(count):
            lo, hi = bounds[2 * k], bounds[2 * k + 1]
            # pyhfc: select("VIEW_SP_HQI", where={"FEAT_AREA_DEG2": (lo, hi)}) -> sql_where
            where = f"(FEAT_AREA_DEG2 BETWEEN {lo!r} AND {hi!r})"
            shown = SQLSELECT_SQL.format(where=where)
            out.append(Request(operation, {"WHAT": "*", "FROM": ["VIEW_SP_HQI"], "WHERE": where}, shown, ()))
    return out


def expected_rows(dsn: str, reqs: list[Request]) -> None:
    """Each request's row count by the bare query (also warms the page cache), and the SQL of
    the render prototype from the columns' types."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        for r in reqs:
            cur = conn.execute(r.sql, r.params or None)
            r.rows = len(cur.fetchall())
            r.render_sql = render_sql(r.sql, [(d.name, d.type_code) for d in cur.description])


def render_sql(sql: str, columns: list[tuple[str, int]]) -> str:
    """A prototype, for its cost only: PostgreSQL writes each row as a VOTable TABLEDATA ``<TR>``
    (text XML-escaped, times ISO 8601, numbers as PostgreSQL prints them, NULL an empty cell),
    one text value per row instead of 118 typed values turned into Python objects and then into
    text. Not the service's exact output (integer NULL sentinels, NaN/Infinity spelling)."""
    def cell(name: str, oid: int) -> str:
        e = 'hqi_q."' + name.replace('"', '""') + '"'
        if oid in (1114, 1184):
            return f"""to_char({e}, 'YYYY-MM-DD"T"HH24:MI:SS')"""
        if oid in (25, 1043, 1042):
            return f"replace(replace(replace({e}, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
        if oid == 16:
            return f"case when {e} then 'T' when not {e} then 'F' end"
        return e
    cells = [cell(n, t) for n, t in columns]
    # concat() takes at most 100 arguments: groups of 40 cells.
    groups = ["concat(" + ", '</TD><TD>', ".join(cells[i:i + 40]) + ")" for i in range(0, len(cells), 40)]
    return ("select concat('<TR><TD>', " + ", '</TD><TD>', ".join(groups) + ", '</TD></TR>')\n"
            f"from (\n{sql}\n) as hqi_q")


# ------------------------------------------------------------------ the contenders


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Window:
    """The measured window: requests finished in [start + warmup, start + warmup + seconds]."""

    def __init__(self, warmup: float, seconds: float):
        self.t0 = time.perf_counter() + warmup
        self.t1 = self.t0 + seconds
        self.seconds = seconds
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.rows = 0
        self.bytes = 0
        self.errors: list[str] = []
        self.next = 0

    def take(self) -> int | None:
        with self.lock:
            if time.perf_counter() >= self.t1:
                return None
            self.next += 1
            return self.next - 1

    def done(self, start: float, end: float, rows: int, size: int = 0, error: str | None = None) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(error)
            elif self.t0 <= end <= self.t1:
                self.latencies.append(end - start)
                self.rows += rows
                self.bytes += size

    def result(self, name: str, operation: str) -> dict:
        n = len(self.latencies)
        return {"contender": name, "operation": operation, "requests": n, "rps": n / self.seconds,
                "p50_ms": 1000 * percentile(self.latencies, 0.5), "p95_ms": 1000 * percentile(self.latencies, 0.95),
                "rows_per_answer": self.rows / n if n else 0, "kb_per_answer": self.bytes / n / 1024 if n else 0,
                "errors": len(self.errors), "first_error": self.errors[0] if self.errors else None}


def run_psycopg(dsn: str, reqs: list[Request], clients: int, warmup: float, seconds: float,
                mode: str) -> Window:
    """``clients`` threads, one connection each: the bare SQL (``bare``), as the service sends it
    (``guard``), or the render prototype (``render``: rows joined into one TABLEDATA text)."""
    guard = mode == "guard"
    import psycopg

    conns = [psycopg.connect(dsn, application_name="hfc-bench-hqi") for _ in range(clients)]
    reader = None
    if guard:
        from hfc_tasks.hqi.reader import Reader

        reader = Reader(dsn)  # one connection per client thread, as in the service
    win = Window(warmup, seconds)

    def one(conn, r: Request) -> int:
        if mode == "render":
            rows = conn.execute(r.render_sql, r.params or None).fetchall()
            conn.rollback()
            _ = "".join(row[0] for row in rows)  # the TABLEDATA the service would send
            return len(rows)
        if mode == "bare":
            rows = conn.execute(r.sql, r.params or None).fetchall()
            conn.rollback()
            return len(rows)
        # The service's own reader (hfc_tasks/hqi/reader.py), without HTTP, SOAP and VOTable: the
        # SQL exactly as the service sends it, whatever reader.py does today.
        from hfc_tasks.hqi.app import call

        answer = call(reader, r.operation, r.soap_params)
        if answer.error:
            raise RuntimeError(answer.error)
        return sum(len(res.rows) for res in answer.results)

    def client(conn) -> None:
        while (i := win.take()) is not None:
            r = reqs[i % len(reqs)]
            t = time.perf_counter()
            try:
                n = one(conn, r)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                conn.rollback()
                win.done(t, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}")
                continue
            end = time.perf_counter()
            win.done(t, end, n, error=None if n == r.rows else f"{n} rows for {r.rows} expected")

    threads = [threading.Thread(target=client, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for c in conns:
        c.close()
    return win


def check_answer(status: int, data: bytes, r: Request) -> str | None:
    if status != 200:
        return f"HTTP {status}: {data[:300]!r}"
    if b'name="QUERY_STATUS" value="OK"' not in data:
        m = re.search(rb'name="QUERY_STATUS" value="([A-Z]+)"', data)
        return f"QUERY_STATUS {m.group(1).decode() if m else '?'}: {data[:600]!r}"
    n = data.count(b"<TR>")  # astropy's TABLEDATA writer
    if n != r.rows:
        return f"{n} rows for {r.rows} expected"
    return None


def run_http(url: str, headers: dict, reqs: list[Request], clients: int, warmup: float, seconds: float) -> Window:
    """``clients`` concurrent SOAP POSTs with httpx, one keep-alive connection each."""
    import httpx

    win = Window(warmup, seconds)

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
            async def worker() -> None:
                while (i := win.take()) is not None:
                    r = reqs[i % len(reqs)]
                    t = time.perf_counter()
                    try:
                        resp = await client.post(url, content=r.body, headers=headers)
                        data = resp.content
                    except httpx.HTTPError as exc:
                        win.done(t, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}")
                        continue
                    end = time.perf_counter()
                    win.done(t, end, r.rows, len(data), check_answer(resp.status_code, data, r))

            await asyncio.gather(*(worker() for _ in range(clients)))

    asyncio.run(main())
    return win


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``hfc hqi serve`` in a subprocess of its own session, stopped by its process group."""

    def __init__(self, dsn: str, workers: int, log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/hfc-hqi"
        self.log = log.open("ab")
        env = {**os.environ, "HFC_HQI_DSN": dsn}  # not on the command line: the DSN holds a password
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "hfc"), "hqi", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--base-url", self.base, "--workers", str(workers)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hfc hqi serve exited with {self.proc.returncode}: see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hfc hqi serve did not answer within 60 s: see {self.log.name}")

    @property
    def soap_url(self) -> str:
        return f"{self.base}/HelioTavernaService"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class PySpy:
    """``py-spy record --gil`` of the service's process over the measured window (raw stacks of the
    thread holding the GIL), then the share of those samples per stage of a request."""

    STAGES = (  # the first match from the outermost frame decides
        ("VOTable writing", ("hqi/votable.py",)),
        ("SOAP envelope/parsing", ("hqi/soap.py",)),
        ("reader: row size check (_size)", ("_size (hfc_tasks/hqi/reader.py", "<genexpr> (hfc_tasks/hqi/reader.py")),
        ("reader: psycopg (query, fetch, convert)", ("hqi/reader.py", "psycopg/")),
        ("HTTP (uvicorn, starlette, asyncio)", ("uvicorn/", "starlette/", "h11/", "httptools", "asyncio/",
                                                "anyio/")),
    )

    RATE = 200

    def __init__(self, binary: str, pid: int, warmup: float, seconds: float):
        self.out = WORK / f"py-spy-{pid}-{time.monotonic_ns()}.txt"
        self.seconds = int(seconds)
        # The window starts with the clients; py-spy waits for the warm-up.
        self.proc = subprocess.Popen(
            ["sh", "-c", f'sleep {warmup}; exec "$0" record --pid {pid} --duration {int(seconds)} --rate {self.RATE} '
             f'--gil --nonblocking --format raw --output "$1"', binary, str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self) -> dict[str, float]:
        self.proc.wait(60)
        counts: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            frames = stack.split(";")
            stage = "other"
            for name, marks in self.STAGES:
                if any(m in f for f in frames for m in marks):
                    stage = name
                    break
            counts[stage] = counts.get(stage, 0) + int(n)
            total += int(n)
        shares = {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}
        # Samples of the thread holding the GIL per tick: how much of the time Python ran.
        return {"gil_held": total / (self.RATE * self.seconds), **shares}


def soap_bodies(wsdl_url: str, reqs: list[Request]) -> dict:
    """The envelopes suds builds from the service's WSDL (pyhfc's client), and suds' headers."""
    from suds.client import Client

    client = Client(wsdl_url, nosend=True, cache=None)
    headers = {}
    for r in reqs:
        ctx = getattr(client.service, r.operation)(**r.soap_params)
        r.body = ctx.envelope
        action = client.wsdl.services[0].ports[0].methods[r.operation].soap.action
        headers[r.operation] = {"Content-Type": "text/xml; charset=utf-8",
                                "SOAPAction": action.decode() if isinstance(action, bytes) else action}
    return headers


def query_string(data: bytes) -> str:
    """The INFO QUERY_STRING of a SOAP answer (its VOTable), without the parameters comment."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(data)
    for el in root.iter():
        if el.tag.endswith("INFO") and el.get("name") == "QUERY_STRING":
            # An attribute's newlines read back as blanks (XML attribute-value normalisation).
            text = " ".join((el.get("value") or el.text or "").split())
            return text.split(" -- parameters", 1)[0]
    raise ValueError("no INFO QUERY_STRING in the answer")


def check_sql(service: Service, headers: dict, reqs: list[Request]) -> None:
    """The bare SQL of this benchmark must be the SQL the service reports it ran."""
    import httpx

    r = reqs[0]
    resp = httpx.post(service.soap_url, content=r.body, headers=headers[r.operation], timeout=60)
    shown = query_string(resp.content)
    if shown != " ".join(r.sql.split()):
        raise SystemExit(f"{r.operation}: the service ran\n{shown}\nbut the benchmark's bare SQL is\n{r.sql}\n"
                         "update TIMEQUERY_SQL / SQLSELECT_SQL")
    print(f"{r.operation}: the bare SQL is the service's QUERY_STRING: {shown}", flush=True)


# ------------------------------------------------------------------ one request, stage by stage


def profile(dsn: str, reqs: dict[str, list[Request]], headers: dict, repeat: int) -> dict:
    """One request of each operation, alone, through the service's own stages in this process:
    SOAP parsing, the reader (SQL + rows), VOTable writing, the envelope; the bare SQL beside.
    Median of ``repeat``; then cProfile of the whole path, top functions by own time."""
    import psycopg

    from hfc_tasks.hqi import soap, votable
    from hfc_tasks.hqi.app import call
    from hfc_tasks.hqi.reader import Reader

    reader = Reader(dsn)
    out = {}
    for op, rs in reqs.items():
        r = sorted(rs, key=lambda x: x.rows)[len(rs) // 2]  # a request of median size
        names = ("bare_sql", "parse_soap", "reader", "votable", "envelope")
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}  # this thread's CPU time
        with psycopg.connect(dsn) as conn:
            for _ in range(repeat):
                t, c = time.perf_counter(), time.thread_time()
                conn.execute(r.sql, r.params or None).fetchall()
                conn.rollback()
                wall["bare_sql"].append(time.perf_counter() - t)
                cpu["bare_sql"].append(time.thread_time() - c)
        size = 0
        for _ in range(repeat):
            marks = [(time.perf_counter(), time.thread_time())]
            operation, params = soap.parse_request(r.body)
            marks.append((time.perf_counter(), time.thread_time()))
            answer = call(reader, operation, params)
            marks.append((time.perf_counter(), time.thread_time()))
            data = votable.write(answer)
            marks.append((time.perf_counter(), time.thread_time()))
            env = soap.envelope(data, operation)
            marks.append((time.perf_counter(), time.thread_time()))
            for k, a, b in zip(names[1:], marks[:-1], marks[1:], strict=True):
                wall[k].append(b[0] - a[0])
                cpu[k].append(b[1] - a[1])
            size = len(env)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            operation, params = soap.parse_request(r.body)
            soap.envelope(votable.write(call(reader, operation, params)), operation)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(18)
        out[op] = {"rows": r.rows, "kb": size / 1024,
                   "wall_ms": {k: 1000 * statistics.median(v) for k, v in wall.items()},
                   "cpu_ms": {k: 1000 * statistics.median(v) for k, v in cpu.items()},
                   "cprofile_tottime": text.getvalue()}
        w_ms, c_ms = out[op]["wall_ms"], out[op]["cpu_ms"]
        print(f"\n{op}, one request alone ({r.rows} rows, {size / 1024:.0f} KB answer), median of {repeat}, "
              "wall / CPU of this thread:")
        for k in names:
            print(f"    {k:<11} {w_ms[k]:8.2f} ms / {c_ms[k]:8.2f} ms")
        print(f"    service stages together {sum(w_ms[k] for k in names[1:]):.2f} ms / "
              f"{sum(c_ms[k] for k in names[1:]):.2f} ms")
        print("  cProfile (5 requests, by own time):")
        print("    " + "\n    ".join(line for line in text.getvalue().splitlines()[:40] if line.strip()))
    reader.close()
    return out


# ------------------------------------------------------------------ main


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem / 1024 / 1024, 1),
            "python": platform.python_version(), "commit": commit, "load": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="hfc_bench_hqi", help="the benchmark catalogue's database (kept between runs)")
    ap.add_argument("--sunspots", type=int, default=1_000_000)
    ap.add_argument("--rebuild", action="store_true", help="build the catalogue again even if it is there")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per contender")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--workers", default="1,2", help="uvicorn worker counts to try, comma separated")
    ap.add_argument("--operations", default="TimeQuery,SQLSelect")
    ap.add_argument("--distinct", type=int, default=200, help="distinct requests per operation (cycled)")
    ap.add_argument("--sql-rows", type=int, default=300, help="rows of a SQLSelect FEAT_AREA_DEG2 range")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every contender this many times")
    ap.add_argument("--profile", action="store_true", help="also time one request's stages (in-process)")
    ap.add_argument("--profile-only", action="store_true", help="only time one request's stages")
    ap.add_argument("--no-guard", action="store_true", help="leave out the psycopg+guard contender")
    ap.add_argument("--render", action="store_true", help="add the psycopg+render prototype contender")
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy binary: sample the service (1 worker) while it "
                    "serves each operation, and sum its CPU by stage")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    owner = os.environ.get("HFC_CATALOGUE_DSN")
    if not owner:
        raise SystemExit('HFC_CATALOGUE_DSN is not set: set -a; eval "$(.venv/bin/hfc site env)"; set +a')
    WORK.mkdir(parents=True, exist_ok=True)
    t_build = time.perf_counter()
    state = build(owner, args.db, args.sunspots, rebuild=args.rebuild)
    if args.build_only:
        return 0
    owner_db = with_db(owner, args.db)
    if os.environ.get("HFC_HQI_DSN"):
        dsn = with_db(os.environ["HFC_HQI_DSN"], args.db)
        role = "the read-only role of HFC_HQI_DSN"
    else:
        dsn = owner_db
        role = "the catalogue role (HFC_HQI_DSN is not set)"
    print(f"service and psycopg clients log in as {role}", flush=True)

    rnd = random.Random(SEED + 1)
    ops = [o.strip() for o in args.operations.split(",") if o.strip()]
    reqs = {op: requests_for(op, owner_db, state, args.distinct, rnd, args.sql_rows) for op in ops}
    t = time.perf_counter()
    for op in ops:
        expected_rows(dsn, reqs[op])
        rows = [r.rows for r in reqs[op]]
        print(f"{op}: {len(rows)} distinct requests, rows per answer min/median/max "
              f"{min(rows)}/{statistics.median(rows):.0f}/{max(rows)}", flush=True)
    print(f"(row counts and cache warm-up: {time.perf_counter() - t:.0f} s; "
          f"setup {time.perf_counter() - t_build:.0f} s)")

    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    info = machine()
    print(f"machine: {info['nproc']} cores ({info['cpu']}), {info['ram_gib']} GiB, load {info['load']}", flush=True)
    results: list[dict] = []
    headers: dict = {}

    def show(res: dict) -> None:
        err = f", {res['errors']} errors (first: {res['first_error']})" if res["errors"] else ""
        print(f"  {res['contender']:<14} {res['operation']:<10} {res['rps']:7.1f} req/s  p50 {res['p50_ms']:7.1f} ms"
              f"  p95 {res['p95_ms']:7.1f} ms  {res['rows_per_answer']:.0f} rows{err}", flush=True)

    modes = ["bare"] + ([] if args.no_guard else ["guard"]) + (["render"] if args.render else [])
    if args.profile_only:
        args.rounds, args.profile = 0, True
    for rnd_i in range(args.rounds):
        print(f"\nround {rnd_i + 1}/{args.rounds}: {args.clients} clients, {args.warmup:g} s warm-up, "
              f"{args.seconds:g} s measured", flush=True)
        for op in ops:
            for mode in modes:
                win = run_psycopg(dsn, reqs[op], args.clients, args.warmup, args.seconds, mode)
                res = win.result({"bare": "psycopg", "guard": "psycopg+guard", "render": "psycopg+render"}[mode], op)
                res["round"] = rnd_i + 1
                results.append(res)
                show(res)
        for w in workers:
            svc = Service(dsn, w, WORK / "service.log")
            try:
                if not headers:
                    headers = soap_bodies(f"{svc.soap_url}?wsdl", [r for op in ops for r in reqs[op]])
                    for op in ops:
                        check_sql(svc, headers, reqs[op])
                for op in ops:
                    spy = None
                    if args.py_spy and w == 1 and rnd_i == 0:
                        spy = PySpy(args.py_spy, svc.proc.pid, args.warmup, args.seconds)
                    win = run_http(svc.soap_url, headers[op], reqs[op], args.clients, args.warmup, args.seconds)
                    res = win.result(f"service w{w}", op)
                    res["round"] = rnd_i + 1
                    if spy is not None:
                        res["cpu_by_stage"] = spy.summary()
                    results.append(res)
                    show(res)
                    if spy is not None:
                        stages = dict(res["cpu_by_stage"])
                        held = stages.pop("gil_held", 0)
                        print(f"    service (py-spy --gil): GIL held {held:.0%} of the time; by stage: " + ", ".join(
                            f"{k} {v:.0%}" for k, v in stages.items()), flush=True)
            finally:
                svc.stop()

    print("\n| contender | operation | req/s | p50 ms | p95 ms | rows/answer | p50 / psycopg p50 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for op in ops:
        for res in [r for r in results if r["operation"] == op]:
            bare = [b["p50_ms"] for b in results if b["operation"] == op and b["contender"] == "psycopg"
                    and b["round"] == res["round"]]
            ratio = res["p50_ms"] / bare[0] if bare and bare[0] else float("nan")
            print(f"| {res['contender']} | {op} | {res['rps']:.1f} | {res['p50_ms']:.1f} | {res['p95_ms']:.1f} | "
                  f"{res['rows_per_answer']:.0f} | {ratio:.2f}x |")
    prof = None
    if args.profile:
        if not headers:
            svc = Service(dsn, 1, WORK / "service.log")
            try:
                headers = soap_bodies(f"{svc.soap_url}?wsdl", [r for op in ops for r in reqs[op]])
            finally:
                svc.stop()
        prof = profile(dsn, reqs, headers, 15)
    info["load_after"] = os.getloadavg()
    print(f"\nload average after: {info['load_after']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "catalogue": state, "args": vars(args),
                                         "results": results, "profile": prof}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
