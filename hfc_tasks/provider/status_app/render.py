"""HTML of the status page: the page frame (its style and Content-Security-Policy), a heat-map
cell, a manifest row. Every string from a manifest, an FRC file or the catalogue goes through
:func:`esc`."""

from __future__ import annotations

import html
import json
import secrets
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse

from hfc_tasks import products, status
from hfc_tasks.provider.status_app.security import SECURITY_HEADERS

COLOURS = {"loaded": "#2e9d4f", "not_clean": "#8b5cf6", "rejected": "#e0a100", "no_data": "#5b8fa8",
           "running": "#3b82f6", "failed": "#d6333a", "missing": "#c9ccd1"}
LABELS = {"loaded": "loaded", "not_clean": "not clean", "rejected": "rejected", "no_data": "no data",
          "running": "running", "failed": "failed", "missing": "missing"}


def esc(value) -> str:
    """Any value as HTML text (None as empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def page(title: str, body: str, script: str = "") -> HTMLResponse:
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


def short(n: int) -> str:
    return str(n) if n < 1000 else f"{n / 1000:.0f}k" if n < 1_000_000 else f"{n / 1e6:.0f}M"


def cell_html(cell: status.Cell) -> str:
    label = {"loaded": short(cell.rows), "not_clean": f"{short(cell.rows)}!", "rejected": f"R{cell.rejected_files}",
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


def manifest_row(entry, archive_root: str, public_url_base: str) -> str:
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
