"""`framebus tenants ...`: create tenants and manage their API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from framebus.client import FramebusClient
from framebus.schemas.events import TenantUpdated
from framebus.services.cli.exits import NotFound, Refused
from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.common.settings import Settings
from framebus.services.gateway.keys import IssuedKey
from framebus.services.gateway.tenants import TenantAdmin, TenantError

app = typer.Typer(help="Tenants and API keys (events on framebus.tenants).", no_args_is_help=True)


class CliTenantAdmin(TenantAdmin):
    """The admin with its refusals told apart, for the exit codes: a missing tenant or key is
    NotFound, creating one that exists is Refused (TenantAdmin raises TenantError for each)."""

    def get_existing(self, tenant_id: str) -> TenantUpdated:
        try:
            return super().get_existing(tenant_id)
        except TenantError as exc:  # its one refusal: no such tenant
            raise NotFound(str(exc)) from exc

    def create(self, tenant_id: str, **settings) -> TenantUpdated:
        try:
            return super().create(tenant_id, **settings)
        except TenantError as exc:  # its one refusal: the tenant exists
            raise Refused(str(exc)) from exc

    def revoke_key(self, tenant_id: str, key_id: str) -> TenantUpdated:
        try:
            return super().revoke_key(tenant_id, key_id)
        except TenantError as exc:  # the tenant exists (get_existing said so): no such key
            raise NotFound(str(exc)) from exc


def tenant_admin(settings: Settings | None = None) -> CliTenantAdmin:
    return CliTenantAdmin(FramebusClient(settings=settings or Settings(), source="/framebus/cli"))


def tenant_record(tenant: TenantUpdated) -> dict:
    """A tenant as --json prints it: its settings and key ids, never a key's hash."""
    return tenant.model_dump(mode="json", exclude={"api_keys": {"__all__": {"secret_sha256"}}})


def key_record(tenant_id: str, issued: IssuedKey) -> dict:
    return {"tenant_id": tenant_id, "key_id": issued.record.key_id, "api_key": issued.plaintext,
            "created_at": issued.record.created_at}


@app.command()
def create(tenant_id: str, name: Annotated[str, typer.Option(help="Display name.")] = "",
           credit_limit: Annotated[float, typer.Option(help="Postpaid credit limit in tokens.")] = 0.0,
           rate: Annotated[int | None, typer.Option(help="Submissions per minute (default: gateway's).")] = None,
           with_key: Annotated[bool, typer.Option("--with-key", help="Also issue an API key.")] = False,
           as_json: JsonOption = False) -> None:
    """Create a tenant (exit 6 if it exists)."""
    with errors_exit():
        admin = tenant_admin()
        tenant = admin.create(tenant_id, display_name=name, credit_limit_tokens=credit_limit,
                              submissions_per_minute=rate)
        issued = admin.issue_key(tenant_id) if with_key else None
    if as_json:
        emit_json({**tenant_record(tenant), "api_key": key_record(tenant_id, issued) if issued else None})
        return
    console.print(f"created tenant [bold]{tenant.tenant_id}[/]")
    if issued:
        _show_key(issued.plaintext)


@app.command("issue-key")
def issue_key(tenant_id: str, as_json: JsonOption = False) -> None:
    """Issue a new API key; it is printed once and stored only as a hash."""
    with errors_exit():
        issued = tenant_admin().issue_key(tenant_id)
    if as_json:
        emit_json(key_record(tenant_id, issued))
    else:
        _show_key(issued.plaintext)


@app.command("revoke-key")
def revoke_key(tenant_id: str, key_id: str) -> None:
    """Revoke one API key by its id."""
    with errors_exit():
        tenant_admin().revoke_key(tenant_id, key_id)
    console.print(f"revoked key {key_id} of {tenant_id}")


@app.command("signing-key")
def signing_key(tenant_id: str,
                keep_previous: Annotated[bool, typer.Option(help="Keep the old key valid too (rotation).")] = True,
                as_json: JsonOption = False) -> None:
    """Issue a new key for signing the tenant's Kafka requests (fbsk_...); printed once. The previous one
    stays valid until the next rotation, so producers can switch without a refusal."""
    with errors_exit():
        rotated = tenant_admin().rotate_signing_key(tenant_id, keep_previous=keep_previous)
    if as_json:
        emit_json({"tenant_id": tenant_id, "signing_key": rotated.keys[0], "previous_kept": len(rotated.keys) > 1})
        return
    console.print(f"signing key for {tenant_id}'s Kafka producers (shown once; FRAMEBUS_SIGNING_KEY): "
                  f"[bold]{rotated.keys[0]}[/]", soft_wrap=True)


@app.command()
def credit(tenant_id: str, tokens: float,
           reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "credit", as_json: JsonOption = False) -> None:
    """Add prepaid tokens to a tenant's balance."""
    if not tokens > 0:  # a usage error (exit 2), before anything is read or sent
        raise typer.BadParameter(f"must be positive but is {tokens:g}", param_hint="TOKENS")
    with errors_exit():
        entry = tenant_admin().credit(tenant_id, tokens, reason=reason)
    if as_json:
        emit_json(entry)  # the ledger entry as the contract has it
        return
    console.print(f"credited {entry.tokens:g} tokens to {tenant_id} ({entry.entry_id})")


@app.command()
def show(tenant_id: str, as_json: JsonOption = False) -> None:
    """Show a tenant's settings and key ids (never secrets)."""
    with errors_exit():
        tenant = tenant_admin().get_existing(tenant_id)
    if as_json:
        emit_json(tenant_record(tenant))
        return
    table = Table("key id", "created", "revoked", title=f"tenant {tenant.tenant_id} {tenant.display_name}".strip())
    for key in tenant.api_keys:
        table.add_row(key.key_id, f"{key.created_at:%Y-%m-%d %H:%M}", "yes" if key.revoked else "no")
    console.print(table)
    console.print(f"credit limit {tenant.credit_limit_tokens:g} tokens; rate "
                  f"{tenant.submissions_per_minute or 'default'} per minute; {'disabled' if tenant.disabled else 'enabled'}")
    if tenant.storage is not None:
        console.print(f"storage: s3://{tenant.storage.bucket} at {tenant.storage.endpoint_url} "
                      f"({tenant.storage.addressing_style}-style, credentials ref {tenant.storage.credentials_ref})")


@app.command("set-storage")
def set_storage(
    tenant_id: str,
    endpoint: Annotated[str | None, typer.Option(help="S3 endpoint, e.g. https://us-ord-1.linodeobjects.com")] = None,
    bucket: Annotated[str | None, typer.Option(help="The tenant's bucket.")] = None,
    region: Annotated[str, typer.Option(help="Region used for signing.")] = "us-east-1",
    credentials_ref: Annotated[str | None, typer.Option(
        help="REF: workers read FRAMEBUS_CREDENTIALS_{REF}_ACCESS_KEY_ID and _SECRET_ACCESS_KEY.")] = None,
    addressing: Annotated[str, typer.Option(help="path or virtual.")] = "path",
    clear: Annotated[bool, typer.Option("--clear", help="Back to framebus's bucket.")] = False,
) -> None:
    """Store a tenant's videos in its own bucket (credentials stay on the workers, by reference)."""
    from pydantic import ValidationError

    from framebus.schemas.events import TenantStorage
    from framebus.schemas.validation import describe_errors

    with errors_exit():
        storage = None
        if not clear:
            if not (endpoint and bucket and credentials_ref):
                raise typer.BadParameter("give --endpoint, --bucket and --credentials-ref (or --clear)")
            try:
                storage = TenantStorage(endpoint_url=endpoint, bucket=bucket, region=region,
                                        credentials_ref=credentials_ref, addressing_style=addressing)
            except ValidationError as exc:
                raise typer.BadParameter("; ".join(f"`{e.field}`: {e.message}" for e in describe_errors(exc))) from exc
        tenant_admin().set_storage(tenant_id, storage)
    where = f"s3://{bucket} at {endpoint}" if storage else "framebus's bucket"
    console.print(f"tenant {tenant_id} now stores videos in {where}")


def _show_key(plaintext: str) -> None:
    console.print(f"API key (shown once, store it now): [bold]{plaintext}[/]", soft_wrap=True)
