"""`framebus batch ...`: submit a JSONL file, follow it, cancel it, list a tenant's batches."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from framebus.services.cli.output import console, err_console, errors_exit
from framebus.services.common.settings import Settings

app = typer.Typer(help="Bulk batch jobs: a JSONL file of prompts in, one result manifest out.", no_args_is_help=True)
TenantOption = Annotated[str | None, typer.Option(help="Tenant (default FRAMEBUS_TENANT).")]


def parse_window(raw: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", raw.strip())
    if not match:
        raise typer.BadParameter(f"{raw!r} is not a duration like 90s, 30m, 24h or 2d")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


@app.command()
def submit(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
           tenant: TenantOption = None,
           webhook: Annotated[str | None, typer.Option(help="URL for generation.* and batch.completed webhooks.")] = None,
           completion_window: Annotated[str, typer.Option(help="Finish by then; the rest is cancelled.")] = "24h",
           strict: Annotated[bool, typer.Option("--strict", help="Publish nothing if any line is invalid.")] = False
           ) -> None:
    """Validate every line, report each bad one with its number, publish the valid ones (resumable)."""
    from framebus.services.batch.submit import submit_batch

    settings = Settings()
    window = parse_window(completion_window)
    with errors_exit(), Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), console=console,
                                 transient=True) as progress:
        task = progress.add_task("publish", total=None)
        report = submit_batch(settings, file, tenant or settings.tenant, webhook_url=webhook,
                              completion_window_s=window, strict=strict,
                              on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    for number, problem in report.errors:
        err_console.print(f"line {number}: {problem}", soft_wrap=True, highlight=False)
    if report.strict_refused:
        err_console.print(f"[bold red]refused:[/] {len(report.errors)} invalid lines and --strict; nothing published")
        raise typer.Exit(2)
    console.print(f"batch [bold]{report.batch_id}[/]: {report.accepted} lines accepted, {len(report.errors)} "
                  f"rejected; published {report.published} now"
                  + (f", {report.already_in} were already in (resumed)" if report.already_in else ""))
    console.print(f"follow it with: framebus batch status {report.batch_id}")


def _batches(settings: Settings) -> tuple[dict, dict]:
    from framebus.kafka import read_all
    from framebus.schemas.codec import decode_event
    from framebus.schemas.events import BatchCompleted, BatchSubmitted

    submitted, completed = {}, {}
    for record in read_all(settings.bootstrap_servers, settings.topic("framebus.batches"), timeout_s=60).values():
        event = decode_event(record.headers, record.value).event
        if isinstance(event, BatchSubmitted):
            submitted[event.batch_id] = event
        elif isinstance(event, BatchCompleted):
            completed[event.batch_id] = event
    return submitted, completed


def _counts(settings: Settings, batch) -> dict[str, int]:
    from framebus.kafka import read_all
    from framebus.schemas.codec import decode_event
    from framebus.services.common import storage

    body = storage.s3_client(settings).get_object(Bucket=settings.s3_bucket, Key=batch.input_key)["Body"].read()
    ids = {json.loads(line)["request_id"] for line in body.splitlines() if line.strip()}
    counts = {"queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}
    seen = 0
    for key, record in read_all(settings.bootstrap_servers, settings.topic("framebus.status"), timeout_s=60).items():
        tenant, _, request_id = key.decode().partition("/")
        if tenant == batch.tenant_id and request_id in ids:
            state = decode_event(record.headers, record.value).event.state.value
            counts[state if state in counts else "running" if state in ("dispatched", "running") else "queued"] += 1
            seen += 1
    counts["queued"] += len(ids) - seen
    return counts


@app.command()
def status(batch_id: str, follow: Annotated[bool, typer.Option(help="Keep the bar live until it ends.")] = True,
           timeout_s: Annotated[float, typer.Option(help="Stop following after this long.")] = 3600) -> None:
    """A live progress bar: queued, running, completed, failed, cancelled, and an ETA."""
    settings = Settings()
    with errors_exit():
        submitted, completed = _batches(settings)
        batch = submitted.get(batch_id)
        if batch is None:
            raise typer.BadParameter(f"no batch {batch_id!r}")
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[detail]}"))
        deadline = time.monotonic() + timeout_s
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(batch_id, total=batch.accepted, detail="")
            while True:
                counts = _counts(settings, batch)
                ended = counts["completed"] + counts["failed"] + counts["cancelled"]
                progress.update(task, completed=ended, detail=" ".join(f"{k} {v}" for k, v in counts.items()))
                if not follow or ended >= batch.accepted or batch_id in completed or time.monotonic() > deadline:
                    break
                time.sleep(2)
                completed = _batches(settings)[1]
    done = _batches(settings)[1].get(batch_id)
    if done is not None:
        console.print(f"finished{' (window expired)' if done.expired else ''}: {done.counts.completed} completed, "
                      f"{done.counts.failed} failed, {done.counts.cancelled} cancelled; manifest {done.manifest_url}",
                      soft_wrap=True)


@app.command()
def cancel(batch_id: str) -> None:
    """Cancel every line of a batch that has not finished."""
    from framebus.client import FramebusClient

    settings = Settings()
    with errors_exit():
        submitted, _ = _batches(settings)
        batch = submitted.get(batch_id)
        if batch is None:
            raise typer.BadParameter(f"no batch {batch_id!r}")
        from framebus.services.common import storage

        body = storage.s3_client(settings).get_object(Bucket=settings.s3_bucket, Key=batch.input_key)["Body"].read()
        with FramebusClient(tenant_id=batch.tenant_id, settings=settings, source="/framebus/cli") as client:
            ids = [json.loads(line)["request_id"] for line in body.splitlines() if line.strip()]
            for request_id in ids:
                client.cancel(request_id, reason="the batch was cancelled", tenant_id=batch.tenant_id)
    console.print(f"cancel sent for the {len(ids)} lines of {batch_id} (finished ones stay as they are)")


@app.command("list")
def list_batches(tenant: TenantOption = None) -> None:
    """A tenant's batches, newest first."""
    settings = Settings()
    tenant_id = tenant or settings.tenant
    with errors_exit():
        submitted, completed = _batches(settings)
    table = Table("batch", "submitted", "lines", "rejected", "state", "completed", "failed", "cancelled",
                  title=f"batches of {tenant_id}", title_justify="left")
    for batch in sorted((b for b in submitted.values() if b.tenant_id == tenant_id), key=lambda b: b.submitted_at,
                        reverse=True):
        done = completed.get(batch.batch_id)
        state = "expired" if done and done.expired else "finished" if done else "running"
        counts = done.counts if done else None
        table.add_row(batch.batch_id, f"{batch.submitted_at:%Y-%m-%d %H:%M}", str(batch.accepted), str(batch.rejected),
                      state, *(str(getattr(counts, f)) if counts else "-" for f in ("completed", "failed", "cancelled")))
    console.print(table)
