"""An overnight bulk job on a private Kafka and S3: scheduler, two null workers, tracker, notifier.

N lines (1% of them invalid) through the whole pipeline, with what goes wrong overnight:
the submitting CLI is killed with SIGKILL mid-publish and run again (it resumes), and one
worker is killed mid-run and restarted by its "supervisor" (this script). Measured:

- results per second for every 10 s of the run (a PNG plot: a bulk job should drain at full
  rate from its first minute, not ramp up);
- how long a progress query takes (what `framebus batch status` does) throughout and after,
  and one `framebus batch status` command end to end;
- the batch tracker's memory while it runs and after a restart once the batch finished (it
  must not grow with earlier batches);
- the outcome checked line by line: a manifest line per valid custom id, the error file's
  line numbers and custom ids exact, counts that add up to the file, links valid for
  FRAMEBUS_BATCH_LINK_EXPIRY_S from the manifest's writing.

    python -m bench.batch [--lines 20000] [--quick]

Writes bench/results/batch.json and bench/results/batch-throughput.png and prints a table.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import typer
from kafka import KafkaConsumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.harness import Processes, private_stack, tenants
from bench.webhooks import Receiver
from framebus.client import FramebusClient
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.batch.core import batch_id_for
from framebus.services.batch.submit import file_digest
from framebus.services.batch.view import read_batches
from framebus.services.common import storage
from framebus.services.common.children import child_env
from framebus.services.common.machine import machine

RESULTS = Path(__file__).parent / "results" / "batch.json"
PLOT = Path(__file__).parent / "results" / "batch-throughput.png"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LINK_EXPIRY_S = 12 * 3600
WINDOW_S = 10.0
console = Console()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid(settings) -> int | None:
    """The private broker's JVM (its command line names this stack's state directory)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "java" in cmdline and str(settings.state_dir) in cmdline:
                return int(proc.name)
    return None


def write_file(path: Path, n: int) -> tuple[set[str], dict[int, str]]:
    """``n`` lines, every 100th invalid (width 63); returns the valid custom ids and the bad lines."""
    valid, bad = set(), {}
    with open(path, "w") as out:
        for number in range(1, n + 1):
            row = {"custom_id": f"l{number}", "prompt": f"prompt {number % 50}", "model": "wan-tiny",
                   "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
            if number % 100 == 0:
                row["width"] = 63
                bad[number] = row["custom_id"]
            else:
                valid.add(row["custom_id"])
            out.write(json.dumps(row) + "\n")
    return valid, bad


def result_times(settings, expected: int) -> list[float]:
    consumer = KafkaConsumer(settings.topic("framebus.results"), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", consumer_timeout_ms=5000)
    try:
        return sorted(record.timestamp / 1000 for record in consumer)[:expected * 2]
    finally:
        consumer.close()


def plot(windows: list[tuple[float, float]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([t for t, _ in windows], [rate for _, rate in windows], width=WINDOW_S * 0.9, align="edge")
    ax.set_xlabel("seconds since the batch was submitted")
    ax.set_ylabel("results per second")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(lines: int = typer.Option(20000), quick: bool = typer.Option(False)) -> None:
    n = 2000 if quick else lines
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as base:
        settings = base.model_copy(update={"webhook_http_hosts": frozenset({"127.0.0.1"}),
                                           "webhook_allowed_hosts": frozenset({"127.0.0.1"}),
                                           "batch_link_expiry_s": LINK_EXPIRY_S})
        tenants(settings, "acme")
        with FramebusClient(settings=settings, source="/bench") as client:
            client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets").get(10)
        procs = Processes(settings, Path(tmp) / "logs")
        receiver = Receiver()
        env = {**child_env(settings), "COLUMNS": "200"}  # the CLI's lines unwrapped
        worker_args = ("worker", "--engine", "null", "--model", "wan-tiny", "--batch", "32", "--slots", "2")
        path = Path(tmp) / "lines.jsonl"
        valid, bad = write_file(path, n)
        batch_id = batch_id_for("acme", file_digest(path))
        submit = [sys.executable, "-m", "framebus.services.cli.main", "batch", "submit", str(path), "--tenant", "acme",
                  "--webhook", receiver.url]
        queries, rss, events = [], [], []
        try:
            procs.start("scheduler", "scheduler")
            workers = {name: procs.start(name, *worker_args, "--worker-id", name) for name in ("w1", "w2")}
            procs.start("notifier", "notifier")
            tracker = procs.start("tracker", "batch-tracker")
            time.sleep(6)
            idle_rss = rss_mib(tracker.pid)
            services = {"scheduler": procs.running[0].pid, "workers": [w.pid for w in workers.values()],
                        "notifier": procs.running[3].pid, "tracker": tracker.pid, "broker": broker_pid(settings)}

            def cpu_now() -> dict[str, float]:
                taken = {"submitter": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                         + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime}
                for name, pids in services.items():
                    taken[name] = sum(cpu_s(pid) for pid in (pids if isinstance(pids, list) else [pids])
                                      if pid is not None and Path(f"/proc/{pid}").exists())
                return taken

            cpu = [("submitted", time.time(), cpu_now())]
            started = time.time()
            first = subprocess.Popen(submit, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2.5 if not quick else 1.5)
            first.send_signal(signal.SIGKILL)
            first.wait()
            events.append((time.time() - started, "submitter killed"))
            resumed = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
            events.append((time.time() - started, "submission resumed and done"))
            cpu.append(("submission done", time.time(), cpu_now()))
            resume_line = next((line for line in resumed.stdout.splitlines() if line.startswith("batch ")), "")
            killed_worker = False
            columns = (TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[detail]}"))
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("batch", total=len(valid), detail="")
                deadline = time.monotonic() + 3600
                while time.monotonic() < deadline:
                    asked = time.perf_counter()
                    summary = read_batches(settings).summary(batch_id)
                    queries.append(time.perf_counter() - asked)
                    rss.append((time.time() - started, rss_mib(tracker.pid)))
                    counts = summary.counts if summary else None
                    if counts is not None:
                        progress.update(task, completed=counts.ended,
                                        detail=f"running {counts.running} queued {counts.queued}")
                    if summary is not None and summary.completed is not None:
                        break
                    if counts is not None and not killed_worker and counts.ended >= 0.4 * len(valid):
                        cpu.append(("worker killed", time.time(), cpu_now()))
                        workers["w2"].send_signal(signal.SIGKILL)
                        events.append((time.time() - started, "worker w2 killed"))
                        killed_worker = True
                        time.sleep(5)
                        workers["w2"] = procs.start("w2-again", *worker_args, "--worker-id", "w2")
                        services["workers"] = [w.pid for w in workers.values()]
                        events.append((time.time() - started, "worker w2 restarted"))
                    time.sleep(2)
            finished_at = time.time()
            cpu.append(("finished", time.time(), cpu_now()))
            after = []
            for _ in range(5):  # the finished batch is still there, as fast
                asked = time.perf_counter()
                read_batches(settings).summary(batch_id)
                after.append(time.perf_counter() - asked)
            asked = time.perf_counter()
            command = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "batch", "status", batch_id,
                                      "--no-follow"], env=env, capture_output=True, text=True, timeout=60)
            command_s = time.perf_counter() - asked
            peak_rss = max(r for _, r in rss)
            terminate_tracker = procs.running.index(tracker)
            procs.running.pop(terminate_tracker).terminate()
            tracker.wait(20)
            tracker = procs.start("tracker-again", "batch-tracker")
            time.sleep(8)
            restarted_rss = rss_mib(tracker.pid)
            done = read_batches(settings).summary(batch_id).completed
            s3 = storage.s3_client(settings)
            manifest = [json.loads(line) for line in s3.get_object(
                Bucket=settings.s3_bucket, Key=done.manifest_key)["Body"].read().splitlines()]
            errors = [json.loads(line) for line in s3.get_object(
                Bucket=settings.s3_bucket, Key=done.errors_key)["Body"].read().splitlines()] if done.errors_key else []
            link_ok = httpx.get(manifest[0]["url"], timeout=10).status_code == 200
            times = result_times(settings, len(valid))
        finally:
            procs.stop_all()

    by_window = collections.Counter(int((t - started) // WINDOW_S) for t in times)
    windows = [(w * WINDOW_S, by_window.get(w, 0) / WINDOW_S) for w in range(0, max(by_window) + 1)]
    per_minute = collections.Counter(int((t - started) // 60) for t in times)
    expiries = [datetime.fromisoformat(line["url_expires_at"]).timestamp() - done.completed_at.timestamp()
                for line in manifest if "url_expires_at" in line]
    phases = []
    for (name_a, at_a, cpu_a), (name_b, at_b, cpu_b) in zip(cpu, cpu[1:], strict=False):
        span = at_b - at_a
        phases.append({"phase": f"{name_a} to {name_b}", "seconds": span,
                       "results": sum(at_a <= t < at_b for t in times),
                       "cpu_cores_used": {k: max(0.0, cpu_b[k] - cpu_a.get(k, 0.0)) / span for k in cpu_b}})
    checks = {
        "manifest_one_line_per_valid_custom_id": sorted(line["custom_id"] for line in manifest) == sorted(valid),
        "errors_exact_line_numbers_and_ids": sorted((e["line"], e["custom_id"]) for e in errors
                                                    if e["outcome"] == "rejected") == sorted(bad.items()),
        "counts_add_up_to_the_file": done.counts.ended + done.counts.rejected == n,
        "links_valid_for_the_configured_lifetime": all(abs(e - LINK_EXPIRY_S) < 60 for e in expiries) and link_ok,
        "each_request_once": len({line["request_id"] for line in manifest}) == len(valid),
    }
    out = {
        "lines": n, "invalid": len(bad), "events": events, "resumed_submission": resume_line,
        "submit_to_batch_completed_s": finished_at - started,
        "first_result_after_s": times[0] - started if times else None,
        "results_per_s_overall": len(times) / (times[-1] - started) if times else 0.0,
        "results_per_minute": {str(m): per_minute[m] for m in sorted(per_minute)},
        "results_per_s_per_10s": windows,
        "counts": done.counts.model_dump(),
        "progress_query_s": {"p50": statistics.median(queries), "max": max(queries), "after_finish_max": max(after)},
        "batch_status_command_s": command_s, "batch_status_command_ok": command.returncode == 0,
        "tracker_rss_mib": {"idle_before": idle_rss, "peak_during": peak_rss, "after_restart": restarted_rss},
        "webhooks_received": receiver.count, "checks": checks, "phases": phases,
    }
    table = Table("measure", "value", title=f"a bulk job of {n:,} lines ({len(bad)} invalid), 2 null workers",
                  title_justify="left")
    table.add_row("submit to batch.completed", f"{out['submit_to_batch_completed_s']:.0f} s")
    table.add_row("results per second, overall", f"{out['results_per_s_overall']:.1f}")
    table.add_row("first result after", f"{out['first_result_after_s']:.2f} s")
    table.add_row("results per second per 10 s", ", ".join(f"{rate:.0f}" for _, rate in windows))
    table.add_row("results per minute", ", ".join(f"{v:,}" for v in out["results_per_minute"].values()))
    table.add_row("what went wrong on purpose", "; ".join(f"{what} at {at:.0f} s" for at, what in events))
    table.add_row("resumed submission said", resume_line)
    table.add_row("progress query (batch status) p50 / max / after finish",
                  f"{queries and statistics.median(queries) * 1000:.0f} / {max(queries) * 1000:.0f} / "
                  f"{max(after) * 1000:.0f} ms")
    table.add_row("`framebus batch status` command, end to end", f"{command_s:.2f} s (exit {command.returncode})")
    table.add_row("tracker RSS idle / peak / after restart", f"{idle_rss:.0f} / {peak_rss:.0f} / {restarted_rss:.0f} MiB")
    table.add_row("counts", json.dumps({k: v for k, v in out["counts"].items() if k not in ("queued", "running")}))
    table.add_row("webhooks received (per line + batch.completed)", f"{receiver.count:,} of {len(valid) + 1:,}")
    for name, ok in checks.items():
        table.add_row(name.replace("_", " "), "yes" if ok else "[bold red]NO[/]")
    console.print(table)
    names = list(phases[0]["cpu_cores_used"]) if phases else []
    by_phase = Table("phase", "s", "results/s", *names, title="where the cores went (cores used per process)",
                     title_justify="left")
    for phase in phases:
        by_phase.add_row(phase["phase"], f"{phase['seconds']:.0f}", f"{phase['results'] / phase['seconds']:.0f}",
                         *(f"{phase['cpu_cores_used'][k]:.2f}" for k in names))
    console.print(by_phase)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    plot(windows, PLOT, f"{n:,}-line bulk job, 2 null workers (one killed), {machine()}")
    console.print(f"measured on {machine()}")
    console.print(f"wrote {RESULTS} and {PLOT}")
    if not all(checks.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
