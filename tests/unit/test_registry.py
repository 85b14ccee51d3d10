"""The registry: validation with located errors, command rendering with quoting."""

import datetime as dt
import shlex
import subprocess
import sys

import pytest

from hfc_tasks.registry import RegistryError, load_registry

BASE = """
default_site: local
sites:
  local:
    products_root: /p
    frc_root: /f
    archive_root: /a
    public_url_base: file:///a
frcs:
  - name: {name}
    version: "1"
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    command: run -s {{start}} -o {{run_dir}}
    slurm: {{extra: {extra}}}
"""


def write(tmp_path, name="demo", extra="[]"):
    p = tmp_path / "registry.yaml"
    p.write_text(BASE.format(name=name, extra=extra))
    return p


def test_project_registry_is_valid():
    reg = load_registry()
    assert "demo-sunspots" in [f.name for f in reg.frcs]
    assert reg.site().archive_root.endswith("/home/archive/hfc")


@pytest.mark.parametrize("name", ["Demo", "a;b", "a b", "../x", "$(id)", "-x"])
def test_frc_names_must_be_plain(tmp_path, name):
    with pytest.raises(RegistryError, match=r"frcs\.0\.name"):
        load_registry(write(tmp_path, name=f'"{name}"'))


def test_unknown_sbatch_option_refused(tmp_path):
    with pytest.raises(RegistryError, match="not allowed"):
        load_registry(write(tmp_path, extra='["--wrap=rm -rf /"]'))


def test_command_values_are_quoted(tmp_path):
    reg = load_registry(write(tmp_path))
    cmd = reg.frc("demo").render_command(night=dt.date(2024, 3, 1), run_dir="/p/x; rm -rf /", frc_root="/f")
    assert shlex.split(cmd) == ["run", "-s", "2024-03-01T00:00:00", "-o", "/p/x; rm -rf /"]


def test_missing_file_named(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- product formats (issue 5)


def _frc_with(**fields) -> dict:
    frc = {"name": "new-code", "version": "1", "feature": "SUNSPOTS", "observatory": "SDO", "instrument": "HMI",
           "command": "/bin/true"}
    frc.update(fields)
    return frc


def test_product_format_and_products_are_checked_against_formats_yaml():
    from hfc_tasks.catalogue.formats import KNOWN
    from hfc_tasks.registry import Frc

    formats, kinds = set(KNOWN.formats), set(KNOWN.kinds)
    assert {"sdoss", "spoca-ar", "spoca-ch", "sosoft", "rabat3", "trackfil"} <= formats
    assert {"init", "sdoss_feat", "spoca_ar_track"} <= kinds
    # A new FRC writing known kinds: registry data only.
    frc = Frc.model_validate(_frc_with(product_format="sdoss", products={"feat": "spoca_ar_feat", "track": "none"}))
    assert frc.products == {"feat": "spoca_ar_feat", "track": "none"}
    with pytest.raises(ValueError, match="product_format 'mdiss' is not in the formats"):
        Frc.model_validate(_frc_with(product_format="mdiss"))
    with pytest.raises(ValueError, match="'sunspot_feat' is not a kind of the formats"):
        Frc.model_validate(_frc_with(products={"feat": "sunspot_feat"}))


def test_registry_reads_formats_yaml_without_pandas():
    """The DAG file parses the registry: formats.yaml comes through catalogue.formats, which
    imports neither pandas nor numpy nor psycopg (the readers and the loader do)."""
    code = ("import sys, hfc_tasks.registry as r; r.load_registry(); "
            "print(sorted(m for m in ('pandas', 'numpy', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_after_cycle_refused(tmp_path):
    text = BASE.format(name="a", extra="[]") + """    after: [b]
  - name: b
    version: "1"
    feature: X
    observatory: SDO
    instrument: HMI
    command: run
    after: [a]
"""
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RegistryError, match="cycle: a -> b -> a"):
        load_registry(p)


def test_sites_select_frcs(monkeypatch):
    reg = load_registry()
    local = [f.name for f in reg.frcs_for("local")]
    prod = [f.name for f in reg.frcs_for("production")]
    assert "demo-sunspots" in local and "sdoss" not in local
    assert {"sdoss", "sdoss-tracking", "spoca-ar", "spoca-ch", "sosoft", "trackfil", "rabat3"} <= set(prod)
    assert "demo-sunspots" not in prod
    monkeypatch.setenv("HFC_SITE", "production")
    assert [f.name for f in reg.enabled_frcs] == prod


def test_date_pieces_for_positional_codes():
    reg = load_registry()
    cmd = reg.frc("sosoft").render_command(night=dt.date(2024, 3, 1), run_dir="/r", frc_root="/o")
    assert cmd.endswith("run_sosoft.sh 01 03 2024")
