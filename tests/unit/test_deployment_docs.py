"""docs/deployment.md, deploy/systemd/ and docs/connections.md are what works with the installed
Airflow: every unit file parses, names a component the installed ``airflow`` has and passes
``systemd-analyze verify``; every ``airflow connections add`` command of docs/connections.md is run
for real against a throwaway SQLite metadata database and read back with ``airflow connections get``;
the deploy step runs (but for `hfc db upgrade`) and imports the pools the registry sizes; the
EnvironmentFile example holds no secret and only options Airflow knows. The docs' statements about
the code are the code's: the compose section names what ran and no workaround, each documented
`hfc` synopsis has only options the CLI has, and docs/architecture.md's map of the Airflow layer
names each of its modules, what they define, and their hooks, operators, sensors, triggers and
notifiers."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
DEPLOYMENT = REPO / "docs" / "deployment.md"
CONNECTIONS = REPO / "docs" / "connections.md"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
HFC = str(BIN / "hfc")
LONG_RUNNING = {
    "airflow-apiserver.service": ["api-server"],
    "airflow-scheduler.service": ["scheduler"],
    "airflow-dag-processor.service": ["dag-processor"],
    "airflow-triggerer.service": ["triggerer"],
    "airflow-celery-worker@.service": ["celery", "worker"],
}
DEPLOY_STEP = "hfc-db-upgrade.service"
INSTALLED_VENV = "/opt/hfc/venv/bin/"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as systemd reads it: sections of ``Key=value`` lines (a key may repeat, as
    ExecStart does in a oneshot service); anything else is an error naming the file and line."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        assert not stripped.endswith("\\"), f"{path.name}:{number}: continuation lines are not used here"
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
            assert current not in sections, f"{path.name}:{number}: section [{current}] twice"
            sections[current] = []
            continue
        key, sep, value = stripped.partition("=")
        assert sep and current, f"{path.name}:{number}: not a Key=value line inside a section: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def airflow_argv(exec_start: str) -> list[str]:
    """``/opt/hfc/venv/bin/airflow celery worker --celery-hostname %i@%H`` -> the arguments after
    ``airflow``, with systemd's specifiers replaced by sample values."""
    argv = shlex.split(exec_start.replace("%i", "1").replace("%H", "host1"))
    assert argv[0] == INSTALLED_VENV + "airflow", exec_start
    return argv[1:]


ARGPARSE = """
import json, sys
from airflow.cli.cli_parser import get_parser
parser = get_parser()
for argv in json.loads(sys.argv[1]):
    args = parser.parse_args(argv)   # exits 2, naming the argument, if Airflow does not have it
    assert callable(args.func), argv
print("ok")
"""


def parse_with_airflow(commands: list[list[str]], airflow_home: Path) -> None:
    """Each command line through the installed Airflow's own argparser (exit 2 on anything unknown)."""
    proc = subprocess.run([sys.executable, "-c", ARGPARSE, json.dumps(commands)], env=sandbox_env(airflow_home),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def sandbox_env(airflow_home: Path) -> dict[str, str]:
    """A throwaway Airflow: its own home and SQLite metadata database, no AIRFLOW_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update({"AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db"})
    return env


@pytest.fixture(scope="module")
def units() -> dict[str, dict]:
    found = {p.name: parse_unit(p) for p in sorted(SYSTEMD.glob("*.service"))}
    assert set(found) == set(LONG_RUNNING) | {DEPLOY_STEP}, sorted(found)
    return found


def test_every_unit_has_the_sections_and_runs_as_airflow_with_the_environment_file(units):
    for name, unit in units.items():
        assert {"Unit", "Service", "Install"} <= set(unit), f"{name}: sections {sorted(unit)}"
        assert values(unit, "Unit", "Description"), name
        assert values(unit, "Service", "User") == ["airflow"], name
        env_files = values(unit, "Service", "EnvironmentFile")
        assert env_files[0] == "/etc/hfc/airflow.env", name
        assert all(v.startswith(("/etc/hfc/", "-/etc/hfc/")) for v in env_files), name
        assert values(unit, "Service", "ExecStart"), name
    for name in LONG_RUNNING:
        assert values(units[name], "Service", "Type") == ["simple"], name
        assert values(units[name], "Service", "Restart")[0] in ("always", "on-failure"), name
        assert values(units[name], "Install", "WantedBy") == ["multi-user.target"], name
        # started after the deploy step when both are in one transaction
        assert "hfc-db-upgrade.service" in values(units[name], "Unit", "After")[0].split(), name


def test_each_component_is_an_airflow_command_of_the_installed_airflow(units, tmp_path):
    listed = subprocess.run([AIRFLOW, "--help"], env=sandbox_env(tmp_path), capture_output=True, text=True,
                            timeout=120).stdout
    commands = []
    for name, component in LONG_RUNNING.items():
        (exec_start,) = values(units[name], "Service", "ExecStart")
        argv = airflow_argv(exec_start)
        assert argv[:len(component)] == component, f"{name}: {exec_start}"
        assert re.search(rf"^\s+{component[0]}\s", listed, re.M), f"`airflow --help` has no {component[0]}"
        commands.append(argv)
    # the worker's Celery node name is unique per instance and host
    assert "--celery-hostname %i@%H" in values(units["airflow-celery-worker@.service"], "Service", "ExecStart")[0]
    parse_with_airflow(commands, tmp_path)


def test_the_deploy_step_migrates_and_imports_the_registry_pools_and_is_the_only_one(units, tmp_path):
    step = units[DEPLOY_STEP]
    assert values(step, "Service", "Type") == ["oneshot"]
    runs = values(step, "Service", "ExecStart")
    joined = "\n".join(runs)
    assert runs[0] == INSTALLED_VENV + "airflow db migrate"
    assert INSTALLED_VENV + "hfc db upgrade" in runs
    assert "hfc config pools >" in joined and "airflow pools import" in joined and "pools set" not in joined
    # the airflow commands of the step through Airflow's argparser; hfc's through `hfc <group> --help`
    parse_with_airflow([airflow_argv(r) for r in runs if r.startswith(INSTALLED_VENV + "airflow ")], tmp_path)
    for group, sub in (("db", "upgrade"), ("config", "pools"), ("config", "validate")):
        helptext = subprocess.run([HFC, group, "--help"], capture_output=True, text=True, timeout=60).stdout
        assert sub in helptext, f"`hfc {group}` has no {sub}"
    # Migrations only here: no long-running unit migrates.
    for name in LONG_RUNNING:
        run = " ".join(values(units[name], "Service", "ExecStart") + values(units[name], "Service", "ExecStartPre"))
        assert "db migrate" not in run and "db upgrade" not in run, name


def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    """systemd's own checker on copies pointing at this virtualenv (it checks that ExecStart is
    executable) and at the example environment file; an unknown key or section is only a warning
    for it, so any output at all fails the test."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (Debian: systemd)"
    copies = []
    for path in sorted(SYSTEMD.glob("*.service")):
        text = (path.read_text().replace(INSTALLED_VENV, f"{BIN}/")
                .replace("/etc/hfc/airflow.env", str(SYSTEMD / "airflow.env.example"))
                .replace("User=airflow", "User=root").replace("Group=airflow", "Group=root"))
        names = [path.name.replace("@.", "@1.")] if "@." in path.name else [path.name]
        names += [path.name] if "@." in path.name else []
        for name in names:
            (tmp_path / name).write_text(text)
            copies.append(str(tmp_path / name))
    proc = subprocess.run([analyze, "verify", "--man=no", *copies], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_the_environment_file_example_has_no_secret_and_only_known_options(tmp_path):
    text = (SYSTEMD / "airflow.env.example").read_text()
    assigned = [ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert all(len(pair) == 2 and not pair[0].startswith("export") for pair in assigned)
    for key, _ in assigned:
        assert not re.search(r"PASSWORD|SECRET|TOKEN|SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND|DSN", key), key
    options = sorted({(s.lower(), k.lower()) for s, k in re.findall(r"AIRFLOW__([A-Z_]+?)__([A-Z_]+)", text)})
    program = ("import json, sys\nfrom airflow.configuration import conf\n"
               "from airflow.providers_manager import ProvidersManager\n"
               "ProvidersManager().initialize_providers_configuration()\n"
               "desc = conf.configuration_description\n"
               "print(json.dumps([f'{s}.{k}' for s, k in json.loads(sys.argv[1])"
               " if k not in desc.get(s, {}).get('options', {})]))")
    proc = subprocess.run([sys.executable, "-c", program, json.dumps(options)], env=sandbox_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], "options Airflow does not know"
    assert len(options) > 15


def doc_commands(path: Path, prefix: str) -> list[list[str]]:
    """Every command line starting with ``prefix`` inside the ```sh blocks of a doc."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith(prefix)]


CLI_RUN = """
import contextlib, io, json, sys
from airflow.cli.cli_parser import get_parser
parser = get_parser()
out = []
for argv in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        args = parser.parse_args(argv)
        args.func(args)
    out.append(buf.getvalue())
print(json.dumps(out))
"""


def run_airflow_cli(commands: list[list[str]], env: dict[str, str]) -> list[str]:
    """The installed ``airflow`` CLI's own parser and command functions, one after the other in one
    process (each ``airflow`` start costs ~4 s); the stdout of each command."""
    proc = subprocess.run([sys.executable, "-c", CLI_RUN, json.dumps(commands)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def printed(value):
    """A JSON value with every scalar as text, nested objects and lists kept."""
    if isinstance(value, dict):
        return {k: printed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printed(v) for v in value]
    return str(value)


def test_every_connections_add_of_the_doc_runs_and_reads_back(tmp_path):
    """Real: `airflow db migrate` of a SQLite metadata database, then each documented
    `airflow connections add` as written, then `airflow connections get <id> -o json`."""
    commands = doc_commands(CONNECTIONS, "airflow connections add ")
    ids = [argv[3] for argv in commands]
    assert {"hfc_cluster", "hfc_archive", "hfc_catalogue", "hfc_smtp", "hfc_chat"} <= set(ids), ids
    env = sandbox_env(tmp_path)
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    added = run_airflow_cli([argv[1:] for argv in commands], env)
    for argv, out in zip(commands, added, strict=True):
        assert "Successfully added" in out, (argv, out)
    got = run_airflow_cli([["connections", "get", conn_id, "-o", "json"] for conn_id in ids], env)
    for argv, out in zip(commands, got, strict=True):
        (stored,) = json.loads(out)
        given = dict(zip(argv[4::2], argv[5::2], strict=False))
        assert stored["conn_id"] == argv[3] and stored["conn_type"] == given["--conn-type"], stored
        for option, field in (("--conn-host", "host"), ("--conn-login", "login"), ("--conn-schema", "schema")):
            assert stored[field] == given.get(option), (argv[3], field)
        # `connections get -o json` prints scalar extras as text (True -> "True"); what is stored is the JSON given
        assert printed(stored["extra_dejson"]) == printed(json.loads(given.get("--conn-extra", "{}"))), argv[3]
    catalogue = json.loads(dict(zip(commands[ids.index("hfc_catalogue")][4::2],
                                    commands[ids.index("hfc_catalogue")][5::2], strict=False))["--conn-extra"])
    assert catalogue["sslmode"] == "verify-full" and catalogue["sslrootcert"]


def test_the_deployment_doc_covers_what_an_operator_needs():
    text = DEPLOYMENT.read_text()
    for name in [*LONG_RUNNING, DEPLOY_STEP, "airflow.env.example"]:
        assert f"deploy/systemd/{name}" in text, name
    for needle in ("hfc config pools", "airflow pools import", "hfc db upgrade", "AIRFLOW__SECRETS__BACKEND",
                   "AIRFLOW__LOGGING__REMOTE_LOGGING", "AIRFLOW__METRICS__STATSD_ON", "docker-compose.yaml",
                   "docs/connections.md", "The compose stack on this machine"):
        assert needle in text, needle
    assert "docs/deployment.md" in (REPO / "README.md").read_text()


def test_the_deploy_step_runs_and_imports_the_pools_the_registry_sizes(units, tmp_path):
    """The deploy step's commands as systemd would run them (the unit's ExecStart lines, in order,
    this virtualenv for /opt/hfc/venv, a runtime directory), against a throwaway SQLite metadata
    database and a registry whose production site sizes the pools 7 and 3: the pools Airflow then
    has are exactly those. `hfc db upgrade` needs the catalogue's PostgreSQL and is left out here
    (the site tests run it)."""
    registry = yaml.safe_load((REPO / "config" / "registry.yaml").read_text())
    registry["sites"]["production"].update({"cluster_pool_slots": 7, "archive_pool_slots": 3})
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(yaml.safe_dump(registry))
    runtime = tmp_path / "run"
    runtime.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**sandbox_env(home), "HFC_REGISTRY": str(registry_file), "HFC_SITE": "production",
           "RUNTIME_DIRECTORY": str(runtime)}
    ran = []
    for line in values(units[DEPLOY_STEP], "Service", "ExecStart"):
        line = line.replace(INSTALLED_VENV, f"{BIN}/").replace("${RUNTIME_DIRECTORY}", str(runtime))
        argv = shlex.split(line)
        if argv[1:] == ["db", "upgrade"]:
            continue
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-2000:])
        ran.append(argv[1] if argv[0] != "/bin/sh" else "sh")
    assert ran == ["db", "sh", "pools", "config"]
    pools = run_airflow_cli([["pools", "list", "-o", "json"]], env)[0]
    slots = {p["pool"]: int(p["slots"]) for p in json.loads(pools)}
    assert slots == {"default_pool": 128, "hfc_cluster": 7, "hfc_archive": 3}, slots


def _sh_lines(path: Path) -> list[str]:
    """The lines of a doc's ```sh blocks, continuation lines (``\\``) joined."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def test_the_compose_section_says_the_stack_ran_as_shipped():
    """The compose stack ran (tests/e2e/test_compose_stack.py): the doc neither says it has not
    run nor runs it with a workaround file; every compose file its commands name exists."""
    text = DEPLOYMENT.read_text()
    assert "has not run" not in text
    assert "workaround" not in text.lower()
    compose_lines = [shlex.split(line) for line in _sh_lines(DEPLOYMENT)
                     if line.lstrip().startswith(("docker-compose", "docker compose"))]
    named = [argv[i + 1] for argv in compose_lines for i, word in enumerate(argv[:-1]) if word == "-f"]
    assert "docker-compose.yaml" in named
    for name in named:
        assert (REPO / name).is_file(), f"docs/deployment.md runs docker-compose with -f {name}, which does not exist"
    # The catalogue is an Airflow connection everywhere (the CLI's --conn-id): no second DSN.
    assert "HFC_CATALOGUE_DSN" not in text and "--conn-id" in text
    assert "HFC_REDIS_PASSWORD" in text


def test_every_hfc_synopsis_of_the_docs_has_only_options_the_cli_has():
    """docs/catalogue.md's "Command line" synopses: each option is in the installed `hfc`'s help."""
    text = (REPO / "docs" / "catalogue.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    synopses = [line.strip() for line in section.splitlines() if line.startswith("    hfc ")]
    assert any(s.startswith("hfc db upgrade") for s in synopses), synopses
    for synopsis in synopses:
        words = []
        for word in synopsis.split()[1:]:
            if word.startswith(("<", "[", "-")):
                break
            words.append(word)
        proc = subprocess.run([HFC, *words, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (synopsis, proc.stderr[-2000:])
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", synopsis):
            assert option in proc.stdout, f"docs/catalogue.md: `{synopsis}`: `hfc {' '.join(words)}` has no {option}"
    assert "HFC_CATALOGUE_DSN" not in text


def _provider_map() -> list[tuple[list[str], str]]:
    """docs/architecture.md's lines under ``hfc_tasks/provider/``: (modules, description)."""
    block = re.search(r"```\n(.*?)```", (REPO / "docs" / "architecture.md").read_text(), re.S).group(1)
    provider = block.split(" hfc_tasks/provider/", 1)[1].split("\n        │", 1)[0]
    entries: list[tuple[list[str], str]] = []
    for line in provider.splitlines()[1:]:
        match = re.match(r"   (\S.*?\S)\s{2,}(\S.*)", line)
        if match:
            entries.append((match.group(1).split(), match.group(2)))
        elif entries and line.strip():
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
    return entries


def _module_defs(path: Path) -> dict[str, list[str]]:
    """Top-level functions and classes of the module(s) at ``path`` (name -> base class names), and
    the names they import (no bases): what the module defines or builds on."""
    defs: dict[str, list[str]] = {}
    for file in [path] if path.suffix == ".py" else sorted(path.glob("*.py")):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                defs |= {alias.asname or alias.name: [] for alias in node.names}
            elif isinstance(node, ast.ClassDef):
                defs[node.name] = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[node.name] = []
    return defs


def test_the_architecture_map_of_the_airflow_layer_is_the_code():
    provider = REPO / "hfc_tasks" / "provider"
    entries = _provider_map()
    mapped = [m for modules, _ in entries for m in modules]
    modules = sorted(p.name for p in provider.glob("*.py") if p.name != "__init__.py")
    assert not set(modules) - set(mapped), f"not in docs/architecture.md's map: {sorted(set(modules) - set(mapped))}"
    # The connections' and notices' classes are named where they live (they replaced hand-written
    # code: issue 14); operators, sensors and triggers are left to their lines' prose.
    kinds = ("Hook", "HookAsync", "Notifier")
    problems = []
    for names, description in entries:
        defs: dict[str, list[str]] = {}
        for name in names:
            assert (provider / name).exists(), f"docs/architecture.md names hfc_tasks/provider/{name}: not there"
            defs |= _module_defs(provider / name)
        # every code name the line gives is defined in its module(s)...
        said = {w for w in re.findall(r"\b[A-Za-z_]\w*\b", description)
                if "_" in w.strip("_") or (w[0].isupper() and sum(c.isupper() for c in w) > 1
                                           and any(c.islower() for c in w))}
        problems += [f"{'/'.join(names)} has no {w}" for w in sorted(said - set(defs))]
        # ...and each public hook, operator, sensor, trigger and notifier defined there is named
        for cls, bases in defs.items():
            if not cls.startswith("_") and any(b.endswith(kinds) for b in bases) and cls not in said:
                problems.append(f"{'/'.join(names)}: {cls} ({', '.join(bases)}) is not named")
    assert not problems, problems


def _doc_messages(row_start: str) -> list[str]:
    """The quoted messages of docs/reliability.md's row ``row_start``, as regular expressions:
    placeholders (X, N, F, L, host:port, <...>) and ellipses (…, ...) stand for any text."""
    rows = [line for line in (REPO / "docs" / "reliability.md").read_text().splitlines()
            if line.startswith(f"| {row_start} |")]
    assert len(rows) == 1, (row_start, rows)
    quoted = re.findall(r'"([^"]+)"', rows[0].split(" | ")[2])
    assert quoted, rows[0]
    patterns = []
    for text in quoted:
        pieces = re.split(r"(…|\.\.\.|<[^>]+>|\bhost:port\b|\b[XNFL]\b)", text)
        patterns.append("".join(".*" if i % 2 else re.escape(piece) for i, piece in enumerate(pieces)))
    return patterns


def test_the_reliability_rows_of_the_notices_quote_what_the_notifiers_say():
    """docs/reliability.md's failure notice and mail-without-TLS rows: every message they quote is
    one the notifiers (hfc_tasks/provider/notifiers.py) produce."""
    import smtplib
    import ssl
    import types

    from hfc_tasks.provider import notifiers

    # The context of the row's test (S::test_failure_notification_reaches_the_webhook): a task `wait`
    # of FRC t-exit3 whose job exited 3.
    ti = types.SimpleNamespace(task_id="wait", try_number=1,
                               log_url="http://airflow.example/dags/hfc_nightly/runs/r/tasks/wait")
    failure = notifiers.failure_text({"run_id": "manual__r", "params": {"night": "2024-03-05"}, "ti": ti,
                                      "task": types.SimpleNamespace(frc="t-exit3"),
                                      "exception": RuntimeError("SLURM job 12, state FAILED, exit code 3")})
    said = failure.splitlines()
    said.append(str(notifiers._smtp_error("hfc_smtp", smtplib.SMTPNotSupportedError(
        "STARTTLS extension not supported by server."))))
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    said.append(str(notifiers._smtp_error("hfc_smtp", untrusted)))
    clear = types.SimpleNamespace(extra_dejson={"disable_ssl": True, "disable_tls": True}, login="mailer",
                                  password="pw", host="relay.example", port=25)
    with pytest.raises(notifiers.NotifyError) as refused:
        notifiers._check_smtp_conn("hfc_smtp", clear)
    said.append(str(refused.value))
    for row in ("failure notice", "mail without TLS"):
        for pattern in _doc_messages(row):
            assert any(re.search(pattern, line) for line in said), \
                f"docs/reliability.md, {row!r}: no notifier message matches {pattern!r}:\n" + "\n".join(said)
