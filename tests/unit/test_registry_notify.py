"""The site's notification connections (``notify``) and catalogue deadline: validated at load
with errors that name the key and say what is expected."""

import datetime as dt

import pytest

from hfc_tasks.registry import RegistryError, catalogue_deadline_offset, load_registry

BASE = """
default_site: local
sites:
  local:
    products_root: /p
    frc_root: /f
    archive_root: /a
    public_url_base: file:///a
{site}
frcs:
  - name: demo
    version: "1"
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    command: run
"""


def load(tmp_path, site: str):
    p = tmp_path / "registry.yaml"
    p.write_text(BASE.format(site="\n".join("    " + line for line in site.splitlines())))
    return load_registry(p).site()


def test_notify_and_deadline_are_read(tmp_path):
    site = load(tmp_path, 'notify: {smtp_conn_id: hfc_smtp, to: [ops@example.org], apprise_conn_id: hfc_chat}\n'
                          'catalogue_deadline: "06:30"')
    assert site.notify.smtp_conn_id == "hfc_smtp" and site.notify.to == ["ops@example.org"]
    assert site.notify.apprise_conn_id == "hfc_chat" and site.notify.from_email is None
    assert site.catalogue_deadline == "06:30"


def test_defaults_are_off(tmp_path):
    site = load(tmp_path, "")
    assert site.notify is None and site.catalogue_deadline is None


def test_chat_only_is_enough(tmp_path):
    assert load(tmp_path, "notify: {apprise_conn_id: hfc_chat}").notify.smtp_conn_id is None


@pytest.mark.parametrize(("site", "message"), [
    ("notify: {}", "names no connection"),
    ("notify: {smtp_conn_id: hfc_smtp}", "needs 'to'"),
    ("notify: {apprise_conn_id: c, to: [a@b.org]}", "no smtp_conn_id"),
    ("notify: {smtp_conn_id: s, to: ['a@b.org, c@d.org']}", "one plain mail address"),
    ("notify: {smtp_conn_id: s, to: [a@b.org], cc: [x@y.org]}", r"notify\.cc"),
    ("notify_conn_id: hfc_notify", "notify_conn_id was replaced by notify"),
    ('catalogue_deadline: "6h"', "catalogue_deadline '6h' is not a UTC time of day HH:MM"),
    ('catalogue_deadline: "25:00"', "not a UTC time of day"),
    ('catalogue_deadline: "06:00+02:00"', "not a UTC time of day"),
])
def test_invalid_settings_are_named(tmp_path, site, message):
    with pytest.raises(RegistryError, match=message) as err:
        load(tmp_path, site)
    assert "sites.local" in str(err.value)


def test_deadline_counts_from_the_night_start():
    # The night 2024-03-01 (data interval 00:00 to 24:00 UTC) is due at 06:00 on 2024-03-02.
    night = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    assert night + catalogue_deadline_offset("06:00") == dt.datetime(2024, 3, 2, 6, 0, tzinfo=dt.UTC)
    assert catalogue_deadline_offset("00:00:30") == dt.timedelta(days=1, seconds=30)
