"""Tests of the demo active-region FRC (site/frcs/demo_active_regions.py).

The program is a standalone script for the cluster (Debian python3, standard library only): it is
run here as a subprocess exactly as SLURM runs it (``/usr/bin/python3``, isolated from any
site-packages, so an import of numpy or anything else fails the test), and its files are checked
against the ``spoca-ar`` format of hfc_tasks/catalogue/formats.yaml.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from hfc_tasks.catalogue import formats
from hfc_tasks.products import parse_product_name

SCRIPT = Path(__file__).resolve().parents[2] / "site" / "frcs" / "demo_active_regions.py"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3")
NIGHT = ("2024-03-01T00:00:00", "2024-03-02T00:00:00")
SPECS = formats.KNOWN.resolve("spoca-ar")
CC_STEPS = {0: (1, 0), 1: (1, 1), 2: (0, 1), 3: (-1, 1), 4: (-1, 0), 5: (-1, -1), 6: (0, -1), 7: (1, -1)}


def run(outdir: Path, *args: str, window=NIGHT, cadence="14400") -> subprocess.CompletedProcess:
    # -I -S: no site-packages and no user site: the standard library only, as on the cluster.
    cmd = [PYTHON, "-I", "-S", str(SCRIPT), "-s", window[0], "-e", window[1], "-c", cadence, "-o", str(outdir)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text()), delimiter=";"))


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ar") / "run"
    proc = run(out)
    assert proc.returncode == 0, proc.stderr
    assert "6 observation(s)" in proc.stdout and "done:" in proc.stdout
    return out


def test_file_set_names_kinds_and_no_leftovers(night):
    names = sorted(p.name for p in night.iterdir())
    kinds = [parse_product_name(n).kind for n in names]
    assert kinds.count("frc_info") == 1 and kinds.count("observatory") == 1
    assert kinds.count("init") == 6 and kinds.count("quicklook") == 6
    assert 1 <= kinds.count("feat") <= 6
    assert "demoar_100_frc_info.csv" in names and "demoar_100_sdo_observatory.csv" in names
    assert "demoar_100_20240301T040000_sdo_init.csv" in names
    assert not [n for n in names if n.endswith(".tmp")]
    # every table kind the FRC writes is one the spoca-ar format maps to a table
    assert {k for k in kinds if k != "quicklook"} <= set(SPECS)


@pytest.mark.parametrize("kind", ["frc_info", "observatory", "init", "feat"])
def test_headers_are_known_columns_and_required_values_present(night, kind):
    spec = SPECS[kind]
    known = {c.name for c in spec.columns} | {a for c in spec.columns for a in c.aliases}
    required = {c.name for c in spec.columns if not c.nullable and not c.fill_file}
    files = [p for p in night.iterdir() if p.suffix == ".csv" and parse_product_name(p.name).kind == kind]
    assert files
    for path in files:
        header = path.read_text().splitlines()[0].split(";")
        assert set(header) <= known, (path.name, set(header) - known)
        assert required <= set(header), (path.name, required - set(header))
        for row in rows(path):
            empty = [c for c in required if row[c] == ""]
            assert not empty, (path.name, empty)


def test_feat_rows_point_into_init_and_chain_codes_close(night):
    for feat in night.glob("*_feat.csv"):
        init = night / feat.name.replace("_feat.csv", "_init.csv")
        init_rows = rows(init)
        assert {r["ID_OBSERVATIONS"] for r in init_rows} == {"1", "2"}
        assert init_rows[0]["FEAT_FILENAME"] == feat.name
        quicklook = init_rows[0]["QCLK_FNAME"]
        assert (night / quicklook).exists() and quicklook.endswith(".png")
        for r in rows(feat):
            assert (r["OBSERVATIONS_ID"], r["OBSERVATIONS_ID_T"], r["FRC_INFO_ID"]) == ("1", "2", "1")
            assert r["FEAT_FILENAME"] == feat.name and r["SNAPSHOT_FN"] == quicklook
            x, y = int(r["CC_X_PIX"]), int(r["CC_Y_PIX"])
            xs, ys = [x], [y]
            for digit in r["CC"]:
                dx, dy = CC_STEPS[int(digit)]
                x, y = x + dx, y + dy
                xs.append(x)
                ys.append(y)
            assert (x, y) == (int(r["CC_X_PIX"]), int(r["CC_Y_PIX"])), "chain code does not close"
            assert len(r["CC"]) == int(r["CC_LENGTH"])
            assert (min(xs), min(ys), max(xs), max(ys)) == (
                float(r["BR_X0_PIX"]),
                float(r["BR_Y0_PIX"]),
                float(r["BR_X2_PIX"]),
                float(r["BR_Y2_PIX"]),
            )
            assert min(xs) <= int(r["FEAT_X_PIX"]) <= max(xs) and min(ys) <= int(r["FEAT_Y_PIX"]) <= max(ys)
            assert 0 < int(r["FEAT_AREA_PIX"]) < (max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1)
            assert abs(float(r["FEAT_HG_LAT_DEG"])) < 40 and abs(float(r["FEAT_HG_LONG_DEG"])) < 90


def test_quicklook_is_a_256_px_greyscale_png_with_outlines(night):
    for png in night.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        assert (width, height, depth, colour) == (256, 256, 8, 0)
        idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
        raw = zlib.decompress(idat)
        assert len(raw) == 256 * 257
        assert 255 in raw  # the outlines are drawn in white


def test_deterministic_from_night_and_seed(night, tmp_path):
    again = tmp_path / "again"
    assert run(again).returncode == 0
    assert digests(again) == digests(night)
    # a window cut in two gives the same files (outputs depend on T and the seed only)
    halves = tmp_path / "halves"
    assert run(halves, window=(NIGHT[0], "2024-03-01T12:00:00")).returncode == 0
    assert run(halves, window=("2024-03-01T12:00:00", NIGHT[1])).returncode == 0
    assert digests(halves) == digests(night)
    other = tmp_path / "seed7"
    assert run(other, "--seed", "7").returncode == 0
    assert digests(other) != digests(night)
    assert run(tmp_path / "seed7b", "--seed", "7").returncode == 0
    assert digests(tmp_path / "seed7b") == digests(other)


def test_bad_arguments_exit_2_naming_the_argument(tmp_path):
    proc = run(tmp_path / "x", window=(NIGHT[1], NIGHT[0]))
    assert proc.returncode == 2 and "-e/--end" in proc.stderr
    proc = run(tmp_path / "x", cadence="0")
    assert proc.returncode == 2 and "cadence must be > 0" in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run(blocker / "sub")
    assert proc.returncode == 2 and "-o/--outdir" in proc.stderr
