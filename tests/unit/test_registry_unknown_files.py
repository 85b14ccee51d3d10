"""Issue 16 item 5: the per-FRC ``unknown_files`` setting (fail | warn, default fail)."""

from __future__ import annotations

import pytest
import yaml

from hfc_tasks.registry import DEFAULT_REGISTRY, RegistryError, load_registry


def registry_with(tmp_path, value):
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    raw["frcs"][0]["unknown_files"] = value
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_is_fail_and_warn_is_accepted(tmp_path):
    assert all(f.unknown_files == "fail" for f in load_registry().frcs)
    assert load_registry(registry_with(tmp_path, "warn")).frcs[0].unknown_files == "warn"


def test_other_values_are_refused_naming_the_key(tmp_path):
    with pytest.raises(RegistryError, match=r"frcs\.0\.unknown_files"):
        load_registry(registry_with(tmp_path, "ignore"))
