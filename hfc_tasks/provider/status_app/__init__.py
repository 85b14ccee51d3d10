"""The catalogue status page: a FastAPI app served by Airflow's api-server (``plugins/hfc_status.py``).

Mounted at ``/hfc-status`` and shown in the UI's navigation ("HFC catalogue"). The logic lives in
:mod:`hfc_tasks.status` and :mod:`hfc_tasks.gallery`; this package only turns it into HTML/JSON/PNG,
and guards it (:mod:`.security`):

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

Routes (relative, so the app works under any base URL), by module:

    pages.py   /                                  heat map FRC x night, gaps with a backfill button
               /gallery?frc=F&night=N             the night's quicklooks, catalogue contours drawn
               /batch/F/N                         the batch: provenance, files, rejected files, issues
    files.py   /quicklook/F/N/NAME[?overlay=0]    one quicklook, read from the archive over SFTP
               /archive/F/N                       the night's manifest on the archive
               /job-output/F/N?job_id=J           the tail of the SLURM job's output file on the cluster
    api.py     /api/heatmap, /api/gaps            JSON;  POST /api/backfill  {first, last, frcs?}
    campaigns.py /campaigns, /api/campaigns       reprocessing campaigns: nights done / failed / pending,
                                                  ETA, failed nights with their reason (DAG hfc_campaign)

``common.py`` holds what every route needs (registry, catalogue, the REST client with the user's
token, the checks of a night and an FRC), ``render.py`` the HTML frame and fragments.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hfc_tasks.provider.status_app import api, campaigns, files, pages
from hfc_tasks.provider.status_app.security import SECURITY_HEADERS, RequireAirflowUser

PREFIX = "/hfc-status"


async def http_error(request: Request, exc: StarletteHTTPException):
    """FastAPI's HTTPException and the 404/405 of routing, with the security headers."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers={**SECURITY_HEADERS, **(exc.headers or {})})


async def bad_request(request: Request, exc: RequestValidationError):
    """A parameter FastAPI cannot read: 400 with the reason (not FastAPI's 422)."""
    reasons = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x not in ('query', 'path', 'body'))}: "
                        f"{e.get('msg')}" for e in exc.errors())
    return JSONResponse({"detail": f"bad request: {reasons}"}, status_code=400, headers=SECURITY_HEADERS)


def create_app() -> FastAPI:
    # No public docs: the middleware would answer 401 to them anyway, and an operator's page
    # has no use for Swagger (the JSON routes are listed in this module's docstring).
    app = FastAPI(title="HFC catalogue status", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequireAirflowUser)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    for module in (pages, api, files, campaigns):
        app.include_router(module.router)
    return app
