"""Metering benchmarks on a private Kafka and S3 (never the user's stack).

1. throughput: N completed worker results (and their reservations) already on Kafka; the
   metering service starts and settles them. Results settled per second, against the
   rate at which a bare kafka-python consumer reads the same results topic in the same
   run (the ceiling for any Python consumer on this machine).
2. lag: results published at a steady rate while metering runs; for each, the time from
   the result's record timestamp to its usage record's (both stamped by producers on this
   machine), p50 and p99.

    python -m bench.metering [--results 20000] [--rate 5000] [--quick]

Writes bench/results/metering.json and prints a table.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.harness import Processes, private_stack
from framebus.schemas.codec import encode_event
from framebus.schemas.events import (
    GenerationCompleted,
    GenerationRequest,
    Output,
    Timings,
    Usage,
)
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common.machine import machine
from framebus.services.common.settings import Settings
from framebus.services.scheduler.core import reservation

RESULTS = Path(__file__).parent / "results" / "metering.json"
console = Console()
TENANTS = [f"tenant-{n}" for n in range(12)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def completed(number: int, run: str) -> tuple[GenerationRequest, GenerationCompleted]:
    req = GenerationRequest(request_id=f"{run}-{number}", tenant_id=TENANTS[number % len(TENANTS)],
                            prompt="a red fox", model="wan-tiny", width=128, height=128, num_frames=17,
                            num_inference_steps=10, seed=number)
    output = Output(bucket="b", key=f"{req.tenant_id}/{req.request_id}.mp4", url="http://127.0.0.1/x", bytes=1000,
                    url_expires_at=datetime(2026, 12, 1, tzinfo=UTC), sha256="0" * 64, duration_s=1.0625,
                    codec="libx264", width=128, height=128, num_frames=17, fps=16)
    return req, GenerationCompleted(request_id=req.request_id, tenant_id=req.tenant_id, tier=req.tier, model=req.model,
                                    timings=Timings(), output=output, seed=number,
                                    usage=Usage(tokens=req.quote(), gpu_seconds=0.5, machine="cpu"))


def publish(settings: Settings, n: int, run: str, *, rate: float | None = None) -> float:
    """Reservations first, then the results (encoded beforehand, so that pacing them costs
    little CPU), at ``rate`` per second if given. Returns the rate achieved."""
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=10, batch_size=256 * 1024)
    results = []
    for number in range(n):
        req, result = completed(number, run)
        held = encode_event(reservation(req, req.quote()), source="/framebus/scheduler")
        producer.send(settings.topic("framebus.ledger"), key=held.key, value=held.value, headers=held.headers)
        results.append(encode_event(result, source="/framebus/worker"))
    producer.flush()
    topic = settings.topic("framebus.results")
    started = time.monotonic()
    for number, record in enumerate(results):
        producer.send(topic, key=record.key, value=record.value, headers=record.headers)
        if rate is not None and number % 50 == 0:
            ahead = number / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    return n / (time.monotonic() - started)


class EndOffsets:
    """Records written to a topic so far (the sum of its partitions' end offsets), on one reused connection."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        name = settings.topic(topic)
        self.partitions = [TopicPartition(name, p) for p in self.consumer.partitions_for_topic(name)]

    def total(self) -> int:
        return sum(self.consumer.end_offsets(self.partitions).values())

    def close(self) -> None:
        self.consumer.close()


def raw_read_rate(settings: Settings, n: int) -> float:
    consumer = KafkaConsumer(settings.topic("framebus.results"), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
                             max_poll_records=2000)
    got, started = 0, time.monotonic()
    while got < n and time.monotonic() - started < 120:
        got += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
    seconds = time.monotonic() - started
    consumer.close()
    return got / seconds


def throughput(settings: Settings, procs: Processes, n: int) -> dict:
    publish(settings, n, "tp")
    raw = raw_read_rate(settings, n)
    ledger = EndOffsets(settings, "framebus.ledger")
    ledger_before = ledger.total()  # the n reservations
    procs.start("metering", "metering")
    first = last = None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("settled", total=n)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            settled = ledger.total() - ledger_before
            progress.update(task, completed=settled)
            if settled > 0 and first is None:
                first = (time.monotonic(), settled)
            if settled >= n:
                last = time.monotonic()
                break
            time.sleep(0.05)
    ledger.close()
    if first is None or last is None:
        raise RuntimeError("metering did not settle the backlog in 10 minutes; see bench logs")
    rate = (n - first[1]) / max(last - first[0], 1e-9)
    return {"results": n, "settled_per_s": rate, "raw_consumer_per_s": raw, "ratio_to_raw_read": rate / raw}


def lag(settings: Settings, n: int, rate: float) -> dict:
    usage = KafkaConsumer(settings.topic("framebus.usage"), bootstrap_servers=settings.bootstrap_servers,
                          group_id=None, enable_auto_commit=False, auto_offset_reset="latest")
    usage.poll(timeout_ms=1000)  # join at the end before publishing
    results = KafkaConsumer(settings.topic("framebus.results"), bootstrap_servers=settings.bootstrap_servers,
                            group_id=None, enable_auto_commit=False, auto_offset_reset="latest")
    results.poll(timeout_ms=1000)
    achieved = publish(settings, n, "lag", rate=rate)
    produced: dict[str, int] = {}
    recorded: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while (len(recorded) < n or len(produced) < n) and time.monotonic() < deadline:
        for records in results.poll(timeout_ms=200).values():
            for record in records:
                produced[json.loads(record.value)["request_id"]] = record.timestamp
        for records in usage.poll(timeout_ms=200).values():
            for record in records:
                recorded[json.loads(record.value)["request_id"]] = record.timestamp
    usage.close(), results.close()
    lags = [(recorded[rid] - at) / 1000 for rid, at in produced.items() if rid in recorded]
    return {"results": n, "rate_per_s": rate, "achieved_rate_per_s": achieved, "recorded": len(lags), "lag_p50_s": pct(lags, 0.5),
            "lag_p99_s": pct(lags, 0.99)}


def main(results_n: int = typer.Option(20000, "--results"), rate: float = typer.Option(5000.0),
         quick: bool = typer.Option(False)) -> None:
    n = 2000 if quick else results_n
    out = {}
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as settings:
        procs = Processes(settings, Path(tmp) / "logs")
        try:
            out["throughput"] = throughput(settings, procs, n)
            out["lag"] = lag(settings, min(n, int(rate * 5)), rate)
        finally:
            procs.stop_all()
    table = Table("measure", "value", title="metering on this machine", title_justify="left")
    tp, lg = out["throughput"], out["lag"]
    table.add_row(f"settled per second ({tp['results']:,} results backlog)", f"{tp['settled_per_s']:,.0f}")
    table.add_row("bare kafka-python read of the same topic", f"{tp['raw_consumer_per_s']:,.0f} /s")
    table.add_row("ratio to the bare read", f"{tp['ratio_to_raw_read']:.2f}")
    table.add_row(f"lag result -> usage record at {lg['rate_per_s']:,.0f}/s "
                  f"({lg['achieved_rate_per_s']:,.0f}/s achieved), p50", f"{lg['lag_p50_s'] * 1000:,.0f} ms")
    table.add_row("lag p99", f"{lg['lag_p99_s'] * 1000:,.0f} ms")
    table.add_row("usage records seen", f"{lg['recorded']:,} of {lg['results']:,}")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
