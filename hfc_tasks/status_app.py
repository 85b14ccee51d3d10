"""The catalogue status page: a FastAPI app served by Airflow's api-server (``plugins/hfc_status.py``).

Mounted at ``/hfc-status`` and shown in the UI's navigation ("HFC catalogue"). Every route needs
a logged-in Airflow user (the UI's ``_token`` cookie or a bearer token); what the page reads from
Airflow and the backfills it creates go through Airflow's public REST API *with that user's
token*, so Airflow's own authorisation decides (a viewer sees the page but cannot backfill).
The logic lives in :mod:`hfc_tasks.status`; this module only turns it into HTML/JSON/PNG.

Routes (relative, so the app works under any base URL):

    /                                  heat map FRC x night, gaps with a backfill button
    /gallery?frc=F&night=N             the night's quicklooks, catalogue contours drawn
    /quicklook/F/N/NAME[?overlay=0]    one quicklook, read from the archive over SFTP
    /batch/F/N                         the batch: provenance, files, rejected files
    /archive/F/N                       the night's manifest on the archive
    /job-output/F/N?job_id=J           the tail of the SLURM job's output file on the cluster
    /api/heatmap, /api/gaps            JSON;  POST /api/backfill  {first, last, frcs?}
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import posixpath
import re
from urllib.parse import quote, urlencode

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from hfc_tasks import products, status
from hfc_tasks.registry import load_registry

PREFIX = "/hfc-status"
COLOURS = {"loaded": "#2e9d4f", "rejected": "#e0a100", "running": "#3b82f6", "failed": "#d6333a",
           "missing": "#c9ccd1"}
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


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
    from hfc_tasks.hooks import catalogue_connect

    return catalogue_connect(site.catalogue_conn_id)


def _night(text: str) -> dt.date:
    try:
        return products.parse_night(text)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _check_frc(reg, frc: str) -> str:
    if frc not in {f.name for f in reg.frcs}:
        raise HTTPException(404, f"no FRC {frc!r} in the registry")
    return frc


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:16px;color:#1f2328}} h1{{font-size:20px;margin:0 0 8px}}
h2{{font-size:16px;margin:18px 0 6px}} table.hm{{border-collapse:separate;border-spacing:2px}}
table.hm td.c{{width:26px;height:24px;text-align:center;font-size:10px;color:#fff;border-radius:3px}}
table.hm td.c a{{color:#fff;text-decoration:none;display:block}} table.hm th{{font-weight:normal;font-size:11px}}
th.n{{writing-mode:vertical-rl;transform:rotate(180deg);height:70px}} .legend span{{padding:2px 8px;
border-radius:3px;color:#fff;margin-right:4px}} .problem{{background:#fde2e1;padding:6px 10px;border-radius:4px}}
.gallery{{display:flex;flex-wrap:wrap;gap:10px}} .gallery figure{{margin:0;width:260px}}
.gallery img{{width:256px;height:256px;border:1px solid #888;background:#000}}
figcaption{{font-size:12px;overflow-wrap:anywhere}}
table.t td,table.t th{{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left;font-size:12px}}
button{{cursor:pointer}} .msg{{margin-left:8px;font-weight:600}} code{{font-size:12px}}
</style></head><body>{body}</body></html>""")


def _cell_html(cell: status.Cell) -> str:
    label = {"loaded": _short(cell.rows), "rejected": f"R{cell.rejected_files}", "running": "…",
             "failed": "✕", "missing": ""}[cell.state]
    tip = f"{cell.frc} {cell.night}: {cell.state}"
    if cell.batch_id:
        tip += f", {cell.rows} rows, {cell.rejected_files} rejected file(s), batch {cell.batch_id}"
    if cell.run_id:
        tip += f"; run {cell.run_id} ({cell.run_state}): " + ", ".join(f"{k} {v}" for k, v in cell.tasks.items())
    href = f"gallery?{urlencode({'frc': cell.frc, 'night': cell.night})}"
    return (f'<td class="c" data-frc="{html.escape(cell.frc)}" data-night="{cell.night}" data-state="{cell.state}" '
            f'style="background:{COLOURS[cell.state]}" title="{html.escape(tip)}">'
            f'<a href="{html.escape(href)}">{html.escape(label)}</a></td>')


def _short(n: int) -> str:
    return str(n) if n < 1000 else f"{n / 1000:.0f}k" if n < 1_000_000 else f"{n / 1e6:.0f}M"


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import get_user

    app = FastAPI(title="HFC catalogue status", dependencies=[Depends(get_user)])

    def load(request: Request, first: str | None, last: str | None):
        reg, site = _registry()
        d_first, d_last = status.default_range()
        f = _night(first) if first else d_first
        la = _night(last) if last else d_last
        if (la - f).days > 366:
            raise HTTPException(400, "at most 366 nights at once")
        conn = None
        try:
            conn = _catalogue(site)
        except Exception as exc:  # noqa: BLE001 - shown on the page
            problem = f"catalogue: {type(exc).__name__}: {exc}"
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

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        gaps = status.find_gaps(heat)
        api = _api(request)
        try:
            backfills = [b for b in api.backfills(status.DAG_ID) if not b.get("completed_at")]
        except (status.ApiError, OSError) as exc:
            backfills, problems = [], [*problems, f"backfills: {exc}"]
        counts = heat.counts()
        head = "".join(f'<th class="n">{n}</th>' for n in heat.nights)
        rows = "".join(
            f'<tr><th style="text-align:right;padding-right:6px">{html.escape(frc)}</th>'
            + "".join(_cell_html(heat.cell(frc, n)) for n in heat.nights) + "</tr>"
            for frc in heat.frcs
        )
        gap_items = "".join(
            f'<li class="gap" data-first="{g.first}" data-last="{g.last}">{g.first} → {g.last} '
            f'({g.nights} night{"s" if g.nights > 1 else ""}; {html.escape(", ".join(g.frcs))}) '
            f'<button class="backfill" data-first="{g.first}" data-last="{g.last}" '
            f"data-frcs='{html.escape(json.dumps(g.frcs))}' data-reprocess=\"{g.reprocess_behavior}\">"
            f'Backfill</button><span class="msg"></span></li>'
            for g in gaps
        ) or "<li>no gap: every FRC has every night of the range</li>"
        bf_items = "".join(
            f'<li class="active-backfill">#{b["id"]} {b["from_date"][:10]} → {b["to_date"][:10]} '
            f'({"paused" if b.get("is_paused") else "running"}, '
            f'conf {html.escape(json.dumps(b.get("dag_run_conf") or {}))})</li>'
            for b in backfills
        )
        problem_html = "".join(f'<p class="problem">{html.escape(p)}</p>' for p in problems)
        legend = "".join(f'<span style="background:{c}">{s} {counts[s]}</span>' for s, c in COLOURS.items())
        body = f"""<h1>HFC catalogue: nights × FRCs</h1>
{problem_html}
<form method="get">Nights <input name="first" value="{heat.nights[0]}" size="10"> to
<input name="last" value="{heat.nights[-1]}" size="10"> <button>Show</button></form>
<p class="legend">{legend}</p>
<table class="hm" id="heatmap"><tr><th></th>{head}</tr>{rows}</table>
<p style="font-size:12px">A cell: rows in the catalogue (green), R<i>n</i> = files rejected (amber), running (blue),
failed (red), missing (grey). Click it for the night's quicklooks and batch.</p>
<h2>Gaps</h2><ul id="gaps">{gap_items}</ul>
<h2>Backfills in progress</h2><ul id="backfills">{bf_items or "<li>none</li>"}</ul>
<script>
document.querySelectorAll('button.backfill').forEach(b => b.addEventListener('click', async () => {{
  const msg = b.nextElementSibling; b.disabled = true; msg.textContent = 'requesting…';
  const r = await fetch('api/backfill', {{method: 'POST', credentials: 'same-origin',
    headers: {{'Content-Type': 'application/json'}},
    body: JSON.stringify({{first: b.dataset.first, last: b.dataset.last, frcs: JSON.parse(b.dataset.frcs),
                          reprocess_behavior: b.dataset.reprocess}})}});
  const j = await r.json();
  if (r.ok) {{ msg.textContent = 'backfill #' + j.id + ' created'; msg.style.color = '#2e9d4f'; }}
  else {{ msg.textContent = 'refused: ' + (j.detail || r.status); msg.style.color = '#d6333a'; b.disabled = false; }}
}}));
</script>"""
        return _page("HFC catalogue", body)

    @app.get("/api/heatmap")
    def api_heatmap(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        return {**heat.to_dict(), "problems": problems}

    @app.get("/api/gaps")
    def api_gaps(request: Request, first: str | None = None, last: str | None = None):
        _, heat, problems = load(request, first, last)
        return {"gaps": [g.to_dict() for g in status.find_gaps(heat)], "problems": problems}

    @app.post("/api/backfill")
    def api_backfill(request: Request, body: dict = Body(...)):  # noqa: B008 - FastAPI's idiom
        # A plain (sync) route: it runs in the thread pool, so its call back into this same
        # api-server (the REST API) never blocks the event loop that must answer it.
        try:
            first, last = _night(str(body["first"])), _night(str(body["last"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise HTTPException(400, f"body must be {{first, last[, frcs, reprocess_behavior]}}: {exc}") from None
        reg, _ = _registry()
        frcs = [_check_frc(reg, f) for f in body.get("frcs") or []]
        behaviour = body.get("reprocess_behavior") or "none"
        if behaviour not in ("none", "failed", "completed"):
            raise HTTPException(400, f"reprocess_behavior {behaviour!r} is not none, failed or completed")
        gap = status.Gap(first=first.isoformat(), last=last.isoformat(), frcs=frcs,
                         nights=(last - first).days + 1, reprocess_behavior=behaviour)
        api = _api(request)
        try:
            params = api.dag_params(status.DAG_ID)
            created = api.create_backfill(status.backfill_body(gap, dag_params=params))
        except status.ApiError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return JSONResponse(created, status_code=201)

    @app.get("/gallery", response_class=HTMLResponse)
    def gallery(frc: str, night: str, overlay: int = 1):
        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        with _catalogue(site) as conn:
            looks = status.quicklooks(conn, frc, day)
            batch = status.batch_details(conn, frc, day)
        q = urlencode({"frc": frc, "night": day.isoformat()})
        figures = "".join(
            f'<figure><img loading="lazy" alt="{html.escape(ql.name)}" '
            f'src="quicklook/{quote(frc)}/{day.isoformat()}/{quote(ql.name)}?overlay={overlay}">'
            f"<figcaption>{html.escape(ql.date_obs)} — {len(ql.features)} sunspot(s), "
            f'{sum(1 for f in ql.features if f.cc)} contour(s)<br><code>{html.escape(ql.name)}</code>'
            f"</figcaption></figure>"
            for ql in looks
        ) or "<p>no quicklook in the catalogue for this night</p>"
        summary = (f"batch {batch['id']} ({batch['status']}), {sum(batch['row_counts'].values())} rows, "
                   f"{len(batch['rejected'])} problem(s) in rejected files" if batch else "not in the catalogue")
        body = f"""<p><a href="./">← heat map</a></p><h1>{html.escape(frc)} — {day.isoformat()}</h1>
<p>{html.escape(summary)} · <a href="batch/{quote(frc)}/{day.isoformat()}">batch and provenance</a> ·
<a href="archive/{quote(frc)}/{day.isoformat()}">archive folder</a> ·
<a href="gallery?{q}&overlay={0 if overlay else 1}">{"hide" if overlay else "show"} contours</a></p>
<div class="gallery" id="gallery">{figures}</div>"""
        return _page(f"{frc} {day}", body)

    @app.get("/quicklook/{frc}/{night}/{name}")
    def quicklook(frc: str, night: str, name: str, overlay: int = 1):
        from hfc_tasks.hooks import sftp_session

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        try:
            with _catalogue(site) as conn:
                path = status.quicklook_path(conn, frc, day, name)
                looks = [ql for ql in status.quicklooks(conn, frc, day) if ql.name == name] if path else []
        except products.ProductNameError as exc:
            raise HTTPException(400, str(exc)) from None
        if path is None:
            raise HTTPException(404, f"{name} is not a quicklook of {frc} {day} in the catalogue")
        with sftp_session(site.archive_conn_id) as sftp, sftp.open(posixpath.join(site.archive_root, path), "rb") as f:
            f.prefetch()
            data = f.read()
        if overlay and looks:
            ql = looks[0]
            return Response(status.draw_features(data, ql.features, ql.naxis1, ql.naxis2), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=300"})
        media = "image/png" if name.lower().endswith(".png") else "image/jpeg"
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=300"})

    @app.get("/batch/{frc}/{night}", response_class=HTMLResponse)
    def batch(frc: str, night: str, format: str = Query("html", pattern="^(html|json)$")):
        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        with _catalogue(site) as conn:
            details = status.batch_details(conn, frc, day)
        if format == "json":
            return JSONResponse(details or {"frc": frc, "night": day.isoformat(), "batch": None})
        if details is None:
            return _page(f"{frc} {day}", f'<p><a href="../../">← heat map</a></p><h1>{html.escape(frc)} {day}</h1>'
                         "<p>no batch: this night of this FRC is not in the catalogue</p>")
        keys = ("id", "status", "frc_version", "product_format", "slurm_job_id", "dag_run_id", "task_try",
                "manifest_sha256", "started_at", "finished_at")
        prov = "".join(f"<tr><th>{k}</th><td><code>{html.escape(str(details[k]))}</code></td></tr>" for k in keys)
        counts = "".join(f"<tr><td>{html.escape(t)}</td><td>{n}</td></tr>" for t, n in details["row_counts"].items())
        files = "".join(
            f"<tr><td><code>{html.escape(f['name'])}</code></td><td>{f['kind']}</td><td>{f['rows'] or ''}</td>"
            f"<td><code>{f['sha256'][:16]}…</code></td></tr>" for f in details["files"])
        rejected = "".join(
            f"<tr><td><code>{html.escape(r['file'])}</code></td><td>{r['line'] or ''}</td>"
            f"<td>{html.escape(r['column'] or '')}</td><td>{html.escape(r['reason'])}</td></tr>"
            for r in details["rejected"]) or "<tr><td>none</td></tr>"
        gallery_href = f"../../gallery?frc={quote(frc)}&night={day}"
        body = f"""<p><a href="../../">← heat map</a> · <a href="{gallery_href}">quicklooks</a></p>
<h1>Batch {details['id']}: {html.escape(frc)} {day}</h1><table class="t">{prov}</table>
<h2>Rows per table</h2><table class="t">{counts}</table>
<h2>Rejected files</h2><table class="t">{rejected}</table>
<h2>Files ({len(details['files'])})</h2><table class="t">{files}</table>"""
        return _page(f"batch {frc} {day}", body)

    @app.get("/archive/{frc}/{night}", response_class=HTMLResponse)
    def archive(frc: str, night: str):
        from hfc_tasks.hooks import sftp_session
        from hfc_tasks.transfer import read_manifest

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        rel = products.manifest_relpath(reg.frc(frc).archive_dir, frc, day)
        with sftp_session(site.archive_conn_id) as sftp:
            manifest = read_manifest(sftp, posixpath.join(site.archive_root, rel))
        if manifest is None:
            return _page(f"archive {frc} {day}", f"<h1>{html.escape(frc)} {day}</h1><p>no manifest at "
                         f"<code>{html.escape(posixpath.join(site.archive_root, rel))}</code>: not archived</p>")
        rows = "".join(
            f"<tr><td><code>{html.escape(e['name'])}</code></td><td>{e.get('kind', '')}</td>"
            f"<td>{e.get('size', '')}</td>"
            f"<td><code>{html.escape(products.url_join(site.public_url_base, e['archive_path']))}</code></td></tr>"
            for e in manifest.get("files", []))
        body = f"""<p><a href="../../">← heat map</a></p><h1>Archive: {html.escape(frc)} {day}</h1>
<p>manifest <code>{html.escape(posixpath.join(site.archive_root, rel))}</code>,
{len(manifest.get('files', []))} files, public base <code>{html.escape(site.public_url_base)}</code></p>
<table class="t"><tr><th>file</th><th>kind</th><th>bytes</th><th>public URL</th></tr>{rows}</table>"""
        return _page(f"archive {frc} {day}", body)

    @app.get("/job-output/{frc}/{night}", response_class=PlainTextResponse)
    def job_output(frc: str, night: str, job_id: str | None = None, lines: int = Query(200, ge=1, le=5000)):
        from hfc_tasks.hooks import SlurmHook

        reg, site = _registry()
        _check_frc(reg, frc)
        day = _night(night)
        if not job_id:
            with _catalogue(site) as conn:
                details = status.batch_details(conn, frc, day)
            job_id = details and details.get("slurm_job_id")
        if not job_id or not _JOB_ID.match(str(job_id)):
            raise HTTPException(404, f"no SLURM job id known for {frc} {day} (give ?job_id=)")
        path = posixpath.join(products.run_dir(site.products_root, frc, day),
                              f"{products.job_name(frc, day)}.{job_id}.out")
        hook = SlurmHook(site.cluster_conn_id)
        try:
            text = hook.tail(path, lines)
        finally:
            hook.close()
        return PlainTextResponse(f"# {path} (last {lines} lines)\n{text}")

    return app
