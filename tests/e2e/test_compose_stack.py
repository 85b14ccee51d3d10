"""docker-compose.yaml for real: one night of the demo FRC on the compose stack, without a registry.

What it does, in order (each step's time is printed; docs/deployment.md, "The compose stack on
this machine", has the figures):

1. starts its own Docker engine (Debian's dockerd, its own socket, data root and exec root in a
   temporary directory; no iptables, no default bridge: the compose networks are bridges of their
   own, published ports go through docker-proxy on 127.0.0.1 only);
2. builds every image the stack uses with ``docker/build-local-images.sh`` (debootstrap base,
   Debian's packages, the Python requirements from a wheelhouse built on this host);
3. runs the stack from a copy of the checkout, with ``docker/site/make-secrets.sh``'s keys and
   .env, a registry where the demo FRC ``demo-sunspots`` runs on the ``production`` site (the
   example SLURM head/compute nodes and SFTP archive of the ``site`` profile), the images of
   ``docker/local/docker-compose.local.yaml`` (which only names the stand-in images) and free
   loopback ports: docker-compose.yaml as shipped, nothing patched; waits until every
   container with a healthcheck passes it, and prints when each started and turned healthy;
4. triggers ``hfc_nightly`` for one night through the REST API and waits for its success;
5. checks the archive (every manifest file on the sftp-archive container, with the manifest's
   sha256) and the catalogue (the batch of the night with the manifest's sha256, the night's
   sunspots in the users' view, as many as the feat files' rows) in the catalogue-db container;
6. checks the build context of ``build: .`` as the docker CLI sends it (``.dockerignore``): an
   image of the checkout's context holds what the Dockerfile copies, and nothing else;
7. removes everything it started: the compose project with its volumes, the engine, its
   mounts and its directory.

Needs root, Debian's docker.io / docker-compose / debootstrap, deb.debian.org and PyPI (through
the host's pip configuration). The ``hqi`` service is not started: its published port is fixed
at 8191, which the local site's own HQI service may hold.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from hfc_tasks.airflow_api import AirflowAPI, ApiError

pytestmark = [pytest.mark.slow, pytest.mark.compose, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
DAG = "hfc_nightly"
NIGHT = "2024-03-05"
FRC = "demo-sunspots"
PROJECT = "hfcct"
# Everything the night needs; not `hqi` (see the module docstring) nor the debug/flower profiles.
SERVICES = ["postgres", "redis", "statsd-exporter", "catalogue-db", "slurm-head", "slurm-compute", "sftp-archive",
            "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-worker"]
STEPS: list[tuple[str, float]] = []


def _step(name: str, started: float) -> None:
    STEPS.append((name, time.monotonic() - started))
    print(f"compose stack: {name}: {STEPS[-1][1]:.0f} s", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Engine:
    """A dockerd of this test's own (socket, data and exec roots under ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}
        self.log = root / "dockerd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                 "--pidfile", str(root / "dockerd.pid"), "--host", self.env["DOCKER_HOST"],
                 "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=self.env, capture_output=True).returncode != 0:
            assert self.proc.poll() is None, f"dockerd exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dockerd not answering after 60 s: {self.log.read_text()[-3000:]}"
            time.sleep(1)

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 600, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                         f"{proc.stderr[-5000:]}"
        return proc

    def stop(self) -> list[str]:
        """Stops dockerd (it stops its containerd) by its pid; unmounts what is left under root."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("dockerd did not stop within 60 s of SIGTERM: killed")
                self.proc.kill()
                self.proc.wait(timeout=30)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        return problems


def _stage(dest: Path, ui_port: int, catalogue_port: int) -> dict:
    """The checkout's stack files in ``dest``, its registry and secrets; the compose env."""
    for name in ("dags", "plugins", "config", "docker", "site", "docker-compose.yaml", "Dockerfile"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    # The demo FRC on the `production` site: the example site's SLURM (partition hfc) and archive.
    reg = yaml.safe_load((REPO / "config" / "registry.yaml").read_text())
    frc = next(f for f in reg["frcs"] if f["name"] == FRC)
    frc["sites"] = ["production"]
    reg["frcs"] = [frc]
    reg["sites"]["production"]["stagger_seconds"] = 0
    (dest / "config" / "registry.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    subprocess.run([str(dest / "docker" / "site" / "make-secrets.sh")], check=True, capture_output=True)
    # The local images file only puts the stand-ins in place of the official images: the stack
    # that runs is docker-compose.yaml as shipped.
    local = yaml.safe_load((dest / "docker" / "local" / "docker-compose.local.yaml").read_text())
    assert all(set(svc) == {"image"} for svc in local["services"].values()), local
    env = {"HFC_UI_PORT": str(ui_port), "HFC_CATALOGUE_PORT": str(catalogue_port),
           "HFC_UI_BASE_URL": f"http://127.0.0.1:{ui_port}", "HFC_WORKERS": "1"}
    with open(dest / ".env", "a") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in env.items())
    return env


def _start_timeline(events: str) -> str:
    """When each service's container started, first turned healthy, or exited, in seconds after
    the first container was created, from ``docker events`` recorded during `docker-compose up
    -d`: what it waited for."""
    first: dict[tuple[str, str], float] = {}
    for line in events.splitlines():
        event = json.loads(line)
        service = event.get("Actor", {}).get("Attributes", {}).get("com.docker.compose.service")
        action = event.get("Action") or event.get("status") or ""
        if service and action in ("create", "start", "health_status: healthy", "die"):
            first.setdefault((service, action.rsplit(" ", 1)[-1]), event["timeNano"] / 1e9)
    if not first:
        return "compose stack: no container events recorded"
    t0 = min(first.values())
    services = sorted({svc for svc, _ in first}, key=lambda svc: first.get((svc, "start"), 1e18))
    lines = [f"  {svc:24}" + "".join(f"  {what} {first[(svc, what)] - t0:6.1f}"
                                     for what in ("start", "healthy", "die") if (svc, what) in first)
             for svc in services]
    return "compose stack: start timeline (s after the first container was created)\n" + "\n".join(lines)


def _wait_healthy(engine: Engine, timeout: float) -> None:
    """Every container of the project that has a healthcheck passes it (the compose file's checks,
    as shipped: slurm-compute's node state included, which nothing waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        project = f"label=com.docker.compose.project={PROJECT}"
        ids = engine.run("docker", "ps", "-aq", "--filter", project).stdout.split()
        states = {info["Config"]["Labels"]["com.docker.compose.service"]: info["State"]["Health"]["Status"]
                  for info in json.loads(engine.run("docker", "inspect", *ids).stdout) if info["State"].get("Health")}
        waiting = {name: state for name, state in states.items() if state != "healthy"}
        if not waiting:
            return
        assert time.monotonic() < deadline, f"not healthy after {timeout:.0f} s: {waiting}"
        time.sleep(2)


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="hfc-compose-", dir="/tmp"))
    stage = root / "stack"
    stage.mkdir()
    t = time.monotonic()
    engine = Engine(root)
    _step("dockerd up", t)
    compose = ["docker-compose", "-p", PROJECT, "-f", "docker-compose.yaml", "-f",
               "docker/local/docker-compose.local.yaml", "--profile", "site"]
    try:
        t = time.monotonic()
        build = engine.run(str(REPO / "docker" / "build-local-images.sh"), timeout=2400,
                           env={"HFC_LOCAL_BUILD_DIR": str(root / "build"), "PYTHON": sys.executable})
        _step("images built (docker/build-local-images.sh)", t)
        print(build.stderr, file=sys.stderr)
        assert _port_free(9102), "127.0.0.1:9102 (statsd-exporter's metrics, fixed in docker-compose.yaml) is taken"
        ui_port, catalogue_port = _free_port(), _free_port()
        _stage(stage, ui_port, catalogue_port)
        t = time.monotonic()
        # a file, not a pipe: the healthchecks' exec events alone fill a pipe in a minute
        with open(root / "events.jsonl", "wb") as sink:
            events = subprocess.Popen(["docker", "events", "--filter", "type=container", "--format",
                                       "{{json .}}"], env=engine.env, stdout=sink)
        try:
            engine.run(*compose, "up", "-d", "--no-build", *SERVICES, cwd=stage, timeout=1200)
            _step("docker-compose up -d (airflow-init completed, services started)", t)
            t = time.monotonic()
            _wait_healthy(engine, timeout=300)
            _step("every healthcheck passes", t)
        finally:
            time.sleep(1)
            events.terminate()
            events.wait(timeout=30)
            print(_start_timeline((root / "events.jsonl").read_text()), file=sys.stderr, flush=True)
        password = json.loads((stage / "secrets" / "airflow" / "passwords.json").read_text())["admin"]
        t = time.monotonic()
        api = None
        deadline = time.monotonic() + 300
        while api is None:
            try:
                api = AirflowAPI(f"http://127.0.0.1:{ui_port}", "admin", password)
            except (OSError, ApiError) as exc:
                if time.monotonic() > deadline:
                    logs = engine.run(*compose, "logs", "--tail", "60", "airflow-apiserver", cwd=stage, check=False)
                    raise AssertionError(f"no login on the api-server after 300 s: {exc}\n{logs.stdout}") from None
                time.sleep(3)
        _step("api-server answers", t)

        def sh(service: str, command: str, check: bool = True) -> str:
            return engine.run(*compose, "exec", "-T", service, "sh", "-c", command, cwd=stage, check=check).stdout

        def logs(*services: str) -> str:
            return engine.run(*compose, "logs", "--no-color", "--tail", "80", *services, cwd=stage,
                              check=False).stdout

        yield api, sh, logs, engine
    finally:
        problems = []
        if (stage / "docker-compose.yaml").exists():
            down = engine.run(*compose, "down", "-v", "--remove-orphans", "--timeout", "20", cwd=stage, timeout=600,
                              check=False)
            if down.returncode:
                problems.append(f"docker-compose down: {down.stderr[-2000:]}")
        problems += engine.stop()
        print("compose stack steps: " + ", ".join(f"{n}: {s:.0f} s" for n, s in STEPS), file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


def test_one_night_of_the_demo_frc_on_the_compose_stack(stack):
    api, sh, logs, _ = stack
    t = time.monotonic()
    api.wait_for_dag(DAG, timeout=300)
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    run_id = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": NIGHT}})["dag_run_id"]
    state = api.wait_run(DAG, run_id, timeout=1500)
    _step(f"{DAG} night {NIGHT}: {state}", t)
    assert state == "success", (api.task_states(DAG, run_id),
                                logs("airflow-worker", "airflow-triggerer", "airflow-scheduler", "slurm-head"))

    # Archive: the manifest on the sftp-archive container, each of its files there with its sha256.
    night_key = NIGHT.replace("-", "")
    manifest_raw = sh("sftp-archive", f"cat /pub/hfc/{FRC}/manifests/{FRC}/{night_key}.json")
    manifest = json.loads(manifest_raw)
    entries = manifest["files"]
    kinds = [e["kind"] for e in entries]
    assert kinds.count("init") == 6 and kinds.count("quicklook") >= 6 and {"frc_info", "observatory"} <= set(kinds)
    sums = dict(reversed(line.split(None, 1)) for line in sh(
        "sftp-archive", "cd /pub/hfc && sha256sum " + " ".join(e["archive_path"] for e in entries)).splitlines())
    assert {e["archive_path"]: e["sha256"] for e in entries} == sums
    spots = 0
    for entry in entries:
        if entry["kind"] == "feat":
            data = sh("sftp-archive", f"cat /pub/hfc/{entry['archive_path']}")
            spots += sum(1 for _ in csv.DictReader(io.StringIO(data), delimiter=";"))
    assert spots > 0

    # Catalogue: the night's batch names the manifest (its sha256) and the SLURM job; the users'
    # view has the night's sunspots, as many as the feat files hold.
    def psql(sql: str) -> str:
        return sh("catalogue-db", f'psql -U hfc -d hfc -At -c "{sql}"').strip()

    batch = psql(f"select slurm_job_id || ' ' || manifest_sha256 from hfc.batch where frc = '{FRC}' "
                 f"and night = '{NIGHT}'")
    assert batch.split() == [str(manifest["slurm_job_id"]), hashlib.sha256(manifest_raw.encode()).hexdigest()]
    rows = psql(f"select count(*) from hfc.view_sp_hqi where date_obs >= '{NIGHT}'::date "
                f"and date_obs < '{NIGHT}'::date + 1")
    assert int(rows) == spots


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else(stack, tmp_path):
    """``build: .`` as the docker CLI sends it, .dockerignore applied: an image that copies the
    whole context of the checkout, listed. No virtualenv, site, git history, cache or secret."""
    *_, engine = stack
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text("FROM hfc-base:bookworm\nCOPY . /context\n")
    t = time.monotonic()
    engine.run("docker", "build", "-q", "--network", "host", "-f", str(dockerfile), "-t", "hfc-context:check",
               str(REPO), env={"DOCKER_BUILDKIT": "0"}, timeout=600)
    listing = engine.run("docker", "run", "--rm", "hfc-context:check", "find", "/context", "-mindepth", "1",
                         "-printf", "%P\\n").stdout.split()
    _step("build context listed", t)
    top = {path.split("/", 1)[0] for path in listing} - {"Dockerfile", ".dockerignore"}
    top = {name for name in top if not name.startswith(".dockerfile.")}  # the CLI's copy of a -f file
    assert top == {"requirements.txt", "constraints.txt", "pyproject.toml", "hfc_tasks", "config"}, sorted(top)
    assert not [p for p in listing if "__pycache__" in p or p.endswith(".pyc")], "caches in the build context"
    assert "hfc_tasks/catalogue/migrations" in listing
