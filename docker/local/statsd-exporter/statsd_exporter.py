"""StatsD in (UDP :9125), Prometheus text out (HTTP :9102/metrics): the stand-in for
prom/statsd-exporter where no registry is reachable. Counters (|c) add up, gauges (|g) keep the
last value, timers (|ms, |h, |d) give <name>_count and <name>_sum; names are the StatsD names with
every character outside [a-zA-Z0-9_:] turned into "_" (no mapping rules)."""

import http.server
import re
import socket
import threading

values: dict[str, float] = {}
kinds: dict[str, str] = {}
lock = threading.Lock()


def record(line: str) -> None:
    try:
        name, rest = line.split(":", 1)
        value, kind = rest.split("|")[:2]
        number = float(value)
    except ValueError:
        return
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    with lock:
        if kind == "c":
            values[name] = values.get(name, 0.0) + number
            kinds[name] = "counter"
        elif kind == "g":
            values[name] = values.get(name, 0.0) + number if value[0] in "+-" else number
            kinds[name] = "gauge"
        elif kind in ("ms", "h", "d"):
            for suffix, add in (("_count", 1.0), ("_sum", number)):
                values[name + suffix] = values.get(name + suffix, 0.0) + add
                kinds[name + suffix] = "counter"


def udp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 9125))
    while True:
        data, _ = sock.recvfrom(65535)
        for line in data.decode("utf-8", "replace").splitlines():
            record(line.strip())


class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        with lock:
            body = "".join(f"# TYPE {n} {kinds[n]}\n{n} {v}\n" for n, v in sorted(values.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


threading.Thread(target=udp, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 9102), Metrics).serve_forever()
