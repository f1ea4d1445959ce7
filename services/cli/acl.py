"""``framebus acl``: the access plan (who may read and write what on the bus), applying it to a
cluster with an authorizer, and the services' signing key."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.common import access
from framebus.services.common.settings import Settings
from framebus.signing import new_key

app = typer.Typer(help="Kafka ACLs per role, and the services' signing key.", no_args_is_help=True)

PrincipalOption = Annotated[list[str], typer.Option(
    "--principal", help="ROLE=User:NAME where a role's principal is not framebus-<role> (repeatable).")]
TenantOption = Annotated[list[str], typer.Option(
    "--tenant-principal", help="A tenant producer's principal, e.g. User:acme-producer (repeatable).")]


def _plan(principal: list[str], tenant_principal: list[str]) -> list[access.Grant]:
    named = {}
    for item in principal:
        role, sep, who = item.partition("=")
        if not sep or not who.startswith("User:"):
            raise typer.BadParameter(f"`--principal` must be ROLE=User:NAME but is {item!r}")
        named[role] = who
    for who in tenant_principal:
        if not who.startswith("User:"):
            raise typer.BadParameter(f"`--tenant-principal` must be User:NAME but is {who!r}")
    try:
        return access.plan(Settings().topic_prefix, named, tenant_principal)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _rows(grants: list[access.Grant]) -> list[dict]:
    return [{"principal": g.principal, "resource": g.resource, "name": g.name, "pattern": g.pattern,
             "operation": g.operation} for g in grants]


@app.command("plan")
def show_plan(principal: PrincipalOption = [], tenant_principal: TenantOption = [],  # noqa: B006 - typer's lists
              as_json: JsonOption = False) -> None:
    """Print every ACL the deployment needs, by principal (no broker needed)."""
    grants = _plan(principal, tenant_principal)
    if as_json:
        emit_json(*_rows(grants))
        return
    table = Table("principal", "operation", "resource", "name", title="framebus ACLs (allow; all else is denied)",
                  title_justify="left")
    for grant in grants:
        name = grant.name + ("*" if grant.pattern == "prefixed" else "")
        table.add_row(grant.principal, grant.operation, grant.resource, name)
    console.print(table)


@app.command("apply")
def apply_plan(principal: PrincipalOption = [], tenant_principal: TenantOption = [],  # noqa: B006
               prune: Annotated[bool, typer.Option(help="Also remove these principals' ACLs the plan no longer has.")] = False,
               as_json: JsonOption = False) -> None:
    """Create the plan's ACLs on the cluster (run as a principal allowed to alter ACLs; idempotent)."""
    from framebus.services.common.kafka import admin_client

    grants = _plan(principal, tenant_principal)
    with errors_exit():
        settings = Settings()
        admin = admin_client(settings.bootstrap_servers)
        try:
            applied = access.apply(admin, grants, prune=prune)
        finally:
            admin.close()
    if as_json:
        emit_json({"created": _rows(applied.created), "present": len(applied.present),
                   "removed": _rows(applied.removed)})
        return
    for grant in applied.created:
        console.print(f"created  {grant.describe()}")
    for grant in applied.removed:
        console.print(f"removed  {grant.describe()}")
    console.print(f"{len(applied.created)} created, {len(applied.present)} already present, "
                  f"{len(applied.removed)} removed")


@app.command("service-key")
def service_key(as_json: JsonOption = False) -> None:
    """Make a new services' signing key (FRAMEBUS_SERVICE_SIGNING_KEY for the gateway, tracker, workers and
    scheduler); printed once, kept nowhere."""
    key = new_key()
    if as_json:
        emit_json({"service_signing_key": key})
        return
    console.print(f"services' signing key (shown once; FRAMEBUS_SERVICE_SIGNING_KEY): [bold]{key}[/]", soft_wrap=True)
