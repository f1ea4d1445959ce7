"""Scheduler benchmarks with null workers, on a private Kafka and S3 (never the user's stack).

1. throughput: after a warm-up, N requests submitted as fast as the SDK can: admission +
   dispatch rate (requests on framebus.jobs per second) and end-to-end rate, against the
   submit rate in the same run (ratio ~1 means the scheduler keeps up with its input);
   nothing lost. Then the sustained rate: N requests queued on Kafka while the scheduler
   is down, drained once it starts, with CPU per request of each process.
2. priority: 5,000 batch requests queued, the worker busy; 50 interactive requests one
   at a time: each one's queue wait (worker start - acceptance), against one batch duration.
3. fairness: B's 10 requests alone (the baseline: B's own work time); then tenant A
   queues 1,000 and B sends 10 again (5 trials, A's backlog still queued); B's completion
   time against twice its own work plus one job.
4. fill: batch fill ratio and queue wait per tier at 30%, 70% and 100% of capacity.

    python -m bench.scheduler [--requests 5000] [--quick]

Writes bench/results/scheduler.json and prints tables.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import typer
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from bench.harness import Processes, private_stack, tenants
from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.schemas.codec import decode_event
from framebus.schemas.events import GenerationCompleted
from framebus.schemas.state import RequestState
from framebus.schemas.workers import JobDispatched
from framebus.services.common.machine import machine
from framebus.services.common.settings import Settings
from framebus.services.generator.engine import PALETTE

RESULTS = Path(__file__).parent / "results" / "scheduler.json"
SHAPE = {"model": "wan-tiny", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


class Tail:
    """Follows a topic from its start, decoding CloudEvents."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap_servers,
                                      auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)

    def read(self, until, timeout_s: float) -> list[tuple[float, object]]:
        """(arrival time, event) pairs until ``until(events)`` or the timeout."""
        got: list[tuple[float, object]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(got):
            for records in self.consumer.poll(timeout_ms=200).values():
                now = time.time()
                got.extend((now, decode_event(r.headers, r.value).event) for r in records)
        return got

    def close(self) -> None:
        self.consumer.close()


def throughput(settings: Settings, procs: Processes, n: int, workers: int = 2, batch: int = 64, slots: int = 3) -> dict:
    """Offered load (the SDK submitting as fast as it can while the scheduler runs), then a backlog drain.

    The drain is the sustained rate: n requests wait on Kafka while the scheduler is down,
    then it starts and admits and dispatches all of them. A warm-up run comes first, because
    a fresh broker spends its first seconds compiling (JIT) rather than serving.
    """
    n = max(batch, n // batch * batch)  # whole batches: a partial last batch waits out its tier's max wait
    scheduler = procs.running[0]
    worker_procs = [procs.start(f"w{i}", "worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", f"tp-w{i}", "--batch", str(batch),
                                "--slots", str(slots)) for i in range(workers)]
    time.sleep(3)
    _submit_and_wait(settings, "warm", min(n, 2000))
    offered = _submit_and_wait(settings, "tp", n)
    terminate(scheduler.pid, timeout_s=15)
    procs.running.remove(scheduler)
    _submit(settings, "drain", n)
    jobs = Tail(settings, "framebus.jobs")
    jobs.read(lambda got: False, timeout_s=1)  # positioned at the end before the scheduler starts
    scheduler = procs.start("scheduler-drain", "scheduler")
    pids = {"scheduler": scheduler.pid, **{f"worker {i}": w.pid for i, w in enumerate(worker_procs)},
            "kafka broker": _broker_pid(settings)}
    meters: list[CpuMeter] = []

    def drained(got: list) -> bool:
        if not meters and got:  # count from the first dispatch: start-up (imports, catching up) is not per request
            meters.append(CpuMeter(pids))
        return _dispatched(got, "drain") >= n

    got = jobs.read(drained, timeout_s=300)
    jobs.close()
    cpu = meters[0].read()
    times = [t for t, _ in _jobs_of(got, "drain")]
    drain_s = max(times) - min(times)
    return {"requests": n, "workers": workers, "batch": batch, "slots": slots, **offered,
            "drain_per_s": _dispatched(got, "drain") / drain_s,
            "drain_cpu_core_ms_per_request": {name: 1000 * seconds / n for name, seconds in cpu.items()}}


def _submit(settings: Settings, prefix: str, n: int) -> None:
    with FramebusClient(tenant_id="acme", settings=settings) as client:
        for chunk in range(0, n, 500):
            client.submit_many([{"request_id": f"{prefix}-{i}", "prompt": "a fox", "tier": "batch", **SHAPE}
                                for i in range(chunk, min(n, chunk + 500))])


def _dispatched(got: list, prefix: str) -> int:
    return sum(len(e.requests) for _, e in _jobs_of(got, prefix))


def _jobs_of(got: list, prefix: str) -> list:
    """(arrival, job) pairs of the jobs that carry this run's requests (ids start with ``prefix-``)."""
    return [(t, e) for t, e in got if isinstance(e, JobDispatched) and e.requests[0].request_id.startswith(f"{prefix}-")]


def _submit_and_wait(settings: Settings, prefix: str, n: int) -> dict:
    jobs, results = Tail(settings, "framebus.jobs"), Tail(settings, "framebus.results")
    started = time.time()
    _submit(settings, prefix, n)
    submitted = time.time()
    dispatched = jobs.read(lambda got: _dispatched(got, prefix) >= n, timeout_s=300)
    mine = lambda got: [(t, e) for t, e in got if e.request_id.startswith(f"{prefix}-")]
    finished = mine(results.read(lambda got: len({e.request_id for _, e in mine(got)}) >= n, timeout_s=300))
    jobs.close(), results.close()
    last_dispatch = max(t for t, _ in _jobs_of(dispatched, prefix))
    ids = [e.request_id for _, e in finished]
    return {"submit_per_s": n / (submitted - started), "dispatch_per_s": n / (last_dispatch - started),
            "end_to_end_per_s": n / (max(t for t, _ in finished) - started),
            "ratio_dispatch_to_submit": (submitted - started) / (last_dispatch - started),
            "lost": n - len(set(ids)), "repeated": len(ids) - len(set(ids)),
            "completed": sum(isinstance(e, GenerationCompleted) for _, e in finished),
            "not_completed": dict(collections.Counter(_outcome(e) for _, e in finished
                                                      if not isinstance(e, GenerationCompleted)))}


def _outcome(result) -> str:
    error = getattr(result, "error", None)
    return f"{result.outcome}:{error.code.value}" if error is not None else str(result.outcome)


class CpuMeter:
    """CPU seconds (user + system) each process spends from now until ``read``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items() if pid is not None}
        self.start = {name: self._cpu(p) for name, p in self.processes.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def read(self) -> dict[str, float]:
        return {name: self._cpu(p) - self.start[name] for name, p in self.processes.items()}


def _broker_pid(settings: Settings) -> int | None:
    """The private stack's Kafka JVM (its data dir is under the stack's state dir)."""
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "java" in command and str(settings.state_dir) in command:
            return process.pid
    return None


def priority(settings: Settings, procs: Processes, trials: int, backlog: int, job_ms: int) -> dict:
    procs.start("busy", "worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", "prio-w", "--batch", "4", "--slots", "1", "--delay-ms", str(job_ms))
    time.sleep(3)
    waits = []
    statuses = Statuses(settings)
    with FramebusClient(tenant_id="acme", settings=settings) as client:
        warm_null_worker(client, statuses, SHAPE, {**SHAPE, "width": 80})
        bulk = [f"bk-{i}" for i in range(backlog)]
        during_burst = {}  # interactive requests sent while the batch burst is still being admitted
        for chunk in range(0, backlog, 1000):
            client.submit_many([{"request_id": rid, "prompt": "bulk", "tier": "batch", **SHAPE}
                                for rid in bulk[chunk:chunk + 1000]])
            receipt = client.submit({"request_id": f"burst-{chunk}", "prompt": "now", "tier": "interactive",
                                     **SHAPE, "width": 80})
            during_burst[receipt.request_id] = receipt.accepted_at
        statuses.wait_admitted([*bulk, *during_burst], timeout_s=120)  # the scenario: 5,000 queued, the worker busy
        admission = [(statuses.queued_at[rid] - accepted).total_seconds() for rid, accepted in during_burst.items()]
        for trial in range(trials):
            time.sleep(random.uniform(0, job_ms / 1000))  # arrive at any point of the running batch
            receipt = client.submit({"request_id": f"urgent-{trial}", "prompt": "now", "tier": "interactive",
                                     **SHAPE, "width": 80})
            started = statuses.wait_started(receipt.request_id, timeout_s=30)
            if started is not None:
                waits.append((started - receipt.accepted_at).total_seconds())
    statuses.close()
    return {"backlog": backlog, "trials": len(waits), "batch_duration_s": job_ms / 1000,
            "waits_s": [round(w, 4) for w in waits],
            "burst_admission_s": [round(a, 4) for a in admission],
            "wait_p50_s": pct(waits, 0.5), "wait_p99_s": pct(waits, 0.99), "bound_s": job_ms / 1000 + 0.1,
            "within_bound": sum(w <= job_ms / 1000 + 0.1 for w in waits)}


def warm_null_worker(client: FramebusClient, statuses: Statuses, *shapes: dict) -> None:
    """Have the null worker encode and store its clip of every colour of these shapes before
    measuring: a first-seen (shape, colour) costs an ffmpeg run and an upload, which is the
    null engine warming up, not the scheduler."""
    ids = []
    for number, shape in enumerate(shapes):
        for seed in range(len(PALETTE)):
            ids.append(f"warm-{number}-{seed}")
            client.submit({"request_id": ids[-1], "prompt": "warm", "tier": "interactive", **shape, "seed": seed})
    statuses.wait_terminal(ids, timeout_s=60)


class Statuses:
    """Follows framebus.status from now on with one consumer: polling the SDK's ``status()``
    (a fresh consumer reading a partition per call) would load the machine it measures."""

    def __init__(self, settings: Settings) -> None:
        self.tail = Tail(settings, "framebus.status")
        self.tail.read(lambda got: False, timeout_s=1)  # skip what is there already
        self.latest: dict[str, object] = {}
        self.queued_at: dict[str, object] = {}  # when the scheduler admitted each request

    def _poll(self, until, timeout_s: float) -> None:
        applied = 0  # ``got`` grows in place between calls

        def seen(got: list) -> bool:
            nonlocal applied
            for _at, status in got[applied:]:
                self.latest[status.request_id] = status
                if status.state is RequestState.QUEUED:
                    self.queued_at[status.request_id] = status.timings.queued_at
            applied = len(got)
            return until()
        self.tail.read(seen, timeout_s)

    def wait_started(self, request_id: str, timeout_s: float):
        """When the worker started ``request_id`` (its first status that says), or None at the timeout."""
        self._poll(lambda: getattr(self.latest.get(request_id), "timings", None) is not None
                   and self.latest[request_id].timings.started_at is not None, timeout_s)
        status = self.latest.get(request_id)
        return status.timings.started_at if status is not None else None

    def wait_admitted(self, request_ids: list[str], timeout_s: float) -> None:
        """Until the scheduler has decided on each (the SDK's own `accepted` does not count)."""
        self._poll(lambda: all(r in self.latest and self.latest[r].state is not RequestState.ACCEPTED
                               for r in request_ids), timeout_s)

    def wait_terminal(self, request_ids: list[str], timeout_s: float) -> list:
        done = lambda: all(r in self.latest and self.latest[r].state.is_terminal for r in request_ids)
        self._poll(done, timeout_s)
        return [self.latest.get(r) for r in request_ids]

    def close(self) -> None:
        self.tail.close()


def fairness(settings: Settings, procs: Processes, job_ms: int, trials: int = 5) -> dict:
    """B's own work time is a baseline measured in the same run: B's 10 requests alone on the
    idle worker (three jobs, with their real dispatch, encode, upload and result overheads).
    Then A queues 1,000 standard requests and, while A's backlog is still queued, B sends 10
    at a time, ``trials`` times. Bound: twice B's own work plus one job."""
    procs.start("fair", "worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", "fair-w", "--batch", "4", "--slots", "1", "--delay-ms", str(job_ms))
    time.sleep(3)
    statuses = Statuses(settings)

    def send_b(client: FramebusClient, name: str) -> tuple[float, float]:
        """B's 10 requests: (seconds until the last one finished, the worker's median job length)."""
        ids = [f"b-{name}-{i}" for i in range(10)]
        started = time.time()
        client.submit_many([{"request_id": rid, "prompt": "mine", "tier": "standard", **SHAPE} for rid in ids])
        done = statuses.wait_terminal(ids, timeout_s=120)
        job_s = statistics.median((st.timings.finished_at - st.timings.started_at).total_seconds() for st in done)
        return max(st.timings.finished_at.timestamp() for st in done) - started, job_s

    runs = []
    with FramebusClient(tenant_id="tenant-a", settings=settings) as a, \
            FramebusClient(tenant_id="tenant-b", settings=settings) as b:
        warm_null_worker(a, statuses, SHAPE)
        own = statistics.median(send_b(b, f"alone-{n}")[0] for n in range(3))
        a.submit_many([{"request_id": f"a-{i}", "prompt": "bulk", "tier": "standard", **SHAPE} for i in range(1000)])
        time.sleep(1)
        for trial in range(trials):
            elapsed, job_s = send_b(b, str(trial))
            runs.append({"b_elapsed_s": elapsed, "job_s": job_s, "bound_s": 2 * own + job_s})
    # The worker's idle time between jobs (a free slot announced, seen, a job dispatched and
    # received): with one slot it is paid once per job.
    jobs = sorted({(st.timings.started_at, st.timings.finished_at) for st in statuses.latest.values()
                   if st.state.is_terminal and st.timings.started_at and st.timings.finished_at})
    busy: list[list] = []  # the worker's busy intervals: requests of one job overlap
    for started, finished in jobs:
        if busy and started <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], finished)
        else:
            busy.append([started, finished])
    gaps = [(nxt[0] - prev[1]).total_seconds() for prev, nxt in itertools.pairwise(busy)]
    statuses.close()
    worst = max(runs, key=lambda r: r["b_elapsed_s"] / r["bound_s"])
    return {"b_own_work_s": own, "trials": runs, "within_bound": sum(r["b_elapsed_s"] <= r["bound_s"] for r in runs),
            "b_elapsed_median_s": statistics.median(r["b_elapsed_s"] for r in runs), "worst": worst,
            "ratio_to_own_work_median": statistics.median(r["b_elapsed_s"] for r in runs) / own,
            "gap_between_jobs_p50_ms": 1000 * pct(gaps, 0.5), "gap_between_jobs_p99_ms": 1000 * pct(gaps, 0.99)}


def fill(settings: Settings, procs: Processes, job_ms: int, seconds: float) -> list[dict]:
    procs.start("fill", "worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", "fill-w", "--batch", "8", "--slots", "1", "--delay-ms", str(job_ms))
    time.sleep(3)
    capacity = 8 / (job_ms / 1000)  # requests per second one worker finishes at full batches
    rows = []
    jobs = Tail(settings, "framebus.jobs")
    jobs.read(lambda got: False, timeout_s=1)
    with FramebusClient(tenant_id="acme", settings=settings) as client:
        for tier in ("interactive", "standard", "batch"):
            for load in (0.3, 0.7, 1.0):
                rate = capacity * load
                sent, accepted, t_end, n = [], {}, time.monotonic() + seconds, 0
                while time.monotonic() < t_end:
                    rid = f"fill-{tier}-{load}-{n}"
                    accepted[rid] = client.submit({"request_id": rid, "prompt": "x", "tier": tier, **SHAPE}).accepted_at
                    sent.append(rid)
                    n += 1
                    time.sleep(random.expovariate(rate))
                got = jobs.read(lambda g: {r.request_id for _, e in g if isinstance(e, JobDispatched)
                                           for r in e.requests} >= set(sent), timeout_s=60)
                mine = [e for _, e in got if isinstance(e, JobDispatched) and e.requests[0].request_id in set(sent)]
                waits = []
                for rid in sent[:: max(1, len(sent) // 25)]:
                    status = client.status(rid, timeout_s=5)
                    if status and status.timings.started_at:  # acceptance to the worker starting it
                        waits.append((status.timings.started_at - accepted[rid]).total_seconds())
                rows.append({"tier": tier, "load": load, "requests": len(sent),
                             "fill_ratio": statistics.mean(len(j.requests) for j in mine) / 8 if mine else 0.0,
                             "wait_p50_ms": 1000 * pct(waits, 0.5), "wait_p99_ms": 1000 * pct(waits, 0.99)})
                time.sleep(job_ms / 1000 * 2)
    jobs.close()
    return rows


def main(requests: int = typer.Option(5000, min=100), quick: bool = typer.Option(False, help="Smaller runs."),
         only: str | None = typer.Option(None, help="Run one scenario: throughput, priority, fairness or fill.")) -> None:
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("throughput", lambda s, p: throughput(s, p, requests // (5 if quick else 1))),
                          ("priority", lambda s, p: priority(s, p, 10 if quick else 50, 5000, 500)),
                          ("fairness", lambda s, p: fairness(s, p, 200)),
                          ("fill", lambda s, p: fill(s, p, 200, 3.0 if quick else 8.0))):
            if only and name != only:
                continue
            with console.status(f"{name}: starting a private stack"), private_stack(Path(tmp) / name) as settings:
                tenants(settings, "acme", "tenant-a", "tenant-b")
                procs = Processes(settings, Path(tmp) / name / "logs")
                try:
                    procs.start("scheduler", "scheduler")
                    time.sleep(4)
                    with console.status(f"{name}: running"):
                        report[name] = run(settings, procs)
                finally:
                    procs.stop_all()
            console.print(f"{name}: done")
    _print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if only and RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**previous, **report, "machine": machine()}, indent=2, default=float) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"written to {RESULTS}")


def _print(report: dict) -> None:
    if "throughput" in report:
        _print_throughput(report["throughput"])
    if "priority" in report or "fairness" in report:
        _print_priority(report.get("priority"), report.get("fairness"))
    if "fill" in report:
        _print_fill(report["fill"])


def _print_throughput(tp: dict) -> None:
    table = Table(title=f"scheduler throughput with {tp['workers']} null workers (batch {tp['batch']}, "
                        f"{tp['slots']} slots)", title_justify="left")
    for column in ("requests", "submitted/s", "dispatched/s", "x submit rate", "completed/s", "lost", "repeated",
                   "drain (sustained)/s"):
        table.add_column(column)
    table.add_row(str(tp["requests"]), f"{tp['submit_per_s']:,.0f}", f"{tp['dispatch_per_s']:,.0f}",
                  f"{tp['ratio_dispatch_to_submit']:.2f}", f"{tp['end_to_end_per_s']:,.0f}", str(tp["lost"]),
                  str(tp["repeated"]), f"{tp['drain_per_s']:,.0f}")
    console.print(table)
    cpu = Table(title="where the CPU goes while draining (core-ms per request)", title_justify="left")
    for name in tp["drain_cpu_core_ms_per_request"]:
        cpu.add_column(name)
    cpu.add_row(*(f"{ms:.2f}" for ms in tp["drain_cpu_core_ms_per_request"].values()))
    console.print(cpu)


def _print_priority(pr: dict | None, fa: dict | None) -> None:
    table = Table(title="priority and fairness", title_justify="left")
    for column in ("scenario", "measured", "bound", "verdict"):
        table.add_column(column)
    if pr:
        table.add_row(f"interactive behind {pr['backlog']} batch, {pr['trials']} trials",
                      f"wait p50 {pr['wait_p50_s'] * 1000:.0f} ms, p99 {pr['wait_p99_s'] * 1000:.0f} ms",
                      f"{pr['bound_s'] * 1000:.0f} ms (one batch + 100 ms)",
                      f"{pr['within_bound']}/{pr['trials']} within")
    if fa:
        worst = fa["worst"]
        table.add_row(f"B's 10 behind A's 1,000, {len(fa['trials'])} trials",
                      f"median {fa['b_elapsed_median_s']:.2f} s ({fa['ratio_to_own_work_median']:.1f}x own work), "
                      f"worst {worst['b_elapsed_s']:.2f} s",
                      f"2 x own work ({fa['b_own_work_s']:.2f} s alone) + one job ({worst['job_s'] * 1000:.0f} ms): "
                      f"{worst['bound_s']:.2f} s",
                      f"{fa['within_bound']}/{len(fa['trials'])} within")
        table.add_row("worker idle between jobs (1 slot)", f"p50 {fa['gap_between_jobs_p50_ms']:.0f} ms, "
                      f"p99 {fa['gap_between_jobs_p99_ms']:.0f} ms", "", "")
    console.print(table)


def _print_fill(rows: list[dict]) -> None:
    table = Table(title="batch fill and queue wait (one worker, batch 8)", title_justify="left")
    for column in ("tier", "load", "requests", "fill", "wait p50", "wait p99"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["tier"], f"{row['load']:.0%}", str(row["requests"]), f"{row['fill_ratio']:.2f}",
                      f"{row['wait_p50_ms']:.0f} ms", f"{row['wait_p99_ms']:.0f} ms")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
