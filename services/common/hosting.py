"""How every stream processor is hosted: a faust-streaming worker with one task.

faust gives the processors their lifecycle (start, SIGTERM/SIGINT, crash handling) and the
logging setup; /healthz, /readyz and /metrics answer from ``probes.py``, as on the workers
(faust's own web server stays off). The Kafka work itself runs on plain aiokafka clients (``processor.py``): faust's
per-event machinery cost a third of the scheduler's CPU and capped metering at about
3,100 results/s on our reference machine, against 9,000/s with flush-then-commit on aiokafka.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

import faust

from framebus.security import security_for
from framebus.services.common.logs import logging_config
from framebus.services.common.metrics import configure_metrics
from framebus.services.common.probes import serve_probes
from framebus.services.common.processor import Processor
from framebus.services.common.settings import Settings
from framebus.services.common.telemetry import configure
from framebus.services.common.watchdog import ClientHealth

log = logging.getLogger(__name__)


def stream_app(name: str, settings: Settings, **overrides) -> faust.App:
    """The faust app hosting processor ``name``: in-memory state, our topics declared by
    `framebus up` (never by faust), no web server of its own.

    The app id is ``<name>-app``: faust's own (idle) consumer must never join a processor's
    input consumer group, which uses another assignment protocol."""
    faust_dir = settings.state_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    options = dict(
        broker=[f"kafka://{host}" for host in settings.bootstrap_servers.split(",")], store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest", topic_partitions=6, topic_allow_declare=False,
        # A killed processor's group membership lapses after this; its successor waits that long.
        broker_session_timeout=10.0, broker_heartbeat_interval=3.0,
        # faust makes a data directory even for in-memory stores; by default in the working directory.
        datadir=str(faust_dir / "{conf.name}-data"),
        # TLS and SASL as every other client of the process (framebus.security).
        **security_for(settings.bootstrap_servers).faust(),
    )
    return faust.App(f"{settings.topic_prefix}{name}-app", **{**options, **overrides})


class Hosted(Protocol):
    """A service as the host runs it: ``run`` until cancelled, ``is_ready`` for /readyz, and its
    processor (None until it runs) whose client watchdog /healthz and /readyz report."""

    processor: Processor | None

    async def run(self) -> None: ...

    def is_ready(self) -> bool: ...


def client_health(service: Hosted | None) -> ClientHealth:
    processor = getattr(service, "processor", None)
    return processor.watch.health if processor is not None else ClientHealth.LIVE


EXIT_GRACE_S = 20.0  # a failed service's clean shutdown gets this long; then the process exits anyway


def exit_soon(reason: BaseException, grace_s: float = EXIT_GRACE_S) -> None:
    """A failed processor's process must end, so its supervisor restarts it (and a standby
    scheduler takes over), even when a client's shutdown hangs on an unreachable broker:
    seen after a broker restart, a scheduler whose processor had stopped ran on for minutes."""
    def leave() -> None:
        log.critical("still running %.0fs after %r; exiting", grace_s, reason)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(grace_s, leave)
    timer.daemon = True
    timer.start()


def serve(name: str, settings: Settings, build: Callable[[], Hosted]) -> None:
    """Build the service (inside the event loop: aiokafka clients bind to it) and run it in the
    foreground as the one task of a faust worker, until SIGTERM or SIGINT (the task is
    cancelled: the service's cleanup flushes and leaves its groups) or until it fails."""
    configure(name, settings.telemetry)
    configure_metrics(name, settings.telemetry)
    app = stream_app(name, settings)
    built: list[Hosted] = []
    Processor.failure_hooks.append(exit_soon)
    serve_probes(name, settings.health_port, settings.state_dir, ready=lambda: bool(built) and built[0].is_ready(),
                 kafka=lambda: client_health(built[0] if built else None))

    @app.task
    async def _main() -> None:
        built.append(build())
        await built[0].run()

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, logging_config=logging_config(settings))
    worker.execute_from_commandline()
