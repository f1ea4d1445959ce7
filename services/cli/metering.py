"""`framebus usage`, `framebus cost` and `framebus tenants balance`: reports folded from the ledger."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from framebus.services.cli.output import JsonOption, acting_tenant, console, emit_json, errors_exit
from framebus.services.common.settings import Settings
from framebus.services.metering.report import UsageReport

FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv (--json is --format json).")]
SinceOption = Annotated[str | None, typer.Option("--from", help="Start (ISO date or time, UTC); default 30 days ago.")]
UntilOption = Annotated[str | None, typer.Option("--to", help="End, exclusive (ISO date or time, UTC); default now.")]


def parse_time(raw: str | None, default: datetime) -> datetime:
    if raw is None:
        return default
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"{raw!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T18:00)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start, end = parse_time(since, now - timedelta(days=30)), parse_time(until, now + timedelta(seconds=1))
    if end <= start:
        raise typer.BadParameter(f"--to ({end:%Y-%m-%d %H:%M}) must be after --from ({start:%Y-%m-%d %H:%M})")
    return start, end


FORMATS = ("table", "json", "csv")


def output_format(output: str, as_json: bool) -> str:
    if output not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)} but is {output!r}", param_hint="--format")
    return "json" if as_json else output


def emit(report: UsageReport, output: str, title: str, *, group_label: str) -> None:
    rows = [(group, tally.as_dict(report.prices.currency)) for group, tally in report.rows()]
    total = report.total().as_dict(report.prices.currency)
    if output == "json":
        emit_json({"groups": dict(rows), "total": total, "from": report.start, "to": report.end})
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[group_label, *total])
        writer.writeheader()
        for group, row in [*rows, ("total", total)]:
            writer.writerow({group_label: group, **row})
        typer.echo(buffer.getvalue(), nl=False)
    elif output == "table":
        table = Table(group_label, "videos", "failed/cancelled", "tokens", "video s", "GPU s",
                      f"revenue {total['currency']}", f"GPU cost {total['currency']}", "margin", "cost/video",
                      title=title, title_justify="left")
        for group, row in [*rows, ("[bold]total[/]", total)]:
            table.add_row(group, f"{row['completed']:,}", f"{row['failed']}/{row['cancelled'] + row['expired']}",
                          f"{row['tokens']:,.3f}", f"{row['video_seconds']:,.1f}", f"{row['gpu_seconds']:,.1f}",
                          row["revenue"], row["gpu_cost"], row["margin"], row["cost_per_video"] or "-")
        console.print(table)
    else:
        raise typer.BadParameter(f"--format must be table, json or csv, not {output!r}")


def usage(tenant: Annotated[str | None, typer.Option(help="Tenant (default FRAMEBUS_TENANT).")] = None,
          since: SinceOption = None, until: UntilOption = None,
          group_by: Annotated[str, typer.Option(help="tier, model, day or hour.")] = "day",
          output: FormatOption = "table", as_json: JsonOption = False) -> None:
    """A tenant's usage: videos, tokens, seconds of video and GPU, revenue, per tier, model, day or hour."""
    from framebus.services.metering.queries import usage_report

    if group_by not in ("tier", "model", "day", "hour"):
        raise typer.BadParameter(f"--group-by must be tier, model, day or hour, not {group_by!r}")
    fmt = output_format(output, as_json)
    settings = Settings()
    tenant_id = acting_tenant(tenant, settings)
    start, end = window(since, until)
    with errors_exit():
        report = usage_report(settings, tenant_id=tenant_id, start=start, end=end, group_by=group_by)  # type: ignore[arg-type]
    emit(report, fmt, f"usage of {tenant_id}, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
         group_label=group_by)


def cost(since: SinceOption = None, until: UntilOption = None, output: FormatOption = "table",
         as_json: JsonOption = False) -> None:
    """Per tenant and overall: tokens, revenue from the price book, GPU cost from measured GPU seconds,
    margin and cost per video."""
    from framebus.services.metering.queries import usage_report

    fmt = output_format(output, as_json)
    settings = Settings()
    start, end = window(since, until)
    with errors_exit():
        report = usage_report(settings, start=start, end=end, group_by="tenant")
    emit(report, fmt, f"revenue and GPU cost per tenant, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
         group_label="tenant")


def balance(tenant_id: str, output: FormatOption = "table", as_json: JsonOption = False) -> None:
    """A tenant's credits, reserved, charged and available tokens (the scheduler's own fold)."""
    from framebus.services.cli.tenants import tenant_admin
    from framebus.services.metering.queries import balances

    fmt = output_format(output, as_json)
    settings = Settings()
    with errors_exit():
        tenant = tenant_admin(settings).get_existing(tenant_id)
        held = balances(settings, tenant_id).of(tenant_id)
    row = {"tenant": tenant_id, "credited": float(held.credited), "credit_limit": tenant.credit_limit_tokens,
           "reserved": float(held.reserved), "charged": float(held.charged),
           "available": float(held.available(tenant.credit_limit_tokens)), "open_reservations": len(held.reservations)}
    if fmt == "json":
        emit_json(row)
        return
    table = Table("credited", "credit limit", "reserved", "charged", "available", title=f"balance of {tenant_id} (tokens)",
                  title_justify="left")
    table.add_row(*(f"{row[k]:,.3f}" for k in ("credited", "credit_limit", "reserved", "charged", "available")))
    console.print(table)

