"""Runs pyhfc (the HFC's own client, installed from PyPI) against an HQI service and prints, as
JSON on stdout, what each call gave. Run by tests/e2e/test_hqi_clients.py with the Python of
pyhfc's own virtualenv (pyhfc needs Python >= 3.12; the project runs 3.11): it imports nothing
of the project, only pyhfc and what pyhfc depends on.

Input (stdin, JSON)::

    {"wsdl": URL, "calls": [{"id": NAME, "op": OP, ...}, ...]}

Operations:

- ``{"op": "ping"}``: ``HQIClient.ping()``;
- ``{"op": "call", "method": M, "args": [...], "kwargs": {...}, "astropy": bool}``:
  ``HQIClient.M(*args, **kwargs)``; with ``astropy`` the response's ``to_astropy()`` too;
- ``{"op": "viewer", "dataset": LABEL, "date": ISO, "direction": D}``: hfcviewer's data path: its
  ``load_observation`` (the row of the observation it displays), then the quicklook image from
  that row's ``QCLK_URL``/``QCLK_FNAME`` through ``quicklook_url``, ``fetch_image`` (the bytes
  the viewer caches), ``load_image`` and ``HQIClient.quicklook``.

Arguments are JSON, with ``{"$dt": ISO}`` for a ``datetime`` and ``{"$tuple": [...]}`` for a
tuple (pyhfc's range). Every value in the output is tagged with its Python type so that the
test compares types as well as values: ``{"int": 1}``, ``{"float": "0.1"}`` (``repr``),
``{"datetime": ISO}``, ``{"str": ...}``, ``{"bool": ...}``, ``null`` for ``None``. An exception
is ``{"error": {"type", "classes", "message"}}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from typing import Any


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$dt"}:
            return dt.datetime.fromisoformat(value["$dt"])
        if set(value) == {"$tuple"}:
            return tuple(decode(v) for v in value["$tuple"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def tag(value: Any) -> Any:
    """A value with its Python type (numpy scalars as what they are, named apart)."""
    if value is None:
        return None
    kind = type(value)
    if kind is bool:
        return {"bool": value}
    if kind is int:
        return {"int": value}
    if kind is float:
        return {"float": repr(value)}
    if kind is dt.datetime:
        return {"datetime": value.isoformat()}
    if kind is str:
        return {"str": value}
    if kind is bytes:
        return {"bytes": value.decode("utf-8", "replace")}
    module = getattr(kind, "__module__", "")
    if module == "numpy" and hasattr(value, "item"):
        return {"numpy": kind.__name__, "value": tag(value.item())}
    return {"other": f"{module}.{kind.__name__}", "repr": repr(value)}


def error(exc: BaseException) -> dict:
    return {"error": {"type": type(exc).__name__,
                      "classes": [c.__name__ for c in type(exc).__mro__],
                      "message": str(exc)}}


def response(resp) -> dict:
    return {
        "kind": "QueryResponse",
        "status": resp.status,
        "query_error": resp.error,
        "info": dict(resp.info),
        "tables": [
            {"name": t.name,
             "fields": [[f.name, f.datatype, f.null] for f in t.fields],
             "rows": [[tag(row.get(f.name)) for f in t.fields] for row in t.rows]}
            for t in resp.tables
        ],
    }


def astropy_table(table) -> dict:
    cols = []
    for name in table.colnames:
        col = table[name]
        mask = getattr(col, "mask", None)
        values = []
        for i, v in enumerate(col):
            masked = bool(mask[i]) if mask is not None else False
            values.append(None if masked else tag(v))
        cols.append({"name": name, "dtype": col.dtype.str, "kind": col.dtype.kind, "values": values})
    return {"kind": "astropy.Table", "class": type(table).__name__, "columns": cols}


def result(value: Any) -> Any:
    from pyhfc.api import QueryResponse

    if isinstance(value, QueryResponse):
        return response(value)
    if isinstance(value, dict):
        return {"kind": "Row", "row": {k: tag(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"kind": "list", "items": [tag(v) for v in value]}
    return {"kind": "value", "value": tag(value)}


def image(img) -> dict | None:
    if img is None:
        return None
    return {"format": img.format, "size": list(img.size), "mode": img.mode}


def viewer(hqi, call: dict) -> dict:
    from pyhfc.api.quicklook import fetch_image, load_image, quicklook_url
    from pyhfc.hfcviewer.viewer import DATASETS, load_observation  # imports tkinter, opens no window

    dataset = next(d for d in DATASETS if d.label == call["dataset"])
    row = load_observation(hqi, dataset, dt.datetime.fromisoformat(call["date"]), call.get("direction", "nearest"))
    out: dict[str, Any] = {"table": dataset.table, "where": dataset.where(),
                           "row": None if row is None else {k: tag(v) for k, v in row.items()}}
    if row is None:
        return out
    url = quicklook_url(row)
    out["url"] = url
    data = fetch_image(url) if url else None
    out["sha256"] = hashlib.sha256(data).hexdigest() if data is not None else None
    out["load_image"] = image(load_image(url)) if url else None
    out["quicklook"] = image(hqi.quicklook(row))
    return out


def main() -> int:
    plan = json.load(sys.stdin)
    import pyhfc
    from pyhfc.api import HQIClient

    hqi = HQIClient(wsdl=plan["wsdl"], timeout=60)
    out: dict[str, Any] = {"pyhfc": pyhfc.__version__, "python": sys.version.split()[0], "results": {}}
    for call in plan["calls"]:
        try:
            if call["op"] == "ping":
                got: Any = {"kind": "value", "value": tag(hqi.ping())}
            elif call["op"] == "call":
                value = getattr(hqi, call["method"])(*decode(call.get("args", [])), **decode(call.get("kwargs", {})))
                got = result(value)
                if call.get("astropy"):
                    got["astropy"] = astropy_table(value.to_astropy())
            elif call["op"] == "viewer":
                got = viewer(hqi, call)
            else:
                raise ValueError(f"unknown op {call['op']!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            got = error(exc)
        out["results"][call["id"]] = got
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
