"""The multihost shape's network: a bridge, and per host a network namespace with a veth link."""

from __future__ import annotations

from pathlib import Path

from .._util import run
from .layout import BRIDGE, HOSTS, SUBNET, addr, netns, veth


def _ip(*args: str, check: bool = True):
    return run(["ip", *args], check=check, what=f"ip {' '.join(args)}", timeout=20)


def ns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def network_up(log) -> None:
    if not _link_exists(BRIDGE):
        log(f"network: bridge {BRIDGE} {SUBNET}.1/24")
        _ip("link", "add", BRIDGE, "type", "bridge")
    if f"{SUBNET}.1/24" not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for host in HOSTS:
        ns = netns(host)
        if not ns_exists(ns):
            _ip("netns", "add", ns)
        if not _link_exists(veth(host)):
            _ip("link", "add", veth(host), "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth(host), "master", BRIDGE, "up")
        if f"{addr(host)}/24" not in _ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout:
            _ip("-n", ns, "addr", "add", f"{addr(host)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")


def network_down() -> list[str]:
    removed = []
    for host in HOSTS:
        if _link_exists(veth(host)):
            _ip("link", "del", veth(host), check=False)
            removed.append(f"link {veth(host)}")
        if ns_exists(netns(host)):
            _ip("netns", "del", netns(host), check=False)
            removed.append(f"netns {netns(host)}")
    if _link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)
        removed.append(f"link {BRIDGE}")
    return removed


def ns_pids(host: str) -> list[int]:
    if not ns_exists(netns(host)):
        return []
    out = _ip("netns", "pids", netns(host), check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]
