"""End to end under load: submit -> scheduler -> null workers -> result -> settled -> webhook delivered.

On a private Kafka and S3, with the scheduler, metering, the notifier and two null workers
(no GPU work: what is measured is framebus's own overhead), an open-loop publisher offers a
rising request rate across the three tiers for ``--step-s`` seconds per step; a webhook
receiver notes when each request's webhook arrives. Per step and tier: what was delivered,
the rate sustained, and p50/p99 end-to-end latency (submit to webhook received). A step is
sustained when nothing is lost and each tier's p99, less the time the scheduler holds a
partial batch of that tier on purpose (30 ms, 0.3 s, 3 s), stays under 1 s. The whole chain
is warmed first (a fresh JVM broker compiles for its first minute); the ramp stops once
requests are lost or p99 passes 30 s. The CPU each process used per step names the bottleneck.

With one real worker (the default model, diffusers engine): its capacity from a burst, then
end-to-end latency split into queue wait, generation, encode, upload and webhook, per tier, at
50% and 90% of that capacity.

Then the cost of tracing, in one run: a burst drained with every service's telemetry off, at
1% sampling and at 100% (spans to files), interleaved: requests per second and CPU per request.

    python -m bench.e2e [--quick] [--rates 100,200,...] [--batches 1,8] [--step-s 10]

Writes bench/results/e2e.json and bench/results/e2e-latency.png (videos per hour against p50 and
p99 latency per tier, one panel per worker batch size) and prints the tables.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.batch import broker_pid, cpu_s
from bench.harness import Processes, private_stack, tenants
from framebus.client import FramebusClient
from framebus.schemas.state import Tier
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.cli.ps import running
from framebus.services.common.machine import machine
from framebus.services.scheduler.config import DEFAULT_TIERS

RESULTS = Path(__file__).parent / "results" / "e2e.json"
PLOT = Path(__file__).parent / "results" / "e2e-latency.png"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TIERS = ("interactive", "standard", "batch")
TIER_MIX = ("interactive", "standard", "standard", "batch", "batch")  # offered in this proportion
P99_BOUND_S = 1.0
console = Console()


class Arrivals:
    """A webhook receiver that notes when each request's webhook first arrived."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                now = time.time()
                try:
                    request_id = json.loads(body)["data"].get("request_id")
                except (ValueError, KeyError):  # a body cut short (a connection reset): the notifier sends it again
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with arrivals.lock:
                    arrivals.at.setdefault(request_id, now)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def offer(client: FramebusClient, rate: float, seconds: float, prefix: str, url: str) -> dict[str, tuple[str, float]]:
    """Open loop: ``rate`` requests per second for ``seconds``, sent every 20 ms in small groups.
    Returns request id -> (tier, submitted at)."""
    sent: dict[str, tuple[str, float]] = {}
    started = time.time()
    n = 0
    while (elapsed := time.time() - started) < seconds:
        due = int(rate * min(elapsed + 0.02, seconds))
        group = []
        while n < due:
            tier = TIER_MIX[n % len(TIER_MIX)]
            group.append({"request_id": f"{prefix}-{n}", "prompt": "a red circle moving left", "model": "wan-tiny",
                          "tier": tier, "webhook_url": url, "width": 32, "height": 32, "num_frames": 5,
                          "num_inference_steps": 2})
            n += 1
        if group:
            at = time.time()
            client.submit_many(group)
            for request in group:
                sent[request["request_id"]] = (request["tier"], at)
        time.sleep(max(0.0, 0.02 - (time.time() - started - elapsed)))
    return sent


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items() if pid is not None and Path(f"/proc/{pid}").exists()}


class Pipeline:
    """The services of one configuration (worker batch size, telemetry), started and ready."""

    def __init__(self, settings, logs: Path, *, batch: int, env: dict[str, str] | None = None,
                 engine: str = "null") -> None:
        self.settings, self.procs = settings, Processes(settings, logs)
        self.env = env or {}
        if engine == "null":  # two null workers: no GPU work, framebus's own overhead
            worker = ("worker", "--engine", "null", "--model", "wan-tiny", "--batch", str(batch), "--slots", "3")
            workers = (("w1", (*worker, "--worker-id", "w1")), ("w2", (*worker, "--worker-id", "w2")))
        else:  # one real worker with the default model: the two cores have room for one
            workers = (("w1", ("worker", "--batch", str(batch), "--worker-id", "w1")),)
        self.pids = {}
        for name, args in (("scheduler", ("scheduler",)), ("metering", ("metering",)), ("notifier", ("notifier",)),
                           *workers):
            self.pids[name] = self._start(name, args).pid
        self.pids["broker"] = broker_pid(settings)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready = [p for p in running(settings.state_dir) if p.pid in self.pids.values() and p.status == "ready"]
            if len(ready) == len(self.pids) - 1:
                return
            time.sleep(0.5)
        raise RuntimeError(f"services not ready in 300 s; see {logs}")

    def _start(self, name: str, args):
        from framebus.services.common.children import launch

        process = launch(self.settings, list(args), self.procs.logs / f"{name}-{time.time():.0f}.log", **self.env)
        self.procs.running.append(process)
        return process

    def stop(self) -> None:
        self.procs.stop_all()


def step(client, arrivals: Arrivals, pipeline: Pipeline, rate: float, seconds: float, prefix: str,
         grace_s: float = 20.0) -> dict:
    before, t0 = cpu_of(pipeline.pids), time.time()
    sent = offer(client, rate, seconds, prefix, arrivals.url)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(rid not in arrivals.at for rid in sent):
        time.sleep(0.2)
    span = time.time() - t0
    after = cpu_of(pipeline.pids)
    latency = {tier: [arrivals.at[rid] - at for rid, (t, at) in sent.items() if t == tier and rid in arrivals.at]
               for tier in TIERS}
    every = [x for values in latency.values() for x in values]
    delivered = sum(1 for rid in sent if rid in arrivals.at)
    last = max((arrivals.at[rid] for rid in sent if rid in arrivals.at), default=t0)
    return {
        "offered_per_s": rate, "sent": len(sent), "delivered": delivered, "lost": len(sent) - delivered,
        "delivered_per_s": delivered / max(1e-9, last - min(at for _, at in sent.values())),
        "p50_s": quantile(every, 0.5), "p99_s": quantile(every, 0.99),
        "tiers": {tier: {"n": len(values), "p50_s": quantile(values, 0.5), "p99_s": quantile(values, 0.99)}
                  for tier, values in latency.items()},
        "cpu_cores": {name: (after.get(name, 0) - before.get(name, 0)) / span for name in before},
    }


def overhead_p99(row: dict, tier: str) -> float | None:
    """A tier's p99 less the time the scheduler holds a partial batch of it on purpose (its
    ``max_wait_s``: 3 s for the batch tier, to fill batches): framebus's overhead on top of policy."""
    p99 = row["tiers"][tier]["p99_s"]
    return None if p99 is None else max(0.0, p99 - DEFAULT_TIERS[Tier(tier)].max_wait_s)


def sustained(row: dict) -> bool:
    """Nothing lost, and every tier's p99 overhead under the bound."""
    return row["lost"] == 0 and all((o := overhead_p99(row, t)) is not None and o < P99_BOUND_S for t in TIERS)


def tracing_cost(settings, logs: Path, client, arrivals: Arrivals, burst: int, spans: Path) -> list[dict]:
    """A burst of ``burst`` requests drained per telemetry setting, interleaved (off, 1%, 100%, off, 1%, 100%)."""
    settings_env = {
        "off": {"FRAMEBUS_TELEMETRY": "off"},
        "1%": {"FRAMEBUS_TELEMETRY": f"jsonl:{spans}", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": "0.01"},
        "100%": {"FRAMEBUS_TELEMETRY": f"jsonl:{spans}"},
    }
    rows = []
    for round_ in range(2):
        for name, env in settings_env.items():
            pipeline = Pipeline(settings, logs, batch=8, env=env)
            try:
                before, started = cpu_of(pipeline.pids), time.time()
                prefix = f"trace-{name.rstrip('%')}-{round_}"
                ids = [f"{prefix}-{n}" for n in range(burst)]
                for first in range(0, burst, 500):
                    client.submit_many([{"request_id": rid, "prompt": "a red circle moving left", "model": "wan-tiny",
                                         "tier": TIER_MIX[n % len(TIER_MIX)], "webhook_url": arrivals.url, "width": 32,
                                         "height": 32, "num_frames": 5, "num_inference_steps": 2}
                                        for n, rid in enumerate(ids[first:first + 500], start=first)])
                deadline = time.time() + 300
                while time.time() < deadline and any(rid not in arrivals.at for rid in ids):
                    time.sleep(0.2)
                done = max(arrivals.at.get(rid, time.time()) for rid in ids)
                after = cpu_of(pipeline.pids)
                services_cpu = sum(after[k] - before[k] for k in before if k != "broker")
                rows.append({"tracing": name, "round": round_, "requests": burst,
                             "delivered": sum(rid in arrivals.at for rid in ids),
                             "per_s": burst / (done - started), "cpu_ms_per_request": 1000 * services_cpu / burst})
            finally:
                pipeline.stop()
    return rows


def result_timings(settings) -> dict[str, object]:
    """Each request's first result on the results topic, by request id."""
    from kafka import KafkaConsumer

    from framebus.schemas.codec import decode_event

    consumer = KafkaConsumer(settings.topic("framebus.results"), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", consumer_timeout_ms=3000)
    found: dict[str, object] = {}
    try:
        for record in consumer:
            result = decode_event(record.headers, record.value, context=settings.request_context()).event
            found.setdefault(result.request_id, result)
    finally:
        consumer.close()
    return found


def generation_split(settings, logs: Path, client, arrivals: Arrivals, seconds: float, batch: int) -> dict:
    """One diffusers worker with the default model (wan-shapes): its capacity from a burst, then
    50% and 90% of it offered for ``seconds`` each; end to end split into its stages per tier."""
    pipeline = Pipeline(settings, logs, batch=batch, engine="diffusers")
    out: dict = {"model": settings.default_model, "worker_batch": batch}
    try:
        burst = [f"cap-{n}" for n in range(4 * batch)]
        started = time.time()
        client.submit_many([{"request_id": rid, "prompt": "a red circle moving left", "tier": "batch",
                             "webhook_url": arrivals.url, "seed": n} for n, rid in enumerate(burst)])
        while any(rid not in arrivals.at for rid in burst) and time.time() - started < 600:
            time.sleep(0.2)
        capacity = len(burst) / (max(arrivals.at[rid] for rid in burst) - started)
        out["capacity_per_s"] = capacity
        for share in (0.5, 0.9):
            rate = share * capacity
            sent = {}
            t0, n = time.time(), 0
            while time.time() - t0 < seconds:
                due = int(rate * (time.time() - t0)) + 1
                while n < due:
                    rid, tier = f"gen-{share}-{n}", TIER_MIX[n % len(TIER_MIX)]
                    # A seed of its own per request: no request is served from the result cache.
                    client.submit({"request_id": rid, "prompt": "a blue square moving up on a white background",
                                   "tier": tier, "webhook_url": arrivals.url, "seed": int(share * 10**6) + n})
                    sent[rid] = tier
                    n += 1
                time.sleep(0.05)
            while any(rid not in arrivals.at for rid in sent) and time.time() - t0 < seconds + 600:
                time.sleep(0.5)
            results = result_timings(settings)
            rows = {}
            for tier in TIERS:
                stages: dict[str, list[float]] = {k: [] for k in ("queue", "generation", "encode", "upload",
                                                                  "webhook", "end to end")}
                for rid in (r for r, t in sent.items() if t == tier and r in results and r in arrivals.at):
                    timings = results[rid].timings
                    stages["queue"].append(timings.queued_s or 0.0)
                    stages["generation"].append((timings.text_encode_s or 0) + (timings.denoise_s or 0)
                                                + (timings.decode_s or 0))
                    stages["encode"].append(timings.encode_s or 0.0)
                    stages["upload"].append(timings.upload_s or 0.0)
                    stages["webhook"].append(arrivals.at[rid] - timings.finished_at.timestamp())
                    stages["end to end"].append(arrivals.at[rid] - timings.accepted_at.timestamp())
                rows[tier] = {k: statistics.median(v) if v else None for k, v in stages.items()} | {
                    "n": len(stages["queue"])}
            out[f"{int(share * 100)}%"] = {"offered_per_s": rate, "sent": len(sent), "tiers": rows}
    finally:
        pipeline.stop()
    return out


def plot(curves: dict[int, list[dict]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False, sharey=True)
    colours = {"interactive": "tab:red", "standard": "tab:blue", "batch": "tab:green"}
    for ax, (batch, rows) in zip(axes[0], sorted(curves.items()), strict=True):
        for tier in TIERS:
            points = [(r["delivered_per_s"] * 3600, r["tiers"][tier]) for r in rows if r["tiers"][tier]["n"]]
            ax.plot([x for x, _ in points], [t["p50_s"] for _, t in points], "-o", color=colours[tier],
                    label=f"{tier} p50", markersize=4)
            ax.plot([x for x, _ in points], [t["p99_s"] for _, t in points], "--^", color=colours[tier],
                    label=f"{tier} p99", markersize=4)
        ax.axhline(P99_BOUND_S, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlabel("videos per hour delivered (null workers)")
        ax.set_title(f"worker batch size {batch}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("submit to webhook received, seconds")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(quick: bool = typer.Option(False), rates: str = typer.Option("50,100,200,300,400,500,600,800"),
         batches: str = typer.Option("1,8"), step_s: float = typer.Option(10.0),
         burst: int = typer.Option(1500), concurrency: int = typer.Option(16),
         gen_s: float = typer.Option(60.0, help="Seconds per load level with a real worker (0: skip)."),
         gen_batch: int = typer.Option(4), warmup_s: float = typer.Option(20.0)) -> None:
    offered = [float(r) for r in rates.split(",")] if not quick else [50.0, 200.0]
    sizes = [int(b) for b in batches.split(",")] if not quick else [8]
    step_s = step_s if not quick else 5.0
    burst = burst if not quick else 300
    gen_s = gen_s if not quick else 20.0
    warmup_s = warmup_s if not quick else 5.0
    curves: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as base:
        settings = base.model_copy(update={"webhook_http_hosts": frozenset({"127.0.0.1"}),
                                           "webhook_allowed_hosts": frozenset({"127.0.0.1"}),
                                           "webhook_concurrency_per_endpoint": concurrency})
        tenants(settings, "acme")
        arrivals = Arrivals()
        logs = Path(tmp) / "logs"
        with FramebusClient(settings=settings.model_copy(update={"tenant": "acme"}), source="/bench") as client:
            client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets").get(10)
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                       TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("load steps", total=len(offered) * len(sizes), detail="")
                for batch in sizes:
                    pipeline = Pipeline(settings, logs, batch=batch)
                    rows = curves[batch] = []
                    try:
                        # A fresh JVM broker spends its first minute compiling: warm the whole chain first,
                        # at a rate it drains, and wait until it has (a backlog would spoil the first step).
                        step(client, arrivals, pipeline, min(offered[-1], 100.0), warmup_s, f"warm-b{batch}",
                             grace_s=120.0)
                        for rate in offered:
                            row = step(client, arrivals, pipeline, rate, step_s, f"b{batch}-r{rate:.0f}")
                            rows.append(row)
                            progress.update(task, advance=1, detail=(
                                f"batch {batch}, {rate:.0f}/s offered: {row['delivered_per_s']:.0f}/s, "
                                f"p99 {row['p99_s'] or float('nan'):.2f}s, lost {row['lost']}"))
                            if row["lost"] > 0 or (row["p99_s"] or 0) > 30.0:
                                progress.update(task, advance=len(offered) - len(rows))
                                break  # far past the knee: the next steps say nothing more
                    finally:
                        pipeline.stop()
                progress.update(task, description="tracing cost")
                traced = tracing_cost(settings, logs, client, arrivals, burst, Path(tmp) / "spans")
                progress.update(task, description=f"{settings.default_model} worker: latency split")
                split = generation_split(settings, logs, client, arrivals, gen_s, gen_batch) if gen_s > 0 else {}

    best = {batch: max((r["delivered_per_s"] for r in rows if sustained(r)), default=0.0)
            for batch, rows in curves.items()}
    for batch, rows in curves.items():
        table = Table(title=f"end to end, null workers, worker batch size {batch} ({machine()})", title_justify="left")
        for column in ("offered/s", "delivered/s", "lost", "p50 s", *(f"{t} p50/p99 s" for t in TIERS),
                       "sustained", "busiest process (cores)"):
            table.add_column(column, justify="right")
        for r in rows:
            busiest = max(r["cpu_cores"].items(), key=lambda kv: kv[1])
            table.add_row(f"{r['offered_per_s']:.0f}", f"{r['delivered_per_s']:.0f}", str(r["lost"]),
                          f"{r['p50_s'] or float('nan'):.2f}",
                          *(f"{r['tiers'][t]['p50_s'] or float('nan'):.2f}/{r['tiers'][t]['p99_s'] or float('nan'):.2f}"
                            for t in TIERS),
                          "yes" if sustained(r) else "no", f"{busiest[0]} {busiest[1]:.2f}")
        console.print(table)
        console.print(f"batch {batch}: highest sustained rate (nothing lost; every tier's p99, less the time its "
                      f"policy holds a partial batch, under {P99_BOUND_S:g} s): "
                      f"{best[batch]:.0f} requests/s")
    cost = Table(title=f"the cost of tracing, bursts of {burst} drained ({machine()})", title_justify="left")
    for column in ("tracing", "requests/s (median)", "ratio to off", "CPU ms/request", "ratio to off"):
        cost.add_column(column, justify="right")
    medians = {name: (statistics.median(r["per_s"] for r in traced if r["tracing"] == name),
                      statistics.median(r["cpu_ms_per_request"] for r in traced if r["tracing"] == name))
               for name in ("off", "1%", "100%")}
    for name, (per_s, cpu) in medians.items():
        cost.add_row(name, f"{per_s:.0f}", f"{per_s / medians['off'][0]:.2f}x", f"{cpu:.2f}",
                     f"{cpu / medians['off'][1]:.2f}x")
    console.print(cost)
    for level in ("50%", "90%"):
        if level not in split:
            continue
        table = Table(title=f"{split['model']}, one worker (batch {split['worker_batch']}), at {level} of its "
                            f"{split['capacity_per_s']:.2f} requests/s: median seconds per stage ({machine()})",
                      title_justify="left")
        stages = ("queue", "generation", "encode", "upload", "webhook", "end to end")
        for column in ("tier", "n", *stages):
            table.add_column(column, justify="right")
        for tier, row in split[level]["tiers"].items():
            table.add_row(tier, str(row["n"]), *(f"{row[k]:.2f}" if row[k] is not None else "-" for k in stages))
        console.print(table)
    RESULTS.write_text(json.dumps({"machine": machine(), "step_s": step_s, "p99_bound_s": P99_BOUND_S,
                                   "webhook_concurrency_per_endpoint": concurrency, "curves": curves,
                                   "highest_sustained_per_s": best, "tracing": traced,
                                   "tracing_medians": medians, "generation_split": split}, indent=2) + "\n")
    plot(curves, PLOT, f"submit to webhook, 2 null workers, scheduler, metering, notifier, broker and S3 on "
                       f"{machine()}")
    console.print(f"measured on {machine()}; wrote {RESULTS} and {PLOT}")


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", "160")
    typer.run(main)
