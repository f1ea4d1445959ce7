"""`framebus webhooks ...`: signing secrets, the attempt log, replays of dead deliveries, re-enabling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.cli.tenants import tenant_admin
from framebus.services.common.settings import Settings

app = typer.Typer(help="Standard Webhooks: secrets, delivery log, replay.", no_args_is_help=True)


@app.command()
def secret(tenant_id: str,
           keep_previous: Annotated[bool, typer.Option(help="Keep signing with the old secret too (rotation).")] = True,
           as_json: JsonOption = False) -> None:
    """Issue a new signing secret (whsec_...); printed once. The previous one keeps signing until the next rotation."""
    with errors_exit():
        rotated = tenant_admin(Settings()).rotate_webhook_secret(tenant_id, keep_previous=keep_previous)
    fresh, kept = rotated.secrets[0], rotated.secrets[1:]
    if as_json:
        emit_json({"tenant_id": tenant_id, "secret": fresh, "previous_kept": bool(kept)})
        return
    console.print(f"webhook signing secret for {tenant_id} (shown once): [bold]{fresh}[/]", soft_wrap=True)


@app.command()
def enable(tenant_id: str, url: str) -> None:
    """Send to an endpoint again after it answered 410 Gone."""
    with errors_exit():
        admin = tenant_admin()
        tenant = admin.get_existing(tenant_id)
        remaining = tuple(u for u in tenant.disabled_webhook_urls if u != url)
        admin.save(tenant.model_copy(update={"disabled_webhook_urls": remaining, "updated_at": datetime.now(UTC)}))
    console.print(f"{url} is enabled for {tenant_id}")


@app.command("log")
def show_log(request_id: str, as_json: JsonOption = False) -> None:
    """Every delivery attempt for a request, oldest first."""
    from framebus.services.notifier.queries import attempts_for

    with errors_exit():
        found = attempts_for(Settings(), request_id)
    if as_json:
        emit_json(*found)  # each attempt as the contract has it (framebus.webhooks.attempts)
        return
    if not found:
        console.print(f"no webhook attempts for {request_id}")
        return
    table = Table("at", "attempt", "outcome", "HTTP", "ms", "next attempt", "error", "webhook-id",
                  title=f"webhook attempts for {request_id}", title_justify="left")
    for a in found:
        table.add_row(f"{a.at:%H:%M:%S}", str(a.attempt), a.outcome, str(a.status_code or "-"), f"{a.duration_ms:.0f}",
                      f"{a.next_attempt_at:%H:%M:%S}" if a.next_attempt_at else "-", a.error or "", a.delivery_id)
    console.print(table)


@app.command()
def replay(request_id: Annotated[str | None, typer.Option(help="Only this request's deliveries.")] = None,
           tenant: Annotated[str | None, typer.Option(help="Only this tenant's deliveries.")] = None,
           as_json: JsonOption = False) -> None:
    """Send dead deliveries again (same webhook-id, so receivers can drop what they already have)."""
    from framebus.services.notifier.queries import replay_dead

    if request_id is None and tenant is None:
        raise typer.BadParameter("name --request-id or --tenant")
    with errors_exit():
        count = replay_dead(Settings(), request_id=request_id, tenant_id=tenant)
    if as_json:
        emit_json({"replayed": count})
        return
    console.print(f"replaying {count} dead deliver{'y' if count == 1 else 'ies'}")
