"""Startup of the local servers: time from spawn to a real answer, median of N runs.

Each start is timed beside a baseline taken in the same run, so the figure survives a
noisy shared machine: Kafka against a bare JVM start (`java -version` with the same
heap), versitygw against its own `--version`. Also reports the disk used by the
fetched infra (jars, binary). Writes bench/results/startup.json and prints a table.

    python -m bench.startup [--runs 3]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from framebus.infra.kafka import KAFKA_VERSION, KafkaBroker
from framebus.infra.process import free_port
from framebus.infra.s3 import VERSITYGW_VERSION, S3Server
from framebus.services.common.machine import machine
from framebus.services.common.settings import Settings

RESULTS = Path(__file__).parent / "results" / "startup.json"


def _timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, capture_output=True, check=True)
    return time.monotonic() - started


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main(runs: int = typer.Option(3, min=1, max=10, help="Starts per server.")) -> None:
    console = Console()
    cache = Settings().cache_dir
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kafka_times, jvm_times, s3_times, s3_base = [], [], [], []
        for run in range(runs):
            with console.status(f"run {run + 1}/{runs}: Kafka"):
                broker = KafkaBroker(host="127.0.0.1", port=free_port(), controller_port=free_port(), heap="512m",
                                     state_dir=Path(tmp) / f"k{run}", cache_dir=cache)
                started = time.monotonic()  # format + spawn + first real answer: what `up` waits for
                broker.start()
                kafka_times.append(time.monotonic() - started)
                broker.stop()
                jvm_times.append(_timed([shutil.which("java") or "java", "-Xms512m", "-Xmx512m", "-version"]))
            with console.status(f"run {run + 1}/{runs}: S3"):
                server = S3Server(host="127.0.0.1", port=free_port(), access_key="bench", secret_key="bench-secret",
                                  state_dir=Path(tmp) / f"s{run}", cache_dir=cache)
                started = time.monotonic()
                server.start()
                s3_times.append(time.monotonic() - started)
                server.stop()
                s3_base.append(_timed([str(server.binary), "--version"]))
    for name, times, base, base_name, fetched in (
        (f"Kafka {KAFKA_VERSION}", kafka_times, jvm_times, "bare JVM start", cache / f"kafka-{KAFKA_VERSION}"),
        (f"versitygw {VERSITYGW_VERSION}", s3_times, s3_base, "`versitygw --version`", cache / f"versitygw-{VERSITYGW_VERSION}"),
    ):
        rows.append({"server": name, "ready_median_s": round(statistics.median(times), 3),
                     "ready_runs_s": [round(t, 3) for t in times], "baseline": base_name,
                     "baseline_median_s": round(statistics.median(base), 3),
                     "ratio_to_baseline": round(statistics.median(times) / statistics.median(base), 1),
                     "disk_mib": round(_du(fetched) / 2**20, 1)})
    table = Table(title=f"local server startup, median of {runs}", title_justify="left")
    for column in ("server", "ready (median)", "runs", "baseline", "x baseline", "disk"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["server"], f"{row['ready_median_s']:.2f}s", " ".join(f"{t:.2f}" for t in row["ready_runs_s"]),
                      f"{row['baseline']} {row['baseline_median_s']:.2f}s", f"{row['ratio_to_baseline']:.1f}x",
                      f"{row['disk_mib']:.0f} MiB")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs, "results": rows, "machine": machine()}, indent=2) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
