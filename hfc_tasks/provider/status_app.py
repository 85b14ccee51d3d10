"""The catalogue status page: a FastAPI app served by Airflow's api-server (``plugins/hfc_status.py``).

Mounted at ``/hfc-status`` and shown in the UI's navigation ("HFC catalogue"). The logic lives in
:mod:`hfc_tasks.status`; this module only turns it into HTML/JSON/PNG, and guards it:

* **every** request, whatever its path (the docs and ``openapi.json`` included, a path that
  matches no route too), needs a logged-in Airflow user (the UI's ``_token`` cookie or a bearer
  token): anonymous requests get 401 before any route is looked at;
* reading a night (heat map, gallery, quicklooks, batch, archive manifest) needs read permission
  on the DAG, the SLURM output needs read permission on its task logs, and ``api/backfill``
  needs permission to create runs of the DAG: each is asked of Airflow's auth manager
  (the api_fastapi security dependencies), 403 otherwise;
* ``api/backfill`` accepts only a JSON body (415 otherwise) sent from the api-server's own origin
  (``[api] base_url``; 403 for another ``Origin``, or none on a browser session);
* what the page reads from Airflow and the backfills it creates go through Airflow's public REST
  API *with the user's own token*, so Airflow checks again and records who asked;
* every string from a manifest, an FRC file or the catalogue is HTML-escaped, pages carry a
  Content-Security-Policy that runs only their own script, and an ``archive_path`` is used only
  if it stays under the archive root (:func:`hfc_tasks.status.archive_file`);
* bad parameters (not a date, reversed or future nights, odd FRC or file names) answer 400 with
  the reason.

Routes (relative, so the app works under any base URL):

    /                                  heat map FRC x night, gaps with a backfill button
    /gallery?frc=F&night=N             the night's quicklooks, catalogue contours drawn
    /quicklook/F/N/NAME[?overlay=0]    one quicklook, read from the archive over SFTP
    /batch/F/N                         the batch: provenance, files, rejected files, issues
    /archive/F/N                       the night's manifest on the archive
    /job-output/F/N?job_id=J           the tail of the SLURM job's output file on the cluster
    /api/heatmap, /api/gaps            JSON;  POST /api/backfill  {first, last, frcs?}
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import secrets
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hfc_tasks import products, status
from hfc_tasks.registry import FRC_NAME, load_registry

PREFIX = "/hfc-status"
COLOURS = {"loaded": "#2e9d4f", "not_clean": "#8b5cf6", "rejected": "#e0a100", "no_data": "#5b8fa8",
           "running": "#3b82f6", "failed": "#d6333a", "missing": "#c9ccd1"}
LABELS = {"loaded": "loaded", "not_clean": "not clean", "rejected": "rejected", "no_data": "no data",
          "running": "running", "failed": "failed", "missing": "missing"}
_JOB_ID = re.compile(r"^\d+(_\d+)?$")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "Cache-Control": "private, no-store"}


def esc(value) -> str:
    """Any value as HTML text (None as empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- authentication, permissions


class RequireAirflowUser:
    """ASGI middleware: no request reaches the app (routes, docs, 404s) without an Airflow user.

    The user is resolved exactly as Airflow's own API does (:func:`...security.get_user`: a
    bearer token, else the UI's cookie); its 401/403 is the answer otherwise.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

        request = Request(scope)
        try:
            await get_user(request, None, await bearer_scheme(request))
        except HTTPException as exc:
            headers = {**SECURITY_HEADERS, **({"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {})}
            await JSONResponse({"detail": f"HFC status page: {exc.detail} (log in to Airflow)"},
                               status_code=exc.status_code, headers=headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _user_name(user) -> str:
    try:
        return f"{user.get_name()!r}"
    except Exception:  # noqa: BLE001 - only for the message
        return "this user"


def _requires_dag(method: str, entity: str | None, what: str):
    """A dependency: Airflow's auth manager must allow ``method`` on the DAG (and ``entity``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    check = requires_access_dag(method, DagAccessEntity[entity] if entity else None, status.DAG_ID)

    def dependency(request: Request, user=Depends(get_user)):  # noqa: B008 - FastAPI's idiom
        try:
            check(request, user)
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            raise HTTPException(403, f"Airflow's auth manager refused: user {_user_name(user)} may not {what} "
                                     f"DAG {status.DAG_ID}") from None

    return dependency


def _expected_origin(request: Request) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback=None) or str(request.base_url)
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _same_origin_json(request: Request) -> None:
    """A state-changing request: from the api-server's own origin, with a JSON body.

    A browser always sends ``Origin`` with a POST; another site's page can neither forge it nor
    send ``application/json`` without a CORS preflight (which this app never grants). A script
    with a bearer token (no cookie, no browser) may omit ``Origin``.
    """
    expected = _expected_origin(request)
    origin = request.headers.get("origin")
    if origin is None:
        if not request.headers.get("authorization", "").lower().startswith("bearer "):
            raise HTTPException(403, f"refused: no Origin header on a browser request (expected {expected})")
    elif origin.rstrip("/").lower() != expected:
        raise HTTPException(403, f"refused: Origin {origin!r} is not this Airflow ({expected})")
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, f"the body must be JSON (Content-Type: application/json), not {ctype or 'none'!r}")


# --------------------------------------------------------------------------- helpers


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth.split(None, 1)[1]
    token = request.cookies.get("_token")
    if not token:
        raise HTTPException(401, "not logged in to Airflow")
    return token


def _api_base() -> str:
    """Where this api-server answers its own REST API (loopback by default)."""
    if os.environ.get("HFC_STATUS_API_URL"):
        return os.environ["HFC_STATUS_API_URL"]
    from airflow.configuration import conf

    return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"


def _api(request: Request) -> status.AirflowREST:
    return status.AirflowREST(_api_base(), _token(request))


def _registry():
    reg = load_registry()
    return reg, reg.site()


def _frc_names(reg) -> list[str]:
    return [f.name for f in reg.enabled_frcs]


def _catalogue(site):
    from hfc_tasks.provider.hooks import catalogue_connect

    try:
        return catalogue_connect(site.catalogue_conn_id)
    except Exception as exc:  # noqa: BLE001 - any driver error: the page says which connection
        raise HTTPException(503, f"catalogue (connection {site.catalogue_conn_id}) cannot be reached: "
                                 f"{type(exc).__name__}: {exc}") from None


def _night(text: str) -> dt.date:
    try:
        return status.check_night(text)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _check_frc(reg, frc: str) -> str:
    if not isinstance(frc, str) or not FRC_NAME.match(frc):
        raise HTTPException(400, f"FRC name {frc!r} must match [a-z0-9][a-z0-9-]*")
    if frc not in {f.name for f in reg.frcs}:
        raise HTTPException(404, f"no FRC {frc!r} in the registry")
    return frc


def _page(title: str, body: str, script: str = "") -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    csp = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
           f"script-src 'nonce-{nonce}'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'")
    tag = f'<script nonce="{nonce}">{script}</script>' if script else ""
    return HTMLResponse(f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:16px;color:#1f2328}} h1{{font-size:20px;margin:0 0 8px}}
h2{{font-size:16px;margin:18px 0 6px}} table.hm{{border-collapse:separate;border-spacing:2px}}
table.hm td.c{{width:26px;height:24px;text-align:center;font-size:10px;color:#fff;border-radius:3px}}
table.hm td.c.unclean{{outline:2px dashed #6d28d9;outline-offset:-2px}}
table.hm td.c a{{color:#fff;text-decoration:none;display:block}} table.hm th{{font-weight:normal;font-size:11px}}
th.n{{writing-mode:vertical-rl;transform:rotate(180deg);height:70px}} .legend span{{padding:2px 8px;
border-radius:3px;color:#fff;margin-right:4px}} .problem{{background:#fde2e1;padding:6px 10px;border-radius:4px}}
.refused{{background:#fde2e1}} .issue{{background:#ede9fe;padding:6px 10px;border-radius:4px}}
.gallery{{display:flex;flex-wrap:wrap;gap:10px}} .gallery figure{{margin:0;width:260px}}
.gallery img{{width:256px;height:256px;border:1px solid #888;background:#000}}
figcaption{{font-size:12px;overflow-wrap:anywhere}}
table.t td,table.t th{{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left;font-size:12px}}
button{{cursor:pointer}} .msg{{margin-left:8px;font-weight:600}} code{{font-size:12px}}
</style></head><body>{body}{tag}</body></html>""", headers={**SECURITY_HEADERS, "Content-Security-Policy": csp})


def _cell_html(cell: status.Cell) -> str:
    label = {"loaded": _short(cell.rows), "not_clean": f"{_short(cell.rows)}!", "rejected": f"R{cell.rejected_files}",
             "no_data": "∅", "running": "…", "failed": "✕", "missing": ""}[cell.state]
    tip = f"{cell.frc} {cell.night}: {LABELS[cell.state]}"
    if cell.state == "no_data":
        tip += " (the FRC ran and found no observation: nothing to backfill)"
    if cell.batch_id:
        tip += f", {cell.rows} rows, {cell.rejected_files} rejected file(s), batch {cell.batch_id}"
    if cell.issues:
        tip += "; not clean: " + "; ".join(status.issue_text(i) for i in cell.issues[:10])
        tip += f" (+{len(cell.issues) - 10} more)" if len(cell.issues) > 10 else ""
    if cell.run_id:
        tip += f"; run {cell.run_id} ({cell.run_state}): " + ", ".join(f"{k} {v}" for k, v in cell.tasks.items())
    href = f"gallery?{urlencode({'frc': cell.frc, 'night': cell.night})}"
    classes = "c" if cell.clean else "c unclean"
    return (f'<td class="{classes}" data-frc="{esc(cell.frc)}" data-night="{esc(cell.night)}" '
            f'data-state="{esc(cell.state)}" data-clean="{str(cell.clean).lower()}" '
            f'style="background:{COLOURS[cell.state]}" title="{esc(tip)}">'
            f'<a href="{esc(href)}">{esc(label)}</a></td>')


def _short(n: int) -> str:
    return str(n) if n < 1000 else f"{n / 1000:.0f}k" if n < 1_000_000 else f"{n / 1e6:.0f}M"


def _manifest_row(entry, archive_root: str, public_url_base: str) -> str:
    """One manifest entry as a table row; an archive_path outside the archive is refused."""
    if not isinstance(entry, dict):
        return (f'<tr class="refused"><td colspan="4">refused: the entry {esc(json.dumps(entry)[:200])} '
                f"is not an object</td></tr>")
    cells = (f"<td><code>{esc(entry.get('name'))}</code></td><td>{esc(entry.get('kind'))}</td>"
             f"<td>{esc(entry.get('size'))}</td>")
    path = entry.get("archive_path")
    try:
        status.archive_file(archive_root, path)
    except ValueError as exc:
        return f'<tr class="refused">{cells}<td>{esc(exc)}</td></tr>'
    return f"<tr>{cells}<td><code>{esc(products.url_join(public_url_base, path))}</code></td></tr>"


def _archive_error(site, exc: Exception) -> HTTPException:
    return HTTPException(502, f"archive (connection {site.archive_conn_id}) cannot be read: "
                              f"{type(exc).__name__}: {exc}")


def create_app() -> FastAPI:
    read = Depends(_requires_dag("GET", None, "read"))
    read_logs = Depends(_requires_dag("GET", "TASK_LOGS", "read the task logs of"))
    create_runs = Depends(_requires_dag("POST", "RUN", "create runs of"))
    # No public docs: the middleware would answer 401 to them anyway, and an operator's page
    # has no use for Swagger (the JSON routes are listed in this module's docstring).
    app = FastAPI(title="HFC catalogue status", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequireAirflowUser)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the 404/405 of routing
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers={**SECURITY_HEADERS, **(exc.headers or {})})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        reasons = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x not in ('query', 'path', 'body'))}: "
                            f"{e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": f"bad request: {reasons}"}, status_code=400, headers=SECURITY_HEADERS)

    def load(request: Request, first: str | None, last: str | None):
        try:
            f, la = status.query_range(first, last)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        reg, site = _registry()
        conn = None
        try:
            conn = _catalogue(site)
        except HTTPException as exc:
            problem = exc.detail
        else:
            problem = None
        try:
            heat, problems = status.heatmap_for(conn, _api(request), _frc_names(reg), f, la)
        finally:
            if conn is not None:
                conn.close()
        if problem:
            problems.insert(0, problem)
        return reg, heat, problems

    @app.get("/", response_class=HTMLResponse, dependencies=[read])
    def index(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        gaps = status.find_gaps(heat)
        api = _api(request)
        try:
            backfills = [b for b in api.backfills(status.DAG_ID) if not b.get("completed_at")]
        except (status.ApiError, OSError) as exc:
            backfills, problems = [], [*problems, f"backfills: {exc}"]
        counts = heat.counts()
        unclean = sum(1 for c in heat.cells.values() if not c.clean)
        head = "".join(f'<th class="n">{esc(n)}</th>' for n in heat.nights)
        rows = "".join(
            f'<tr><th style="text-align:right;padding-right:6px">{esc(frc)}</th>'
            + "".join(_cell_html(heat.cell(frc, n)) for n in heat.nights) + "</tr>"
            for frc in heat.frcs
        )
        gap_items = "".join(
            f'<li class="gap" data-first="{esc(g.first)}" data-last="{esc(g.last)}">{esc(g.first)} → {esc(g.last)} '
            f'({g.nights} night{"s" if g.nights > 1 else ""}; {esc(", ".join(g.frcs))}) '
            f'<button class="backfill" data-first="{esc(g.first)}" data-last="{esc(g.last)}" '
            f'data-frcs="{esc(json.dumps(g.frcs))}" data-reprocess="{esc(g.reprocess_behavior)}">'
            f'Backfill</button><span class="msg"></span></li>'
            for g in gaps
        ) or "<li>no gap: every FRC has every night of the range</li>"
        bf_items = "".join(
            f'<li class="active-backfill">#{esc(b.get("id"))} {esc(str(b.get("from_date"))[:10])} → '
            f'{esc(str(b.get("to_date"))[:10])} ({"paused" if b.get("is_paused") else "running"}, '
            f'conf {esc(json.dumps(b.get("dag_run_conf") or {}))})</li>'
            for b in backfills
        )
        problem_html = "".join(f'<p class="problem">{esc(p)}</p>' for p in problems)
        legend = "".join(f'<span style="background:{c}" data-state="{s}">{LABELS[s]} {counts[s]}</span>'
                         for s, c in COLOURS.items())
        legend += f'<span style="background:#6d28d9" data-state="unclean">dashed: not clean {unclean}</span>'
        body = f"""<h1>HFC catalogue: nights × FRCs</h1>
{problem_html}
<form method="get">Nights <input name="first" value="{esc(heat.nights[0])}" size="10"> to
<input name="last" value="{esc(heat.nights[-1])}" size="10"> <button>Show</button></form>
<p class="legend">{legend}</p>
<table class="hm" id="heatmap"><tr><th></th>{head}</tr>{rows}</table>
<p style="font-size:12px">A cell: rows in the catalogue (green), <i>n</i>! = loaded but not clean (violet: files left
on the cluster or stale files of an earlier run; a dashed outline marks any night that is not clean),
R<i>n</i> = files rejected (amber), ∅ = no data (the FRC ran and found no observation; not a gap), running (blue),
failed (red), missing (grey). Click it for the night's quicklooks and batch.</p>
<h2>Gaps</h2><ul id="gaps">{gap_items}</ul>
<h2>Backfills in progress</h2><ul id="backfills">{bf_items or "<li>none</li>"}</ul>"""
        script = """
document.querySelectorAll('button.backfill').forEach(b => b.addEventListener('click', async () => {
  const msg = b.nextElementSibling; b.disabled = true; msg.textContent = 'requesting…';
  const r = await fetch('api/backfill', {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({first: b.dataset.first, last: b.dataset.last, frcs: JSON.parse(b.dataset.frcs),
                          reprocess_behavior: b.dataset.reprocess})});
  const j = await r.json();
  if (r.ok) { msg.textContent = 'backfill #' + j.id + ' created'; msg.style.color = '#2e9d4f'; }
  else { msg.textContent = 'refused: ' + (j.detail || r.status); msg.style.color = '#d6333a'; b.disabled = false; }
}));
"""
        return _page("HFC catalogue", body, script)

    @app.get("/api/heatmap", dependencies=[read])
    def api_heatmap(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        return {**heat.to_dict(), "problems": problems}

    @app.get("/api/gaps", dependencies=[read])
    def api_gaps(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        return {"gaps": [g.to_dict() for g in status.find_gaps(heat)], "problems": problems}

    @app.post("/api/backfill", dependencies=[Depends(_same_origin_json), create_runs])
    async def api_backfill(request: Request):
        # The checks above ran first (origin, JSON, the auth manager); only then is the body read.
        try:
            body = await request.json()
        except ValueError as exc:
            raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body must be an object {first, last[, frcs, reprocess_behavior]}")
        try:
            first, last = _night(str(body["first"])), _night(str(body["last"]))
        except KeyError as exc:
            raise HTTPException(400, f"body must be {{first, last[, frcs, reprocess_behavior]}}: no {exc}") from None
        if last < first:
            raise HTTPException(400, f"first night {first} is after last night {last}")
        reg, _ = _registry()
        frcs = body.get("frcs") or []
        if not isinstance(frcs, list):
            raise HTTPException(400, "frcs must be a list of FRC names")
        frcs = [_check_frc(reg, f) for f in frcs]
        behaviour = body.get("reprocess_behavior") or "none"
        if behaviour not in ("none", "failed", "completed"):
            raise HTTPException(400, f"reprocess_behavior {str(behaviour)[:40]!r} is not none, failed or completed")
        gap = status.Gap(first=first.isoformat(), last=last.isoformat(), frcs=frcs,
                         nights=(last - first).days + 1, reprocess_behavior=behaviour)
        api = _api(request)

        def create():
            params = api.dag_params(status.DAG_ID)
            return api.create_backfill(status.backfill_body(gap, dag_params=params))

        # The REST calls go back into this same api-server: never on the event loop that answers them.
        try:
            created = await run_in_threadpool(create)
        except status.ApiError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return JSONResponse(created, status_code=201)

    @app.get("/gallery", response_class=HTMLResponse, dependencies=[read])
    def gallery(frc: str, night: str, overlay: int = Query(1, ge=0, le=1)):
        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        with _catalogue(site) as conn:
            looks = status.quicklooks(conn, frc, day)
            batch = status.batch_details(conn, frc, day)
        q = urlencode({"frc": frc, "night": day.isoformat()})
        figures = "".join(
            f'<figure><img loading="lazy" alt="{esc(ql.name)}" '
            f'src="quicklook/{quote(frc)}/{day.isoformat()}/{quote(ql.name, safe="")}?overlay={overlay}">'
            f"<figcaption>{esc(ql.date_obs)} — {len(ql.features)} sunspot(s), "
            f'{sum(1 for f in ql.features if f.cc)} contour(s)<br><code>{esc(ql.name)}</code>'
            f"</figcaption></figure>"
            for ql in looks
        ) or "<p>no quicklook in the catalogue for this night</p>"
        if batch is None:
            summary = "not in the catalogue"
        elif batch["status"] == status.NO_DATA:
            summary = f"batch {batch['id']}: no data (the FRC ran and found no observation)"
        else:
            summary = (f"batch {batch['id']} ({batch['status']}), {sum(int(v) for v in batch['row_counts'].values())} "
                       f"rows, {len(batch['rejected'])} problem(s) in rejected files")
        issues = "".join(f"<li>{esc(status.issue_text(i))}</li>" for i in (batch or {}).get("issues", []))
        issues_html = f'<div class="issue" id="issues">not clean:<ul>{issues}</ul></div>' if issues else ""
        body = f"""<p><a href="./">← heat map</a></p><h1>{esc(frc)} — {day.isoformat()}</h1>
<p>{esc(summary)} · <a href="batch/{quote(frc)}/{day.isoformat()}">batch and provenance</a> ·
<a href="archive/{quote(frc)}/{day.isoformat()}">archive folder</a> ·
<a href="gallery?{esc(q)}&amp;overlay={0 if overlay else 1}">{"hide" if overlay else "show"} contours</a></p>
{issues_html}<div class="gallery" id="gallery">{figures}</div>"""
        return _page(f"{frc} {day}", body)

    @app.get("/quicklook/{frc}/{night}/{name}", dependencies=[read])
    def quicklook(frc: str, night: str, name: str, overlay: int = Query(1, ge=0, le=1)):
        from hfc_tasks.provider.hooks import sftp_session

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        try:
            products.check_plain_name(name)
        except products.ProductNameError as exc:
            raise HTTPException(400, str(exc)) from None
        with _catalogue(site) as conn:
            path = status.quicklook_path(conn, frc, day, name)
            looks = [ql for ql in status.quicklooks(conn, frc, day) if ql.name == name] if path else []
        if path is None:
            raise HTTPException(404, f"{name} is not a quicklook of {frc} {day} in the catalogue")
        try:
            full = status.archive_file(site.archive_root, path)
        except ValueError as exc:
            raise HTTPException(403, f"{name} of {frc} {day}: the catalogue's {exc}") from None
        try:
            with sftp_session(site.archive_conn_id) as sftp, sftp.open(full, "rb") as f:
                f.prefetch()
                data = f.read()
        except Exception as exc:  # noqa: BLE001 - SSH/SFTP errors of any kind: say which and why
            raise _archive_error(site, exc) from None
        headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"}
        if overlay and looks:
            ql = looks[0]
            try:
                png = status.draw_features(data, ql.features, ql.naxis1, ql.naxis2)
            except Exception as exc:  # noqa: BLE001 - PIL's errors: the file is not an image
                raise HTTPException(502, f"{full} is not an image: {type(exc).__name__}: {exc}") from None
            return Response(png, media_type="image/png", headers=headers)
        media = "image/png" if name.lower().endswith(".png") else "image/jpeg"
        return Response(data, media_type=media, headers=headers)

    @app.get("/batch/{frc}/{night}", response_class=HTMLResponse, dependencies=[read])
    def batch(frc: str, night: str, format: str = Query("html", pattern="^(html|json)$")):
        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        with _catalogue(site) as conn:
            details = status.batch_details(conn, frc, day)
        if format == "json":
            return JSONResponse(details or {"frc": frc, "night": day.isoformat(), "batch": None})
        if details is None:
            return _page(f"{frc} {day}", f'<p><a href="../../">← heat map</a></p><h1>{esc(frc)} {day}</h1>'
                         "<p>no batch: this night of this FRC is not in the catalogue</p>")
        keys = ("id", "status", "frc_version", "product_format", "slurm_job_id", "dag_run_id", "task_try",
                "manifest_sha256", "started_at", "finished_at")
        prov = "".join(f"<tr><th>{k}</th><td><code>{esc(details[k])}</code></td></tr>" for k in keys)
        counts = "".join(f"<tr><td>{esc(t)}</td><td>{esc(n)}</td></tr>" for t, n in details["row_counts"].items())
        files = "".join(
            f"<tr><td><code>{esc(f['name'])}</code></td><td>{esc(f['kind'])}</td><td>{esc(f['rows'])}</td>"
            f"<td><code>{esc(str(f['sha256'])[:16])}…</code></td></tr>" for f in details["files"])
        rejected = "".join(
            f"<tr><td><code>{esc(r['file'])}</code></td><td>{esc(r['line'])}</td>"
            f"<td>{esc(r['column'])}</td><td>{esc(r['reason'])}</td></tr>"
            for r in details["rejected"]) or "<tr><td>none</td></tr>"
        issues = "".join(f"<tr><td>{esc(status.issue_text(i))}</td></tr>" for i in details["issues"])
        no_data = ("<p class=\"issue\">no data: the FRC ran and found no observation this night</p>"
                   if details["status"] == status.NO_DATA else "")
        gallery_href = f"../../gallery?{urlencode({'frc': frc, 'night': day.isoformat()})}"
        body = f"""<p><a href="../../">← heat map</a> · <a href="{esc(gallery_href)}">quicklooks</a></p>
<h1>Batch {esc(details['id'])}: {esc(frc)} {day}</h1>{no_data}<table class="t">{prov}</table>
<h2>Issues ({"not clean" if issues else "clean"})</h2>
<table class="t" id="issues">{issues or "<tr><td>none</td></tr>"}</table>
<h2>Rows per table</h2><table class="t">{counts}</table>
<h2>Rejected files</h2><table class="t">{rejected}</table>
<h2>Files ({len(details['files'])})</h2><table class="t">{files}</table>"""
        return _page(f"batch {frc} {day}", body)

    @app.get("/archive/{frc}/{night}", response_class=HTMLResponse, dependencies=[read])
    def archive(frc: str, night: str):
        from hfc_tasks.manifest import find as find_manifest
        from hfc_tasks.provider.hooks import sftp_session

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        try:
            with sftp_session(site.archive_conn_id) as sftp:
                path, raw = find_manifest(sftp, site.archive_root, frc, reg.frc(frc).archive_dir, day)
        except Exception as exc:  # noqa: BLE001 - SSH/SFTP errors of any kind: say which and why
            raise _archive_error(site, exc) from None
        title = f"archive {frc} {day}"
        if raw is None:
            return _page(title, f"<h1>{esc(frc)} {day}</h1><p>no manifest at <code>{esc(path)}</code>: "
                                "not archived</p>")
        try:
            manifest = json.loads(raw.decode("utf-8"))
            entries = manifest.get("files", [])
            if not isinstance(entries, list):
                raise ValueError(f"'files' is a {type(entries).__name__}, not a list")
        except (ValueError, AttributeError) as exc:
            return _page(title, f'<h1>{esc(frc)} {day}</h1><p class="problem">the manifest <code>{esc(path)}</code> '
                                f"is not a valid manifest: {esc(exc)}</p>")
        rows = "".join(_manifest_row(e, site.archive_root, site.public_url_base) for e in entries)
        # What the archive stage noted beside the files (docs/catalogue.md): files left on the
        # cluster, and an earlier job's files (kept on the archive, not loaded).
        unmatched = "".join(f"<li>{esc(status.issue_text({'issue': 'unmatched', 'name': n}))}</li>"
                            for n in _list(manifest.get("unmatched")))
        stale = "".join(_manifest_row(e, site.archive_root, site.public_url_base)
                        for e in _list(manifest.get("stale")))
        issues_html = (f'<div class="issue" id="issues">not clean: left on the cluster (no HFC product name):'
                       f"<ul>{unmatched}</ul></div>" if unmatched else "")
        if stale:
            issues_html += ('<h2>Stale: files of an earlier job of the night (kept on the archive, not loaded)</h2>'
                            '<table class="t" id="stale"><tr><th>file</th><th>kind</th><th>bytes</th>'
                            f"<th>public URL</th></tr>{stale}</table>")
        no_data = ('<p class="issue" id="no-data">no data: the FRC ran and found no observation this night</p>'
                   if manifest.get("no_data") is True else "")
        body = f"""<p><a href="../../">← heat map</a></p><h1>Archive: {esc(frc)} {day}</h1>
<p>manifest <code>{esc(path)}</code>, {len(entries)} files, public base <code>{esc(site.public_url_base)}</code></p>
{no_data}<table class="t"><tr><th>file</th><th>kind</th><th>bytes</th><th>public URL</th></tr>{rows}</table>
{issues_html}"""
        return _page(title, body)

    @app.get("/job-output/{frc}/{night}", response_class=PlainTextResponse, dependencies=[read_logs])
    def job_output(frc: str, night: str, job_id: str | None = None, lines: int = Query(200, ge=1, le=5000)):
        from hfc_tasks.provider.hooks import SlurmHook

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        if job_id is not None and not _JOB_ID.match(job_id):
            raise HTTPException(400, f"job id {job_id[:40]!r} is not a SLURM job id (digits, or digits_digits)")
        if not job_id:
            with _catalogue(site) as conn:
                details = status.batch_details(conn, frc, day)
            job_id = details and details.get("slurm_job_id")
        if not job_id or not _JOB_ID.match(str(job_id)):
            raise HTTPException(404, f"no SLURM job id known for {frc} {day} (give ?job_id=)")
        path = products.output_path(site.products_root, frc, day, str(job_id))
        try:
            hook = SlurmHook(site.cluster_conn_id)
            try:
                text = hook.tail(path, lines)
            finally:
                hook.close()
        except Exception as exc:  # noqa: BLE001 - SSH errors of any kind: say which and why
            raise HTTPException(502, f"cluster (connection {site.cluster_conn_id}) cannot be read: "
                                     f"{type(exc).__name__}: {exc}") from None
        return PlainTextResponse(f"# {path} (last {lines} lines)\n{text}", headers=SECURITY_HEADERS)

    return app


def _list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]
