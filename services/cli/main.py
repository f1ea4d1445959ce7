"""``framebus``: run the stack locally and operate it. Each command is a thin shell over a service."""

from __future__ import annotations

import json
import typer
from rich.table import Table

from services.cli.output import console, errors_exit
from services.common.settings import Settings
from services.common.stack import Stack, StackReport
from services.cli import requests as request_commands
from services.cli import tenants as tenant_commands

app = typer.Typer(help="framebus: event-driven text-to-video on Kafka.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
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
    with errors_exit():
        bring_up(Settings())


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete local Kafka and S3 data.")) -> None:
    """Stop the local servers that `up` started (never any other process)."""
    with errors_exit():
        stopped = Stack(Settings()).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        console.print("local data deleted")


@app.command()
def ps() -> None:
    """Show where Kafka and S3 listen and whether the local ones run."""
    table = Table("service", "endpoint", "state")
    for service in Stack(Settings()).status():
        table.add_row(service.name, service.endpoint, service.state)
    console.print(table)


@app.command()
def smoke() -> None:
    """Check a running stack: a CloudEvent through Kafka, an object through S3, ffmpeg present."""
    from services.demo.smoke import run_smoke

    with errors_exit():
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
    with errors_exit():
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


for command in (request_commands.submit, request_commands.status, request_commands.cancel, request_commands.quote):
    app.command()(command)
app.add_typer(tenant_commands.app, name="tenants")


@app.command()
def gateway(host: str | None = typer.Option(None, help="Bind address (default FRAMEBUS_GATEWAY_HOST)."),
            port: int | None = typer.Option(None, help="Port (default FRAMEBUS_GATEWAY_PORT).")) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    from services.gateway.app import create_app

    settings = Settings()
    uvicorn.run(create_app(settings), host=host or settings.gateway_host, port=port or settings.gateway_port,
                log_level="info")


if __name__ == "__main__":
    app()
