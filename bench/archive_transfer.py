"""Benchmark of the archive stage against OpenSSH doing the old script's job (issue 4).

Cluster → archive on the local site, the same files for every contender:

* ``small``: 2,000 × 20 KB CSV + 200 × 200 KB JPG;
* ``big``: 1 × 200 MB.

Contenders:

* ``hfc``: :func:`hfc_tasks.archive.archive_night`, i.e. SFTP read from the cluster account,
  SFTP write to the archive account, sha256 verified on the archive (``sha256sum``), rename,
  manifest, delete on the cluster: everything the task does;
* ``hfc-readback``: the same with verification by read-back (an SFTP-only archive);
* ``openssh``: ``sftp -b`` putting the cluster's run folder into the archive account's tree
  (one hop, no verification, no delete: what the old script's copy did, and less work);
* ``openssh+verify``: the same, then ``sha256sum`` over ssh on the cluster and on the archive
  (batches of 500), compared, then ``rm`` over ssh on the cluster: OpenSSH doing the task's job.

Run (as root, site up)::

    set -a && eval "$(.venv/bin/hfc site env)" && set +a
    .venv/bin/python bench/archive_transfer.py --repeat 3

Figures: files/s and MB/s of payload, best and median of ``--repeat`` runs. Sources are
restored from a pristine copy before each run (outside the timing), the archive root is
emptied; the page cache is warm for every contender alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from hfc_tasks.archive import ArchiveTarget, Endpoint, archive_night

SETS = {
    "small": [("csv", 2000, 20_000), ("jpg", 200, 200_000)],
    "big": [("csv", 1, 200_000_000)],
}


def endpoint(which: str) -> Endpoint:
    conn = json.loads(os.environ[f"AIRFLOW_CONN_HFC_{which.upper()}"])
    return Endpoint(host=conn["host"], port=conn["port"], username=conn["login"], key_file=conn["extra"]["key_file"],
                    host_key=conn["extra"]["host_key"], name=which)


def chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def make_pristine(where: Path, spec) -> list[str]:
    where.mkdir(parents=True)
    rnd = random.Random(4)
    names = []
    for kind, count, size in spec:
        for i in range(count):
            name = (f"bench_10_20240301T{i:06d}_SDO_feat.csv" if kind == "csv" else f"hmi_ic_20240301_{i:06d}.jpg")
            (where / name).write_bytes(rnd.randbytes(size))
            names.append(name)
    return names


def prepare(pristine: Path, run_dir: Path, archive_root: Path) -> None:
    for d in (run_dir, archive_root):
        if d.exists():
            shutil.rmtree(d)
    shutil.copytree(pristine, run_dir)
    chown_tree(run_dir, "cluster")
    archive_root.mkdir(parents=True)
    chown_tree(archive_root, "archive")
    subprocess.run(["sync"], check=True)


def run_hfc(run_dir: Path, archive_root: Path, verify: str, concurrency: int = 64) -> float:
    target = ArchiveTarget(frc="bench", archive_dir="BENCH", observatory="SDO", instrument="HMI",
                           night=dt.date(2024, 3, 1), run_dir=str(run_dir), archive_root=str(archive_root),
                           public_url_base="file:///bench")
    t0 = time.perf_counter()
    summary, _ = archive_night(endpoint("cluster"), endpoint("archive"), target, verify=verify,
                               concurrency=concurrency, progress=lambda _m: None)
    el = time.perf_counter() - t0
    assert summary.copied == summary.files_total and summary.deleted == summary.files_total, summary
    return el


def _ssh_opts(which: str) -> list[str]:
    conn = json.loads(os.environ[f"AIRFLOW_CONN_HFC_{which.upper()}"])
    return ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={os.environ['HFC_SSH_KNOWN_HOSTS']}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-i", conn["extra"]["key_file"], "-p", str(conn["port"]), f"{conn['login']}@{conn['host']}"]


def run_openssh_verified(run_dir: Path, archive_root: Path) -> float:
    """OpenSSH doing what the task does: copy, sha256 on both sides, compare, delete on the cluster."""
    t0 = time.perf_counter()
    run_openssh(run_dir, archive_root)
    names = sorted(p.name for p in run_dir.iterdir())
    src = subprocess.run(["ssh", *_ssh_opts("cluster"), f"cd {run_dir} && sha256sum -- *"],
                         capture_output=True, text=True, check=True).stdout
    want = {ln.split("  ", 1)[1]: ln.split("  ", 1)[0] for ln in src.splitlines()}
    got = {}
    dests = sorted(str(p) for p in archive_root.rglob("*") if p.is_file())
    for i in range(0, len(dests), 500):
        out = subprocess.run(["ssh", *_ssh_opts("archive"), "sha256sum -- " + " ".join(dests[i:i + 500])],
                             capture_output=True, text=True, check=True).stdout
        got.update({os.path.basename(ln.split("  ", 1)[1]): ln.split("  ", 1)[0] for ln in out.splitlines()})
    assert all(got[n] == want[n] for n in names)
    subprocess.run(["ssh", *_ssh_opts("cluster"), f"cd {run_dir} && rm -f -- *"], check=True)
    return time.perf_counter() - t0


def run_openssh(run_dir: Path, archive_root: Path) -> float:
    conn = json.loads(os.environ["AIRFLOW_CONN_HFC_ARCHIVE"])
    results = archive_root / "BENCH/results/2024"
    images = archive_root / "BENCH/images/full/SDO/HMI/2024"
    dirs = sorted({p for d in (results, images) for p in [d, *d.parents] if archive_root in p.parents})
    batch = [f"-mkdir {p}" for p in dirs]
    if any(run_dir.glob("*.csv")):
        batch.append(f"put {run_dir}/*.csv {results}/")
    if any(run_dir.glob("*.jpg")):
        batch.append(f"put {run_dir}/*.jpg {images}/")
    t0 = time.perf_counter()
    subprocess.run(
        ["sftp", "-q", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={os.environ['HFC_SSH_KNOWN_HOSTS']}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-i", conn["extra"]["key_file"], "-P", str(conn["port"]), "-b", "-", f"archive@{conn['host']}"],
        input="\n".join(batch) + "\n", text=True, check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sets", default="small,big")
    ap.add_argument("--contenders", default="openssh,openssh+verify,hfc,hfc-readback")
    ap.add_argument("--concurrency", type=int, default=64, help="files in flight (hfc)")
    args = ap.parse_args()
    state = Path(os.environ["HFC_SITE_DIR"])
    tag = uuid.uuid4().hex[:8]
    work = Path(f"/var/tmp/hfc-bench-{tag}")
    run_dir = state / "home/cluster/products/_bench" / tag
    archive_root = state / "home/archive/hfc/_bench" / tag
    for p, user in ((run_dir.parent, "cluster"), (archive_root.parent, "archive")):
        p.mkdir(exist_ok=True)
        chown_tree(p, user) if p.stat().st_uid == 0 else None
    print(f"load before: {os.getloadavg()}", flush=True)
    rows = []
    try:
        for set_name in args.sets.split(","):
            pristine = work / set_name
            names = make_pristine(pristine, SETS[set_name])
            nbytes = sum((pristine / n).stat().st_size for n in names)
            for who in args.contenders.split(","):
                times = []
                for _ in range(args.repeat):
                    prepare(pristine, run_dir, archive_root)
                    if who == "openssh":
                        times.append(run_openssh(run_dir, archive_root))
                    elif who == "openssh+verify":
                        times.append(run_openssh_verified(run_dir, archive_root))
                    else:
                        times.append(run_hfc(run_dir, archive_root, "readback" if who == "hfc-readback" else "auto",
                                             args.concurrency))
                    got = sum(p.stat().st_size for p in archive_root.rglob("*") if p.is_file() and p.suffix != ".json")
                    assert got == nbytes, (who, got, nbytes)
                best, med = min(times), statistics.median(times)
                row = dict(set=set_name, who=who, files=len(names), mb=nbytes / 1e6, times=times,
                           best_fps=len(names) / best, med_fps=len(names) / med,
                           best_mbs=nbytes / 1e6 / best, med_mbs=nbytes / 1e6 / med, load=os.getloadavg()[0])
                rows.append(row)
                print(f"{set_name:5} {who:13} {len(names):5} files {nbytes / 1e6:7.1f} MB  "
                      f"best {row['best_fps']:6.0f} files/s {row['best_mbs']:6.1f} MB/s  "
                      f"median {row['med_fps']:6.0f} files/s {row['med_mbs']:6.1f} MB/s  "
                      f"runs {' '.join(f'{t:.2f}' for t in times)} s  load {row['load']:.2f}", flush=True)
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
