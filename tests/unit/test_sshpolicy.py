"""The host-key policy's pure parts: which known_hosts lines apply to a host and port, and what
is refused (the same function serves every stage; tests/integration/test_ssh_policy.py checks
the stages against the real sshd)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import asyncssh
import pytest

from hfc_tasks.sshpolicy import SshConfigError, keys_for_host, known_hosts_name, resolve

KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
OTHER = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_known_hosts_names_follow_openssh():
    assert known_hosts_name("h", 22) == "h"
    assert known_hosts_name("h", 2222) == "[h]:2222"


@pytest.mark.parametrize(("line", "port", "found"), [
    (f"h {KEY}", 22, True),
    (f"h {KEY}", 2222, False),  # a line without a port is for port 22 only
    (f"[h]:2222 {KEY}", 2222, True),
    (f"[h]:2222 {KEY}", 22, False),
    (f"x,H,y {KEY}", 22, True),  # lists, case-insensitive
    (f"*.example {KEY}", 22, False),
    (f"h* {KEY}", 22, True),
    (f"h*,!h {KEY}", 22, False),  # negation wins
    (f"{hashed('h')} {KEY}", 22, True),
    (f"{hashed('[h]:2222')} {KEY}", 2222, True),
    (f"{hashed('other')} {KEY}", 22, False),
    ("other ssh-ed25519 garbage", 22, False),  # a broken line for another host is not ours
    ("# h ssh-ed25519 AAAA", 22, False),
])
def test_known_hosts_lines(line, port, found):
    assert keys_for_host([line], "h", port, where="f") == ([KEY] if found else [])


def test_revoked_key_removed_and_cert_authority_refused():
    assert keys_for_host([f"h {KEY}", f"h {OTHER}", f"@revoked h {OTHER}"], "h", 22, where="f") == [KEY]
    with pytest.raises(SshConfigError, match="cert-authority"):
        keys_for_host([f"@cert-authority h {KEY}"], "h", 22, where="f")


@pytest.mark.parametrize(("extra", "needle"), [
    ({"host_key": KEY.split()[1]}, "bare base64 key"),
    ({"host_key": "ssh-ed25519 AAAA%%"}, "not a base64 public key"),
    ({"host_key": f"ssh-rsa {KEY.split()[1]}"}, "its data is an 'ssh-ed25519' key"),
    ({"host_key": "ssh-dss AAAAB3NzaC1kc3M="}, "not a public key"),
    ({"host_key": f"other {KEY}"}, "the line is for 'other'"),
    ({"host_key": KEY, "no_host_key_check": "True"}, "no_host_key_check"),
    ({"host_key": KEY, "allow_host_key_change": True}, "allow_host_key_change"),
    ({"host_key": KEY, "key_file": "/nonexistent/id"}, "key_file /nonexistent/id"),
])
def test_refused_extras_name_the_connection_and_the_fix(extra, needle):
    with pytest.raises(SshConfigError) as info:
        resolve("conn_x", host="h", port=22, login="u", extra=extra)
    assert needle in str(info.value) and "conn_x" in str(info.value)


def test_default_known_hosts_is_the_users(tmp_path):
    (tmp_path / ".ssh").mkdir()
    with pytest.raises(SshConfigError, match=r"known_hosts file cannot be read \(No such file"):
        resolve("c", host="h", port=2222, login="u", extra={}, home=str(tmp_path))
    (tmp_path / ".ssh" / "known_hosts").write_text(f"h {KEY}\n")  # port 22 only
    with pytest.raises(SshConfigError, match=r"\.ssh/known_hosts has no key for \[h\]:2222"):
        resolve("c", host="h", port=2222, login="u", extra={}, home=str(tmp_path))
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[h]:2222 {KEY}\n")
    target = resolve("c", host="h", port=2222, login="u", extra={}, home=str(tmp_path))
    assert target.host_keys == (KEY,) and "known_hosts" in target.host_key_source


def test_host_key_extra_wins_and_accepts_several_lines():
    target = resolve("c", host="h", port=22, login="u", extra={"host_key": f"{KEY} comment\nh {OTHER}",
                                                               "known_hosts": "/nonexistent"})
    assert target.host_keys == (KEY, OTHER)
