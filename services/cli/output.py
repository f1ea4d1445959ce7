"""Terminal output shared by the CLI commands: consoles, JSON output and the one-line error policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console

from framebus.schemas.validation import describe_errors
from framebus.services.cli.exits import ExitCode, client_errors, exit_code_of

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else: one object per line "
                                                         "(see `framebus --help`).")]
UNAVAILABLE_FIX = ("fix: start the local stack with `framebus up`, or point FRAMEBUS_KAFKA_BOOTSTRAP / "
                   "FRAMEBUS_S3_ENDPOINT at running servers")


def emit_json(*records: object) -> None:
    """Each record as one line of compact JSON on stdout: a single record is one JSON document, a
    listing is JSON lines (none: no output). Models, dataclasses, datetimes and enums are converted."""
    for record in records:
        typer.echo(json.dumps(to_jsonable_python(record), ensure_ascii=False))


def progress_console(as_json: bool) -> Console:
    """Where spinners and progress bars go: stderr when stdout carries JSON."""
    return err_console if as_json else console


@contextmanager
def errors_exit() -> Iterator[None]:
    """Known failures print one line each on stderr and exit with their code (exits.py), with no traceback.

    Invalid input exits 2 with a line per field; framebus's own errors and those of the Kafka, S3
    and HTTP clients exit with the code they declare, 5 when a server could not be reached, else 1.
    """
    try:
        yield
    except ValidationError as exc:
        for problem in describe_errors(exc):
            err_console.print(f"[bold red]invalid[/] {problem.field}: {problem.message}", soft_wrap=True,
                              highlight=False)
        raise typer.Exit(ExitCode.USAGE) from exc
    except client_errors() as exc:  # evaluated only when something was raised
        code = exit_code_of(exc)
        fix = f" — {UNAVAILABLE_FIX}" if code is ExitCode.UNAVAILABLE and " fix: " not in str(exc) else ""
        err_console.print(f"[bold red]error:[/] {_one_line(exc)}{fix}", soft_wrap=True, highlight=False)
        raise typer.Exit(code) from exc


def _one_line(exc: BaseException) -> str:
    """The error as one line; a client's bare error class (KafkaTimeoutError()) is named at least."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def acting_tenant(explicit: str | None, settings) -> str:
    """The tenant a command acts for: --tenant, else FRAMEBUS_TENANT, else the demo tenant, said
    aloud (a newcomer's `tenants create acme` then `submit` otherwise ran as `demo` silently)."""
    if explicit:
        return explicit
    if "tenant" not in settings.model_fields_set:
        err_console.print(f"acting as tenant [bold]{settings.tenant}[/] (no --tenant, FRAMEBUS_TENANT not set)",
                          highlight=False)
    return settings.tenant
