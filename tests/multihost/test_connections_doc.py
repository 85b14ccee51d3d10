"""docs/connections.md is what works: its connection blocks, word for word, with only the
placeholders it documents replaced by the multihost site's values, open every connection through
the project's own functions (hfc_tasks.provider.hooks.ssh_client / sftp_session / ssh_endpoint /
catalogue_connect, hfc_tasks.provider.triggers.open_cluster_connection) against the multihost hosts, as
AIRFLOW_CONN_* JSON and through `airflow connections add` / `get` in a throwaway metadata
database. Run alone: `pytest -m multihost tests/multihost/test_connections_doc.py` (as root)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hfc_tasks.archive import connect
from hfc_tasks.ops.localsite import multihost
from hfc_tasks.provider import catalogue_db, hooks

pytestmark = pytest.mark.multihost

DOC = Path(__file__).resolve().parents[2] / "docs" / "connections.md"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CONN_IDS = ("hfc_cluster", "hfc_archive", "hfc_catalogue")


def doc_blocks() -> dict[str, str]:
    """The code blocks marked ``<!-- connections-test: NAME -->`` in the doc, by NAME."""
    text = DOC.read_text()
    blocks = dict(re.findall(r"<!-- connections-test: (\w+) -->\n```sh\n(.*?)```", text, re.S))
    assert set(blocks) == {"env", "cli"}, f"{DOC}: marked blocks {sorted(blocks)}"
    return blocks


def doc_placeholders() -> set[str]:
    """The placeholders the doc's table documents (its rows: | `<name>` | what to put there |)."""
    return set(re.findall(r"^\| `(<[a-z-]+>)` \|", DOC.read_text(), re.M))


@pytest.fixture(scope="module")
def mh_site():
    was_up = all(multihost.status(print_table=False).values())
    if not was_up:
        multihost.up(verbose=False)  # idempotent
    env = multihost.env_vars()
    yield env
    if not was_up:
        multihost.down()


@pytest.fixture(scope="module")
def values(mh_site) -> dict[str, str]:
    """Each documented placeholder -> the multihost site's value (from `hfc site env --shape multihost`)."""
    cluster = json.loads(mh_site["AIRFLOW_CONN_HFC_MH_CLUSTER"])
    archive = json.loads(mh_site["AIRFLOW_CONN_HFC_MH_ARCHIVE"])
    catalogue = json.loads(mh_site["AIRFLOW_CONN_HFC_MH_CATALOGUE"])
    return {
        "<cluster-host>": cluster["host"],
        "<cluster-host-key>": cluster["extra"]["host_key"],
        "<cluster-key-file>": cluster["extra"]["key_file"],
        "<archive-host>": archive["host"],
        "<archive-host-key>": archive["extra"]["host_key"],
        "<archive-key-file>": archive["extra"]["key_file"],
        "<known-hosts-file>": mh_site["HFC_MH_KNOWN_HOSTS"],
        "<catalogue-host>": catalogue["host"],
        "<catalogue-password>": catalogue["password"],
        "<ca-file>": catalogue["extra"]["sslrootcert"],
    }


def fill(block: str, values: dict[str, str]) -> str:
    for token, value in values.items():
        block = block.replace(token, value)
    left = re.findall(r"<[a-z-]+>", block)
    assert not left, f"placeholders not documented in {DOC.name}'s table: {left}"
    return block


def env_block_connections(values: dict[str, str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Run the env block in bash, as an operator's shell would; the AIRFLOW_CONN_* it exports."""
    script = fill(doc_blocks()["env"], {**values, **(overrides or {})})
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    out = subprocess.run(["bash", "-euc", script + "\nenv -0"], env=env, capture_output=True, check=True).stdout
    pairs = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    conns = {k: v for k, v in pairs.items() if k.startswith("AIRFLOW_CONN_")}
    assert sorted(conns) == [f"AIRFLOW_CONN_{c.upper()}" for c in sorted(CONN_IDS)]
    return conns


def open_all(monkeypatch, conns: dict[str, str], values: dict[str, str]) -> dict[str, object]:
    """Open every connection with every function of the project that opens it; what each saw."""
    for name, value in conns.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, object] = {}
    client = hooks.ssh_client("hfc_cluster")
    try:
        _, out, _ = client.exec_command("echo $SSH_CONNECTION; sinfo -h -o %P", timeout=60)
        lines = out.read().decode().split("\n")
        seen["ssh_client"] = (lines[0].split()[2], sorted(p.rstrip("*") for p in lines[1:] if p))
    finally:
        client.close()

    async def cluster_async():
        from hfc_tasks.provider.triggers import open_cluster_connection

        conn = await asyncio.wait_for(open_cluster_connection("hfc_cluster"), 60)
        async with conn:
            trig = (await conn.run("echo $SSH_CONNECTION", check=True)).stdout.split()[2]
        conn = await connect(hooks.ssh_endpoint("hfc_cluster"))
        async with conn:
            endpoint = (await conn.run("echo $SSH_CONNECTION", check=True)).stdout.split()[2]
        conn = await connect(hooks.ssh_endpoint("hfc_archive"))
        async with conn:
            async with conn.start_sftp_client() as sftp:
                listing = await sftp.listdir(".")
            archive = (conn.get_extra_info("peername")[0], isinstance(listing, list))
        return trig, endpoint, archive

    seen["open_cluster_connection"], seen["ssh_endpoint cluster"], seen["ssh_endpoint archive"] = asyncio.run(
        cluster_async()
    )
    with hooks.sftp_session("hfc_archive") as sftp:
        sftp.listdir(".")
        seen["sftp_session"] = sftp.get_channel().get_transport().getpeername()[0]
    with catalogue_db.catalogue_connect("hfc_catalogue") as conn:
        seen["catalogue_connect"] = conn.execute(
            "select host(inet_server_addr()), ssl from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone()
    return seen


def expected(values: dict[str, str]) -> dict[str, object]:
    cluster, archive, catalogue = values["<cluster-host>"], values["<archive-host>"], values["<catalogue-host>"]
    return {
        "ssh_client": (cluster, sorted(multihost.PARTITIONS)),
        "open_cluster_connection": cluster,
        "ssh_endpoint cluster": cluster,
        "ssh_endpoint archive": (archive, True),
        "sftp_session": archive,
        "catalogue_connect": (catalogue, True),
    }


def test_every_placeholder_of_the_blocks_is_documented_and_only_those_are_replaced(values):
    blocks = doc_blocks()
    used = set(re.findall(r"<[a-z-]+>", "".join(blocks.values())))
    assert used <= doc_placeholders(), used - doc_placeholders()
    assert set(values) == doc_placeholders()
    # the blocks name the production connection ids
    for conn_id in CONN_IDS:
        assert f"AIRFLOW_CONN_{conn_id.upper()}=" in blocks["env"]
        assert f"airflow connections add {conn_id} " in blocks["cli"]


def test_env_block_opens_every_connection_on_the_multihost_hosts(values, monkeypatch):
    conns = env_block_connections(values)
    assert open_all(monkeypatch, conns, values) == expected(values)


def test_catalogue_with_a_wrong_ca_is_refused(values, monkeypatch, tmp_path):
    """The extras reach libpq: another CA fails verify-full (no silent fall back to no check)."""
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", str(tmp_path / "k.pem"),
         "-out", str(other_ca), "-days", "1", "-subj", "/CN=not the site CA"],
        check=True, capture_output=True,
    )
    conns = env_block_connections(values, {"<ca-file>": str(other_ca)})
    monkeypatch.setenv("AIRFLOW_CONN_HFC_CATALOGUE", conns["AIRFLOW_CONN_HFC_CATALOGUE"])
    with pytest.raises(catalogue_db.CatalogueConnectionError, match="certificate verify failed"):
        catalogue_db.catalogue_connect("hfc_catalogue").close()


def test_cli_block_through_airflow_connections_add_and_get(values, monkeypatch, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               PATH=f"{Path(AIRFLOW).parent}:{env.get('PATH', '')}")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    script = fill(doc_blocks()["cli"], values)
    proc = subprocess.run(["bash", "-euc", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stored = {}
    for conn_id in CONN_IDS:
        out = subprocess.run([AIRFLOW, "connections", "get", conn_id, "-o", "json"], env=env, check=True,
                             capture_output=True, text=True, timeout=120).stdout
        row = json.loads(out[out.index("[") :])[0]
        stored[conn_id] = {
            "conn_type": row["conn_type"], "host": row["host"], "port": int(row["port"]), "login": row["login"],
            **({"password": row["password"]} if row["password"] else {}),
            **({"schema": row["schema"]} if row["schema"] else {}),
            "extra": row["extra_dejson"],
        }
    # what was stored is what the doc says, fields and extras
    env_form = {k.removeprefix("AIRFLOW_CONN_").lower(): json.loads(v)
                for k, v in env_block_connections(values).items()}
    assert stored["hfc_cluster"] == env_form["hfc_cluster"]
    assert stored["hfc_catalogue"] == env_form["hfc_catalogue"]
    assert stored["hfc_archive"]["extra"] == {"key_file": values["<archive-key-file>"],
                                              "known_hosts": values["<known-hosts-file>"]}
    assert {k: v for k, v in stored["hfc_archive"].items() if k != "extra"} == {
        k: v for k, v in env_form["hfc_archive"].items() if k != "extra"}
    # and the connections as stored open every host
    conns = {f"AIRFLOW_CONN_{c.upper()}": json.dumps(stored[c]) for c in CONN_IDS}
    assert open_all(monkeypatch, conns, values) == expected(values)
