"""The demo sunspot FRC (site/frcs/demo_sunspots.py) runs with Debian's python3, numpy and Pillow
as on the cluster, and writes the same CSVs as with the virtualenv's (its other tests are pure:
tests/unit/test_demo_sunspots.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FRCS
from PIL import Image

SCRIPT = FRCS / "demo_sunspots.py"
WINDOW = ("-s", "2024-01-07T00:00:00", "-e", "2024-01-07T08:00:00")


def run(python: str, out: Path) -> None:
    proc = subprocess.run([python, str(SCRIPT), *WINDOW, "-o", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


# The site installs python3-numpy/python3-pil (hfc_tasks.ops.localsite.system): depend on it
# rather than skip, so a machine without them fails loudly instead of passing quietly.
@pytest.mark.site
def test_runs_with_debian_python_like_on_the_cluster(site, tmp_path):
    run("/usr/bin/python3", tmp_path / "debian")
    run(sys.executable, tmp_path / "venv")
    csvs = sorted(p.name for p in (tmp_path / "debian").glob("*.csv"))
    assert len(csvs) == 2 + 2 * 2
    # CSVs are byte-identical with the venv's numpy, whatever the numpy version
    for name in csvs:
        assert (tmp_path / "debian" / name).read_bytes() == (tmp_path / "venv" / name).read_bytes()
    for path in (tmp_path / "debian").glob("*.jpg"):
        with Image.open(path) as image:
            image.verify()
