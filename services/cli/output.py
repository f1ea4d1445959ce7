"""Terminal output shared by the CLI commands: consoles and the one-line error policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console

from framebus.infra.errors import InfraError
from framebus.schemas.validation import describe_errors
from framebus.services.common.errors import FramebusError

console = Console()
err_console = Console(stderr=True)


@contextmanager
def errors_exit() -> Iterator[None]:
    """Known failures print one line each and exit non-zero, with no traceback.

    Exit codes: 1 for an operational failure (cause and fix printed), 2 for invalid input.
    """
    try:
        yield
    except ValidationError as exc:
        for problem in describe_errors(exc):
            err_console.print(f"[bold red]invalid[/] {problem.field}: {problem.message}", soft_wrap=True,
                              highlight=False)
        raise typer.Exit(2) from exc
    except (InfraError, FramebusError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc


def acting_tenant(explicit: str | None, settings) -> str:
    """The tenant a command acts for: --tenant, else FRAMEBUS_TENANT, else the demo tenant, said
    aloud (a newcomer's `tenants create acme` then `submit` otherwise ran as `demo` silently)."""
    if explicit:
        return explicit
    if "tenant" not in settings.model_fields_set:
        err_console.print(f"acting as tenant [bold]{settings.tenant}[/] (no --tenant, FRAMEBUS_TENANT not set)",
                          highlight=False)
    return settings.tenant
