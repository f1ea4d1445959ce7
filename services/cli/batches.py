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

from framebus.services.cli.exits import ExitCode, NotFound
from framebus.services.cli.output import (
    JsonOption,
    acting_tenant,
    console,
    emit_json,
    err_console,
    errors_exit,
    progress_console,
)
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
           strict: Annotated[bool, typer.Option("--strict", help="Publish nothing if any line is invalid.")] = False,
           as_json: JsonOption = False) -> None:
    """Validate every line, report each bad one with its number, publish the valid ones (resumable)."""
    from framebus.services.batch.submit import submit_batch

    settings = Settings()
    window = parse_window(completion_window)
    with errors_exit(), Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                                 console=progress_console(as_json), transient=True) as progress:
        task = progress.add_task("publish", total=None)
        report = submit_batch(settings, file, acting_tenant(tenant, settings), webhook_url=webhook,
                              completion_window_s=window, strict=strict,
                              on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    for number, problem in report.errors:
        err_console.print(f"line {number}: {problem}", soft_wrap=True, highlight=False)
    if report.strict_refused:
        err_console.print(f"[bold red]refused:[/] {len(report.errors)} invalid lines and --strict; nothing published")
        raise typer.Exit(ExitCode.USAGE)
    if as_json:
        emit_json({"batch_id": report.batch_id, "accepted": report.accepted, "rejected": len(report.errors),
                   "published": report.published, "already_in": report.already_in, "resumed": report.resumed,
                   "errors": [{"line": number, "error": problem} for number, problem in report.errors]})
        return
    console.print(f"batch [bold]{report.batch_id}[/]: {report.accepted} lines accepted, {len(report.errors)} "
                  f"rejected; published {report.published} now"
                  + (f", {report.already_in} were already in (resumed)" if report.already_in else "")
                  + ("; the batch keeps its first submission's start and deadline" if report.resumed else ""))
    console.print(f"follow it with: framebus batch status {report.batch_id}")


def _summary(settings: Settings, batch_id: str):
    from framebus.services.batch.view import read_batch

    summary = read_batch(settings, batch_id).summary(batch_id)
    if summary is None:
        raise NotFound(f"no batch {batch_id!r}")
    return summary


def batch_record(summary) -> dict:
    """A batch as --json prints it: the shape of the gateway's GET /v1/batches/{id}, with its tenant."""
    submitted, done = summary.submitted, summary.completed
    return {"batch_id": summary.batch_id, "tenant_id": submitted.tenant_id, "state": summary.state,
            "accepted": submitted.accepted, "rejected": submitted.rejected,
            "counts": summary.counts.model_dump(exclude={"total", "rejected"}),
            "submitted_at": submitted.submitted_at, "deadline": submitted.deadline,
            "completed_at": done.completed_at if done else None, "manifest_url": done.manifest_url if done else None,
            "errors_key": done.errors_key if done else None}


def _detail(counts) -> str:
    return " ".join(f"{name} {getattr(counts, name)}" for name in ("queued", "running", "completed", "failed",
                                                                    "cancelled"))


@app.command()
def status(batch_id: str, follow: Annotated[bool, typer.Option(help="Keep the bar live until it ends.")] = True,
           timeout_s: Annotated[float, typer.Option(help="Stop following after this long (then exit 3).")] = 3600,
           as_json: JsonOption = False) -> None:
    """A live progress bar: queued, running, completed, failed, cancelled, and an ETA (also once finished)."""
    settings = Settings()
    with errors_exit():
        summary = _summary(settings, batch_id)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[detail]}"))
        deadline = time.monotonic() + timeout_s
        with Progress(*columns, console=progress_console(as_json)) as progress:
            task = progress.add_task(batch_id, total=summary.counts.total, detail="")
            while True:
                progress.update(task, completed=summary.counts.ended, detail=_detail(summary.counts))
                if not follow or summary.completed is not None or time.monotonic() > deadline:
                    break
                time.sleep(2)
                summary = _summary(settings, batch_id)
    done, counts = summary.completed, summary.counts
    if as_json:
        emit_json(batch_record(summary))
    elif done is not None:
        console.print(f"finished{' (window expired)' if done.expired else ''} at {done.completed_at:%Y-%m-%d %H:%M:%S}: "
                      f"{counts.completed} completed, {counts.failed} failed, {counts.cancelled} cancelled, "
                      f"{counts.rejected} rejected; manifest {done.manifest_url}", soft_wrap=True)
    if follow and done is None:
        err_console.print(f"still running after {timeout_s:g}s; look again with `framebus batch status {batch_id}`")
        raise typer.Exit(ExitCode.TIMEOUT)


@app.command()
def cancel(batch_id: str, as_json: JsonOption = False) -> None:
    """Cancel every line of a batch that has not finished."""
    from framebus.client import FramebusClient
    from framebus.services.common import storage

    settings = Settings()
    with errors_exit():
        batch = _summary(settings, batch_id).submitted
        body = storage.s3_client(settings).get_object(Bucket=settings.s3_bucket, Key=batch.input_key)["Body"].read()
        with FramebusClient(tenant_id=batch.tenant_id, settings=settings, source="/framebus/cli") as client:
            ids = [json.loads(line)["request_id"] for line in body.splitlines() if line.strip()]
            for request_id in ids:
                client.cancel(request_id, reason="the batch was cancelled")  # the client acts for the batch's tenant
    if as_json:
        emit_json({"batch_id": batch_id, "cancel_sent": len(ids)})
        return
    console.print(f"cancel sent for the {len(ids)} lines of {batch_id} (finished ones stay as they are)")


@app.command("list")
def list_batches(tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """A tenant's batches, newest first, finished ones included (for framebus.batches' retention)."""
    from framebus.services.batch.view import read_batches

    settings = Settings()
    tenant_id = acting_tenant(tenant, settings)
    with errors_exit():
        batches = read_batches(settings).of_tenant(tenant_id)
    if as_json:
        emit_json(*map(batch_record, batches))
        return
    table = Table("batch", "submitted", "lines", "rejected", "state", "completed", "failed", "cancelled",
                  title=f"batches of {tenant_id}", title_justify="left")
    for summary in batches:
        counts = summary.counts
        table.add_row(summary.batch_id, f"{summary.submitted_at:%Y-%m-%d %H:%M}", str(counts.total),
                      str(counts.rejected), summary.state, str(counts.completed), str(counts.failed),
                      str(counts.cancelled))
    console.print(table)
