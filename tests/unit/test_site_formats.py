"""File kinds as data and a site formats folder merged over the packaged presets (issue 13)."""

from __future__ import annotations

import pytest
from helpers import SITE_PP

from hfc_tasks import products
from hfc_tasks.catalogue.formats import FORMATS_FILE, KNOWN, FormatError, load_formats
from hfc_tasks.registry import RegistryError, load_registry


def site(tmp_path, **files: str):
    folder = tmp_path / "formats.d"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_the_presets_declare_every_file_kind_they_load():
    used = {k for mapping in KNOWN.formats.values() for k in mapping}
    assert used <= set(KNOWN.files)
    assert KNOWN.files["frc_info"].scope == "code" and KNOWN.files["feat"].scope == "observation"


def test_names_are_classified_by_the_declared_file_kinds_only(tmp_path):
    # Before issue 13 the kinds were a closed list in code: a pp_info file was "not an HFC product name".
    name, out = "mycode_10_sdo_pp_info.csv", "mycode_10_20240301T000000_hmi_ppout.csv"
    for n in (name, out):
        with pytest.raises(products.ProductNameError, match="not an HFC product name"):
            products.parse_product_name(n)
    known = load_formats(site_dir=site(tmp_path, pp=SITE_PP))
    meta, per_obs = products.parse_product_name(name, known), products.parse_product_name(out, known)
    assert (meta.kind, meta.code, meta.version) == ("pp_info", "mycode", "10")
    assert (meta.observatory_tag, meta.stamp) == ("sdo", None)
    assert (per_obs.kind, per_obs.stamp, per_obs.observatory_tag) == ("ppout", "20240301T000000", "hmi")
    # The presets still classify as before, through the same declaration.
    assert products.parse_product_name("sdoss_10_20240301T000000_hmi_feat.csv", known).kind == "feat"
    assert products.parse_product_name("rabat3_1_nrh_20240301_feat.csv", known).observatory_tag == "nrh"
    assert products.parse_product_name("a_quicklook.png", known).kind == products.QUICKLOOK


def test_a_site_format_resolves_in_reference_order_and_leaves_the_presets_alone(tmp_path):
    before = FORMATS_FILE.read_bytes()
    known = load_formats(site_dir=site(tmp_path, pp=SITE_PP))
    order = list(known.resolve("demo-pp"))
    assert order.index("pp_info") < order.index("ppout") and order.index("init") < order.index("ppout")
    assert known.kinds["site_pp_info"].is_metadata  # pp_info rows are matched by content, never owned
    assert known.where("kinds", "site_ppout").endswith("pp.yaml") and known.where("kinds", "init") == str(FORMATS_FILE)
    assert "demo-pp" not in KNOWN.formats and "ppout" not in KNOWN.files
    assert FORMATS_FILE.read_bytes() == before


def test_a_site_file_never_redefines_a_preset_or_another_site_file(tmp_path):
    clash = "kinds:\n  init:\n    table: observations\n    columns: |\n      ID_OBSERVATIONS int id\n"
    with pytest.raises(FormatError, match=r"a\.yaml: kinds\.init is already defined in .*formats\.yaml"):
        load_formats(site_dir=site(tmp_path, a=clash))
    (tmp_path / "two").mkdir()
    folder = site(tmp_path / "two", a=SITE_PP, b="files:\n  ppout: night\n")
    with pytest.raises(FormatError, match=r"b\.yaml: files\.ppout is already defined in .*a\.yaml"):
        load_formats(site_dir=folder)


@pytest.mark.parametrize(("text", "named"), [
    ("files:\n  ppout: weekly\n", "file kind 'ppout': expected one of observation, night, code"),
    ("files:\n  ppout: ['{code}_{when}_{kind}.csv']\n", "unknown field {when}"),
    ("files:\n  ppout: ['{version}_{stamp}_{kind}.csv']\n", "must hold {code} and end in .csv"),
    ("files:\n  Bad-Kind: code\n", "must match [a-z][a-z0-9_]*"),
    ("formats:\n  x:\n    ppout2: init\n", "file kind 'ppout2' is not declared"),
    ("colums: {}\n", "unknown key(s) ['colums']"),
])
def test_site_formats_are_checked_the_same_way_naming_the_file(tmp_path, text, named):
    with pytest.raises(FormatError) as err:
        load_formats(site_dir=site(tmp_path, bad=text))
    assert named in str(err.value) and "bad.yaml" in str(err.value)


def test_own_name_templates(tmp_path):
    known = load_formats(site_dir=site(tmp_path, t="files:\n  summary: ['{code}_{version}_{date}_{kind}.csv']\n"))
    got = products.parse_product_name("abc_2_20240301_summary.csv", known)
    assert (got.kind, got.code, got.stamp, got.observatory_tag) == ("summary", "abc", "20240301", None)
    with pytest.raises(products.ProductNameError):
        products.parse_product_name("abc_2_20240301T0000_summary.csv", known)  # {date} is a day only


REGISTRY = """
default_site: local
formats_dir: {formats_dir}
sites:
  local: {{products_root: /p, frc_root: /f, archive_root: /a, public_url_base: file:///a}}
frcs:
  - name: demo-pp
    version: "1"
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: demo-pp
    products: {products}
    command: run -o {{run_dir}}
"""


def test_the_registry_reads_its_formats_dir_relative_to_itself(tmp_path):
    site(tmp_path, pp=SITE_PP)
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY.format(formats_dir="formats.d", products="{}"))
    reg = load_registry(path)
    assert "demo-pp" in reg.formats.formats and reg.formats.classify("x_1_sdo_pp_info.csv").kind == "pp_info"
    # Without its formats folder the same FRC is refused, naming the format.
    path.write_text(REGISTRY.format(formats_dir="null", products="{}"))
    with pytest.raises(RegistryError, match="product_format 'demo-pp' is not in the formats"):
        load_registry(path)
    path.write_text(REGISTRY.format(formats_dir="nowhere.d", products="{}"))
    with pytest.raises(RegistryError, match="formats_dir: site formats folder .*nowhere.d does not exist"):
        load_registry(path)
    # A products override names declared file kinds and known kinds, and must still resolve.
    path.write_text(REGISTRY.format(formats_dir="formats.d", products="{ppoutt: site_ppout}"))
    with pytest.raises(RegistryError, match="'ppoutt' is not a declared file kind"):
        load_registry(path)
    path.write_text(REGISTRY.format(formats_dir="formats.d", products="{init: none}"))
    with pytest.raises(RegistryError, match="point into 'init' files, which this format does not load"):
        load_registry(path)


def test_a_bad_column_names_the_file_and_the_kinds_key(tmp_path):
    bad = SITE_PP.replace("CENTER_Y        float      notnull", "CENTER_Y        floaty     notnull")
    with pytest.raises(FormatError, match=r"pp\.yaml: kinds\.site_ppout: column CENTER_Y: unknown type 'floaty'"):
        load_formats(site_dir=site(tmp_path, pp=bad))
