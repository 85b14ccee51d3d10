"""The JSON API: the heat map and its gaps, and ``POST api/backfill`` (same-origin JSON, the
user's right to create runs of the DAG; the backfill is created with the user's own token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hfc_tasks import status
from hfc_tasks.airflow_api import ApiError
from hfc_tasks.provider.status_app import common
from hfc_tasks.provider.status_app.security import CREATE_RUNS, READ, same_origin_json

router = APIRouter()


@router.get("/api/heatmap", dependencies=[READ])
def api_heatmap(request: Request, first: str | None = None, last: str | None = None):
    _, heat, problems = common.load_heatmap(request, first, last)
    return {**heat.to_dict(), "problems": problems}


@router.get("/api/gaps", dependencies=[READ])
def api_gaps(request: Request, first: str | None = None, last: str | None = None):
    _, heat, problems = common.load_heatmap(request, first, last)
    return {"gaps": [g.to_dict() for g in status.find_gaps(heat)], "problems": problems}


@router.post("/api/backfill", dependencies=[Depends(same_origin_json), CREATE_RUNS])
async def api_backfill(request: Request):
    # The checks above ran first (origin, JSON, the auth manager); only then is the body read.
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be an object {first, last[, frcs, reprocess_behavior]}")
    try:
        first, last = common.night(str(body["first"])), common.night(str(body["last"]))
    except KeyError as exc:
        raise HTTPException(400, f"body must be {{first, last[, frcs, reprocess_behavior]}}: no {exc}") from None
    if last < first:
        raise HTTPException(400, f"first night {first} is after last night {last}")
    reg, _ = common.registry()
    frcs = body.get("frcs") or []
    if not isinstance(frcs, list):
        raise HTTPException(400, "frcs must be a list of FRC names")
    frcs = [common.check_frc(reg, f) for f in frcs]
    behaviour = body.get("reprocess_behavior") or "none"
    if behaviour not in ("none", "failed", "completed"):
        raise HTTPException(400, f"reprocess_behavior {str(behaviour)[:40]!r} is not none, failed or completed")
    gap = status.Gap(first=first.isoformat(), last=last.isoformat(), frcs=frcs,
                     nights=(last - first).days + 1, reprocess_behavior=behaviour)
    api = common.api(request)

    def create():
        params = api.dag_params(status.DAG_ID)
        return api.create_backfill(status.backfill_body(gap, dag_params=params))

    # The REST calls go back into this same api-server: never on the event loop that answers them.
    try:
        created = await run_in_threadpool(create)
    except ApiError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)
    return JSONResponse(created, status_code=201)
