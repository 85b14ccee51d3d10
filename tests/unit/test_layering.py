"""The layers of docs/architecture.md, checked on the source: the domain imports no Airflow and
no module of the layers above it, the Airflow layer no operations tool, no import cycle between
the package's modules; and the trigger's old class path still imports (Airflow stores it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hfc_tasks"
PROVIDER, OPS = "hfc_tasks.provider", "hfc_tasks.ops"
# Above the domain: the Airflow layer, the operations tools, and the old trigger path (an alias).
NOT_DOMAIN = (PROVIDER, OPS, "hfc_tasks.triggers")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module this one imports, at any depth of its code (lazy imports count too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod when there is one
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found.update(subs or [base])
    return found


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def domain_modules() -> list[str]:
    return sorted(m for m in MODULES if m != "hfc_tasks" and not any(in_layer(m, x) for x in NOT_DOMAIN))


@pytest.mark.parametrize("module", domain_modules())
def test_the_domain_imports_no_airflow_and_nothing_above_it(module):
    bad = sorted(i for i in imports(module)
                 if in_layer(i, "airflow") or any(in_layer(i, x) for x in NOT_DOMAIN))
    assert bad == [], f"{module} (domain) imports {bad}"


def test_the_airflow_layer_imports_no_operations_tool():
    bad = {m: sorted(i for i in imports(m) if in_layer(i, OPS)) for m in MODULES if in_layer(m, PROVIDER)}
    assert {m: i for m, i in bad.items() if i} == {}


def test_no_import_cycle_between_the_package_modules():
    graph = {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], f"import cycles: {cycles}"


def test_the_trigger_class_path_stored_by_earlier_deploys_still_imports():
    from airflow.sdk.module_loading import import_string

    from hfc_tasks.provider.triggers import SlurmJobTrigger

    assert import_string("hfc_tasks.triggers.SlurmJobTrigger") is SlurmJobTrigger
    # A wait deferred before the move is stored as (old classpath, kwargs): it rebuilds as before.
    trigger = SlurmJobTrigger(ssh_conn_id="hfc_cluster", job_id="42")
    classpath, kwargs = trigger.serialize()
    old = import_string("hfc_tasks.triggers.SlurmJobTrigger")(**kwargs)
    assert classpath == "hfc_tasks.provider.triggers.SlurmJobTrigger"
    assert old.serialize() == (classpath, kwargs)
