"""``framebus``: run the stack locally and operate it. Each command is a thin shell over a service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from framebus.services.cli import acl as acl_commands
from framebus.services.cli import batches as batch_commands
from framebus.services.cli import metering as metering_commands
from framebus.services.cli import models as model_commands
from framebus.services.cli import ps as ps_commands
from framebus.services.cli import requests as request_commands
from framebus.services.cli import scale as scale_commands
from framebus.services.cli import tenants as tenant_commands
from framebus.services.cli import trace as trace_commands
from framebus.services.cli import webhooks as webhook_commands
from framebus.services.cli.exits import exit_codes_help
from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit, progress_console
from framebus.services.common.settings import Settings

if TYPE_CHECKING:
    from framebus.services.common.stack import StackReport

OUTPUT_HELP = ("--json: commands that print data print JSON on stdout instead, and nothing else (hints and "
               "progress go to stderr): a record is one JSON object on one line, a listing one object per line "
               "(JSON lines); errors stay one line on stderr, and the exit code says what happened.")

# Commands import their service when they run: `pip install framebus` (no extras) brings only
# the producer commands' dependencies, and those commands must work with it.
app = typer.Typer(help="framebus: event-driven text-to-video on Kafka.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False,
                  epilog=f"{exit_codes_help()}\n\n{OUTPUT_HELP}")


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"framebus {installed_version()}")
        raise typer.Exit()


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("framebus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@app.callback()
def main(_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the installed framebus version and exit.")] = False) -> None:
    pass


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
    for topic in report.topics:  # an existing cluster's topics are checked, never changed
        for mismatch in topic.mismatches:
            console.print(f"[yellow]topic {topic.name}: {mismatch}[/]", soft_wrap=True)


def bring_up(settings: Settings, *, as_json: bool = False) -> StackReport:
    from framebus.services.common.stack import Stack

    with progress_console(as_json).status("starting") as status:
        report = Stack(settings).up(step=lambda message: status.update(message + " ..."))
    if as_json:
        emit_json(report)
    else:
        _print_stack(report)
    return report


@app.command()
def up(as_json: JsonOption = False) -> None:
    """Start local Kafka and S3 (unless configured to use existing ones), create topics and the bucket."""
    with errors_exit():
        bring_up(Settings(), as_json=as_json)


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete local Kafka and S3 data.")) -> None:
    """Stop the local servers that `up` started (never any other process)."""
    from framebus.services.common.stack import Stack

    with errors_exit():
        stopped = Stack(Settings()).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        console.print("local data deleted")


@app.command()
def smoke(as_json: JsonOption = False) -> None:
    """Check a running stack: a CloudEvent through Kafka, an object through S3, ffmpeg present."""
    from framebus.services.demo.smoke import run_smoke

    with errors_exit():
        results = run_smoke(Settings())
    if as_json:
        emit_json(*results)
        return
    table = Table("check", "result", "took", title="smoke check", title_justify="left")
    for result in results:
        table.add_row(f"[green]ok[/] {result.name}", result.detail, f"{result.seconds:.2f}s")
    console.print(table)


@app.command()
def demo() -> None:
    """The main job: bring the stack up, smoke-check it, and run requests through the pipeline."""
    from rich.progress import Progress

    from framebus.services.demo.pipeline import run_demo

    console.print("[bold]framebus demo[/]: Kafka and S3 up, a smoke check, then four requests through the "
                  "scheduler and a diffusers worker running [bold]wan-shapes[/] (a small Wan pipeline trained here "
                  "on coloured shapes: every stage is real and each video shows what its prompt asks for), "
                  "then metering settles them and the notifier sends a signed webhook for each.")
    settings = Settings()
    with errors_exit():
        bring_up(settings)
    smoke()
    logs = settings.state_dir / "demo-logs"
    with errors_exit(), Progress(console=console) as progress:
        task = progress.add_task("requests finished", total=4)
        run = run_demo(settings, logs, on_progress=lambda done, total: progress.update(task, completed=done))
    results = run.results
    table = Table("request", "tier", "prompt", "state", "tokens", "video", "what the video shows", title="demo requests",
                  title_justify="left")
    for result in results:
        status = result.status
        mark = {True: "[green]as asked[/]", False: "[red]not as asked[/]", None: ""}[result.as_asked]
        table.add_row(result.request_id, result.tier, result.prompt, status.state.value, f"{status.tokens or 0:g}",
                      f"{status.output.bytes:,} bytes, {status.output.duration_s:g} s" if status.output
                      else (status.error.message if status.error else "-"),
                      f"{result.drew} ({mark})" if result.drew else "-")
    console.print(table)
    console.print(f"tenant demo after metering: {run.balance.charged:g} tokens charged, {run.balance.reserved:g} "
                  f"still reserved, {run.balance.available:g} available")
    console.print(f"webhooks: {run.webhooks_verified} of {len(results)} delivered and verified with the "
                  f"standardwebhooks library")
    first = next((r.status.output for r in results if r.status.output), None)
    if first is not None:
        console.print(f"watch one (link valid {settings.s3_presign_expiry_s} s): {first.url}", soft_wrap=True)
    console.print(f"logs in {logs}; the stack is left running: stop it with [bold]framebus down[/].")


@app.command()
def topics(as_json: JsonOption = False) -> None:
    """Print the topic catalogue (with the retention these settings give)."""
    catalogue = Settings().catalogue()
    if as_json:
        emit_json(*({"name": t.name, "partitions": t.partitions, "key": t.key, "configs": t.configs(),
                     "event_types": list(t.event_types)} for t in catalogue))
        return
    table = Table("topic", "key", "partitions", "cleanup", "event types")
    for t in catalogue:
        table.add_row(t.name, t.key, str(t.partitions), t.cleanup.value, ", ".join(t.event_types))
    console.print(table)


for command in (request_commands.submit, request_commands.status, request_commands.cancel, request_commands.quote):
    app.command()(command)
app.command("ps")(ps_commands.ps)
app.add_typer(tenant_commands.app, name="tenants")
app.add_typer(webhook_commands.app, name="webhooks")
app.add_typer(batch_commands.app, name="batch")
app.add_typer(model_commands.app, name="model")
app.add_typer(acl_commands.app, name="acl")
app.add_typer(scale_commands.app, name="scale")
app.command()(metering_commands.usage)
app.command()(trace_commands.trace)
app.command()(metering_commands.cost)
tenant_commands.app.command()(metering_commands.balance)


# The stream processors: each runs in the foreground on the processor runtime until SIGTERM or SIGINT.
PROCESSORS = {
    "scheduler": ("framebus.services.scheduler.app", "Run the scheduler: admission, tiers, batching, dispatch."),
    "metering": ("framebus.services.metering.app", "Run metering: settle reservations, record usage per tenant."),
    "notifier": ("framebus.services.notifier.service",
                 "Run the webhook notifier: signed Standard Webhooks deliveries with retries and dead letters."),
    "batch-tracker": ("framebus.services.batch.tracker",
                      "Run the batch tracker: finishes bulk jobs with a manifest in S3 and a batch.completed event."),
}


def _processor_command(module: str):
    def run_processor() -> None:
        from importlib import import_module

        import_module(module).run(Settings())

    return run_processor


for _name, (_module, _help) in PROCESSORS.items():
    app.command(_name, help=_help)(_processor_command(_module))


@app.command()
def worker(
    engine: str = typer.Option("diffusers", help="`diffusers`: the Wan diffusion engine; `null`: the test engine "
                                                 "(solid colours through the real protocol, for tests and benchmarks)."),
    model: str | None = typer.Option(None, help="Model the worker serves (see the registry in the README); "
                                                "default: FRAMEBUS_DEFAULT_MODEL (wan-shapes), the model requests default to."),
    delay_ms: float = typer.Option(0.0, help="Null engine: time per job standing in for GPU work."),
    batch: int = typer.Option(4, min=1, help="Largest batch it accepts."),
    slots: int = typer.Option(3, min=1, help="Jobs it holds at once (one denoising, one uploading, one waiting)."),
    worker_id: str | None = typer.Option(None, help="Worker id (default: host-pid-random)."),
    max_seconds: float | None = typer.Option(None, help="Stop after this long (tests, benchmarks)."),
    heartbeat_s: float = typer.Option(2.0, min=0.1, help="Seconds between heartbeats."),
) -> None:
    """Run a generator worker: loads and warms its model, then serves jobs from the scheduler."""
    from framebus.schemas.state import ModelName
    from framebus.services.common.logs import setup_logging
    from framebus.services.generator.app import build_worker, run, serve_worker_probes

    if engine not in ("diffusers", "null"):
        raise typer.BadParameter(f"`--engine` must be 'diffusers' or 'null' but is {engine!r}")
    setup_logging(Settings())
    model = model or Settings().default_model
    with errors_exit():
        with console.status(f"loading and warming {model} ({engine} engine)"):
            built = build_worker(Settings(), engine=engine, model=ModelName(model), delay_ms=delay_ms, batch=batch,
                                 slots=slots, worker_id=worker_id, heartbeat_s=heartbeat_s)
            serve_worker_probes(built)
            built.engine.warm()
        note = " (test engine: solid colours, no diffusion)" if engine == "null" else ""
        console.print(f"worker {built.config.worker_id}: engine {built.engine.name}{note}, model {model}, "
                      f"encoder {built.encode_config.codec}, batch {batch}, slots {slots}; warm, announcing")
        run(built, max_seconds=max_seconds)


@app.command()
def gateway(host: str | None = typer.Option(None, help="Bind address (default FRAMEBUS_GATEWAY_HOST)."),
            port: int | None = typer.Option(None, help="Port (default FRAMEBUS_GATEWAY_PORT).")) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    from framebus.services.common.logs import logging_config
    from framebus.services.gateway.app import create_app

    settings = Settings()
    settings = settings.model_copy(update={"gateway_host": host or settings.gateway_host,
                                           "gateway_port": port or settings.gateway_port})
    # uvicorn's own loggers go through the one setup too (level and JSON lines alike).
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                log_config=logging_config(settings))


if __name__ == "__main__":
    app()
