"""The HTML pages: the heat map FRC x night with its gaps and backfill buttons, a night's
quicklook gallery, a batch with its provenance."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from hfc_tasks import gallery, status
from hfc_tasks.airflow_api import ApiError
from hfc_tasks.provider.status_app import common
from hfc_tasks.provider.status_app.render import COLOURS, LABELS, cell_html, esc, page
from hfc_tasks.provider.status_app.security import READ

router = APIRouter()


@router.get("/", response_class=HTMLResponse, dependencies=[READ])
def index(request: Request, first: str | None = None, last: str | None = None):
    _, heat, problems = common.load_heatmap(request, first, last)
    gaps = status.find_gaps(heat)
    api = common.api(request)
    try:
        backfills = [b for b in api.backfills(status.DAG_ID) if not b.get("completed_at")]
    except (ApiError, OSError) as exc:
        backfills, problems = [], [*problems, f"backfills: {exc}"]
    counts = heat.counts()
    unclean = sum(1 for c in heat.cells.values() if not c.clean)
    head = "".join(f'<th class="n">{esc(n)}</th>' for n in heat.nights)
    rows = "".join(
        f'<tr><th style="text-align:right;padding-right:6px">{esc(frc)}</th>'
        + "".join(cell_html(heat.cell(frc, n)) for n in heat.nights) + "</tr>"
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
<p><a href="campaigns" id="campaigns-link">Reprocessing campaigns</a></p>
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
    return page("HFC catalogue", body, script)


@router.get("/gallery", response_class=HTMLResponse, dependencies=[READ])
def gallery_page(frc: str, night: str, overlay: int = Query(1, ge=0, le=1)):
    reg, site = common.registry()
    common.check_frc(reg, frc)
    day = common.night(night)
    with common.catalogue(site) as conn:
        looks = gallery.quicklooks(conn, frc, day)
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
    return page(f"{frc} {day}", body)


@router.get("/batch/{frc}/{night}", response_class=HTMLResponse, dependencies=[READ])
def batch(frc: str, night: str, format: str = Query("html", pattern="^(html|json)$")):
    reg, site = common.registry()
    common.check_frc(reg, frc)
    day = common.night(night)
    with common.catalogue(site) as conn:
        details = status.batch_details(conn, frc, day)
    if format == "json":
        return JSONResponse(details or {"frc": frc, "night": day.isoformat(), "batch": None})
    if details is None:
        return page(f"{frc} {day}", f'<p><a href="../../">← heat map</a></p><h1>{esc(frc)} {day}</h1>'
                     "<p>no batch: this night of this FRC is not in the catalogue</p>")
    keys = ("id", "status", "frc_version", "product_format", "slurm_job_id", "dag_run_id", "task_try",
            "manifest_sha256", "started_at", "finished_at")
    prov = "".join(f"<tr><th>{k}</th><td><code>{esc(details[k])}</code></td></tr>" for k in keys)
    counts = "".join(f"<tr><td>{esc(t)}</td><td>{esc(n)}</td></tr>" for t, n in details["row_counts"].items())
    files = "".join(
        f"<tr><td><code>{esc(f['name'])}</code></td><td>{esc(f['kind'])}</td><td>{esc(f['rows'])}</td>"
        f"<td><code>{esc(str(f['sha256'])[:16])}…</code></td></tr>" for f in details["files"])
    # One row per column and kind of problem first (28 rows with one NULL: one line), then every
    # stored problem, per file.
    groups = "".join(
        f"<tr><td>{esc(g['columns_text'])}</td><td>{esc(g['what'])}</td>"
        f"<td>{esc(g['count'])}</td><td>{esc(g['where'])}</td></tr>"
        for g in details.get("rejected_groups", [])) or "<tr><td>none</td></tr>"
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
<h2>Rejections by column</h2><table class="t" id="rejections-by-column">
<tr><th>column</th><th>problem</th><th>how many</th><th>where</th></tr>{groups}</table>
<h2>Rejected files</h2><table class="t" id="rejected-files">{rejected}</table>
<h2>Files ({len(details['files'])})</h2><table class="t">{files}</table>"""
    return page(f"batch {frc} {day}", body)
