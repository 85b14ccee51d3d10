"""Benchmark: N concurrent SLURM waits in one triggerer-like event loop (issue 3).

Submits N held jobs (PENDING until released) on the local site, then runs N
``SlurmJobTrigger.run()`` coroutines in one asyncio loop — what a triggerer does — for a
fixed time, and measures:

- SSH connections to the site's sshd held by this process (``ss -tnp``),
- ``sacct`` calls per poll interval,
- CPU time of this process as a share of one core.

``--mode shared`` is the project's trigger (one poller per connection); ``--mode
per-trigger`` is the providers' pattern (each trigger its own connection and its own sacct).

    set -a; eval "$(.venv/bin/hfc site env)"; set +a
    .venv/bin/python bench/slurm_waits.py --jobs 500 --seconds 60 --mode shared
    .venv/bin/python bench/slurm_waits.py --jobs 500 --seconds 60 --mode per-trigger
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import time

from hfc_tasks import slurm
from hfc_tasks.provider.triggers import SacctPoller, SlurmJobTrigger, open_cluster_connection


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ssh_connections(port: int = 22022) -> int:
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"dst 127.0.0.1:{port}"],
                         capture_output=True, text=True).stdout
    return len(re.findall(rf"pid={os.getpid()},", out))


async def submit_held(n: int) -> list[str]:
    conn = await open_cluster_connection("hfc_cluster")
    try:
        # One remote loop: N sbatch --hold calls in one SSH command.
        script = f"for i in $(seq 1 {n}); do sbatch --parsable --hold -J hfc.bench.$i --wrap true; done"
        res = await conn.run(script, check=True)
        return [line.split(";")[0] for line in res.stdout.split()]
    finally:
        conn.close()


async def cancel(ids: list[str]) -> None:
    conn = await open_cluster_connection("hfc_cluster")
    try:
        for i in range(0, len(ids), 500):
            await conn.run("scancel " + " ".join(ids[i : i + 500]), check=False)
    finally:
        conn.close()


class PerTriggerWait:
    """The providers' pattern: every waiting task polls over a connection of its own."""

    calls = 0

    def __init__(self, job_id: str, interval: float) -> None:
        self.job_id, self.interval = job_id, interval

    async def run(self, connect_gate: asyncio.Semaphore) -> None:
        async with connect_gate:  # sshd's MaxStartups would drop a burst of 500 handshakes
            conn = await open_cluster_connection("hfc_cluster")
        try:
            while True:
                res = await conn.run(slurm.sacct_command([self.job_id]), check=False)
                PerTriggerWait.calls += 1
                status = slurm.parse_sacct(res.stdout or "").get(self.job_id)
                if status and status.is_final:
                    return
                await asyncio.sleep(self.interval)
        finally:
            conn.close()


async def main(args) -> dict:
    t0 = time.monotonic()
    ids = await submit_held(args.jobs)
    submit_s = time.monotonic() - t0
    try:
        tasks = []
        gate = asyncio.Semaphore(8)
        if args.mode == "shared":
            for j in ids:
                trig = SlurmJobTrigger(ssh_conn_id="hfc_cluster", job_id=j, poll_interval=args.interval,
                                       max_poll_interval=args.interval)
                tasks.append(asyncio.create_task(anext(trig.run())))
        else:
            for j in ids:
                tasks.append(asyncio.create_task(PerTriggerWait(j, args.interval).run(gate)))
        # Let every wait get going, then measure a steady window.
        await asyncio.sleep(args.warmup)
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        calls0 = PerTriggerWait.calls
        pollers = [p for p in SacctPoller._instances.values()]
        sacct0 = sum(p.stats["sacct_calls"] for p in pollers)
        conns = []
        while time.monotonic() - wall0 < args.seconds:
            await asyncio.sleep(1)
            conns.append(ssh_connections())
        wall = time.monotonic() - wall0
        cpu = cpu_seconds() - cpu0
        if args.mode == "shared":
            sacct = sum(p.stats["sacct_calls"] for p in SacctPoller._instances.values()) - sacct0
        else:
            sacct = PerTriggerWait.calls - calls0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await cancel(ids)
    return {
        "mode": args.mode,
        "jobs": len(ids),
        "submit_seconds": round(submit_s, 1),
        "window_seconds": round(wall, 1),
        "poll_interval": args.interval,
        "ssh_connections_max": max(conns),
        "ssh_connections_median": sorted(conns)[len(conns) // 2],
        "sacct_calls_per_interval": round(sacct / (wall / args.interval), 2),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=15)
    ap.add_argument("--mode", choices=["shared", "per-trigger"], default="shared")
    print(json.dumps(asyncio.run(main(ap.parse_args()))))
