"""The multihost registry (config/registry.multihost.yaml) has the production registry's shape.

"Shape" is what must be the same between the production example (config/registry.yaml, site
``production``) and the multihost registry once the FRC identities are mapped (production code ->
demo code, IDENTITIES below). Per FRC:

* kind: ``feature``, ``observatory``, ``instrument``, ``product_format``;
* role: detector (no ``after``) or tracker, and ``after`` (mapped);
* archive folder: ``archive_dir`` (mapped): a tracker shares its detector's folder;
* ``rewrites``, ``lag_nights``, ``unknown_files``, ``enabled``, and the FRC runs on the site;
* CPUs: whether it needs more than one (``cpus > 1``), not how many (a site value);
* partition: it runs on a named partition (its own or the site's default).

Per site: ``stagger_seconds > 0``, a default partition, three distinct connection ids.

What may differ (site values): hosts, paths, connection ids, partition names, CPU counts, memory,
time limits, cadences, versions, commands and the never-hang limits. Production FRCs outside the
mapping (spoca-ch, sosoft, trackfil, rabat3...) are not compared; every multihost FRC must be the
image of one production FRC.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hfc_tasks.ops.localsite import multihost
from hfc_tasks.registry import Frc, Registry, Site, load_registry

CONFIG = Path(__file__).resolve().parents[2] / "config"
PRODUCTION = CONFIG / "registry.yaml"
MULTIHOST = CONFIG / "registry.multihost.yaml"
IDENTITIES = {
    "sdoss": "demo-sunspots",
    "sdoss-tracking": "demo-sunspot-tracking",
    "spoca-ar": "demo-active-regions",
}
MH_ENV = {
    "HFC_MH_SITE_DIR": "/srv/mh",
    "HFC_MH_PRODUCTS_ROOT": "/srv/mh/home/cluster/products",
    "HFC_MH_ARCHIVE_ROOT": "/srv/mh/home/archive/hfc",
}


def frc_shape(frc: Frc, site_name: str, site: Site, rename: dict[str, str]) -> dict:
    def m(name: str) -> str:
        return rename.get(name, name)

    return {
        "feature": frc.feature,
        "observatory": frc.observatory,
        "instrument": frc.instrument,
        "product_format": frc.product_format,
        "role": "tracker" if frc.after else "detector",
        "after": sorted(m(a) for a in frc.after),
        "archive folder": m(frc.archive_dir),
        "rewrites": frc.rewrites,
        "lag_nights": frc.lag_nights,
        "unknown_files": frc.unknown_files,
        "enabled": frc.enabled,
        "runs on the site": frc.sites is None or site_name in frc.sites,
        "cpus > 1": frc.slurm.cpus > 1,
        "partition named": bool(frc.slurm.partition or site.default_partition),
    }


def site_shape(site: Site) -> dict:
    return {
        "stagger_seconds > 0": site.stagger_seconds > 0,
        "default partition named": bool(site.default_partition),
        "three distinct connection ids": len({site.cluster_conn_id, site.archive_conn_id, site.catalogue_conn_id}) == 3,
    }


def shape_differences(production: Registry, mh: Registry, mh_site: str = "multihost") -> list[str]:
    """Every difference of shape between the two registries, as sentences (empty: same shape)."""
    out = []
    prod_site = production.sites["production"]
    site = mh.sites[mh_site]
    a, b = site_shape(prod_site), site_shape(site)
    out += [f"site: {k}: production {a[k]}, multihost {b[k]}" for k in a if a[k] != b[k]]
    mh_frcs = {f.name: f for f in mh.frcs}
    extra = sorted(set(mh_frcs) - set(IDENTITIES.values()))
    if extra:
        out.append(f"multihost FRCs with no production counterpart: {extra}")
    for prod_name, demo_name in IDENTITIES.items():
        if demo_name not in mh_frcs:
            out.append(f"{demo_name} (for {prod_name}) is missing from the multihost registry")
            continue
        a = frc_shape(production.frc(prod_name), "production", prod_site, IDENTITIES)
        b = frc_shape(mh_frcs[demo_name], mh_site, site, {})
        out += [f"{prod_name} -> {demo_name}: {k}: production {a[k]!r}, multihost {b[k]!r}" for k in a if a[k] != b[k]]
    return out


@pytest.fixture
def production() -> Registry:
    return load_registry(PRODUCTION)


@pytest.fixture
def mh_raw() -> dict:
    return yaml.safe_load(MULTIHOST.read_text())


def load_raw(raw: dict, tmp_path: Path, monkeypatch) -> Registry:
    for k, v in MH_ENV.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_registry(path)


def test_multihost_registry_has_the_production_shape(production, mh_raw, tmp_path, monkeypatch):
    mh = load_raw(mh_raw, tmp_path, monkeypatch)
    assert shape_differences(production, mh) == []
    # the site values are the multihost site's
    site = mh.site("multihost")
    assert (site.cluster_conn_id, site.archive_conn_id, site.catalogue_conn_id) == (
        "hfc_mh_cluster",
        "hfc_mh_archive",
        "hfc_mh_catalogue",
    )
    assert site.products_root == MH_ENV["HFC_MH_PRODUCTS_ROOT"]
    assert site.archive_root == MH_ENV["HFC_MH_ARCHIVE_ROOT"]
    assert site.frc_root == MH_ENV["HFC_MH_SITE_DIR"] + "/home/cluster/frcs"
    # the demo tracker shares its detector's archive folder, and the AR code needs 2 CPUs
    assert mh.frc("demo-sunspot-tracking").archive_dir == mh.frc("demo-sunspots").archive_dir == "demo-sunspots"
    assert mh.frc("demo-active-regions").slurm.cpus == 2


def test_each_frc_runs_on_a_partition_of_the_site_where_its_cpus_fit(mh_raw, tmp_path, monkeypatch):
    mh = load_raw(mh_raw, tmp_path, monkeypatch)
    site = mh.site("multihost")
    for frc in mh.frcs:
        partition = frc.slurm.partition or site.default_partition
        assert partition in multihost.PARTITIONS, (frc.name, partition)
        largest = max(multihost.NODE_CPUS[n] for n in multihost.PARTITIONS[partition])
        assert frc.slurm.cpus <= largest, f"{frc.name}: cpus {frc.slurm.cpus} fit on no node of {partition}"
    # the partitions are named per FRC, and both partitions of the site are used
    assert all(f.slurm.partition for f in mh.frcs)
    assert {f.slurm.partition for f in mh.frcs} == set(multihost.PARTITIONS)


def _frc(raw: dict, name: str) -> dict:
    return next(f for f in raw["frcs"] if f["name"] == name)


MUTATIONS = {
    "tracker in its own archive folder": (
        lambda r: _frc(r, "demo-sunspot-tracking").pop("archive_name"),
        "archive folder",
    ),
    "no lag": (lambda r: _frc(r, "demo-active-regions").update(lag_nights=0), "lag_nights"),
    "one CPU": (lambda r: _frc(r, "demo-active-regions")["slurm"].update(cpus=1), "cpus > 1"),
    "no stagger": (lambda r: r["sites"]["multihost"].update(stagger_seconds=0), "stagger_seconds > 0"),
    "tracker without after": (lambda r: _frc(r, "demo-sunspot-tracking").pop("after"), "role"),
    "tracker that does not rewrite": (lambda r: _frc(r, "demo-sunspot-tracking").pop("rewrites"), "rewrites"),
    "other format": (lambda r: _frc(r, "demo-active-regions").update(product_format="spoca-ch"), "product_format"),
    "no partition at all": (
        lambda r: (
            r["sites"]["multihost"].pop("default_partition"),
            [f["slurm"].pop("partition") for f in r["frcs"]],
        ),
        "partition named",
    ),
    "an FRC production lacks": (
        lambda r: r["frcs"].append({**copy.deepcopy(_frc(r, "demo-sunspots")), "name": "demo-extra"}),
        "no production counterpart",
    ),
    "an FRC missing": (
        lambda r: r["frcs"].remove(_frc(r, "demo-active-regions")),
        "demo-active-regions (for spoca-ar) is missing",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_real_shape_difference_is_reported(production, mh_raw, tmp_path, monkeypatch, mutation):
    change, expected = MUTATIONS[mutation]
    raw = copy.deepcopy(mh_raw)
    change(raw)
    diffs = shape_differences(production, load_raw(raw, tmp_path, monkeypatch))
    assert diffs, f"{mutation}: not seen as a shape difference"
    assert any(expected in d for d in diffs), diffs


def test_site_values_are_not_shape(production, mh_raw, tmp_path, monkeypatch):
    raw = copy.deepcopy(mh_raw)
    site = raw["sites"]["multihost"]
    site.update(
        cluster_conn_id="c2", archive_conn_id="a2", catalogue_conn_id="k2", products_root="/p", stagger_seconds=60
    )
    for f in raw["frcs"]:
        f["slurm"].update(time="06:00:00", mem="8G")
        if f["slurm"].get("cpus", 1) > 1:
            f["slurm"]["cpus"] = 4
    assert shape_differences(production, load_raw(raw, tmp_path, monkeypatch)) == []
