import datetime as dt

import pytest

from hfc_tasks import products


@pytest.mark.parametrize(
    "name,kind,year",
    [
        ("sdoss_106_20120101T140000_sdo_feat.csv", "feat", "2012"),
        ("demosunspots_100_20240301T040000_sdo_init.csv", "init", "2024"),
        ("rabat3_203_win_20120101_init.csv", "init", "2012"),
        ("SoSoFT_10_20110101T083400_meu1_pp.csv", "pp", "2011"),
        ("sdoss_106_frc_info.csv", "frc_info", None),
        ("spoca_300_observatory.csv", "observatory", None),
        ("demosunspots_100_sdo_observatory.csv", "observatory", None),
        ("hmi.ic_45s.2024.03.01_00_00_00_TAI.continuum.jpg", "quicklook", None),
    ],
)
def test_parse(name, kind, year):
    p = products.parse_product_name(name)
    assert p.kind == kind and p.year == year


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.csv", "x;rm.csv", "a b.csv", "..csv", ""])
def test_hostile_names_refused(name):
    with pytest.raises(products.ProductNameError, match="refused"):
        products.parse_product_name(name)


def test_layout():
    night = dt.date(2024, 3, 1)
    csv = products.parse_product_name("demosunspots_100_20240301T040000_sdo_feat.csv")
    ql = products.parse_product_name("hmi.ic_45s.2024.03.01_04_00_00_TAI.continuum.jpg")
    assert products.archive_relpath("demo", csv, night, observatory="SDO", instrument="HMI") == (
        "demo/results/2024/demosunspots_100_20240301T040000_sdo_feat.csv"
    )
    assert products.archive_relpath("demo", ql, night, observatory="SDO", instrument="HMI").startswith(
        "demo/images/full/SDO/HMI/2024/"
    )
    assert products.manifest_relpath("demo", "demo", night) == "demo/manifests/demo/20240301.json"
    # A tracker archiving beside its detector has a manifest of its own.
    assert products.manifest_relpath("demo", "demo-tracking", night) == "demo/manifests/demo-tracking/20240301.json"
    assert products.legacy_manifest_relpath("demo", "demo", night) == "demo/manifests/20240301.json"
    assert products.legacy_manifest_relpath("demo", "demo-tracking", night) is None
    assert products.job_name("demo", night) == "hfc.demo.20240301"


@pytest.mark.parametrize("bad", ["2024-02-30", "tomorrow", "2024/03/01", ""])
def test_bad_night(bad):
    with pytest.raises(ValueError, match="night"):
        products.parse_night(bad)
