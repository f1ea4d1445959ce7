"""`framebus trace REQUEST_ID`: where a request spent its time, as a waterfall in the terminal.

From the spans when they were written where this machine can read them (`FRAMEBUS_TELEMETRY=jsonl:DIR`
on the services, or `--spans DIR`): the request's whole trace, every hop, as a tree. Otherwise
(no collector at hand) from the timings on its status record: accepted, queued, started, each
stage of the worker, finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from framebus.services.cli.exits import NotFound
from framebus.services.cli.output import JsonOption, acting_tenant, console, emit_json, errors_exit
from framebus.services.common.settings import Settings

BAR_WIDTH = 40


@dataclass(frozen=True)
class Step:
    name: str
    start: float  # epoch seconds
    end: float
    depth: int = 0
    detail: str = ""


def steps_from_spans(spans: list[dict], request_id: str) -> list[Step]:
    """The trace holding ``request_id``'s spans, as a depth-first tree ordered by start time."""
    trace_ids = {s["trace_id"] for s in spans if s["attributes"].get("framebus.request_id") == request_id}
    if not trace_ids:
        return []
    mine = [s for s in spans if s["trace_id"] in trace_ids]
    ids = {s["span_id"] for s in mine}
    children: dict[str | None, list[dict]] = {}
    for span in mine:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    steps: list[Step] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_ns"]):
            attributes = span["attributes"]
            detail = ", ".join(f"{key.removeprefix('framebus.')}={value}" for key, value in attributes.items()
                               if key not in ("framebus.request_id", "framebus.tenant"))
            steps.append(Step(f"{span['name']} [{span['service']}]", span["start_ns"] / 1e9, span["end_ns"] / 1e9,
                              depth, detail))
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return steps


def steps_from_status(status) -> list[Step]:
    """The waterfall the status record's timings allow: the hops, then the worker's stages."""
    timings = status.timings
    points = [("accepted", timings.accepted_at), ("queued", timings.queued_at), ("started", timings.started_at)]
    known = [(name, at.timestamp()) for name, at in points if at is not None]
    finished = timings.finished_at.timestamp() if timings.finished_at else None
    steps = []
    for (name, at), (_, following) in zip(known, [*known[1:], ("", finished)], strict=False):
        if following is not None:
            label = {"accepted": "admission", "queued": "queue wait", "started": "on the worker"}[name]
            steps.append(Step(label, at, following))
    if timings.started_at is not None:
        at = timings.started_at.timestamp()
        for name, seconds in (("text encode", timings.text_encode_s), ("denoise", timings.denoise_s),
                              ("vae decode", timings.decode_s),
                              ("encode", timings.encode_s), ("upload", timings.upload_s)):
            if seconds:
                steps.append(Step(name, at, at + seconds, depth=1))
                at += seconds
    return steps


def waterfall(steps: list[Step], title: str) -> Table:
    begin, end = min(s.start for s in steps), max(s.end for s in steps)
    span = max(end - begin, 1e-6)
    table = Table("step", "at", "took", "", "detail", title=title, title_justify="left")
    for step in steps:
        left = int((step.start - begin) / span * BAR_WIDTH)
        width = max(1, int((step.end - step.start) / span * BAR_WIDTH))
        bar = Text(" " * left) + Text("█" * min(width, BAR_WIDTH - left), style="cyan")
        table.add_row("  " * step.depth + step.name, f"+{(step.start - begin) * 1000:,.0f} ms",
                      f"{(step.end - step.start) * 1000:,.1f} ms", bar, Text(step.detail, overflow="fold"))
    return table


def trace(request_id: Annotated[str, typer.Argument(help="The request to show.")],
          tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (default: FRAMEBUS_TENANT).")]
          = None,
          spans: Annotated[Path | None, typer.Option(help="Directory of span files (default: FRAMEBUS_TELEMETRY's "
                                                          "jsonl:DIR).")] = None,
          as_json: JsonOption = False) -> None:
    """A request's path through the pipeline as a waterfall: every span of its trace when the span
    files are at hand, else the timings on its status."""
    from framebus.client import FramebusClient
    from framebus.services.common.telemetry import read_spans

    settings = Settings()
    directory = spans or (Path(settings.telemetry.removeprefix("jsonl:")).expanduser()
                          if settings.telemetry.startswith("jsonl:") else None)
    steps: list[Step] = []
    source = "its status timings"
    if directory is not None and directory.is_dir():
        steps = steps_from_spans(read_spans(directory), request_id)
        source = f"its trace ({directory})"
    if not steps:
        with errors_exit(), FramebusClient(tenant_id=acting_tenant(tenant, settings), settings=settings) as client:
            status = client.status(request_id)
            if status is None:
                raise NotFound(f"no request {request_id!r} for tenant {client.tenant_id!r}")
        steps = steps_from_status(status)
        source = f"its status timings (state {status.state.value}; no span files at hand)"
    if as_json:
        emit_json(*({"step": s.name, "depth": s.depth, "start": s.start, "end": s.end, "detail": s.detail} for s in steps))
        return
    if not steps:
        console.print(f"{request_id}: nothing timed yet")
        return
    began = datetime.fromtimestamp(min(s.start for s in steps)).strftime("%H:%M:%S.%f")[:-3]
    console.print(waterfall(steps, f"{request_id} from {source}, starting {began}"))
