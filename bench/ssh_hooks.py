"""Small-file relay cluster → worker → archive: the providers' paramiko hooks against the archive
engine's asyncssh transport (issue 14: which SSH stack carries the ``archive`` stage's bytes).

The same work for every contender: read each file from the cluster account over SFTP, sha256 it,
write it to the archive account over SFTP (no verification, no rename, no delete: less than the
``archive`` task does). Files: ``--files`` × 20 KB, made on the cluster account before each run
(outside the timing), removed after.

* ``sftphook``: :class:`hfc_tasks.provider.hooks.PolicySFTPHook` (the sftp provider's ``SFTPHook``
  on paramiko, TCP_NODELAY on), one file after the other, as ``SFTPHook``'s file methods go;
* ``sftphook-no-nodelay``: the same with TCP_NODELAY off (Nagle + delayed ACK);
* ``sftphook-compress``: the same with ``compress`` on (the provider's default);
* ``engine``: the archive engine's transport (:func:`hfc_tasks.archive.connect`: asyncssh, AES-GCM,
  one socket write per loop turn), 64 files in flight.

Run (site up)::

    set -a && eval "$(.venv/bin/hfc site env)" && set +a
    .venv/bin/python bench/ssh_hooks.py --files 1000 --repeat 3

Measured 2026-12-02 22:56 UTC on the 2-core workplace machine (load average 2.1, shared),
1,000 × 20 KB, files/s best / median of 3: engine 1069 / 1050; sftphook 450 / 415;
sftphook-no-nodelay 161 / 159; sftphook-compress 360 / 317.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import os
import socket
import statistics
import time
import uuid

SIZE = 20_000


def make_files(folder: str, count: int) -> list[str]:
    from hfc_tasks.provider.hooks import sftp_session

    payload = os.urandom(SIZE)
    names = [f"f{i:05d}.csv" for i in range(count)]
    with sftp_session("hfc_cluster") as sftp:
        sftp.mkdir(folder)
        for name in names:
            with sftp.open(f"{folder}/{name}", "wb") as f:
                f.write(payload)
    return names


def remove(conn_id: str, folder: str) -> None:
    from hfc_tasks.provider.hooks import PolicySSHHook

    hook = PolicySSHHook(conn_id)
    try:
        hook.get_conn().exec_command(f"rm -rf -- {folder}")[1].channel.recv_exit_status()
    finally:
        hook.get_conn().close()


def sftphook(folder: str, names: list[str], *, nodelay: bool = True, compress: bool = False) -> None:
    from hfc_tasks.provider.hooks import PolicySFTPHook, ssh_target

    hooks = []
    for conn_id in ("hfc_cluster", "hfc_archive"):
        target = dataclasses.replace(ssh_target(conn_id), compress=compress)
        hooks.append(PolicySFTPHook(target=target))
    with hooks[0].get_managed_conn() as src, hooks[1].get_managed_conn() as dst:
        if not nodelay:
            for sftp in (src, dst):
                sftp.get_channel().get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        dst.mkdir(folder)
        for name in names:
            with src.open(f"{folder}/{name}", "rb") as f:
                data = f.read()
            hashlib.sha256(data).hexdigest()
            with dst.open(f"{folder}/{name}", "wb") as f:
                f.write(data)


def engine(folder: str, names: list[str], in_flight: int = 64) -> None:
    from hfc_tasks.archive import connect
    from hfc_tasks.provider.hooks import ssh_endpoint

    async def go():
        async with await connect(ssh_endpoint("hfc_cluster")) as cconn, \
                await connect(ssh_endpoint("hfc_archive")) as aconn:
            async with cconn.start_sftp_client() as src, aconn.start_sftp_client() as dst:
                await dst.mkdir(folder)
                gate = asyncio.Semaphore(in_flight)

                async def one(name: str) -> None:
                    async with gate:
                        async with src.open(f"{folder}/{name}", "rb") as f:
                            data = await f.read()
                        hashlib.sha256(data).hexdigest()
                        async with dst.open(f"{folder}/{name}", "wb") as f:
                            await f.write(data)

                await asyncio.gather(*(one(n) for n in names))

    asyncio.run(go())


CONTENDERS = {
    "sftphook": lambda f, n: sftphook(f, n),
    "sftphook-no-nodelay": lambda f, n: sftphook(f, n, nodelay=False),
    "sftphook-compress": lambda f, n: sftphook(f, n, compress=True),
    "engine": engine,
}


def main() -> None:
    logging.disable(logging.INFO)  # paramiko and asyncssh log every connection and channel
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS))
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in args.only}
    for _ in range(args.repeat):
        for name in args.only:
            folder = f"h14-bench-{uuid.uuid4().hex[:8]}"
            names = make_files(folder, args.files)
            try:
                started = time.perf_counter()
                CONTENDERS[name](folder, names)
                rates[name].append(args.files / (time.perf_counter() - started))
            finally:
                remove("hfc_cluster", folder)
                remove("hfc_archive", folder)
    print(f"{args.files} × {SIZE // 1000} KB, files/s best / median of {args.repeat} "
          f"(load average {os.getloadavg()[0]:.1f}):")
    for name, values in rates.items():
        print(f"  {name:22s} {max(values):7.0f} / {statistics.median(values):7.0f}")


if __name__ == "__main__":
    main()
