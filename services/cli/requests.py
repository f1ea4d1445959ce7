"""`framebus submit | status | cancel | quote`: the producer SDK from the terminal."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from framebus.client import FramebusClient
from framebus.errors import WaitTimeout
from framebus.results import GenerationStatus
from framebus.schemas.events import GenerationFields
from framebus.schemas.state import ModelName, RequestState, Tier
from framebus.services.cli.exits import ADMISSION_REFUSALS, ExitCode, NotFound, Refused
from framebus.services.cli.output import JsonOption, acting_tenant, console, emit_json, err_console, errors_exit, progress_console
from framebus.services.common.settings import Settings

TenantOption = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (default: FRAMEBUS_TENANT).")]
# What a request resolves to (the model's defaults filled in): shown with its receipt and its quote.
RESOLVED_FIELDS = {"model", "width", "height", "num_frames", "num_inference_steps", "fps"}


def _client(tenant: str | None) -> FramebusClient:
    settings = Settings()
    _telemetry(settings)
    return FramebusClient(tenant_id=acting_tenant(tenant, settings), settings=settings)


def _telemetry(settings: Settings) -> None:
    """Spans of the CLI's own sends (a request's trace starts with its publish), where the SDK is installed."""
    try:
        from framebus.services.common.telemetry import configure
    except ImportError:  # a producer-only install: its traceparent still travels, nothing is recorded here
        return
    configure("framebus-cli", settings.telemetry)


def submit(
    prompt: Annotated[str, typer.Argument(help="What the video should show.")],
    tier: Annotated[Tier, typer.Option(help="Priority tier.")] = Tier.STANDARD,
    frames: Annotated[int | None, typer.Option("--frames", help="Number of frames (4k+1); default: the model's.")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels (multiple of 16); default: the model's.")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels (multiple of 16); default: the model's.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps; default: the model's.")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 5.0,
    fps: Annotated[int | None, typer.Option(help="Frames per second of the video; default: the model's.")] = None,
    model: Annotated[ModelName | None, typer.Option(
        help="Model to render with; default: FRAMEBUS_DEFAULT_MODEL (wan-shapes).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: chosen by framebus).")] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    webhook: Annotated[str | None, typer.Option(help="https URL to notify when done.")] = None,
    request_id: Annotated[str | None, typer.Option("--id", help="Idempotency key (default: a new uuid).")] = None,
    tenant: TenantOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the request until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 600.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="With --wait: save the MP4 here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit one generation request. With --wait, the exit code says how it ended (see `framebus --help`)."""
    if output is not None and not wait:
        raise typer.BadParameter("--output saves the video once it is done: add --wait", param_hint="--output")
    fields = {"request_id": request_id or f"cli-{uuid.uuid4().hex[:12]}", "prompt": prompt, "tier": tier,
              "num_frames": frames, "width": width, "height": height, "num_inference_steps": steps,
              "guidance_scale": guidance, "fps": fps, "model": model, "seed": seed, "negative_prompt": negative,
              "webhook_url": webhook}
    with errors_exit(), _client(tenant) as client:
        request = client.build_request(fields)
        receipt = client.submit(request)
        if as_json:
            emit_json(_receipt_record(receipt, request))
        else:
            _print_receipt(receipt, request)
        if wait:
            final = _follow(client, receipt.request_id, timeout, as_json=as_json)
            if output is not None and final.state is RequestState.COMPLETED:
                client.download(final, output)
                progress_console(as_json).print(f"saved {output} ({final.output.bytes} bytes)")
            raise typer.Exit(outcome_exit_code(final))


def _print_receipt(receipt, request) -> None:
    console.print(f"accepted [bold]{receipt.request_id}[/] for {receipt.tenant_id} ({receipt.tier.value}): "
                  f"{request.model} {request.width}x{request.height}, {request.num_frames} frames, "
                  f"{request.num_inference_steps} steps: {receipt.tokens:g} tokens; "
                  f"{receipt.topic}[{receipt.partition}]@{receipt.offset}")


def _receipt_record(receipt, request) -> dict:
    return {**receipt.model_dump(mode="json"), **request.model_dump(mode="json", include=RESOLVED_FIELDS)}


def outcome_exit_code(final: GenerationStatus) -> ExitCode:
    """How a request ended, for a script: completed 0, refused at admission 6, failed or cancelled 1."""
    if final.state is RequestState.COMPLETED:
        return ExitCode.OK
    if final.error is not None and final.error.code in ADMISSION_REFUSALS:
        return ExitCode.REFUSED
    return ExitCode.FAILED


def _follow(client: FramebusClient, request_id: str, timeout_s: float, *, as_json: bool = False) -> GenerationStatus:
    """Show the request's states and progress on one live line until it ends (the SDK's event stream)."""
    started, last = time.monotonic(), None
    with progress_console(as_json).status(f"{request_id}: waiting for status") as line:
        try:
            for item in client.events(request_id, timeout=timeout_s):
                if item.kind == "progress":
                    steps = f" {item.data.step}/{item.data.steps}" if item.data.steps else ""
                    shown = f"{last.state.value if last else 'running'}, {item.data.stage}{steps}"
                else:
                    last = item.data
                    why = f": {last.waiting_reason}" if last.waiting_reason and not last.terminal else ""
                    shown = f"{last.state.value}{why}"
                line.update(f"{request_id}: {shown} ({time.monotonic() - started:.0f}s)")
        except WaitTimeout:
            err_console.print(f"[yellow]still {last.state.value if last else 'unknown'} after {timeout_s:g}s[/]; "
                              f"check later with `framebus status {request_id}`")
            raise typer.Exit(ExitCode.TIMEOUT) from None
    assert last is not None and last.terminal
    _show_status(last, as_json)
    return last


def _show_status(status: GenerationStatus, as_json: bool) -> None:
    if as_json:
        emit_json(status)  # every field of the status the SDK returns
    else:
        _print_status(status)


def _print_status(status: GenerationStatus) -> None:
    console.print(f"{status.request_id}: [bold]{status.state.value}[/] (tier {status.tier.value}, "
                  f"{status.tokens if status.tokens is not None else '?'} tokens, updated {status.updated_at:%H:%M:%S})")
    if status.output is not None:
        console.print(f"video: {status.output.url}", soft_wrap=True)
    if status.error is not None:
        console.print(f"error {status.error.code.value}: {status.error.message}")
    if status.waiting_reason and not status.state.is_terminal:
        console.print(f"waiting: {status.waiting_reason}")


def _known(client: FramebusClient, request_id: str) -> GenerationStatus:
    found = client.status(request_id)
    if found is None:
        raise NotFound(f"no request {request_id!r} for tenant {client.tenant_id!r}")
    return found


def status(request_id: Annotated[str, typer.Argument()], tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """Show the latest state of a request (exit 0 whatever the state; 4 if there is no such request)."""
    with errors_exit(), _client(tenant) as client:
        found = _known(client, request_id)
    _show_status(found, as_json)


def cancel(request_id: Annotated[str, typer.Argument()], tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """Cancel a request that has not finished."""
    with errors_exit(), _client(tenant) as client:
        found = _known(client, request_id)
        if found.state.is_terminal:
            raise Refused(f"{request_id} already {found.state.value}; nothing to cancel")
        client.cancel(request_id)
    if as_json:
        emit_json({"request_id": request_id, "cancel_requested": True, "was": found.state})
        return
    console.print(f"cancel requested for {request_id} (was {found.state.value})")


def quote(
    prompt: Annotated[str, typer.Argument()],
    frames: Annotated[int | None, typer.Option("--frames", help="Default: the model's.")] = None,
    width: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    height: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    steps: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    model: Annotated[ModelName | None, typer.Option(help="Default: FRAMEBUS_DEFAULT_MODEL (wan-shapes).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens a request would cost, from the published formula (no broker needed)."""
    with errors_exit():
        fields = GenerationFields.model_validate(
            {"prompt": prompt, "num_frames": frames, "width": width, "height": height, "num_inference_steps": steps,
             "model": model}, context=Settings().request_context())
    if as_json:
        emit_json({"tokens": fields.quote(), **fields.model_dump(mode="json", include=RESOLVED_FIELDS)})
        return
    console.print(f"{fields.quote():g} tokens ({fields.model} {fields.width}x{fields.height}, "
                  f"{fields.num_frames} frames, {fields.num_inference_steps} steps)")
