"""The test tree itself: pytest (rootdir import mode) imports every test module outside a package
by its basename, so two such modules with one name stop the whole collection ("import file
mismatch"): that once made CI collect nothing but the multihost tests."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_outside_packages():
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name == "conftest.py" or (path.parent / "__init__.py").exists():
            continue  # pytest names conftests by their path, a package's modules by their dotted name
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test modules sharing a basename (rename one): {clashes}"
