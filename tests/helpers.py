"""Helpers shared by test modules of several folders (tests/ is on sys.path: `import helpers`).

The demo FRC programs (site/frcs/*.py) are standalone scripts for the cluster: the tests import
them by path, run them as SLURM does, and read the semicolon CSVs they write.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import stat
import sys
from collections.abc import Generator
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[1]
FRCS = REPO / "site" / "frcs"
FORMATS = REPO / "hfc_tasks" / "catalogue" / "formats.yaml"


def load_frc_program(name: str) -> ModuleType:
    """Import site/frcs/<name>.py by path (it is no package module)."""
    spec = importlib.util.spec_from_file_location(name, FRCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


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
