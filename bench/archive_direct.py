"""Benchmark of the archive stage in direct mode against a bare OpenSSH copy (issue 15).

Cluster → archive on the local site, the same files for every contender (the sets of
``bench/archive_transfer.py``):

* ``small``: 2,000 × 20 KB CSV + 200 × 200 KB JPG;
* ``big``: 1 × 200 MB.

Contenders, in the same run:

* ``openssh``: the cluster account's own ``sftp -b`` putting the run folder into the archive
  tree with its archive key (``archive_direct``'s key and known_hosts): one hop, no
  verification, no rename, no manifest, no delete: the floor of a copy cluster → archive;
* ``hfc-direct``: :func:`hfc_tasks.archive.direct.archive_night_direct` doing the whole job: SSH
  to the cluster, one ``sftp -b`` push there to ``.part`` names, sha256 on the cluster and on the
  archive, rename, manifest, delete on the cluster;
* ``hfc-relay`` (optional): :func:`hfc_tasks.archive.archive_night`, the relay mode, for comparison.

Run (as root, site up)::

    set -a && eval "$(.venv/bin/hfc site env)" && set +a
    .venv/bin/python bench/archive_direct.py --repeat 3

Figures: files/s and MB/s of payload, best and median of ``--repeat`` runs, and each hfc
contender's ratio to ``openssh`` (best to best, median to median). Sources are restored from a
pristine copy before each run (outside the timing), the archive root is emptied; the page cache
is warm for every contender alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_transfer import SETS, endpoint, make_pristine, prepare, run_hfc  # noqa: E402

from hfc_tasks.archive import ArchiveTarget  # noqa: E402
from hfc_tasks.archive.direct import DirectPush, archive_night_direct  # noqa: E402
from hfc_tasks.ops.localsite.layout import Layout  # noqa: E402


def direct_push() -> DirectPush:
    lay = Layout.current()
    conn = json.loads(os.environ["AIRFLOW_CONN_HFC_ARCHIVE"])
    return DirectPush(host=conn["host"], port=int(conn["port"]), login=conn["login"],
                      key_file=str(lay.direct_key), known_hosts=str(lay.direct_known_hosts))


def run_openssh(run_dir: Path, archive_root: Path) -> float:
    """The cluster account's bare ``sftp -b`` into the same folders the archive stage uses."""
    d = direct_push()
    results = archive_root / "BENCH/results/2024"
    images = archive_root / "BENCH/images/full/SDO/HMI/2024"
    dirs = sorted({p for dd in (results, images) for p in [dd, *dd.parents] if archive_root in p.parents})
    batch = [f"-mkdir {p}" for p in dirs]
    if any(run_dir.glob("*.csv")):
        batch.append(f"put {run_dir}/*.csv {results}/")
    if any(run_dir.glob("*.jpg")):
        batch.append(f"put {run_dir}/*.jpg {images}/")
    t0 = time.perf_counter()
    subprocess.run(
        ["runuser", "-u", "cluster", "--", "sftp", "-q", "-b", "-", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={d.known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-i", d.key_file,
         "-P", str(d.port), f"{d.login}@{d.host}"],
        input="\n".join(batch) + "\n", text=True, check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def run_direct(run_dir: Path, archive_root: Path) -> float:
    target = ArchiveTarget(frc="bench", archive_dir="BENCH", observatory="SDO", instrument="HMI",
                           night=dt.date(2024, 3, 1), run_dir=str(run_dir), archive_root=str(archive_root),
                           public_url_base="file:///bench")
    t0 = time.perf_counter()
    summary, _ = archive_night_direct(endpoint("cluster"), endpoint("archive"), direct_push(), target,
                                      progress=lambda _m: None)
    el = time.perf_counter() - t0
    assert summary.copied == summary.files_total and summary.deleted == summary.files_total, summary
    return el


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sets", default="small,big")
    ap.add_argument("--contenders", default="openssh,hfc-direct", help="openssh, hfc-direct, hfc-relay")
    args = ap.parse_args()
    state = Path(os.environ["HFC_SITE_DIR"])
    tag = uuid.uuid4().hex[:8]
    work = Path(f"/var/tmp/hfc-bench-direct-{tag}")
    run_dir = state / "home/cluster/products/_bench" / tag
    archive_root = state / "home/archive/hfc/_bench" / tag
    for p, user in ((run_dir.parent, "cluster"), (archive_root.parent, "archive")):
        p.mkdir(exist_ok=True)
        shutil.chown(p, user, user)
    print(f"nproc {os.cpu_count()}, load before: {os.getloadavg()}", flush=True)
    rows = []
    try:
        for set_name in args.sets.split(","):
            pristine = work / set_name
            names = make_pristine(pristine, SETS[set_name])
            nbytes = sum((pristine / n).stat().st_size for n in names)
            base: dict | None = None
            for who in args.contenders.split(","):
                times = []
                for _ in range(args.repeat):
                    prepare(pristine, run_dir, archive_root)
                    if who == "openssh":
                        times.append(run_openssh(run_dir, archive_root))
                    elif who == "hfc-direct":
                        times.append(run_direct(run_dir, archive_root))
                    elif who == "hfc-relay":
                        times.append(run_hfc(run_dir, archive_root, "auto"))
                    else:
                        raise SystemExit(f"unknown contender {who!r}")
                    got = sum(p.stat().st_size for p in archive_root.rglob("*") if p.is_file() and p.suffix != ".json")
                    assert got == nbytes, (who, got, nbytes)
                best, med = min(times), statistics.median(times)
                row = dict(set=set_name, who=who, files=len(names), mb=nbytes / 1e6, times=times,
                           best_fps=len(names) / best, med_fps=len(names) / med,
                           best_mbs=nbytes / 1e6 / best, med_mbs=nbytes / 1e6 / med, load=os.getloadavg()[0])
                if who == "openssh":
                    base = row
                ratio = ""
                if base is not None and who != "openssh":
                    row["ratio_best"] = row["best_mbs"] / base["best_mbs"]
                    row["ratio_median"] = row["med_mbs"] / base["med_mbs"]
                    ratio = f"  ratio to openssh: best {row['ratio_best']:.2f}x median {row['ratio_median']:.2f}x"
                rows.append(row)
                print(f"{set_name:5} {who:10} {len(names):5} files {nbytes / 1e6:7.1f} MB  "
                      f"best {row['best_fps']:6.0f} files/s {row['best_mbs']:6.1f} MB/s  "
                      f"median {row['med_fps']:6.0f} files/s {row['med_mbs']:6.1f} MB/s  "
                      f"runs {' '.join(f'{t:.2f}' for t in times)} s  load {row['load']:.2f}{ratio}", flush=True)
            shutil.rmtree(pristine)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(archive_root, ignore_errors=True)
    print(f"load after: {os.getloadavg()}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
