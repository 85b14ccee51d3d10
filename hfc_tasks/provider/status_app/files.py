"""What the page reads from the archive and the cluster: a quicklook (contours drawn), the
night's manifest, the tail of the SLURM job's output. Only paths the catalogue or the registry
give are read (:func:`hfc_tasks.status.archive_file`, :func:`hfc_tasks.gallery.quicklook_path`,
:func:`hfc_tasks.products.output_path`), never one a browser gives."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from hfc_tasks import gallery, products, status
from hfc_tasks.provider.status_app import common
from hfc_tasks.provider.status_app.render import esc, manifest_row, page
from hfc_tasks.provider.status_app.security import READ, READ_LOGS, SECURITY_HEADERS

router = APIRouter()
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


@router.get("/quicklook/{frc}/{night}/{name}", dependencies=[READ])
def quicklook(frc: str, night: str, name: str, overlay: int = Query(1, ge=0, le=1)):
    from hfc_tasks.provider.hooks import sftp_session

    reg, site = common.registry()
    common.check_frc(reg, frc)
    day = common.night(night)
    try:
        products.check_plain_name(name)
    except products.ProductNameError as exc:
        raise HTTPException(400, str(exc)) from None
    with common.catalogue(site) as conn:
        path = gallery.quicklook_path(conn, frc, day, name)
        looks = [ql for ql in gallery.quicklooks(conn, frc, day) if ql.name == name] if path else []
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
        raise common.archive_error(site, exc) from None
    headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"}
    if overlay and looks:
        ql = looks[0]
        try:
            png = gallery.draw_features(data, ql.features, ql.naxis1, ql.naxis2)
        except Exception as exc:  # noqa: BLE001 - PIL's errors: the file is not an image
            raise HTTPException(502, f"{full} is not an image: {type(exc).__name__}: {exc}") from None
        return Response(png, media_type="image/png", headers=headers)
    media = "image/png" if name.lower().endswith(".png") else "image/jpeg"
    return Response(data, media_type=media, headers=headers)


@router.get("/archive/{frc}/{night}", response_class=HTMLResponse, dependencies=[READ])
def archive(frc: str, night: str):
    from hfc_tasks.manifest import find as find_manifest
    from hfc_tasks.provider.hooks import sftp_session

    reg, site = common.registry()
    common.check_frc(reg, frc)
    day = common.night(night)
    try:
        with sftp_session(site.archive_conn_id) as sftp:
            path, raw = find_manifest(sftp, site.archive_root, frc, reg.frc(frc).archive_dir, day)
    except Exception as exc:  # noqa: BLE001 - SSH/SFTP errors of any kind: say which and why
        raise common.archive_error(site, exc) from None
    title = f"archive {frc} {day}"
    if raw is None:
        return page(title, f"<h1>{esc(frc)} {day}</h1><p>no manifest at <code>{esc(path)}</code>: "
                            "not archived</p>")
    try:
        manifest = json.loads(raw.decode("utf-8"))
        entries = manifest.get("files", [])
        if not isinstance(entries, list):
            raise ValueError(f"'files' is a {type(entries).__name__}, not a list")
    except (ValueError, AttributeError) as exc:
        return page(title, f'<h1>{esc(frc)} {day}</h1><p class="problem">the manifest <code>{esc(path)}</code> '
                            f"is not a valid manifest: {esc(exc)}</p>")
    rows = "".join(manifest_row(e, site.archive_root, site.public_url_base) for e in entries)
    # What the archive stage noted beside the files (docs/catalogue.md): files left on the
    # cluster, and an earlier job's files (kept on the archive, not loaded).
    unmatched = "".join(f"<li>{esc(status.issue_text({'issue': 'unmatched', 'name': n}))}</li>"
                        for n in _list(manifest.get("unmatched")))
    stale = "".join(manifest_row(e, site.archive_root, site.public_url_base)
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
    return page(title, body)


@router.get("/job-output/{frc}/{night}", response_class=PlainTextResponse, dependencies=[READ_LOGS])
def job_output(frc: str, night: str, job_id: str | None = None, lines: int = Query(200, ge=1, le=5000)):
    from hfc_tasks.provider.hooks import SlurmHook

    reg, site = common.registry()
    common.check_frc(reg, frc)
    day = common.night(night)
    if job_id is not None and not _JOB_ID.match(job_id):
        raise HTTPException(400, f"job id {job_id[:40]!r} is not a SLURM job id (digits, or digits_digits)")
    if not job_id:
        with common.catalogue(site) as conn:
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


def _list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]
