"""Producer throughput and submit latency: SDK and HTTP paths against a raw-Kafka baseline.

All rows run in one process against one local broker (and one gateway process), so the
ratios hold on a noisy machine even when the absolute numbers move:

- baseline: kafka-python sending the same pre-encoded request records (acks=all,
  idempotent), waiting for every acknowledgement: the most a Python producer can do;
- SDK submit_many: validation, quote, CloudEvents encoding, the request record and its
  `accepted` status record, all acknowledged;
- SDK submit: one request at a time, acknowledged before the next (latency p50/p99);
- HTTP: POST /v1/generations with N concurrent clients through the gateway process.

    python -m bench.producer [--requests 2000] [--concurrency 16]

Writes bench/results/producer.json and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from framebus.client import FramebusClient
from framebus.infra.kafka import KafkaBroker
from framebus.infra.process import free_port, terminate
from framebus.schemas.codec import encode_event
from framebus.schemas.events import GenerationRequest
from framebus.schemas.topics import CATALOGUE
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common.machine import machine
from framebus.services.common.settings import Settings
from framebus.services.gateway.launcher import launch_gateway
from framebus.services.gateway.tenants import TenantAdmin

RESULTS = Path(__file__).parent / "results" / "producer.json"
BODY = {"prompt": "a red fox running through snow at dawn, cinematic", "tier": "batch", "num_frames": 33,
        "width": 480, "height": 272, "num_inference_steps": 30}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_baseline(settings: Settings, n: int) -> float:
    records = [encode_event(GenerationRequest(request_id=f"raw-{i}", tenant_id="bench", **BODY), source="/bench")
               for i in range(n)]
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=0)
    topic = settings.topic("framebus.requests.batch")
    started = time.perf_counter()
    futures = [producer.send(topic, key=r.key, value=r.value, headers=r.headers) for r in records]
    for future in futures:
        future.get(timeout=60)
    elapsed = time.perf_counter() - started
    producer.close()
    return n / elapsed


def bench_sdk(settings: Settings, n: int, sequential: int) -> tuple[float, list[float]]:
    with FramebusClient(tenant_id="bench", settings=settings) as client:
        started = time.perf_counter()
        client.submit_many([{**BODY, "request_id": f"many-{i}"} for i in range(n)])
        rate = n / (time.perf_counter() - started)
        latencies = []
        for i in range(sequential):
            t0 = time.perf_counter()
            client.submit({**BODY, "request_id": f"one-{i}"})
            latencies.append(time.perf_counter() - t0)
    return rate, latencies


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
counter = 0
request = function()
  counter = counter + 1
  local id = "wrk-" .. tostring(math.random(1, 1000000000)) .. "-" .. counter
  return wrk.format(nil, nil, nil, [[BEFORE]] .. id .. [[AFTER]])
end
"""


def _wrk(url: str, key: str, seconds: int, concurrency: int, tmp: Path) -> tuple[float, float, float, int]:
    """wrk (a native load generator) so the client does not share the GIL or much CPU with the measurement."""
    body = json.dumps({**BODY, "request_id": "REQUEST_ID"})
    script = tmp / "post.lua"
    before, after = body.split("REQUEST_ID")
    script.write_text(WRK_SCRIPT.replace("KEY", key).replace("BEFORE", before).replace("AFTER", after))
    done = subprocess.run([shutil.which("wrk"), "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s",
                           str(script), f"{url}/v1/generations"], capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p50 = _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", out)[1])
    p99 = _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out)[1])
    errors = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return rate, p50, p99, errors


def _wrk_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def _http(url: str, key: str, n: int, concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                response = await client.post("/v1/generations", json={**BODY, "request_id": f"http-{i}"})
                latencies.append(time.perf_counter() - t0)
                errors += response.status_code != 201

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started), latencies, errors


def main(requests: int = typer.Option(2000, min=100, max=50_000), sequential: int = typer.Option(300, min=50),
         concurrency: int = typer.Option(16, min=1, max=256)) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        broker = KafkaBroker(host="127.0.0.1", port=free_port(), controller_port=free_port(), heap="1g",
                             state_dir=Path(tmp), cache_dir=Settings().cache_dir)
        broker.start()
        gateway = None
        try:
            settings = Settings(kafka_bootstrap=broker.endpoint, s3_endpoint="http://127.0.0.1:1",
                                topic_prefix=f"bench.{uuid.uuid4().hex[:6]}.", gateway_submissions_per_minute=10**6)
            with console.status("creating topics"):
                admin = kafka_adapter.admin_client(settings.bootstrap_servers)
                kafka_adapter.ensure_topics(admin, CATALOGUE, prefix=settings.topic_prefix)
                admin.close()
            with console.status(f"baseline: {requests} raw records"):
                baseline = bench_baseline(settings, requests)
            with console.status(f"SDK: {requests} pipelined + {sequential} one at a time"):
                sdk_rate, sdk_latencies = bench_sdk(settings, requests, sequential)
            with console.status("starting the gateway"):
                with FramebusClient(settings=settings, source="/bench") as client:
                    admin_tenants = TenantAdmin(client)
                    admin_tenants.create("bench", submissions_per_minute=100_000)
                    key = admin_tenants.issue_key("bench").plaintext
                gateway, url = launch_gateway(settings, Path(tmp) / "gateway.log")
            with console.status(f"HTTP: {concurrency} concurrent clients"):
                if shutil.which("wrk"):
                    generator = "wrk"
                    http_rate, http_p50, http_p99, http_errors = _wrk(url, key, 10, concurrency, Path(tmp))
                else:  # a Python client: it competes with the gateway for CPU, so it under-reports
                    generator = "httpx"
                    http_rate, latencies, http_errors = asyncio.run(_http(url, key, requests, concurrency))
                    http_p50, http_p99 = 1000 * _percentile(latencies, 0.5), 1000 * _percentile(latencies, 0.99)
        finally:
            if gateway is not None:
                terminate(gateway.pid, timeout_s=10)
            broker.stop()
    rows = [
        {"path": "baseline: raw kafka-python, pre-encoded", "requests_per_s": baseline, "ratio": 1.0},
        {"path": "SDK submit_many (validate, encode, request + status)", "requests_per_s": sdk_rate,
         "ratio": sdk_rate / baseline},
        {"path": "SDK submit, one at a time", "requests_per_s": 1 / statistics.mean(sdk_latencies),
         "ratio": (1 / statistics.mean(sdk_latencies)) / baseline,
         "p50_ms": 1000 * _percentile(sdk_latencies, 0.5), "p99_ms": 1000 * _percentile(sdk_latencies, 0.99)},
        {"path": f"HTTP POST, {concurrency} concurrent ({generator})", "requests_per_s": http_rate,
         "ratio": http_rate / baseline, "p50_ms": http_p50, "p99_ms": http_p99, "errors": http_errors},
    ]
    table = Table(title=f"producer paths, {requests} requests each", title_justify="left")
    for column in ("path", "acknowledged req/s", "x baseline", "p50", "p99"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["path"], f"{row['requests_per_s']:,.0f}", f"{row['ratio']:.2f}",
                      f"{row['p50_ms']:.1f} ms" if "p50_ms" in row else "-",
                      f"{row['p99_ms']:.1f} ms" if "p99_ms" in row else "-")
    console.print(table)
    if http_errors:
        console.print(f"[red]{http_errors} HTTP requests did not get 201[/]")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "requests": requests, "sequential": sequential, "concurrency": concurrency,
                                   "results": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                                               for r in rows]}, indent=2) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
