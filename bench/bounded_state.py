"""State that stays bounded: start-up, memory and a usage query after 2,000 and after 200,000
historical requests, each on a private broker of its own.

History is what production accumulates: each old request left a reservation and a charge on
framebus.ledger (never compacted or expired: the system of record) and a terminal status on
framebus.status, written 60 days ago (their record timestamps say so). Beside it, the same
recent traffic in both runs: 300 requests of the last hour. Metering's compactor has
snapshotted the ledger, as it does every few minutes in production. Then, per run:

- scheduler and gateway: seconds from spawn to /readyz answering ready, and resident memory;
- metering: the same (it folds the ledger at start too);
- `framebus usage` of the busiest tenant over the default 30 days, and `framebus balance`;
- what start-up read before (the whole ledger from offset 0), timed for comparison.

    python -m bench.bounded_state [--small 2000] [--large 200000]

Prints a table with the large-to-small ratio per figure (target: within 2x) and writes
bench/results/bounded-state.json.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.harness import Processes, private_stack, tenants
from framebus.infra.process import free_port
from framebus.kafka import producer
from framebus.schemas.codec import encode_event
from framebus.schemas.events import LedgerCharged, LedgerReserved, StatusChanged
from framebus.schemas.state import RequestState, Tier
from framebus.services.common import ledger_snapshots
from framebus.services.common.ledger import charge_id, reserve_id
from framebus.services.common.machine import machine
from framebus.services.gateway.launcher import launch_gateway
from framebus.services.metering import queries

RESULTS = Path(__file__).parent / "results" / "bounded-state.json"
TENANTS = ("acme", "globex", "initech", "umbrella")
RECENT = 300


def write_history(settings, requests: int, *, first: int, at: datetime, progress: Progress, label: str) -> None:
    """``requests`` settled requests of ``at``: a reservation and a charge each, and a final status."""
    sender = producer(settings.bootstrap_servers)
    failures: list[Exception] = []
    stamp = int(at.timestamp() * 1000)
    task = progress.add_task(label, total=requests)
    ledger, status = settings.topic("framebus.ledger"), settings.topic("framebus.status")
    for n in range(first, first + requests):
        tenant, request = TENANTS[n % len(TENANTS)], f"req-{n:07d}"
        for topic, event, event_id in (
                (ledger, LedgerReserved(tenant_id=tenant, entry_id=reserve_id(tenant, request), request_id=request,
                                        tokens=2.0, at=at), reserve_id(tenant, request)),
                (ledger, LedgerCharged(tenant_id=tenant, entry_id=charge_id(tenant, request), request_id=request,
                                       tokens=1.5, tier=Tier.BATCH, at=at), charge_id(tenant, request)),
                (status, StatusChanged(request_id=request, tenant_id=tenant, tier=Tier.BATCH,
                                       state=RequestState.COMPLETED), None)):
            record = encode_event(event, source="/bench", event_id=event_id)
            sender.send(topic, key=record.key, value=record.value, headers=record.headers,
                        timestamp_ms=stamp).add_errback(failures.append)
        if n % 5000 == 0:  # in steps: a batch left waiting past the delivery timeout is dropped, not sent
            sender.flush(timeout=300)
            progress.update(task, completed=n - first)
    sender.flush(timeout=300)
    sender.close()
    if failures:
        raise SystemExit(f"{len(failures)} history records were not written: {failures[0]!r}")
    progress.update(task, completed=requests)


def compact(settings) -> int:
    return asyncio.run(ledger_snapshots.snapshot_once(settings.bootstrap_servers, settings.topic_prefix,
                                                      window_s=settings.ledger_dedupe_window_s))


def ready_after(processes: Processes, name: str, args: list[str], port: int, timeout_s: float = 600) -> tuple[float, int]:
    """Seconds from spawn to /readyz ready, and resident bytes 3 s later."""
    started = time.perf_counter()
    process = processes.start(name, *args)
    url = f"http://127.0.0.1:{port}/readyz"
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}; see {processes.logs / (name + '.log')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        raise SystemExit(f"{name} was not ready within {timeout_s:g} s")
    seconds = time.perf_counter() - started
    time.sleep(3)
    return seconds, psutil.Process(process.pid).memory_info().rss


def measure(history: int, logs: Path, console: Console) -> dict:
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as settings:
        now = datetime.now(UTC)
        with Progress(console=console, transient=True) as progress:
            write_history(settings, history, first=0, at=now - timedelta(days=60), progress=progress,
                          label=f"{history:,} requests of 60 days ago")
            # Records carry the time they were written, so the log is in time order, as a real one is: the
            # tenants (and their credits) come after their history here, or a report's seek by time would
            # find today's credits at offset 0 and read everything after them.
            tenants(settings, *TENANTS)
            write_history(settings, RECENT, first=history, at=now - timedelta(minutes=30), progress=progress,
                          label=f"{RECENT} requests of the last hour")
        snapshots = compact(settings)
        started = time.perf_counter()
        whole = sum(1 for _ in queries.ledger_entries(settings, timeout_s=600))
        whole_ledger_s = time.perf_counter() - started
        figures = {"history": history, "ledger_entries": whole, "snapshots": snapshots,
                   "whole_ledger_read_s": round(whole_ledger_s, 2)}
        processes = Processes(settings, logs / f"h{history}")
        try:
            port = free_port()
            processes.settings = settings.model_copy(update={"health_port": port})
            figures["scheduler_ready_s"], figures["scheduler_rss"] = ready_after(processes, "scheduler", ["scheduler"],
                                                                                 port)
            port = free_port()
            processes.settings = settings.model_copy(update={"health_port": port})
            figures["metering_ready_s"], figures["metering_rss"] = ready_after(processes, "metering", ["metering"],
                                                                               port)
            started = time.perf_counter()
            gateway, _ = launch_gateway(settings, processes.logs / "gateway.log", timeout_s=600)
            processes.running.append(gateway)
            figures["gateway_ready_s"] = time.perf_counter() - started
            time.sleep(3)
            figures["gateway_rss"] = psutil.Process(gateway.pid).memory_info().rss
        finally:
            processes.stop_all()
        started = time.perf_counter()
        report = queries.usage_report(settings, tenant_id="acme", start=now - timedelta(days=30),
                                      end=now + timedelta(minutes=5), group_by="day")
        figures["usage_s"] = time.perf_counter() - started
        assert report.total().completed == RECENT // len(TENANTS), "the report counts the recent requests only"
        started = time.perf_counter()
        held = queries.balances(settings, "acme").of("acme")
        figures["balance_s"] = time.perf_counter() - started
        assert held.charged == 1.5 * ((history + RECENT) // len(TENANTS)), "the balance counts every charge ever"
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()}


ROWS = (("scheduler start-up", "scheduler_ready_s", "s"), ("scheduler memory", "scheduler_rss", "MiB"),
        ("metering start-up", "metering_ready_s", "s"), ("metering memory", "metering_rss", "MiB"),
        ("gateway start-up", "gateway_ready_s", "s"), ("gateway memory", "gateway_rss", "MiB"),
        ("`framebus usage` (30 days)", "usage_s", "s"), ("`framebus balance`", "balance_s", "s"),
        ("whole ledger from offset 0 (what start-up read before)", "whole_ledger_read_s", "s"))


def main(small: int = typer.Option(2000, help="Historical requests of the small run."),
         large: int = typer.Option(200_000, help="Historical requests of the large run.")) -> None:
    console = Console()
    logs = Path(tempfile.mkdtemp(prefix="bounded-state-"))
    runs = [measure(history, logs, console) for history in (small, large)]
    result = {"machine": machine(), "recent_requests": RECENT, "logs": str(logs), "runs": runs}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"after {small:,} and {large:,} historical requests ({result['machine']})")
    for column in ("figure", f"{small:,}", f"{large:,}", "ratio"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    for label, key, unit in ROWS:
        a, b = runs[0][key], runs[1][key]
        scale = 1 / 2**20 if unit == "MiB" else 1
        table.add_row(label, f"{a * scale:,.2f} {unit}", f"{b * scale:,.2f} {unit}", f"{b / a:.2f}x" if a else "-")
    console.print(table)
    console.print(f"results in {RESULTS}; service logs in {logs}")


if __name__ == "__main__":
    typer.run(main)
