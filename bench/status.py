"""What a status call costs the SDK over Kafka: the follower against reading the key's partition.

Before issue #16, ``status()`` read the request's status partition from offset 0 on every
call (``framebus.kafka.read_key``), so its cost grew with every request ever made in that
partition. Now one follower per client reads a partition once and follows it. On a private
broker: H historical requests' statuses, then C status calls each way, in one run.

    python -m bench.status [--history 20000] [--calls 50]

Writes bench/results/status.json and prints a table.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bench.harness import private_stack
from framebus.client import FramebusClient
from framebus.kafka import read_key
from framebus.schemas.events import StatusChanged, status_key
from framebus.schemas.state import RequestState, Tier
from framebus.services.common.machine import machine

RESULTS = Path(__file__).parent / "results" / "status.json"


def main(history: int = typer.Option(20000, help="Statuses already on the topic."),
         calls: int = typer.Option(50, help="Status calls timed each way.")) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as settings:
        with FramebusClient(settings=settings, tenant_id="acme", source="/bench") as client:
            for n in range(history):  # the history: accepted statuses of earlier requests, all tenants alike
                client.publish(StatusChanged(request_id=f"old-{n}", tenant_id="acme", state=RequestState.COMPLETED,
                                             tier=Tier.STANDARD), "framebus.status")
            client.flush()
            wanted = [f"old-{n}" for n in range(0, history, max(1, history // calls))][:calls]
            topic = settings.topic("framebus.status")
            started = time.perf_counter()
            for request_id in wanted:  # the old way: the key's partition from offset 0, each call
                assert read_key(settings.bootstrap_servers, topic, status_key("acme", request_id))
            scan_s = (time.perf_counter() - started) / len(wanted)
            started = time.perf_counter()
            for request_id in wanted:  # the follower's first calls read each partition they need, once
                assert client.status(request_id) is not None
            warm_s = time.perf_counter() - started
            follower = client.kafka.follower
            fetched_before = follower.records_read
            started = time.perf_counter()
            for request_id in wanted:
                assert client.status(request_id) is not None
            follow_s = (time.perf_counter() - started) / len(wanted)
            fetched = follower.records_read - fetched_before
    figures = {"machine": machine(), "history": history, "calls": len(wanted),
               "per_call_read_key_ms": round(scan_s * 1000, 2), "follower_warm_up_ms": round(warm_s * 1000, 1),
               "per_call_follower_ms": round(follow_s * 1000, 4), "records_fetched_by_follower_calls": fetched,
               "speedup": round(scan_s / follow_s, 1)}
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    table = Table(title=f"status() over Kafka, {history} statuses on the topic ({figures['machine']})")
    for column in ("way", "per call", "records fetched per call"):
        table.add_column(column)
    table.add_row("read the key's partition (before)", f"{figures['per_call_read_key_ms']} ms",
                  f"~{history // 6} (its partition)")
    table.add_row(f"follower, first {len(wanted)} calls (all)", f"{figures['follower_warm_up_ms']} ms",
                  "every partition, once")
    table.add_row("follower, the same calls again", f"{figures['per_call_follower_ms']} ms", f"{fetched / len(wanted):g}")
    console.print(table)
    console.print(f"later calls: {figures['speedup']}x faster than reading the partition each time; the warm-up "
                  f"costs {figures['follower_warm_up_ms'] / figures['per_call_read_key_ms']:.0f} old calls")


if __name__ == "__main__":
    typer.run(main)
