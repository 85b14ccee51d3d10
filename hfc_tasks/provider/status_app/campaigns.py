"""The reprocessing campaigns (issue 15): per campaign its FRC, nights, done / failed / cancelled /
running / pending, ETA and failed nights with their reason; as HTML (``/campaigns``) and JSON
(``/api/campaigns``). Runs come from Airflow's REST API with the user's token, array task states
from SLURM over the site's cluster connection, loaded nights from the catalogue
(:func:`hfc_tasks.status.campaigns_overview`); what cannot be read is said on the page."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from hfc_tasks import campaign, status
from hfc_tasks.provider.status_app import common
from hfc_tasks.provider.status_app.render import esc, page
from hfc_tasks.provider.status_app.security import READ_CAMPAIGNS

router = APIRouter()


def _overview(request: Request, limit: int):
    from hfc_tasks.provider.hooks import SlurmHook

    _, site = common.registry()
    problems: list[str] = []
    conn = None
    try:
        conn = common.catalogue(site)
    except HTTPException as exc:
        problems.append(exc.detail)
    hook = None
    try:
        hook = SlurmHook(site.cluster_conn_id)

        def run(command: str) -> str:
            return hook.check(command, what=command.split()[0])

        entries, more = status.campaigns_overview(common.api(request), site, run, conn, limit=limit)
    finally:
        if hook is not None:
            hook.close()
        if conn is not None:
            conn.close()
    return entries, problems + more


def _eta(seconds) -> str:
    return "-" if seconds is None else str(dt.timedelta(seconds=round(seconds)))


def _campaign_html(entry: status.CampaignEntry) -> str:
    cid = esc(entry.campaign_id)
    if entry.status is None:
        what = ""
        if entry.runs is not None:
            c = entry.runs.campaign
            what = f"{esc(c.frc)}, nights {c.first} → {c.last}: "
        return (f'<tr class="campaign" data-campaign="{cid}"><td><code>{cid}</code></td>'
                f'<td colspan="9" class="problem">{what}{esc(entry.error)}</td></tr>')
    st = entry.status
    c = st.campaign
    counts = st.counts
    runs = ", ".join(f"{r.get('dag_run_id')} ({r.get('state')})" for r in entry.runs.runs)
    cells = "".join(f'<td data-count="{s}">{counts[s]}</td>' for s in campaign.NIGHT_STATES)
    row = (f'<tr class="campaign" data-campaign="{cid}"><td><code>{cid}</code></td><td>{esc(c.frc)}'
           f'{"<br>v" + esc(c.version) if c.version else ""}</td>'
           f"<td>{c.first} → {c.last} ({len(st.nights)})</td>{cells}"
           f'<td data-eta="{esc(st.eta_seconds)}">{_eta(st.eta_seconds)}</td>'
           f'<td style="font-size:11px">{esc(runs)}</td></tr>')
    failed = "".join(f'<li data-night="{n}"><b>{n}</b> {esc(why)}</li>' for n, why in st.failed_nights.items())
    extra = ""
    if failed:
        extra += (f'<div class="failed-nights">failed nights (retry: <code>hfc campaign retry {cid} '
                  f"--night …</code>)<ul>{failed}</ul></div>")
    if st.problems:
        extra += "".join(f'<p class="problem">{esc(p)}</p>' for p in st.problems)
    if extra:
        row += f'<tr class="details" data-campaign="{cid}"><td></td><td colspan="9">{extra}</td></tr>'
    return row


@router.get("/campaigns", response_class=HTMLResponse, dependencies=[READ_CAMPAIGNS])
def campaigns_page(request: Request, limit: int = Query(20, ge=1, le=200)):
    entries, problems = _overview(request, limit)
    head = "".join(f"<th>{s}</th>" for s in campaign.NIGHT_STATES)
    rows = "".join(_campaign_html(e) for e in entries) or (
        '<tr><td colspan="10">no campaign yet: start one with <code>hfc campaign start</code> or by '
        "triggering DAG hfc_campaign</td></tr>")
    problem_html = "".join(f'<p class="problem">{esc(p)}</p>' for p in problems)
    body = f"""<p><a href="./">← heat map</a></p><h1>Reprocessing campaigns</h1>
{problem_html}
<table class="t" id="campaigns"><tr><th>campaign</th><th>FRC</th><th>nights</th>{head}<th>ETA</th>
<th>runs</th></tr>{rows}</table>
<p style="font-size:12px">Nights: done = in the catalogue from a run of the campaign; failed = the array
task failed (its reason), or it completed and the night did not reach the catalogue once the runs ended;
running = the task runs, or it completed and archive/catalogue are to come; pending = queued or not
submitted yet. ETA: the SLURM work left, from the mean run time of the done nights.</p>"""
    return page("HFC campaigns", body)


@router.get("/api/campaigns", dependencies=[READ_CAMPAIGNS])
def api_campaigns(request: Request, limit: int = Query(20, ge=1, le=200)):
    entries, problems = _overview(request, limit)
    return {"campaigns": [e.to_dict() for e in entries], "problems": problems}
