"""``hfc``: the operators' command line.

    hfc site up|down|status|env     the local embedded site (PostgreSQL, sshd, SLURM)
                   [--shape multihost]  ... as five hosts in network namespaces
    hfc config validate             check config/registry.yaml and its site formats, print located errors
    hfc config pools [--site S]     the site's Airflow pools as JSON, for `airflow pools import`
    hfc formats check <folder>      what the loader would do with a folder of product files (no database)
    hfc summary --night YYYY-MM-DD  what one night left behind: job, archive, catalogue
    hfc db upgrade                  create / upgrade the catalogue schema (versioned migrations)
    hfc ingest <manifest|folder>    load product files into the catalogue (the old hfc_insert)
    hfc catalogue stats             rows per table and per FRC
    hfc audit --night YYYY-MM-DD    nothing lost, nothing duplicated: archive, catalogue, SLURM jobs
    hfc campaign start|status|retry|cancel   reprocessing campaigns (DAG hfc_campaign, SLURM job arrays)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from hfc_tasks.catalogue.schema import MigrationError
from hfc_tasks.ops import hqi_serve
from hfc_tasks.registry import DEFAULT_REGISTRY, RegistryError, formats_folder, load_registry


def _site_cmd(args) -> int:
    """``hfc site up|down|status|env`` for either shape: each shape's module (localsite, or
    localsite.multihost) has up, down, status and env_vars; this is the one command plumbing."""
    from hfc_tasks.ops import localsite

    if args.shape == "multihost":
        from hfc_tasks.ops.localsite import multihost as shape
    else:
        shape = localsite
    try:
        if args.action == "up":
            shape.up()
        elif args.action == "down":
            for kind, items in (shape.down() or {}).items():  # multihost: what was stopped and removed
                print(f"{kind}: {', '.join(items) or 'nothing'}")
        elif args.action == "status":
            return 0 if all(shape.status(print_table=True).values()) else 1
        elif args.action == "env":
            env = shape.env_vars()
            if shape is localsite:  # the Airflow settings of the single-host site's stack
                from hfc_tasks.ops.airflow_instance import airflow_env

                env |= airflow_env(localsite.state_dir())
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
    except localsite.SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _airflow_cmd(args) -> int:
    from hfc_tasks.ops import airflow_stack

    if args.action == "up":
        try:
            airflow_stack.up()
        except airflow_stack.StackError as exc:
            print(f"hfc airflow up: {exc}", file=sys.stderr)
            return 1
    elif args.action == "restart":
        try:
            stopped = airflow_stack.restart(tuple(args.components))
        except airflow_stack.StackError as exc:
            print(f"hfc airflow restart: {exc}", file=sys.stderr)
            return 1
        print(f"[hfc-airflow] instance {airflow_stack.INSTANCE}: restarted {', '.join(stopped)}")
    elif args.action == "down":
        stopped = airflow_stack.down()
        print(f"[hfc-airflow] instance {airflow_stack.INSTANCE}: "
              + (f"stopped {', '.join(stopped)}" if stopped else "nothing was running"))
    elif args.action == "status":
        states = airflow_stack.status()
        for name, running in states.items():
            print(f"  {name:14s} {'running' if running else 'stopped'}")
        health = airflow_stack.health()
        print(f"  health: {json.dumps(health) if health else 'API not answering'}")
        return 0 if all(states.values()) else 1
    return 0


def _registry_path(args) -> Path:
    """The registry file ``load_registry`` reads for these options."""
    return Path(args.registry or os.environ.get("HFC_REGISTRY") or DEFAULT_REGISTRY)


def _config_cmd(args) -> int:
    """``validate``: the registry and its site formats (errors name the file and the key); print
    the formats files used and, per FRC, the file kinds it loads and their tables. ``pools``: the
    site's pools for ``airflow pools import`` (sized in the registry, never in compose files)."""
    from hfc_tasks.catalogue.formats import FORMATS_FILE

    path = _registry_path(args)
    try:
        reg = load_registry(path)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.action == "pools":
        try:
            site = reg.site(args.site)
        except RegistryError as exc:
            print(f"hfc: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(site.airflow_pools(), indent=1))
        return 0
    print(f"registry OK: {path}: {len(reg.sites)} sites, {len(reg.frcs)} FRCs ({', '.join(f.name for f in reg.frcs)})")
    folder = formats_folder(path, reg.formats_dir)
    site_files = [p for p in dict.fromkeys(reg.formats.sources.values()) if p != str(FORMATS_FILE)]
    print(f"formats: {FORMATS_FILE}" + (f" + site formats folder {folder} ({len(site_files)} file(s): "
                                        f"{', '.join(Path(p).name for p in site_files) or 'none'})"
                                        if folder else " (no formats_dir)"))
    for frc in reg.frcs:
        loads = reg.formats.resolve(frc.product_format, frc.products or None)  # validated by load_registry
        kinds = ", ".join(f"{kind}->{spec.table}" for kind, spec in loads.items())
        extra = f" [products {frc.products}]" if frc.products else ""
        print(f"{frc.name}: {frc.product_format} ({kinds}){extra}" + ("" if frc.enabled else " (disabled)"))
    return 0


def _formats_cmd(args) -> int:
    """``hfc formats check``: a dry run of the loader over a folder (hfc_tasks/catalogue/check.py);
    no database. Exit 0 every file would load, 1 some would not, 2 usage/configuration."""
    from hfc_tasks.catalogue import check

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} does not exist or is not a folder")
    reg = load_registry(args.registry)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    fmt, products, frc = check.choose_format(reg.formats, reg.frcs, names, frc=args.frc,
                                             product_format=args.product_format)
    result = check.check_folder(folder, reg.formats, fmt, products, frc=frc)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.text())
    return 0 if result.ok else 1


def _summary_cmd(args) -> int:
    """Print what a night left behind, checked against the real services."""
    import posixpath

    from hfc_tasks import products
    from hfc_tasks.archive import sha256_of
    from hfc_tasks.manifest import find as find_manifest
    from hfc_tasks.provider.hooks import SlurmHook, sftp_session

    reg = load_registry(args.registry)
    site = reg.site(args.site)
    night = products.parse_night(args.night)
    ok = True
    for frc in reg.enabled_frcs:
        print(f"== {frc.name}  night {night}")
        hook = SlurmHook(site.cluster_conn_id)
        try:
            name = products.job_name(frc.name, night)
            rc, out, _ = hook.run(
                f"sacct -X -n -P --name={shlex.quote(name)} -S 2000-01-01 -o JobIDRaw,State,ExitCode,Elapsed"
            )
            jobs = [line.split("|") for line in out.splitlines() if line.strip()]
            for job in jobs[-3:]:
                print(f"   SLURM job {job[0]}: {job[1]} exit {job[2]} elapsed {job[3]}")
            if not jobs:
                print("   SLURM: no job with name", name)
            run_dir = products.run_dir(site.products_root, frc.name, night)
            rc, out, _ = hook.run(f"ls -1 {shlex.quote(run_dir)} 2>/dev/null")
            left = [n for n in out.split() if not n.endswith(".out")]
            print(f"   cluster run folder {run_dir}: {len(left)} product file(s) left")
        finally:
            hook.close()
        with sftp_session(site.archive_conn_id) as sftp:
            # The FRC's own manifest, also where FRCs share an archive folder (a tracker beside its detector).
            manifest_path, raw = find_manifest(sftp, site.archive_root, frc.name, frc.archive_dir, night)
            manifest = None if raw is None else json.loads(raw)
            if manifest is None:
                print(f"   archive: no manifest at {manifest_path}")
                ok = False
                continue
            bad = [f["name"] for f in manifest["files"]
                   if sha256_of(sftp, posixpath.join(site.archive_root, f["archive_path"])) != f["sha256"]]
        kinds: dict[str, int] = {}
        for f in manifest["files"]:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        print(f"   archive: {len(manifest['files'])} files {kinds}, sha256 "
              f"{'all match the manifest' if not bad else 'MISMATCH: ' + ', '.join(bad)}")
        print(f"   manifest: {manifest_path}")
        if manifest.get("no_data"):
            print("   no data: the job ran and wrote no product")
        if manifest.get("unmatched"):
            odd = ", ".join(map(repr, manifest["unmatched"]))
            print(f"   NOT CLEAN: not product names, left on the cluster: {odd}")
        if manifest.get("stale"):
            print(f"   NOT CLEAN: stale (an earlier job's, kept on the archive, not loaded): "
                  f"{', '.join(e.get('name', '?') for e in manifest['stale'])}")
        ok = ok and not bad
        try:
            conn = _catalogue(site.catalogue_conn_id)
        except ValueError as exc:
            print(f"   catalogue: {exc}")
            ok = False
        else:
            with conn:
                row = conn.execute(
                    # status and issues (migration 0005) through to_jsonb: also on a database not upgraded yet
                    "select b.id, b.row_counts::text, to_jsonb(b)->>'status', to_jsonb(b)->'issues' "
                    "from hfc.batch b where b.frc = %s and b.night = %s",
                    (frc.name, night),
                ).fetchone()
                n_spots = conn.execute(
                    "select count(*) from hfc.view_sp_hqi v where v.date_obs >= %s and v.date_obs < %s + 1",
                    (night, night),
                ).fetchone()[0]
                ql = conn.execute(
                    "select qclk_url || '/' || qclk_fname from hfc.observations o join hfc.batch b on b.id = o.batch_id"
                    " where b.frc = %s and b.night = %s and qclk_fname is not null order by date_obs limit 1",
                    (frc.name, night),
                ).fetchone()
            print(f"   catalogue: batch {row[0] if row else 'none'}, rows per table {row[1] if row else '-'}"
                  + (f", status {row[2]}" if row else "")
                  + (f", NOT CLEAN: {len(row[3])} issue(s)" if row and row[3] else ""))
            print(f"   VIEW_SP_HQI rows for the night: {n_spots}")
            if ql:
                opened = _opens(ql[0])
                print(f"   quicklooks: {ql[0]}  (QCLK_URL + '/' + QCLK_FNAME: "
                      f"{'opens' if opened is None else 'does NOT open: ' + opened})")
                ok = ok and opened is None
            ok = ok and row is not None
    hqi_url = os.environ.get("HFC_HQI_URL")
    if hqi_url:  # the readers' query service (hfc hqi serve; on the local site, `hfc site up` runs it)
        wsdl = f"{hqi_url.rstrip('/')}/HelioTavernaService?wsdl"
        problem = _opens(wsdl)
        print(f"HQI query service: {wsdl}" + (f"  NOT ANSWERING: {problem} (hfc site status)" if problem else ""))
        ok = ok and problem is None
    return 0 if ok else 1


def _opens(url: str) -> str | None:
    """None when the URL opens as the HFC's clients open it (urlopen), else why not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read(1)
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)


# ---------------------------------------------------------------------------------- catalogue


def _catalogue(conn_id: str):
    """A psycopg 3 connection through the Airflow connection ``conn_id`` (the pipeline's own
    path, every extra honoured); ValueError (exit 2) naming the connection when it cannot be used."""
    from hfc_tasks.provider.catalogue_db import CatalogueConnectionError, catalogue_connect

    try:
        return catalogue_connect(conn_id, application_name="hfc-cli")
    except CatalogueConnectionError as exc:
        raise ValueError(str(exc)) from exc


def _hqi_password(args) -> str | None:
    """The HQI login role's password: --hqi-password-file (its first line), else $HFC_HQI_DB_PASSWORD."""
    from hfc_tasks.catalogue import readers_role

    if args.hqi_password_file:
        try:
            text = Path(args.hqi_password_file).read_text()
        except OSError as exc:
            raise ValueError(f"--hqi-password-file: cannot read {args.hqi_password_file}: {exc.strerror}") from None
        password = text.splitlines()[0] if text.strip() else ""
        if not password:
            raise ValueError(f"--hqi-password-file: {args.hqi_password_file} is empty")
        return password
    return os.environ.get(readers_role.PASSWORD_ENV) or None


def _db_cmd(args) -> int:
    """Migrations, then the HQI service's roles and grants (hfc_tasks/catalogue/readers_role.py)."""
    from hfc_tasks.catalogue import readers_role, schema

    password = _hqi_password(args)
    with _catalogue(args.conn_id) as conn:
        done = schema.upgrade(conn)
        conn.commit()
        current = [m.version for m in schema.migrations()]
        print(f"applied: {', '.join(done)}" if done else f"schema {schema.SCHEMA} is up to date ({current[-1]})")
        try:
            outcome = readers_role.ensure(conn, login=args.hqi_role, password=password)
        except readers_role.ReaderRoleError as exc:
            print(f"hfc db upgrade: {exc}", file=sys.stderr)
            return 1
    for line in outcome.lines():
        print(line)
    return 0


def _manifest_of_folder(folder: Path, args, reg) -> tuple[dict, Path]:
    """A manifest for the product files of a folder (the old hfc_insert's input): every CSV and
    quicklook in it, with its sha256; FRC, night and format from the options or the names."""
    import hashlib

    from hfc_tasks import manifest, products

    files, stamps, codes = [], [], set()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            product = products.parse_product_name(path.name, reg.formats if reg is not None else None)
        except products.ProductNameError:
            print(f"hfc ingest: skipped {path.name} (not an HFC product name)", file=sys.stderr)
            continue
        if product.code:
            codes.add(product.code)
        if product.stamp:
            stamps.append(product.stamp[:8])
        files.append({"name": path.name, "kind": product.kind, "size": path.stat().st_size,
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "archive_path": path.name,
                      "url_base": folder.resolve().as_uri()})
    frc = args.frc or (codes.pop() if len(codes) == 1 else None)
    if not frc:
        raise ValueError(f"{folder}: files of several codes {sorted(codes)}: say which FRC with --frc")
    night = args.night or (min(stamps) if stamps else None)
    if not night:
        raise ValueError(f"{folder}: no dated file to take the night from: give --night")
    fmt = args.product_format
    if fmt is None and reg is not None and any(f.name == frc for f in reg.frcs):
        fmt = reg.frc(frc).product_format
    return manifest.new(frc=frc, night=products.parse_night(night), product_format=fmt or frc, files=files,
                        created_by="hfc ingest"), folder


def _ingest_cmd(args) -> int:
    import hashlib

    from hfc_tasks.catalogue import ArchiveReadError, load_night

    path = Path(args.path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    try:
        reg = load_registry(args.registry)
    except RegistryError:
        reg = None
    raw = None
    if path.is_dir():
        manifest, root = _manifest_of_folder(path, args, reg)
    else:
        raw = path.read_bytes()
        manifest = json.loads(raw)
        # <root>/<folder>/manifests/<frc>/<night>.json (before issue 16: <root>/<frc>/manifests/<night>.json):
        # the archive paths are relative to <root>.
        resolved = path.resolve()
        per_frc = resolved.parent.parent.name == "manifests"
        root = Path(args.root) if args.root else resolved.parents[3 if per_frc else 2]
    products = dict(args.products or [])
    if not products and reg is not None and any(f.name == manifest.get("frc") for f in reg.frcs):
        products = dict(reg.frc(manifest["frc"]).products)

    def read_file(archive_path: str) -> bytes:
        return (root / archive_path).read_bytes()

    with _catalogue(args.conn_id) as conn:
        try:
            report = load_night(conn, manifest, read_file, products=products or None,
                                known=reg.formats if reg is not None else None,
                                manifest_sha256=hashlib.sha256(raw).hexdigest() if raw else None,
                                dag_run_id=args.run_id)
        except ArchiveReadError as exc:  # nothing loaded, the previous batch kept: exit 3
            print(f"hfc: {exc.message(str(root / exc.path))}", file=sys.stderr)
            return 3
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.summary())
        for warning in report.warnings:
            print(f"warning: {warning}")
    return 1 if report.rejected else 0


def _catalogue_cmd(args) -> int:
    with _catalogue(args.conn_id) as conn:
        tables = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'hfc' "
            "and table_type = 'BASE TABLE' and table_name not in ('schema_migrations') order by 1")]
        owned = {r[0] for r in conn.execute(
            "select table_name from information_schema.columns where table_schema = 'hfc' "
            "and column_name = 'batch_id' and table_name not in ('batch_file', 'rejected_file')")}
        totals = {t: conn.execute(f"select count(*) from hfc.{t}").fetchone()[0] for t in tables}
        per_frc: dict[str, dict[str, int]] = {}
        for t in sorted(owned):
            for frc, n in conn.execute(
                f"select b.frc, count(*) from hfc.{t} x join hfc.batch b on b.id = x.batch_id group by 1"
            ):
                per_frc.setdefault(frc, {})[t] = n
        nights = conn.execute(
            "select frc, count(*), min(night), max(night), count(*) filter (where status = 'partial') "
            "from hfc.batch group by 1 order by 1").fetchall()
    width = max(len(t) for t in tables)
    print("rows per table")
    for t in tables:
        print(f"  {t:<{width}}  {totals[t]:>12,}")
    print("\nper FRC (nights loaded, first, last, with rejected files; rows per table)")
    for frc, n, first, last, partial in nights:
        rows = ", ".join(f"{t} {c:,}" for t, c in sorted(per_frc.get(frc, {}).items()))
        print(f"  {frc}: {n} night(s) {first}..{last}, {partial} partial; {rows or 'no rows'}")
    return 0


def _audit_cmd(args) -> int:
    """The check after a fault (hfc_tasks/ops/audit.py): exit 0 all fine, 1 a problem, 2 usage/connection."""
    from hfc_tasks import products
    from hfc_tasks.ops import audit

    try:
        report = audit.audit(load_registry(args.registry), products.parse_night(args.night), frcs=args.frc,
                             site=args.site, expect_jobs=args.expect_jobs, since=args.since, conn_id=args.conn_id)
    except audit.AuditConnectionError as exc:
        print(f"hfc audit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.text())
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------- campaigns


def _airflow_api(args):
    """Airflow's REST API for ``hfc campaign``: ``--airflow-url`` (else $HFC_AIRFLOW_URL, else this
    instance's api-server http://127.0.0.1:$HFC_AIRFLOW_PORT), with $HFC_AIRFLOW_TOKEN, else user
    $HFC_AIRFLOW_USER (admin) and $HFC_AIRFLOW_PASSWORD, else the password in the simple auth
    manager's passwords file ($AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE, or the local
    site's, as ``hfc site env`` sets it)."""
    import urllib.error

    from hfc_tasks.airflow_api import AirflowAPI
    from hfc_tasks.ops import airflow_instance

    base = args.airflow_url or os.environ.get("HFC_AIRFLOW_URL") or f"http://127.0.0.1:{airflow_instance.PORT}"
    token = os.environ.get("HFC_AIRFLOW_TOKEN")
    try:
        if token:
            return AirflowAPI(base, token=token)
        user = os.environ.get("HFC_AIRFLOW_USER") or "admin"
        password = os.environ.get("HFC_AIRFLOW_PASSWORD") or _password_from_file(user)
        return AirflowAPI(base, user, password)
    except urllib.error.URLError as exc:
        raise ValueError(f"Airflow at {base} cannot be reached ({exc.reason}): is its api-server up "
                         "(hfc airflow status)? Else give --airflow-url") from None


def _password_from_file(user: str) -> str:
    path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if not path:
        from hfc_tasks.ops.localsite import state_dir

        path = str(state_dir() / "airflow" / "passwords.json")
    try:
        return json.loads(Path(path).read_text())[user]
    except (OSError, ValueError, KeyError):
        raise ValueError(f"no Airflow credentials for user {user!r}: set HFC_AIRFLOW_TOKEN or "
                         f"HFC_AIRFLOW_PASSWORD (no password for it in {path})") from None


def _cluster_runner(site):
    """``(run, close)``: a command on the cluster's login node (``SlurmHook``, the site's
    cluster connection) -> its stdout; a failing command raises naming it."""
    from hfc_tasks.provider.hooks import SlurmHook

    hook = SlurmHook(site.cluster_conn_id)
    return (lambda command: hook.check(command, what=command.split()[0])), hook.close


def _campaign_runs(args, api=None):
    """The campaign named ``args.id``: from Airflow, or (``--frc/--first/--last``) as given, with
    no run (the SLURM side only: a campaign whose chunks were submitted without the DAG)."""
    from hfc_tasks import campaign, products, status

    if args.frc:
        if not (args.first and args.last):
            raise ValueError("--frc needs --first and --last (the campaign's nights)")
        camp = campaign.Campaign(args.frc, products.parse_night(args.first), products.parse_night(args.last),
                                 args.id)
        return campaign.CampaignRuns(campaign=camp, retries={}, runs=())
    return status.find_campaign(api or _airflow_api(args), args.id)


def _campaign_start(args, reg, site) -> int:
    from hfc_tasks import campaign, products, status

    known = {f.name: f for f in reg.frcs}
    if args.frc not in known:
        raise ValueError(f"unknown FRC {args.frc!r}: the registry has {', '.join(sorted(known)) or 'none'}")
    if not known[args.frc].enabled:
        raise ValueError(f"FRC {args.frc!r} is disabled in the registry: enable it first")
    first = products.parse_night(args.first)
    last = products.parse_night(args.last)
    camp = campaign.Campaign(args.frc, first, last, args.campaign_id or "unnamed", version=args.version)
    api = _airflow_api(args)
    if args.campaign_id:
        groups = campaign.group_runs(status.campaign_dag_runs(api))
        if args.campaign_id in groups:
            raise ValueError(f"campaign {args.campaign_id!r} exists already (run "
                             f"{groups[args.campaign_id][0]['dag_run_id']}): see `hfc campaign status "
                             f"{args.campaign_id}`, retry nights with `hfc campaign retry`, or name a new one")
    conf = campaign.run_conf(camp, name_it=bool(args.campaign_id))
    dag = api.get(f"/dags/{campaign.DAG_ID}")
    run = api.post(f"/dags/{campaign.DAG_ID}/dagRuns", campaign.trigger_body(conf))
    cid = args.campaign_id or campaign.default_campaign_id(run["dag_run_id"])
    print(f"campaign {cid}: FRC {camp.frc}, nights {first}..{last} ({len(camp.nights)}"
          f"{', version ' + camp.version if camp.version else ''})")
    print(f"run {run['dag_run_id']} of DAG {campaign.DAG_ID} ({run.get('state')})")
    if dag and dag.get("is_paused"):
        print(f"warning: DAG {campaign.DAG_ID} is paused: the run waits until it is unpaused", file=sys.stderr)
    print(f"progress: hfc campaign status {cid}")
    return 0


def _print_status(st, runs) -> None:
    c = st.campaign
    print(f"campaign {c.campaign_id}: FRC {c.frc}, nights {c.first}..{c.last} ({len(st.nights)})"
          + (f", version {c.version}" if c.version else ""))
    if runs.runs:
        print("runs: " + ", ".join(f"{r['dag_run_id']} ({r.get('state')})" for r in runs.runs))
    print("arrays: " + (", ".join(f"{k}={v}" for k, v in st.arrays.items()) or "none in SLURM yet"))
    print(st.summary() + ("" if st.catalogue_read else " (SLURM only: catalogue not read)"))
    if st.failed_nights:
        print("failed nights:")
        for night, why in st.failed_nights.items():
            print(f"  {night}  {why}")
    cancelled = [str(n.night) for n in st.nights.values() if n.state == "cancelled"]
    if cancelled:
        print(f"cancelled nights: {', '.join(cancelled)}")
    for problem in st.problems:
        print(f"problem: {problem}")


def _campaign_status(args, reg, site) -> int:
    from hfc_tasks import status

    runs = _campaign_runs(args)
    run, close = _cluster_runner(site)
    try:
        conn = None if not runs.runs or args.no_catalogue else _catalogue(args.conn_id or site.catalogue_conn_id)
        try:
            st = status.campaign_progress(runs, site, run, conn)
        finally:
            if conn is not None:
                conn.close()
    finally:
        close()
    if args.json:
        print(json.dumps({**st.to_dict(), "runs": [{"run_id": r["dag_run_id"], "state": r.get("state")}
                                                   for r in runs.runs]}, indent=1))
    else:
        _print_status(st, runs)
    return 0


def _campaign_retry(args, reg, site) -> int:
    from hfc_tasks import campaign, products, status

    nights = sorted({products.parse_night(n) for n in args.night})
    api = _airflow_api(args)
    runs = status.find_campaign(api, args.id)
    camp = runs.campaign
    # A retry's chunks get new job names: an attempt neither Airflow nor SLURM knows.
    run, close = _cluster_runner(site)
    try:
        listed = campaign.parse_chunks(run(campaign.chunks_command(camp.frc, camp.campaign_id,
                                                                   status.campaign_since(runs))),
                                       camp.frc, camp.campaign_id)
    finally:
        close()
    attempt = max(runs.next_attempt, max(campaign.retry_attempts_found(listed), default=0) + 1)
    conf = campaign.run_conf(camp, retry_nights=nights, retry_attempt=attempt)
    created = api.post(f"/dags/{campaign.DAG_ID}/dagRuns", campaign.trigger_body(conf))
    print(f"campaign {camp.campaign_id}: retry {attempt} of {len(nights)} night(s) "
          f"{', '.join(str(n) for n in nights)}: run {created['dag_run_id']} of DAG {campaign.DAG_ID}")
    print(f"progress: hfc campaign status {camp.campaign_id}")
    return 0


CANCEL_SETTLE_SECONDS = 15


def _pending_tasks(found, arrays, sizes) -> dict[str, str]:
    """Task id -> state of every array task of ``arrays`` (label -> array id) SLURM gave."""
    from hfc_tasks import slurm

    out = {}
    for label, array in arrays.items():
        for index, st in slurm.tasks_of(found, array, sizes.get(label)).items():
            out[slurm.task_id(array, index)] = st.state
    return out


def _campaign_cancel(args, reg, site) -> int:
    from hfc_tasks import campaign, slurm, status

    runs = _campaign_runs(args)
    camp = runs.campaign
    sizes = {k.label: len(k.nights) for k in campaign.chunks_of(runs, site)}
    since = status.campaign_since(runs)
    run, close = _cluster_runner(site)
    try:
        before = status.campaign_slurm(run, camp.frc, camp.campaign_id, since)
        if not before.arrays:
            print(f"campaign {camp.campaign_id}: no chunk in SLURM, nothing to cancel")
            return 0
        tasks_before = _pending_tasks(before.found, before.arrays, sizes)
        queued = [a for label, a in before.arrays.items()
                  if any(t.startswith(f"{a}_") and s == "PENDING" for t, s in tasks_before.items())]
        for array in queued:
            try:
                run(campaign.cancel_command(array))
            except slurm.SlurmError as exc:
                # exit 1 "Invalid job id": nothing of the array is queued any more (it started or ended).
                if "Invalid job id" not in str(exc):
                    raise
        # Accounting may show the cancelled tasks as pending for a moment: read again, briefly.
        deadline = time.monotonic() + CANCEL_SETTLE_SECONDS
        while True:
            after = status.campaign_slurm(run, camp.frc, camp.campaign_id, since)
            tasks_after = _pending_tasks(after.found, after.arrays, sizes)
            if not queued or "PENDING" not in tasks_after.values() or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        close()
    stopped = sorted((t for t, s in tasks_before.items() if s == "PENDING" and tasks_after.get(t) == "CANCELLED"),
                     key=slurm.ref_sort_key)
    done = sum(1 for s in tasks_after.values() if s == "COMPLETED")
    running = sum(1 for s in tasks_after.values() if s in campaign.RUNNING_STATES)
    still = sum(1 for s in tasks_after.values() if s == "PENDING")
    print(f"campaign {camp.campaign_id}: cancelled {len(stopped)} pending array task(s) of "
          f"{len(queued)} array(s) ({', '.join(queued) or 'none queued'}); {done} completed task(s) kept"
          + (f", {running} running left to finish" if running else "")
          + (f"; {still} still pending (started meanwhile? run it again)" if still else ""))
    if args.json:
        print(json.dumps({"campaign_id": camp.campaign_id, "arrays": queued, "cancelled": stopped,
                          "completed_kept": done, "running": running, "still_pending": still}))
    return 0


def _campaign_cmd(args) -> int:
    """``hfc campaign start|status|retry|cancel`` (issue 15): exit 0 done, 1 Airflow or the cluster
    refused, 2 bad input (unknown FRC or campaign, not a date, last before first, odd id)."""
    from hfc_tasks import campaign, slurm
    from hfc_tasks.airflow_api import ApiError

    reg = load_registry(args.registry)
    site = reg.site(args.site)
    if getattr(args, "id", None) is not None and not campaign.CAMPAIGN_ID.match(args.id):
        raise ValueError(f"campaign id {args.id!r}: letters, digits, '-' and '_' only (at most 64)")
    func = {"start": _campaign_start, "status": _campaign_status, "retry": _campaign_retry,
            "cancel": _campaign_cancel}[args.action]
    try:
        return func(args, reg, site)
    except ApiError as exc:
        print(f"hfc campaign {args.action}: {exc}", file=sys.stderr)
        return 1
    except slurm.SlurmError as exc:
        print(f"hfc campaign {args.action}: on the cluster (connection {site.cluster_conn_id}): {exc}",
              file=sys.stderr)
        return 1


def _command(sub, name: str, func, help: str, actions: list[str] | None = None) -> argparse.ArgumentParser:
    """One subcommand of ``hfc``: its parser, its ``action`` argument where it has one, and the
    function that runs it (``func(args) -> exit code``)."""
    p = sub.add_parser(name, help=help)
    if actions:
        p.add_argument("action", choices=actions)
    p.set_defaults(func=func)
    return p


def _conn_id_option(p: argparse.ArgumentParser, default: str | None = "hfc_catalogue",
                    shown: str = "hfc_catalogue") -> None:
    p.add_argument("--conn-id", default=default,
                   help=f"the catalogue's Airflow connection id (default: {shown}; defined by "
                        "AIRFLOW_CONN_<ID> or the secrets backend, see docs/connections.md)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfc", description="HFC nightly pipeline: operators' commands")
    parser.add_argument("--registry", help="registry file (default: config/registry.yaml or $HFC_REGISTRY)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "site", _site_cmd, "the local embedded site", ["up", "down", "status", "env"])
    p.add_argument("--shape", choices=["single", "multihost"], default="single",
                   help="single: one host on loopback (default); multihost: login, node1, node2, archive, "
                        "catalogue as network namespaces (docs/multihost_site.md)")

    p = _command(sub, "airflow", _airflow_cmd, "the Airflow stack on the local site (api-server, scheduler, ...)",
                 ["up", "down", "status", "restart"])
    p.add_argument("components", nargs="*",
                   help="restart: the components to stop and start again (e.g. worker1 worker2 triggerer "
                        "api-server after a connection changed)")

    p = _command(sub, "config", _config_cmd, "the registry", ["validate", "pools"])
    p.add_argument("--site", help="pools: the site (default: HFC_SITE, else the registry's default_site)")

    p = _command(sub, "formats", _formats_cmd, "the product file formats: check a folder of product files "
                 "against them, a dry run without the catalogue (exit 0: every file would load; 1: some would "
                 "not; 2: usage/configuration)", ["check"])
    p.add_argument("folder", help="a folder of product files (its subfolders are not read)")
    p.add_argument("--frc", help="the registry FRC whose product_format and products to check against "
                   "(default: --product-format, else the FRC named like the files' code)")
    p.add_argument("--product-format", help="a product format of the formats (presets and the registry's formats_dir)")
    p.add_argument("--registry", default=argparse.SUPPRESS,
                   help="registry file, for its FRCs and formats_dir (default: config/registry.yaml or $HFC_REGISTRY)")
    p.add_argument("--json", action="store_true", help="print the check as JSON")

    p = _command(sub, "summary", _summary_cmd, "what one night left behind (job, archive, catalogue)")
    p.add_argument("--night", required=True, help="YYYY-MM-DD")
    p.add_argument("--site", default=None)

    p = _command(sub, "db", _db_cmd, "the catalogue database schema, and the HQI service's read-only roles",
                 ["upgrade"])
    _conn_id_option(p)
    p.add_argument("--hqi-role", default="hfc_hqi",
                   help="the HQI service's login role, read-only, a member of hfc_hqi_reader (default hfc_hqi)")
    p.add_argument("--hqi-password-file", metavar="PATH",
                   help="its password, the file's first line (default: $HFC_HQI_DB_PASSWORD; neither: the "
                        "password is left as it is, and a new role has none)")

    p = _command(sub, "ingest", _ingest_cmd, "load a night's manifest, or a folder of product files, into the "
                 "catalogue (exit 0: loaded; 1: some files rejected; 3: a file unreadable or not the manifest's, "
                 "nothing loaded)")
    p.add_argument("path", help="a manifest <root>/<folder>/manifests/<frc>/<night>.json, or a folder of product files")
    p.add_argument("--root", help="archive root the manifest's paths are relative to (default: the root of "
                   "<root>/<folder>/manifests/<frc>/<night>.json)")
    p.add_argument("--frc", help="folder: the FRC (default: the code in the file names)")
    p.add_argument("--night", help="folder: the night (default: the earliest date in the file names)")
    p.add_argument("--product-format", help="folder: formats.yaml format (default: the registry's, else --frc)")
    p.add_argument("--products", type=lambda s: tuple(s.split("=", 1)), action="append", metavar="KIND=SPEC",
                   help="file kind -> kind of formats.yaml (default: the registry's 'products' for the FRC)")
    p.add_argument("--run-id", default=None, help="recorded as the batch's DAG run id (default: none)")
    _conn_id_option(p)
    p.add_argument("--json", action="store_true", help="print the load report as JSON")

    _conn_id_option(_command(sub, "catalogue", _catalogue_cmd, "the catalogue's contents", ["stats"]))

    p = _command(sub, "audit", _audit_cmd, "check a night after a fault: every product on the archive (or the "
                 "cluster), one batch with its files' rows, the SLURM jobs (exit 0 fine, 1 problem, 2 "
                 "usage/connection)")
    p.add_argument("--night", required=True, help="YYYY-MM-DD")
    p.add_argument("--frc", action="append", help="an FRC to audit (repeatable; default: the site's FRCs)")
    p.add_argument("--site", default=None)
    p.add_argument("--expect-jobs", type=int, default=None, metavar="K",
                   help="SLURM jobs expected per (FRC, night) (default 1: more COMPLETED ones = possible duplicate)")
    p.add_argument("--since", default="2000-01-01", help="sacct -S: count jobs submitted since (default: all time)")
    _conn_id_option(p, None, "the site's catalogue_conn_id")
    p.add_argument("--json", action="store_true", help="print the audit as JSON")

    p = sub.add_parser("campaign", help="reprocessing campaigns: one FRC over a range of nights as SLURM job "
                       "arrays (DAG hfc_campaign; exit 0 done, 1 Airflow or the cluster refused, 2 bad input)")
    p.set_defaults(func=_campaign_cmd)
    csub = p.add_subparsers(dest="action", required=True)

    def campaign_parser(name: str, help: str) -> argparse.ArgumentParser:
        q = csub.add_parser(name, help=help)
        q.add_argument("--site", default=None, help="the site (default: HFC_SITE, else the registry's default_site)")
        q.add_argument("--airflow-url", default=None,
                       help="Airflow's api-server (default $HFC_AIRFLOW_URL, else http://127.0.0.1:$HFC_AIRFLOW_PORT); "
                            "login: $HFC_AIRFLOW_TOKEN, or $HFC_AIRFLOW_USER/$HFC_AIRFLOW_PASSWORD, or the "
                            "local site's passwords file")
        q.add_argument("--json", action="store_true", help="print the answer as JSON")
        return q

    q = campaign_parser("start", "trigger DAG hfc_campaign: reprocess FRC --frc from --first to --last")
    q.add_argument("--frc", required=True, help="an enabled FRC of the registry")
    q.add_argument("--first", required=True, help="first night, YYYY-MM-DD")
    q.add_argument("--last", required=True, help="last night, YYYY-MM-DD (included)")
    q.add_argument("--version", default=None, help="the FRC version, for provenance")
    q.add_argument("--campaign-id", default=None,
                   help="letters, digits, - and _ (default: named after its DAG run)")
    for name, help in (("status", "nights done / failed / cancelled / running / pending, ETA, failed nights "
                                  "with their reason"),
                       ("cancel", "cancel the campaign's array tasks not started yet (done nights are kept)")):
        q = campaign_parser(name, help)
        q.add_argument("id", help="the campaign id")
        q.add_argument("--frc", help="without Airflow: the campaign's FRC (with --first and --last), for chunks "
                       "submitted without the DAG")
        q.add_argument("--first", help="without Airflow: its first night")
        q.add_argument("--last", help="without Airflow: its last night")
        if name == "status":
            _conn_id_option(q, None, "the site's catalogue_conn_id")
            q.add_argument("--no-catalogue", action="store_true",
                           help="SLURM only: a completed job counts as done without its catalogue batch")
    q = campaign_parser("retry", "run failed nights of a campaign again (a new run of hfc_campaign)")
    q.add_argument("id", help="the campaign id")
    q.add_argument("--night", action="append", required=True, help="a night to retry, YYYY-MM-DD (repeatable)")

    hqi_serve.add_command(sub, _command)

    args = parser.parse_args(argv)
    # paramiko logs every connection at INFO: noise on an operator's terminal.
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (RegistryError, ValueError, MigrationError) as exc:  # MigrationError: e.g. the schema is behind
        print(f"hfc: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
