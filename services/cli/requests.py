"""`framebus submit | status | cancel | quote`: the producer SDK from the terminal."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import typer

from framebus.client import FramebusClient
from framebus.schemas.events import GenerationFields, StatusChanged
from framebus.schemas.state import ModelName, RequestState, Tier
from framebus.services.cli.output import acting_tenant, console, err_console, errors_exit
from framebus.services.common.settings import Settings

TenantOption = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (default: FRAMEBUS_TENANT).")]


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
) -> None:
    """Submit one generation request."""
    fields = {"request_id": request_id or f"cli-{uuid.uuid4().hex[:12]}", "prompt": prompt, "tier": tier,
              "num_frames": frames, "width": width, "height": height, "num_inference_steps": steps,
              "guidance_scale": guidance, "fps": fps, "model": model, "seed": seed, "negative_prompt": negative,
              "webhook_url": webhook}
    with errors_exit(), _client(tenant) as client:
        request = client.build_request(fields)
        receipt = client.submit(request)
        console.print(f"accepted [bold]{receipt.request_id}[/] for {receipt.tenant_id} ({receipt.tier.value}): "
                      f"{request.model} {request.width}x{request.height}, {request.num_frames} frames, "
                      f"{request.num_inference_steps} steps: {receipt.tokens:g} tokens; "
                      f"{receipt.topic}[{receipt.partition}]@{receipt.offset}")
        if wait:
            final = _follow(client, receipt.request_id, timeout)
            raise typer.Exit(0 if final.state is RequestState.COMPLETED else 1)


def _follow(client: FramebusClient, request_id: str, timeout_s: float) -> StatusChanged:
    deadline = time.monotonic() + timeout_s
    last: StatusChanged | None = None
    with console.status(f"{request_id}: waiting for status") as line:
        while time.monotonic() < deadline:
            last = client.status(request_id, timeout_s=5) or last
            if last is not None:
                why = f": {last.waiting_reason}" if last.waiting_reason and not last.state.is_terminal else ""
                line.update(f"{request_id}: {last.state.value} ({time.monotonic() - deadline + timeout_s:.0f}s){why}")
                if last.state.is_terminal:
                    break
            time.sleep(1.0)
    if last is None or not last.state.is_terminal:
        err_console.print(f"[yellow]still {last.state.value if last else 'unknown'} after {timeout_s:g}s[/]; "
                          f"check later with `framebus status {request_id}`")
        raise typer.Exit(3)
    _print_status(last)
    return last


def _print_status(status: StatusChanged) -> None:
    console.print(f"{status.request_id}: [bold]{status.state.value}[/] (tier {status.tier.value}, "
                  f"{status.tokens if status.tokens is not None else '?'} tokens, updated {status.updated_at:%H:%M:%S})")
    if status.output is not None:
        console.print(f"video: {status.output.url}", soft_wrap=True)
    if status.error is not None:
        console.print(f"error {status.error.code.value}: {status.error.message}")
    if status.waiting_reason and not status.state.is_terminal:
        console.print(f"waiting: {status.waiting_reason}")


def _known(client: FramebusClient, request_id: str) -> StatusChanged:
    found = client.status(request_id)
    if found is None:
        err_console.print(f"no request {request_id!r} for tenant {client.tenant_id!r}")
        raise typer.Exit(1)
    return found


def status(request_id: Annotated[str, typer.Argument()], tenant: TenantOption = None) -> None:
    """Show the latest state of a request."""
    with errors_exit(), _client(tenant) as client:
        found = _known(client, request_id)
    _print_status(found)


def cancel(request_id: Annotated[str, typer.Argument()], tenant: TenantOption = None) -> None:
    """Cancel a request that has not finished."""
    with errors_exit(), _client(tenant) as client:
        found = _known(client, request_id)
        if found.state.is_terminal:
            err_console.print(f"{request_id} already {found.state.value}; nothing to cancel")
            raise typer.Exit(1)
        client.cancel(request_id)
    console.print(f"cancel requested for {request_id} (was {found.state.value})")


def quote(
    prompt: Annotated[str, typer.Argument()],
    frames: Annotated[int | None, typer.Option("--frames", help="Default: the model's.")] = None,
    width: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    height: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    steps: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    model: Annotated[ModelName | None, typer.Option(help="Default: FRAMEBUS_DEFAULT_MODEL (wan-shapes).")] = None,
) -> None:
    """Tokens a request would cost, from the published formula (no broker needed)."""
    with errors_exit():
        fields = GenerationFields.model_validate(
            {"prompt": prompt, "num_frames": frames, "width": width, "height": height, "num_inference_steps": steps,
             "model": model}, context=Settings().request_context())
    console.print(f"{fields.quote():g} tokens ({fields.model} {fields.width}x{fields.height}, "
                  f"{fields.num_frames} frames, {fields.num_inference_steps} steps)")
