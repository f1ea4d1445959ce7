"""`framebus tenants ...`: create tenants and manage their API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from framebus.client import FramebusClient
from services.cli.output import console, errors_exit
from services.common.settings import Settings
from services.gateway.tenants import TenantAdmin

app = typer.Typer(help="Tenants and API keys (events on framebus.tenants).", no_args_is_help=True)


def _admin() -> TenantAdmin:
    return TenantAdmin(FramebusClient(settings=Settings(), source="/framebus/cli"))


@app.command()
def create(tenant_id: str, name: Annotated[str, typer.Option(help="Display name.")] = "",
           credit_limit: Annotated[float, typer.Option(help="Postpaid credit limit in tokens.")] = 0.0,
           rate: Annotated[int | None, typer.Option(help="Submissions per minute (default: gateway's).")] = None,
           with_key: Annotated[bool, typer.Option("--with-key", help="Also issue an API key.")] = False) -> None:
    """Create a tenant."""
    with errors_exit():
        admin = _admin()
        tenant = admin.create(tenant_id, display_name=name, credit_limit_tokens=credit_limit,
                              submissions_per_minute=rate)
        console.print(f"created tenant [bold]{tenant.tenant_id}[/]")
        if with_key:
            _show_key(admin.issue_key(tenant_id).plaintext)


@app.command("issue-key")
def issue_key(tenant_id: str) -> None:
    """Issue a new API key; it is printed once and stored only as a hash."""
    with errors_exit():
        _show_key(_admin().issue_key(tenant_id).plaintext)


@app.command("revoke-key")
def revoke_key(tenant_id: str, key_id: str) -> None:
    """Revoke one API key by its id."""
    with errors_exit():
        _admin().revoke_key(tenant_id, key_id)
    console.print(f"revoked key {key_id} of {tenant_id}")


@app.command()
def credit(tenant_id: str, tokens: float,
           reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "credit") -> None:
    """Add prepaid tokens to a tenant's balance."""
    with errors_exit():
        entry = _admin().credit(tenant_id, tokens, reason=reason)
    console.print(f"credited {entry.tokens:g} tokens to {tenant_id} ({entry.entry_id})")


@app.command()
def show(tenant_id: str) -> None:
    """Show a tenant's settings and key ids (never secrets)."""
    with errors_exit():
        tenant = _admin().get_existing(tenant_id)
    table = Table("key id", "created", "revoked", title=f"tenant {tenant.tenant_id} {tenant.display_name}".strip())
    for key in tenant.api_keys:
        table.add_row(key.key_id, f"{key.created_at:%Y-%m-%d %H:%M}", "yes" if key.revoked else "no")
    console.print(table)
    console.print(f"credit limit {tenant.credit_limit_tokens:g} tokens; rate "
                  f"{tenant.submissions_per_minute or 'default'} per minute; {'disabled' if tenant.disabled else 'enabled'}")


def _show_key(plaintext: str) -> None:
    console.print(f"API key (shown once, store it now): [bold]{plaintext}[/]", soft_wrap=True)
