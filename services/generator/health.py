"""The worker's /healthz and /readyz on ``FRAMEBUS_HEALTH_PORT`` (the processors get theirs from
faust's web server; the worker has no event loop, so a small threaded HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from framebus.services.common.watchdog import ClientHealth


def answer(path: str, *, ready: bool, kafka: ClientHealth) -> tuple[int, dict] | None:
    """Status code and body for a probe path (None: not a probe). Pure, for the tests."""
    if path == "/healthz":
        alive = kafka is not ClientHealth.WEDGED
        return (200 if alive else 503), {"service": "framebus-worker", "status": "alive" if alive else "wedged",
                                         "kafka": kafka.value}
    if path == "/readyz":
        ok = ready and kafka is ClientHealth.LIVE
        status = "ready" if ok else ("starting" if kafka is ClientHealth.LIVE else kafka.value)
        return (200 if ok else 503), {"service": "framebus-worker", "status": status, "kafka": kafka.value}
    return None


def serve_health(port: int, *, ready: Callable[[], bool], kafka: Callable[[], ClientHealth]) -> ThreadingHTTPServer:
    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            found = answer(self.path, ready=ready(), kafka=kafka())
            code, body = found or (404, {"error": "not found"})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # probes every few seconds: keep them out of the log
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Probe)  # noqa: S104 - probes come from the orchestrator
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
