"""Webhook delivery benchmark on a private Kafka (never the user's stack) and a local receiver.

N completed results with a webhook URL are put on framebus.results; the notifier signs
and delivers them to an HTTP receiver on 127.0.0.1. Deliveries per second, against a bare
httpx client posting the same bodies to the same receiver with the same concurrency in
the same run (the ceiling of the receiver and this machine).

    python -m bench.webhooks [--deliveries 2000] [--quick]

Writes bench/results/webhooks.json and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bench.harness import private_stack
from bench.metering import completed
from framebus.client import FramebusClient
from framebus.schemas.codec import encode_event
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common.machine import machine
from framebus.services.gateway.tenants import TenantAdmin
from framebus.services.notifier.service import Notifier

RESULTS = Path(__file__).parent / "results" / "webhooks.json"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
console = Console()


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                receiver.count += 1
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def bare_rate(url: str, n: int, concurrency: int, body: bytes) -> float:
    async def main() -> float:
        async with httpx.AsyncClient() as client:
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await client.post(url, content=body, headers={"content-type": "application/json"})

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - started)

    return asyncio.run(main())


def main(deliveries: int = typer.Option(2000), quick: bool = typer.Option(False)) -> None:
    n = 300 if quick else deliveries
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as base:
        settings = base.model_copy(update={"webhook_allowed_hosts": frozenset({"127.0.0.1"})})
        receiver = Receiver()
        with FramebusClient(settings=settings, source="/bench") as client:
            admin = TenantAdmin(client)
            tenants = sorted({completed(i, "wh")[0].tenant_id for i in range(n)})
            for tenant in tenants:
                admin.create(tenant)
                client.publish(WebhookSecrets(tenant_id=tenant, secrets=(SECRET,)),
                               "framebus.webhooks.secrets").get(10)
        baseline = bare_rate(receiver.url, n, settings.webhook_concurrency_per_endpoint, b'{"type":"x"}' * 40)
        receiver.count = 0
        notifier = Notifier(settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(notifier.run(max_seconds=900),), daemon=True)
        thread.start()
        time.sleep(3)  # joined its consumer group
        producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=10)
        started = time.monotonic()
        for number in range(n):
            result = completed(number, "wh")[1].model_copy(update={"webhook_url": receiver.url})
            record = encode_event(result, source="/framebus/worker")
            producer.send(settings.topic("framebus.results"), key=record.key, value=record.value,
                          headers=record.headers)
        producer.flush()
        deadline = time.monotonic() + 600
        while notifier.delivered < n and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds = time.monotonic() - started
        loop.call_soon_threadsafe(notifier.stop)
        thread.join(timeout=30)
        producer.close()
    out = {"deliveries": n, "delivered": notifier.delivered, "received": receiver.count,
           "per_s": notifier.delivered / seconds, "bare_httpx_per_s": baseline,
           "ratio_to_bare": notifier.delivered / seconds / baseline,
           "concurrency_per_endpoint": settings.webhook_concurrency_per_endpoint}
    table = Table("measure", "value", title="webhook deliveries to one local receiver", title_justify="left")
    table.add_row("signed deliveries per second (result on Kafka -> 2xx)", f"{out['per_s']:,.0f}")
    table.add_row("bare httpx posts per second, same concurrency", f"{baseline:,.0f}")
    table.add_row("ratio", f"{out['ratio_to_bare']:.2f}")
    table.add_row("delivered / received", f"{out['delivered']:,} / {out['received']:,} of {n:,}")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
