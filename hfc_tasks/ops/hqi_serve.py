"""``hfc hqi serve``: the HQI query service under uvicorn (:mod:`hfc_tasks.hqi.app`)."""

from __future__ import annotations

import argparse
import os


def add_command(sub, command) -> None:
    p = command(sub, "hqi", serve, "the HQI query service (SOAP + HTTP, read-only) for the HFC's clients",
                ["serve"])
    p.add_argument("--host", default=os.environ.get("HFC_HQI_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("HFC_HQI_PORT", "8191")))
    p.add_argument("--dsn", help="catalogue database, as the read-only role (default: $HFC_HQI_DSN)")
    p.add_argument("--base-url", help="public base URL, written in the WSDL (default: $HFC_HQI_URL, "
                   "else http://HOST:PORT/hfc-hqi); behind a proxy give the proxy's URL")
    p.add_argument("--statement-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest a query may run (default 30)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--log-level", default="info")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hfc_tasks.hqi.app import Settings, create_app

    dsn = args.dsn or os.environ.get("HFC_HQI_DSN")
    if not dsn:
        raise ValueError("no catalogue database for the HQI service: give --dsn or set HFC_HQI_DSN "
                         "(the read-only role that `hfc db upgrade` creates; eval \"$(hfc site env)\" sets it)")
    base = args.base_url or os.environ.get("HFC_HQI_URL") or f"http://{args.host}:{args.port}/hfc-hqi"
    settings = Settings(dsn=dsn, base_url=base, statement_timeout_s=args.statement_timeout)
    print(f"HQI query service: {settings.soap_url}?wsdl (listening on {args.host}:{args.port})", flush=True)
    if args.workers > 1:
        # Several processes: uvicorn imports the app by name, settings through the environment.
        os.environ.update(HFC_HQI_DSN=dsn, HFC_HQI_URL=base, HFC_HQI_STATEMENT_TIMEOUT=str(args.statement_timeout))
        uvicorn.run("hfc_tasks.hqi.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, proxy_headers=True)
    else:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                    proxy_headers=True)
    return 0
