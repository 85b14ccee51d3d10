"""What every route of the status page needs: the registry, the catalogue, Airflow's REST API
with the user's token, and the checks of a night and an FRC name (400/404 with the reason)."""

from __future__ import annotations

import datetime as dt
import os

from fastapi import HTTPException, Request

from hfc_tasks import status
from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.provider.status_app.security import user_token
from hfc_tasks.registry import FRC_NAME, load_registry


def api_base() -> str:
    """Where this api-server answers its own REST API (loopback by default)."""
    if os.environ.get("HFC_STATUS_API_URL"):
        return os.environ["HFC_STATUS_API_URL"]
    from airflow.configuration import conf

    return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"


def api(request: Request) -> AirflowAPI:
    """Airflow's REST API as the user who asked (their own token, never a service account)."""
    return AirflowAPI(api_base(), token=user_token(request), timeout=30)


def registry():
    reg = load_registry()
    return reg, reg.site()


def catalogue(site):
    from hfc_tasks.provider.catalogue_db import catalogue_connect

    try:
        return catalogue_connect(site.catalogue_conn_id)
    except Exception as exc:  # noqa: BLE001 - any driver error: the page says which connection
        raise HTTPException(503, f"catalogue (connection {site.catalogue_conn_id}) cannot be reached: "
                                 f"{type(exc).__name__}: {exc}") from None


def night(text: str) -> dt.date:
    try:
        return status.check_night(text)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def check_frc(reg, frc: str) -> str:
    if not isinstance(frc, str) or not FRC_NAME.match(frc):
        raise HTTPException(400, f"FRC name {frc!r} must match [a-z0-9][a-z0-9-]*")
    if frc not in {f.name for f in reg.frcs}:
        raise HTTPException(404, f"no FRC {frc!r} in the registry")
    return frc


def archive_error(site, exc: Exception) -> HTTPException:
    return HTTPException(502, f"archive (connection {site.archive_conn_id}) cannot be read: "
                              f"{type(exc).__name__}: {exc}")


def load_heatmap(request: Request, first: str | None, last: str | None):
    """``(registry, heat map, problems)`` of the nights asked for; what could not be read (the
    catalogue, the API) is listed in ``problems`` rather than failing the page."""
    try:
        f, la = status.query_range(first, last)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    reg, site = registry()
    conn = None
    try:
        conn = catalogue(site)
    except HTTPException as exc:
        problem = exc.detail
    else:
        problem = None
    try:
        heat, problems = status.heatmap_for(conn, api(request), [f.name for f in reg.enabled_frcs], f, la)
    finally:
        if conn is not None:
            conn.close()
    if problem:
        problems.insert(0, problem)
    return reg, heat, problems
