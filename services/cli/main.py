"""``framebus``: run the stack locally and operate it. Each command is a thin shell over a service."""

from __future__ import annotations

import json
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from infra.errors import InfraError
from services.common.errors import FramebusError
from services.common.settings import Settings
from services.common.stack import Stack, StackReport

app = typer.Typer(help="framebus: event-driven text-to-video on Kafka.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True)


@contextmanager
def _errors_exit():
    """Known failures print one line (cause and fix) and exit 1, with no traceback."""
    try:
        yield
    except (InfraError, FramebusError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc


def _print_stack(report: StackReport) -> None:
    table = Table(title="framebus stack", title_justify="left")
    for column in ("service", "listens on", "state", "ready in"):
        table.add_column(column)
    for service in report.services:
        ready = f"{service.seconds:.1f}s" if service.state == "started" else "-"
        if service.fetch_seconds > 1:
            ready += f" (+{service.fetch_seconds:.0f}s first-time fetch)"
        table.add_row(service.name, service.endpoint, service.state, ready)
    console.print(table)
    created = sum(t.created for t in report.topics)
    console.print(f"topics: {len(report.topics)} ready ({created} created now); "
                  f"bucket: [bold]{report.bucket}[/] ({'created' if report.bucket_created else 'exists'})")


def bring_up(settings: Settings) -> StackReport:
    with console.status("starting") as status:
        report = Stack(settings).up(step=lambda message: status.update(message + " ..."))
    _print_stack(report)
    return report


@app.command()
def up() -> None:
    """Start local Kafka and S3 (unless configured to use existing ones), create topics and the bucket."""
    with _errors_exit():
        bring_up(Settings())


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete local Kafka and S3 data.")) -> None:
    """Stop the local servers that `up` started (never any other process)."""
    with _errors_exit():
        stopped = Stack(Settings()).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        console.print("local data deleted")


@app.command()
def status() -> None:
    """Show where each part listens and whether it runs."""
    table = Table("service", "endpoint", "state")
    for service in Stack(Settings()).status():
        table.add_row(service.name, service.endpoint, service.state)
    console.print(table)


@app.command()
def smoke() -> None:
    """Check a running stack: a CloudEvent through Kafka, an object through S3, ffmpeg present."""
    from services.demo.smoke import run_smoke

    with _errors_exit():
        results = run_smoke(Settings())
    table = Table("check", "result", "took", title="smoke check", title_justify="left")
    for result in results:
        table.add_row(f"[green]ok[/] {result.name}", result.detail, f"{result.seconds:.2f}s")
    console.print(table)


@app.command()
def demo() -> None:
    """The main job. For now: `up` plus the smoke check; the full pipeline demo grows here."""
    console.print("[bold]framebus demo[/]: the generation pipeline is not built yet, so this runs "
                  "`up` and a smoke check of Kafka, S3 and ffmpeg.")
    with _errors_exit():
        bring_up(Settings())
    smoke()
    console.print("stack left running; stop it with [bold]framebus down[/].")


@app.command()
def topics(as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON.")) -> None:
    """Print the topic catalogue."""
    from schemas.topics import CATALOGUE

    if as_json:
        console.print_json(json.dumps([{"name": t.name, "partitions": t.partitions, "key": t.key,
                                        "configs": t.configs(), "event_types": list(t.event_types)} for t in CATALOGUE]))
        return
    table = Table("topic", "key", "partitions", "cleanup", "event types")
    for t in CATALOGUE:
        table.add_row(t.name, t.key, str(t.partitions), t.cleanup.value, ", ".join(t.event_types))
    console.print(table)


if __name__ == "__main__":
    app()
