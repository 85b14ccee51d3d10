"""docker-compose.yaml as shipped starts, and keeps its secrets: the defects the compose stack's
first real run found (tests/e2e/test_compose_stack.py runs the stack itself), checked here in
seconds without a Docker engine.

- No deadlock of health checks: a service never waits (``service_healthy``) for a service whose
  healthcheck needs the waiting service running (slurm-compute waited for slurm-head healthy, and
  slurm-head's healthcheck asked for an idle node, which only slurm-compute's slurmd makes).
- The UI passwords file is writable where Airflow writes it: SimpleAuthManager opens it ``a+`` when
  the api-server starts and ``r+`` at each login, so a read-only mount is a restart loop.
- Redis asks for a password, the broker URL of every Airflow service carries it, and the service's
  own command and healthcheck are run here against the host's redis-server.
- The build context of ``build: .`` (``.dockerignore``) is what the Dockerfile copies and nothing
  else: no virtualenv, site, git history, caches, secrets or test outputs.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENTRYPOINT = REPO / "docker" / "site" / "entrypoint.sh"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init", "airflow-cli", "flower"}
# What a healthcheck's command needs running, and in which of the example site's roles that runs
# (docker/site/entrypoint.sh): asking for a node's state (sinfo ... idle) needs a registered
# slurmd, i.e. the `compute` role; `scontrol ping` needs the controller, i.e. the `head` role.
HEALTH_NEEDS = [(re.compile(r"\bsinfo\b.*\b(idle|mix|alloc)"), "compute"),
                (re.compile(r"\bscontrol\s+ping\b"), "head")]
BLOCKING = {"service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _mount(mount: str) -> tuple[str, str, str]:
    """(source, target, mode) of a short-syntax mount; the source may be ``${VAR:-default}/x``."""
    source_end = mount.index("}") + 1 if mount.startswith("${") else 0
    parts = mount[source_end:].split(":")
    return mount[:source_end] + parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"


def _healthcheck_text(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return test if isinstance(test, str) else " ".join(test)


def test_the_model_of_what_a_healthcheck_needs_matches_the_site_roles():
    """The roles HEALTH_NEEDS names run what it says (docker/site/entrypoint.sh)."""
    script = ENTRYPOINT.read_text()
    roles = dict(re.findall(r"^  (\w+)\)\n(.*?);;", script, re.S | re.M))
    assert "slurmd" in roles["compute"] and "slurmctld" in roles["head"], roles


def test_no_service_waits_for_a_healthy_service_whose_healthcheck_needs_it(compose):
    services = compose["services"]
    role = {name: (svc.get("command") or [None])[0] for name, svc in services.items()
            if isinstance(svc.get("command"), list)}
    # waits[a] = the services a does not start before (healthy / completed), transitively
    waits = {name: {dep for dep, cond in (svc.get("depends_on") or {}).items() if cond["condition"] in BLOCKING}
             for name, svc in services.items()}
    changed = True
    while changed:
        changed = False
        for deps in waits.values():
            more = set().union(*(waits[d] for d in deps)) - deps if deps else set()
            if more:
                deps |= more
                changed = True
    deadlocks = []
    for name, svc in services.items():
        check = _healthcheck_text(svc)
        for pattern, needed_role in HEALTH_NEEDS:
            if not pattern.search(check):
                continue
            for other, other_role in role.items():
                if other_role == needed_role and other != name and name in waits[other]:
                    deadlocks.append(f"{other} waits for {name} to be healthy, and {name}'s healthcheck "
                                     f"({check!r}) needs {other}'s `{needed_role}` running")
    assert not deadlocks, deadlocks


def test_slurm_compute_reports_its_own_health_and_starts_with_the_controller(compose):
    """The node's state is slurm-compute's own healthcheck, the controller's is slurm-head's; the
    compute node starts with the head node, not after it is healthy: slurmctld resolves its nodes'
    names at start and retries while one does not resolve (the compose test measured ~130 s of
    DNS timeouts before `scontrol ping` answered when slurm-compute did not exist yet)."""
    services = compose["services"]
    assert re.search(r"\bscontrol\s+ping\b", _healthcheck_text(services["slurm-head"]))
    assert re.search(r"\bsinfo\b.*-n\s+slurm-compute\b", _healthcheck_text(services["slurm-compute"]))
    assert services["slurm-compute"]["depends_on"] == {"slurm-head": {"condition": "service_started"}}
    # slurmd's side of starting early: the compute role waits for the head's munge key.
    compute = re.search(r"^  compute\)\n(.*?);;", ENTRYPOINT.read_text(), re.S | re.M).group(1)
    assert "start_munge" in compute
    assert "waiting for the head node's munge key" in ENTRYPOINT.read_text()


def test_the_ui_passwords_file_is_writable_by_the_api_server_and_mounted_nowhere_else(compose):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    # Why it must be writable: Airflow opens it for writing at start and at each login.
    assert 'open(password_file, "a+")' in inspect.getsource(SimpleAuthManager.init)
    assert 'open(password_file, "r+")' in inspect.getsource(SimpleAuthManager.get_passwords)
    services = compose["services"]
    passwords = _env(services["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    directory = os.path.dirname(passwords)
    holders = {}
    for name, svc in services.items():
        for mount in svc.get("volumes") or []:
            source, target, mode = _mount(mount)
            if target in (directory, passwords) or source.endswith("/airflow"):
                holders[name] = (source, target, mode)
    assert set(holders) == {"airflow-apiserver"}, holders
    source, target, mode = holders["airflow-apiserver"]
    assert source == "${HFC_SECRETS_DIR:-./secrets}/airflow" and target == directory, holders
    assert mode == "rw", f"the api-server's {target} is mounted {mode}: SimpleAuthManager cannot open {passwords}"
    # make-secrets.sh writes the file there (the UI's admin password).
    assert "secrets/airflow/passwords.json" in (REPO / "docker" / "site" / "make-secrets.sh").read_text()
    assert os.path.basename(passwords) == "passwords.json"


def test_no_catalogue_dsn_beside_the_catalogue_connection(compose):
    """`hfc db upgrade` (airflow-init) and the tasks read the connection hfc_catalogue
    (AIRFLOW_CONN_HFC_CATALOGUE): a second DSN would be a second source of truth."""
    assert "HFC_CATALOGUE_DSN" not in COMPOSE.read_text()
    hfc = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "hfc"
    help_text = subprocess.run([str(hfc if hfc.exists() else "hfc"), "db", "upgrade", "--help"],
                               capture_output=True, text=True, timeout=120, check=True).stdout
    assert "default:" in help_text and "hfc_catalogue" in help_text, help_text
    init = _env(compose["services"]["airflow-init"])
    assert "catalogue-db" in init["AIRFLOW_CONN_HFC_CATALOGUE"]


def _redis_password_variable(compose) -> str:
    redis_env = _env(compose["services"]["redis"])
    match = re.fullmatch(r"\$\{(\w+)(:\?[^}]*)\}", str(redis_env.get("REDIS_PASSWORD", "")))
    assert match, f"redis' REDIS_PASSWORD is not taken from .env: {redis_env}"
    return match.group(1)


def test_every_broker_url_carries_the_redis_password(compose):
    variable = _redis_password_variable(compose)
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        url = _env(services[name])["AIRFLOW__CELERY__BROKER_URL"]
        # ${VAR:?message}: compose refuses to run without the password (no empty default).
        assert f"${{{variable}:?" in url, (name, url)
        parts = urlsplit(re.sub(r"\$\{(\w+)(:[?-][^}]*)?\}", r"<\1>", url))
        assert parts.scheme == "redis" and parts.hostname == "redis" and parts.port == 6379, (name, url)
        assert parts.password == f"<{variable}>", (name, url)
    # make-secrets.sh makes the password (URL-safe: it goes into the broker URL) and keeps it.
    script = (REPO / "docker" / "site" / "make-secrets.sh").read_text()
    assert f'"{variable}=' in script and "token_urlsafe" in script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unescape(compose_text: str) -> str:
    """A compose string as the container's shell gets it (``$$`` is a literal ``$``)."""
    return compose_text.replace("$$", "$")


def test_redis_refuses_clients_without_the_password(compose, tmp_path):
    """The redis service's command and healthcheck, run here with the host's redis-server behind a
    stand-in of the official image's docker-entrypoint.sh (``redis-server ARGS`` runs the server)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed (Debian's redis-server; `make test` checks for it)")
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[:2] == ["sh", "-c"], command
    port = _free_port()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    entry = bindir / "docker-entrypoint.sh"
    entry.write_text(f"#!/bin/sh\n[ \"$1\" = redis-server ] && shift && exec redis-server --port {port} "
                     f"--bind 127.0.0.1 --save '' --appendonly no --dir {tmp_path} \"$@\"\nexec \"$@\"\n")
    entry.chmod(0o755)
    redis_cli = bindir / "redis-cli"  # the healthcheck's redis-cli, on this server's port
    redis_cli.write_text(f"#!/bin/sh\nexec {shutil.which('redis-cli')} -p {port} \"$@\"\n")
    redis_cli.chmod(0o755)
    base_env = {"PATH": f"{bindir}:{os.environ['PATH']}"}

    # No password: the server does not start, and says what to set.
    empty = subprocess.run([_unescape(c) for c in command], env={**base_env, "REDIS_PASSWORD": ""},
                           capture_output=True, text=True, timeout=30)
    variable = _redis_password_variable(compose)
    assert empty.returncode != 0 and variable in empty.stderr, (empty.returncode, empty.stderr)

    password = "s3cr3t-Pw_x"
    server = subprocess.Popen([_unescape(c) for c in command], env={**base_env, "REDIS_PASSWORD": password},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        check = redis["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL", check

        def healthcheck(pw: str) -> int:
            return subprocess.run(["sh", "-c", _unescape(check[1])], env={**base_env, "REDIS_PASSWORD": pw},
                                  capture_output=True, timeout=30).returncode

        deadline = time.monotonic() + 20
        while healthcheck(password) != 0:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the redis service's healthcheck never passed"
            time.sleep(0.2)
        assert healthcheck("wrong") != 0
        anonymous = subprocess.run([str(redis_cli), "ping"], capture_output=True, text=True, timeout=30,
                                   env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"})
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
        # The password is not left in the server's command line (ps on the Docker host shows it).
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert password not in cmdline, cmdline
    finally:
        server.terminate()
        server.wait(timeout=30)


def _docker_py_python() -> str:
    """The interpreter of Debian's docker-compose 1.29, whose docker-py builds `build: .` contexts."""
    compose_bin = shutil.which("docker-compose")
    if compose_bin is None:
        pytest.fail("docker-compose (Debian's 1.29, with python3-docker) is needed: `make test` checks for it")
    shebang = Path(compose_bin).read_text(errors="replace").splitlines()[0]
    assert shebang.startswith("#!"), shebang
    return shebang[2:].split()[0]


def test_the_build_context_is_what_the_dockerfile_copies(compose):
    """The files docker-compose 1.29 sends for `build: .`, as its docker-py computes them from
    .dockerignore (the docker CLI's own is checked by tests/e2e/test_compose_stack.py)."""
    assert compose["services"]["airflow-apiserver"]["build"] == "."
    assert (REPO / ".dockerignore").exists(), "no .dockerignore: the whole checkout is the build context"
    program = ("import json, sys; from docker.utils.build import exclude_paths\n"
               "root = sys.argv[1]\n"
               "patterns = [p.strip() for p in open(root + '/.dockerignore') "
               "if p.strip() and not p.startswith('#')]\n"
               "print(json.dumps(sorted(exclude_paths(root, patterns, dockerfile='Dockerfile'))))")
    proc = subprocess.run([_docker_py_python(), "-c", program, str(REPO)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)
    top = {f.split("/", 1)[0] for f in files}
    copied = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            copied |= set(words[:-1])
    assert copied == {"requirements.txt", "constraints.txt", "pyproject.toml", "hfc_tasks", "config"}, copied
    assert copied <= top, f"the Dockerfile copies {sorted(copied - top)}, which .dockerignore leaves out"
    assert top <= copied | {"Dockerfile", ".dockerignore"}, f"in the build context for nothing: {sorted(top - copied)}"
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".pyo"))], "caches in the context"
    assert any(f.startswith("hfc_tasks/catalogue/migrations/") for f in files)  # package data stays
