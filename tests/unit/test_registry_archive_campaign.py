"""Registry fields of issue 15: the archive mode (relay/direct) and the campaigns' array limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hfc_tasks.registry import ArchiveDirect, Site

BASE = {"products_root": "/p", "frc_root": "/f", "archive_root": "/a", "public_url_base": "http://x/a"}
DIRECT = {"host": "archive.example.org", "port": 2222, "login": "hfcarch", "key_file": "/home/hfc/.ssh/archive_ed25519",
          "known_hosts": "/home/hfc/.ssh/archive_known_hosts"}


def test_relay_is_the_default_and_needs_nothing_more():
    site = Site(**BASE)
    assert site.archive_mode == "relay" and site.archive_direct is None
    assert site.campaign_array_max == 1000 and site.campaign_array_throttle is None


def test_direct_mode_needs_how_the_cluster_reaches_the_archive():
    with pytest.raises(ValidationError, match="archive_mode direct needs archive_direct"):
        Site(**BASE, archive_mode="direct")
    site = Site(**BASE, archive_mode="direct", archive_direct=DIRECT)
    assert site.archive_direct == ArchiveDirect(**DIRECT)


@pytest.mark.parametrize("field,value", [("host", "a;rm -rf /"), ("login", "-oProxyCommand=x"),
                                         ("key_file", "/k $(id)"), ("known_hosts", "")])
def test_direct_values_reaching_a_shell_are_plain(field, value):
    with pytest.raises(ValidationError, match="must be a plain host, user or path"):
        ArchiveDirect(**{**DIRECT, field: value})


def test_unknown_mode_and_bad_limits_are_refused():
    with pytest.raises(ValidationError, match="archive_mode"):
        Site(**BASE, archive_mode="ftp")
    with pytest.raises(ValidationError, match="campaign_array_max"):
        Site(**BASE, campaign_array_max=0)
    with pytest.raises(ValidationError, match="campaign_array_throttle"):
        Site(**BASE, campaign_array_throttle=0)
