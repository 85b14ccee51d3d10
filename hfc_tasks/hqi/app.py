"""The HQI web service: a Starlette application, served by uvicorn (``hfc hqi serve``).

Under the path of the public base URL (``/hfc-hqi`` for ``http://host/hfc-hqi``):

- ``GET  …/HelioTavernaService?wsdl``  the WSDL, its ``soap:address`` the public URL;
- ``POST …/HelioTavernaService``       SOAP 1.1 calls (pyhfc through suds, zeep, SunPy's way);
- ``GET  …/HelioQueryService?FROM=…``  a bare VOTable, for the IDL and SolarSoft clients.

A public, anonymous, read-only service: it runs apart from Airflow's api-server, and reads the
catalogue as the read-only role (:mod:`hfc_tasks.hqi.reader` says what keeps it harmless). The
database work runs in Starlette's thread pool, one catalogue connection per thread.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from hfc_tasks.hqi import soap, votable
from hfc_tasks.hqi.answer import Answer
from hfc_tasks.hqi.reader import Reader

XML = "text/xml; charset=utf-8"
MAX_REQUEST_BYTES = 1024 * 1024  # a SOAP call is a few hundred bytes; refuse a flood early


@dataclass(frozen=True)
class Settings:
    dsn: str
    base_url: str  # public base URL, e.g. http://voparis-helio.obspm.fr/hfc-hqi
    statement_timeout_s: float = 30.0

    @property
    def mount_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    @property
    def soap_url(self) -> str:
        return self.base_url.rstrip("/") + "/HelioTavernaService"


def _params(request: Request) -> dict[str, list[str]]:
    """Query parameters by upper-case name (IDL and SolarSoft write them in any case)."""
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key.upper(), []).append(value)
    return out


def call(reader: Reader, operation: str, p: dict) -> Answer:
    """One SOAP operation with its parsed parameters (:func:`hfc_tasks.hqi.soap.parse_request`)."""
    def one(name):
        value = p.get(name)
        if isinstance(value, list):
            return value[0] if value else None
        return value

    if operation == "getTableNames":
        return reader.table_names()
    if operation == "getTableFields":
        return reader.table_fields(one("table_name") or "")
    if operation == "SQLSelect":
        return reader.sql_select(one("WHAT"), p.get("FROM"), one("WHERE"), one("ORDER_BY"),
                                 one("LIMIT"), one("OFFSET"))
    if operation == "TimeQuery":
        return reader.time_query(p.get("STARTTIME"), p.get("ENDTIME"), p.get("FROM"),
                                 one("MAXRECORDS"), one("STARTINDEX"))
    if operation == "Query":
        return reader.query(p.get("STARTTIME"), p.get("ENDTIME"), p.get("FROM"), one("WHERE"),
                            one("INSTRUMENT"), one("MAXRECORDS"), one("STARTINDEX"), one("JOIN"))
    raise soap.SoapError(f"unknown operation {operation!r}")


def _comma_list(values: list[str] | None) -> list[str]:
    """FROM=A,B or FROM=A&FROM=B (both are sent by the HTTP clients)."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def http_query(reader: Reader, p: dict[str, list[str]]) -> Answer:
    """``HelioQueryService``: the time rule and the HQI WHERE, plus WHAT/SQLWHERE/ORDER_BY."""
    def one(name):
        return (p.get(name) or [None])[-1]

    return reader.query(
        _comma_list(p.get("STARTTIME")), _comma_list(p.get("ENDTIME")), _comma_list(p.get("FROM")),
        one("WHERE"), one("INSTRUMENT"), one("MAXRECORDS") or one("LIMIT"), one("STARTINDEX"), one("JOIN"),
        what=one("WHAT"), sql_where=one("SQLWHERE"), order_by=one("ORDER_BY"), operation="HelioQueryService",
    )


def create_app(settings: Settings, reader: Reader | None = None) -> Starlette:
    reader = reader or Reader(settings.dsn, statement_timeout_s=settings.statement_timeout_s)
    wsdl = soap.wsdl(settings.soap_url)

    async def taverna_get(request: Request) -> Response:
        if any(k.lower() == "wsdl" for k in request.query_params):
            return Response(wsdl, media_type=XML)
        return PlainTextResponse(f"HFC HQI query service (SOAP 1.1). WSDL: {settings.soap_url}?wsdl\n")

    async def taverna_post(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            return Response(soap.fault(f"request of {len(body)} bytes is larger than {MAX_REQUEST_BYTES}"),
                            status_code=413, media_type=XML)
        try:
            operation, params = soap.parse_request(body)
            answer = await run_in_threadpool(call, reader, operation, params)
        except soap.SoapError as exc:
            return Response(soap.fault(str(exc)), status_code=500, media_type=XML)
        data = await run_in_threadpool(votable.write, answer)
        return Response(soap.envelope(data, operation), media_type=XML)

    async def query_get(request: Request) -> Response:
        answer = await run_in_threadpool(http_query, reader, _params(request))
        data = await run_in_threadpool(votable.write, answer)
        return Response(data, media_type=XML)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    base = settings.mount_path
    routes = [
        Route(f"{base}/HelioTavernaService", taverna_get, methods=["GET"]),
        Route(f"{base}/HelioTavernaService", taverna_post, methods=["POST"]),
        Route(f"{base}/HelioQueryService", query_get, methods=["GET"]),
        Route(f"{base}/health", health, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        reader.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.reader = reader
    return app


def app_from_env() -> Starlette:
    """The app built from HFC_HQI_DSN / HFC_HQI_URL (uvicorn's factory, for several workers)."""
    import os

    return create_app(Settings(dsn=os.environ["HFC_HQI_DSN"], base_url=os.environ["HFC_HQI_URL"],
                               statement_timeout_s=float(os.environ.get("HFC_HQI_STATEMENT_TIMEOUT", "30"))))
