"""Who may read the status page and who may create backfills from it.

* :class:`RequireAirflowUser` (middleware): no request, whatever its path, reaches the app
  without a logged-in Airflow user;
* :data:`READ`, :data:`READ_LOGS`, :data:`CREATE_RUNS` (route dependencies): Airflow's auth
  manager must allow reading the DAG, reading its task logs, creating runs of it;
* :func:`same_origin_json`: a state-changing request comes from the api-server's own origin,
  with a JSON body;
* :func:`user_token`: the user's own token, with which the page calls Airflow's REST API.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from hfc_tasks import status

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "Cache-Control": "private, no-store"}


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


def requires_dag(method: str, entity: str | None, what: str, dag_id: str = status.DAG_ID):
    """A dependency: Airflow's auth manager must allow ``method`` on the DAG (and ``entity``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    check = requires_access_dag(method, DagAccessEntity[entity] if entity else None, dag_id)

    def dependency(request: Request, user=Depends(get_user)):  # noqa: B008 - FastAPI's idiom
        try:
            check(request, user)
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            raise HTTPException(403, f"Airflow's auth manager refused: user {_user_name(user)} may not {what} "
                                     f"DAG {dag_id}") from None

    return dependency


READ = Depends(requires_dag("GET", None, "read"))
READ_LOGS = Depends(requires_dag("GET", "TASK_LOGS", "read the task logs of"))
CREATE_RUNS = Depends(requires_dag("POST", "RUN", "create runs of"))
# The campaigns page: the campaign DAG's runs (issue 15).
READ_CAMPAIGNS = Depends(requires_dag("GET", None, "read", "hfc_campaign"))


def _expected_origin(request: Request) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback=None) or str(request.base_url)
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin_json(request: Request) -> None:
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


def user_token(request: Request) -> str:
    """The user's own token: the bearer token, else the UI's ``_token`` cookie."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth.split(None, 1)[1]
    token = request.cookies.get("_token")
    if not token:
        raise HTTPException(401, "not logged in to Airflow")
    return token
