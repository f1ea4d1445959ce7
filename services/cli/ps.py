"""`framebus ps`: every framebus process running on this machine, its health and its consumer lag.

Each service announces itself in ``<state dir>/run/`` when it starts (``probes.py``); this asks
each one its /readyz and /metrics. A process killed without cleaning up is found dead by its pid
and its announcement removed. (On Kubernetes, the same three paths answer on each pod's health
port, and the lag is on /metrics for Prometheus.)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.table import Table

from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.common.settings import Settings

LAG_METRIC = "framebus_consumer_lag"


@dataclass(frozen=True)
class Running:
    service: str
    pid: int
    url: str
    uptime_s: float
    status: str  # ready, starting, broker_down, wedged, ... or "no answer"
    kafka: str | None
    lag: dict[str, float] | None  # input topic -> records not yet handled (None: no /metrics answer)


def lag_of(metrics_text: str) -> dict[str, float]:
    """Consumer lag per input topic from a service's Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    lag: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == LAG_METRIC:
            for sample in family.samples:
                topic = sample.labels.get("topic", "?")
                lag[topic] = lag.get(topic, 0.0) + sample.value
    return lag


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def running(state_dir: Path, *, timeout_s: float = 2.0) -> list[Running]:
    """The announced processes still alive, each asked how it is; announcements of dead ones removed."""
    found = []
    for path in sorted((state_dir / "run").glob("*.json")):
        try:
            announced = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not alive(announced["pid"]):
            path.unlink(missing_ok=True)
            continue
        status, kafka, lag = "no answer", None, None
        try:
            ready = httpx.get(f"{announced['url']}/readyz", timeout=timeout_s).json()
            status, kafka = ready.get("status", "?"), ready.get("kafka")
            lag = lag_of(httpx.get(f"{announced['url']}/metrics", timeout=timeout_s).text)
        except (httpx.HTTPError, ValueError):
            pass
        found.append(Running(announced["service"], announced["pid"], announced["url"],
                             time.time() - announced["started_at"], status, kafka, lag))
    return found


def _print_stack(settings: Settings) -> None:
    """Where Kafka and S3 listen, and whether the local ones run."""
    from framebus.services.common.stack import Stack

    table = Table("server", "endpoint", "state", title="Kafka and S3", title_justify="left")
    for service in Stack(settings).status():
        table.add_row(service.name, service.endpoint, service.state)
    console.print(table)


def ps(as_json: JsonOption = False) -> None:
    """Where Kafka and S3 listen, and every framebus process on this machine: its health, readiness
    and consumer lag (--json: the processes, one object per line)."""
    with errors_exit():
        settings = Settings()
        processes = running(settings.state_dir)
        if as_json:
            emit_json(*processes)
            return
        _print_stack(settings)
        if not processes:
            console.print(f"no framebus process is running here (none announced in {settings.state_dir / 'run'})")
            return
        table = Table(title="framebus processes", title_justify="left")
        for column in ("service", "pid", "up", "status", "kafka", "lag (records)", "probes"):
            table.add_column(column, justify="right" if column in ("pid", "up") else "left")
        for p in processes:
            colour = "green" if p.status == "ready" else "yellow" if p.status in ("starting", "alive") else "red"
            table.add_row(p.service.removeprefix("framebus-"), str(p.pid), _duration(p.uptime_s),
                          f"[{colour}]{p.status}[/]", p.kafka or "-", _lag(p.lag, settings.topic_prefix), p.url)
        console.print(table)


def _lag(lag: dict[str, float] | None, prefix: str) -> str:
    """Total records behind, and the topics behind (none read: "-")."""
    if not lag:
        return "-"
    behind = {topic.removeprefix(prefix).removeprefix("framebus."): n for topic, n in lag.items() if n > 0}
    detail = ", ".join(f"{topic} {n:.0f}" for topic, n in sorted(behind.items(), key=lambda kv: -kv[1])[:3])
    return f"{sum(behind.values()):.0f}" + (f" ({detail})" if detail else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
