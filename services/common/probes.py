"""What every service tells its supervisor and its operator: GET /healthz, /readyz and /metrics.

One small threaded HTTP server per process, the same for processors and workers (a worker has
no event loop, and a probe must answer while a processor's loop is busy). It listens on
``FRAMEBUS_HEALTH_PORT`` on every interface (Kubernetes probes, a Prometheus scrape), or, when
that is unset, on a free port of 127.0.0.1. Either way the process announces itself in
``<state dir>/run/<service>-<pid>.json`` so that `framebus ps` finds it on this machine.
(The gateway serves the same three paths from its own HTTP server and announces itself too.)
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from framebus.services.common.metrics import prometheus_text
from framebus.services.common.watchdog import ClientHealth


def answer(path: str, service: str, *, ready: bool, kafka: ClientHealth) -> tuple[int, dict] | None:
    """Status code and body for a probe path (None: not a probe). Pure, for the tests.

    Alive unless the Kafka clients are wedged (a broker outage is not death: restarting every
    service then helps no one); ready when the service says so and its clients are live."""
    if path == "/healthz":
        alive = kafka is not ClientHealth.WEDGED
        return (200 if alive else 503), {"service": service, "status": "alive" if alive else "wedged",
                                         "kafka": kafka.value}
    if path == "/readyz":
        ok = ready and kafka is ClientHealth.LIVE
        status = "ready" if ok else ("starting" if kafka is ClientHealth.LIVE else kafka.value)
        return (200 if ok else 503), {"service": service, "status": status, "kafka": kafka.value}
    return None


@dataclass(frozen=True)
class Announcement:
    """A running service as `framebus ps` finds it: ``<state dir>/run/<service>-<pid>.json``."""

    service: str
    pid: int
    url: str  # where /healthz, /readyz and /metrics answer
    host: str
    started_at: float

    @staticmethod
    def directory(state_dir: Path) -> Path:
        return state_dir / "run"

    def write(self, state_dir: Path) -> Path:
        path = self.directory(state_dir) / f"{self.service}-{self.pid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.__dict__))
        temporary.replace(path)
        return path


def announce(state_dir: Path, service: str, url: str) -> Path:
    """Announce this process; the file goes when it exits cleanly (`framebus ps` prunes the killed)."""
    path = Announcement(service, os.getpid(), url, socket.gethostname(), time.time()).write(state_dir)
    atexit.register(path.unlink, missing_ok=True)
    return path


def serve_probes(service: str, port: int | None, state_dir: Path, *, ready: Callable[[], bool],
                 kafka: Callable[[], ClientHealth]) -> ThreadingHTTPServer:
    """Serve /healthz, /readyz and /metrics for ``service`` in a daemon thread; announce it."""

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/metrics":
                data, content_type = prometheus_text()
                code = 200
            else:
                found = answer(self.path, service, ready=ready(), kafka=kafka())
                code, body = found or (404, {"error": f"no {self.path}: try /healthz, /readyz or /metrics"})
                data, content_type = json.dumps(body).encode(), "application/json"
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # probed every few seconds: keep them out of the log
            pass

    # An explicit port is for the orchestrator and the scraper, from outside; a free one, for this machine.
    bind = ("0.0.0.0", port) if port is not None else ("127.0.0.1", 0)  # noqa: S104
    server = ThreadingHTTPServer(bind, Probe)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    announce(state_dir, service, f"http://127.0.0.1:{server.server_address[1]}")  # read on this machine
    return server
