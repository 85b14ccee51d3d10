"""Helpers shared by the test modules of several folders (tests/ is on sys.path: ``import helpers``).

- the demo FRC programs (site/frcs/*.py, standalone scripts for the cluster): imported by path,
  their CSVs read, their headers checked against the catalogue's formats;
- secrets born private (an audit hook on every file-system event);
- ``airflow dags test`` as ``make demo`` runs it;
- SSH logins with the host key pinned;
- an Airflow instance of a test module's own, driven through ``hfc airflow``;
- a TCP relay that cuts a connection after a byte budget (the connection-cut drills).

Fixtures stay in the conftest.py files; this module holds plain functions and classes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import datetime as dt
import http.server
import importlib.util
import io
import json
import os
import random
import stat
import subprocess
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import paramiko
import yaml

from hfc_tasks.airflow_api import AirflowAPI

REPO = Path(__file__).resolve().parents[1]
FRCS = REPO / "site" / "frcs"
FORMATS = REPO / "hfc_tasks" / "catalogue" / "formats.yaml"


# Malformed windows (-s/-e, the placeholders {start}/{end} of docs/frc_contract.md) that every
# demo FRC program refuses with exit code 2 naming the option: (arguments, the option named).
BAD_WINDOWS = [
    (["-s", "2024-13-01T00:00:00", "-e", "2024-01-02T00:00:00"], "-s/--start"),
    (["-s", "2024-01-01", "-e", "2024-01-02T00:00:00"], "-s/--start"),
    (["-s", "2024-01-01T00:00:00", "-e", "tomorrow"], "-e/--end"),
    (["-s", "2024-01-02T00:00:00", "-e", "2024-01-01T00:00:00"], "-e/--end"),
]


def dags_test(night: str, registry: Path | None = None, dsn: str | None = None) -> subprocess.CompletedProcess:
    """``airflow dags test hfc_nightly <night>`` as ``make demo`` runs it, in the site's environment;
    ``registry``: another registry (HFC_REGISTRY), ``dsn``: another catalogue database (the
    catalogue connection's schema). Asserts the night succeeded."""
    airflow = Path(sys.executable).with_name("airflow")
    env = dict(os.environ)
    env["PATH"] = f"{airflow.parent}:{env['PATH']}"
    if registry is not None:
        env["HFC_REGISTRY"] = str(registry)
    if dsn is not None:
        conn = json.loads(os.environ["AIRFLOW_CONN_HFC_CATALOGUE"])
        conn["schema"] = urlsplit(dsn).path.lstrip("/")
        env["AIRFLOW_CONN_HFC_CATALOGUE"] = json.dumps(conn)
    proc = subprocess.run(
        [str(airflow), "dags", "test", "hfc_nightly", night, "--conf", json.dumps({"night": night})],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def load_frc_program(name: str) -> ModuleType:
    """Import site/frcs/<name>.py by path (it is no package module)."""
    spec = importlib.util.spec_from_file_location(name, FRCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ product files written by tests

def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def stamp(t: dt.datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%S")


def values_for(spec, k: int, t: dt.datetime, **overrides) -> dict[str, object]:
    """A plausible value for every column of ``spec`` (stored, embedded and extra ones)."""
    row: dict[str, object] = {}
    for col in spec.columns:
        if col.type == "int":
            row[col.name] = 10 * k + 1
        elif col.type == "float":
            row[col.name] = k + 0.25
        elif col.type == "datetime":
            row[col.name] = iso(t)
        else:
            text = f"{col.name.lower()}{k}"
            row[col.name] = text[: col.max_len] if col.max_len else text
    row.update(overrides)
    return row


def csv_bytes(
    columns: list[str],
    rows: list[dict],
    *,
    trailing: bool = False,
    crlf: bool = False,
    final_newline: bool = True,
    shuffle: int | None = None,
) -> bytes:
    """``;``-separated text with a header line; ``trailing``: SoSoFT's ``;`` at every line end;
    ``shuffle``: a seed to write the columns in another order (read by name)."""
    columns = list(columns)
    if shuffle is not None:
        random.Random(shuffle).shuffle(columns)
    end = ";" if trailing else ""
    lines = [";".join(columns) + end] + [";".join(str(r[c]) for c in columns) + end for r in rows]
    sep = "\r\n" if crlf else "\n"
    return (sep.join(lines) + (sep if final_newline else "")).encode("utf-8")


# ------------------------------------------------------------------ a site formats file

# A made-up code with a pre-processing step: its own per-code PP_INFO file and a PP_OUTPUT file per
# observation beside its sunspot features (HFC_PRODUCTS.md: several HFC codes write these).
SITE_PP = """
files:
  pp_info: code
  ppout: observation
kinds:
  site_pp_info:
    table: pp_info
    columns: |
      ID_PP_INFO      int        id
      INSTITUT        text(150)  notnull
      CODE            text(150)  notnull
      VERSION         text(50)   notnull
      PERSON          text(150)
      CONTACT         text(150)  notnull
      REFERENCE       text(150)
  site_ppout:
    table: pp_output
    columns: |
      ID_PP_OUTPUT    int        id
      PP_INFO_ID      int        notnull  ref=pp_info
      OBSERVATIONS_ID int        notnull  ref=init
      RUN_DATE        datetime   notnull
      PR_LOCFNAME     text(150)  notnull
      ORG_FNAME       text(150)  notnull
      LOC_FILE        text(100)  notnull
      CDELT1          float      notnull
      CDELT2          float      notnull
      QSUN_INT        float      notnull
      NAXIS1          int        notnull
      NAXIS2          int        notnull
      CENTER_X        float      notnull
      CENTER_Y        float      notnull
formats:
  demo-pp:
    observatory: observatory
    frc_info: frc_info
    pp_info: site_pp_info
    init: init
    feat: sdoss_feat
    ppout: site_ppout
"""


def a_spotted_night(first: dt.date, span_days: int) -> str:
    """A random night in [first, first + span_days) on which demo-sunspots sees at least one spot.

    Its seeded truth puts 2-8 spots on the Sun each day, but some days all of them are behind the
    limb at every 4-hourly observation (2071-04-15 is one): a correct night with no sunspot rows.
    A test that needs rows draws its night here instead of hoping for one."""
    demo = sys.modules.get("demo_sunspots") or load_frc_program("demo_sunspots")
    rng = random.Random()
    while True:
        day = first + dt.timedelta(days=rng.randrange(span_days))
        midnight = dt.datetime(day.year, day.month, day.day)
        if any(demo.expected_detections(midnight + dt.timedelta(hours=h)) for h in range(0, 24, 4)):
            return day.isoformat()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """An FRC's CSV file: UTF-8, LF line ends, ending in a newline; (header, rows as dicts)."""
    text = path.read_bytes().decode("utf-8")
    assert "\r" not in text
    assert text.endswith("\n")
    reader = csv.reader(io.StringIO(text), delimiter=";")
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def catalogue_columns(kind: str) -> set[str]:
    """The column names the catalogue reads for a kind of product file (formats.yaml)."""
    kinds = yaml.safe_load(FORMATS.read_text())["kinds"]
    return {line.split()[0] for line in kinds[kind]["columns"].splitlines() if line.strip()}


# ------------------------------------------------------------------ secrets born private

_watch: dict[str, list] = {"paths": [], "seen": []}
_EVENTS = ("open", "os.chmod", "os.rename", "os.replace", "os.remove", "os.chown", "subprocess.Popen", "os.listdir")


def _audit(event: str, args: tuple) -> None:
    if not _watch["paths"] or event not in _EVENTS:
        return
    for path in _watch["paths"]:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o077:
            _watch["seen"].append(f"{path} mode {stat.filemode(mode)} at {event}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def born_private(*paths: Path) -> Generator[list[str], None, None]:
    """Watch secret files at every file-system event (open, chmod, rename...) under the usual
    umask 022: yields the list of moments one was readable by group/other (empty = always
    private), so that a secret written 0644 and chmod-ed afterwards fails, not only one that
    ends so."""
    old = os.umask(0o022)  # a plain write_text would give 0644
    _watch["paths"] = [str(p) for p in paths]
    seen: list[str] = []
    _watch["seen"] = seen
    try:
        yield seen
    finally:
        _watch["paths"] = []
        _watch["seen"] = []
        os.umask(old)


def is_private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


# ------------------------------------------------------------------ SSH with the host key pinned


def ed25519_key(line: str) -> paramiko.PKey:
    """The key of an ``ssh-ed25519 AAAA...`` line (the sites' host keys are ed25519)."""
    kind, b64 = line.split()[:2]
    assert kind == "ssh-ed25519"
    return paramiko.Ed25519Key(data=base64.b64decode(b64))


def pinned_ssh_client(conn: dict, host_key: str | None = None) -> paramiko.SSHClient:
    """Log in with an Airflow connection's login and key_file, its host key (or ``host_key``)
    pinned: RejectPolicy, no trust on first use."""
    client = paramiko.SSHClient()
    key = ed25519_key(host_key or conn["extra"]["host_key"])
    entry = conn["host"] if conn["port"] == 22 else f"[{conn['host']}]:{conn['port']}"  # known_hosts form
    client.get_host_keys().add(entry, key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        conn["host"], port=conn["port"], username=conn["login"], key_filename=conn["extra"]["key_file"],
        look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10,
    )
    return client


# ------------------------------------------------------------------ Airflow instances of the tests
# An Airflow instance of its own for a test module (own metadata database, port, catalogue
# database, registry), started and stopped through the ``hfc airflow`` command in a subprocess:
# an instance is chosen by environment variables (``HFC_AIRFLOW_INSTANCE``, ``HFC_AIRFLOW_PORT``...)
# read when hfc_tasks.ops.airflow_stack is imported.

_STACK_ENV = "import json; from hfc_tasks.ops import airflow_stack; print(json.dumps(airflow_stack.stack_env()))"


@dataclass(frozen=True)
class Instance:
    """``env``: the whole environment of the instance's ``hfc`` commands (``HFC_AIRFLOW_*``...)."""

    env: dict[str, str]

    @classmethod
    def local(cls, name: str, port: int, registry: str) -> Instance:
        """A LocalExecutor instance of the local site: its registry (``registry``, the YAML text)
        written to ``<state>/<name>/registry.yaml``, its own port and catalogue database ``hfc_<name>``."""
        from hfc_tasks.ops.localsite import state_dir

        path = state_dir() / name / "registry.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(registry)
        return cls({
            **os.environ,
            "HFC_AIRFLOW_INSTANCE": name,
            "HFC_AIRFLOW_PORT": str(port),
            "HFC_AIRFLOW_EXECUTOR": "LocalExecutor",
            "HFC_AIRFLOW_CATALOGUE_DB": f"hfc_{name}",
            "HFC_REGISTRY": str(path),
        })

    @property
    def name(self) -> str:
        return self.env["HFC_AIRFLOW_INSTANCE"]

    def hfc(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).with_name("hfc")), *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def stack_env(self) -> dict[str, str]:
        """The environment the instance's components run with (catalogue DSN, passwords file...)."""
        out = subprocess.run([sys.executable, "-c", _STACK_ENV], env=self.env, capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def password(self) -> str:
        with open(self.stack_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
            return json.load(f)["admin"]

    def api(self) -> AirflowAPI:
        """A client logged in as admin."""
        return AirflowAPI(f"http://127.0.0.1:{self.env['HFC_AIRFLOW_PORT']}", "admin", self.password())

    def up(self, timeout: float = 400) -> AirflowAPI:
        """``hfc airflow up`` (or find it running); a client logged in as admin."""
        proc = self.hfc("airflow", "up", timeout=timeout)
        assert proc.returncode == 0, \
            f"hfc airflow up ({self.name}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return self.api()


def local_registry(instance: str, written_by: str, frcs: str) -> str:
    """A registry of one site, ``local``, whose cluster run folders and archive tree are the
    instance's own (``products/_<instance>``, ``hfc/_<instance>``); ``frcs``: its ``frcs:`` items."""
    return f"""\
# Registry of the '{instance}' test instance (written by {written_by}).
default_site: local
sites:
  local:
    description: Local site, folders of the {instance} test instance
    products_root: ${{HFC_SITE_DIR}}/home/cluster/products/_{instance}
    frc_root: ${{HFC_SITE_DIR}}/home/cluster/frcs
    archive_root: ${{HFC_SITE_DIR}}/home/archive/hfc/_{instance}
    public_url_base: file://${{HFC_SITE_DIR}}/home/archive/hfc/_{instance}
    default_partition: debug
    stagger_seconds: 0
frcs:
{frcs}"""


# ------------------------------------------------------------------ connection cuts


async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter, port: int,
                budget: int | None = None) -> tuple[bool, int]:
    """Relay one client connection to 127.0.0.1:``port``. With a ``budget``, cut it (both ends
    aborted, not closed) once that many bytes have passed, both directions counted. Returns
    (cut, bytes passed)."""
    try:
        sr, sw = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        cw.close()
        return False, 0
    left, passed = [budget], [0]

    async def pipe(r, w):
        while data := await r.read(65536):
            if left[0] is not None:
                if len(data) >= left[0]:
                    w.write(data[: left[0]])
                    passed[0] += left[0]
                    raise ConnectionAbortedError
                left[0] -= len(data)
            w.write(data)
            passed[0] += len(data)
            await w.drain()

    tasks = [asyncio.ensure_future(pipe(cr, sw)), asyncio.ensure_future(pipe(sr, cw))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    cut = any(t.done() and not t.cancelled() and isinstance(t.exception(), ConnectionAbortedError) for t in tasks)
    for t in tasks:
        t.cancel()
    for w in (cw, sw):
        if cut:
            w.transport.abort()
        else:
            w.close()
    return cut, passed[0]


TEST_CATALOGUE_CONN_ID = "hfc_test_catalogue"


def catalogue_conn_env(dsn: str, conn_id: str = TEST_CATALOGUE_CONN_ID) -> dict[str, str]:
    """The environment that defines the Airflow connection ``conn_id`` to the database of ``dsn``
    (a test's own; its TLS query parameters become the connection's extras): the ``hfc`` commands
    take ``--conn-id`` and read no DSN."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": dsn}


class ChatListener:
    """A real HTTP listener on 127.0.0.1 (a chat service for the apprise ``json://`` notifier):
    every POST body (JSON) is recorded with its path."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                received.append({"path": self.path,
                                 "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate, what: str, timeout: float = 180.0, every: float = 0.5):
    """``predicate()``'s first true value, polled every ``every`` s; AssertionError naming ``what``
    after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@contextlib.contextmanager
def scratch_products(label: str, frc: str):
    """The local site with a products tree of the test's own on the cluster
    (``<products>/_<label>/<random>``: run folders, campaign logs, submit lock and records), the
    FRC ``frc`` and a SlurmHook: ``(site, frc, hook)``; the tree is removed afterwards."""
    import secrets
    import shlex

    from hfc_tasks.provider.hooks import SlurmHook
    from hfc_tasks.registry import load_registry

    reg = load_registry()
    base = reg.site("local")
    root = f"{base.products_root}/_{label}/{secrets.token_hex(6)}"
    hook = SlurmHook(base.cluster_conn_id)
    hook.check(f"mkdir -p {shlex.quote(root)}")
    try:
        yield base.model_copy(update={"products_root": root}), reg.frc(frc), hook
    finally:
        hook.run(f"rm -rf {shlex.quote(root)}")
        hook.close()


def random_nights(count: int, first_year: int = 2031) -> tuple[dt.date, dt.date]:
    """``count`` consecutive nights from a random first one after ``first_year``-01-01: (first, last)."""
    import secrets

    first = dt.date(first_year, 1, 1) + dt.timedelta(days=secrets.randbelow(20000))
    return first, first + dt.timedelta(days=count - 1)
