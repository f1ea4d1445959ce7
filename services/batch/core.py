"""Bulk batch jobs, pure: reading a JSONL file into requests, and the result manifest.

Each line is ``{"custom_id": ..., "prompt": ..., ...generation fields}``. The whole file
is validated first and every bad line is reported with its number; valid lines become
batch-tier requests whose ids derive from the batch id and custom id, so re-running the
same submission publishes the same ids (a resumed submission skips what is already in).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from framebus.schemas import limits
from framebus.schemas.events import BatchCounts, GenerationFields, StatusChanged
from framebus.schemas.state import RequestState
from framebus.schemas.validation import describe_errors

MAX_LINES = 100_000
MAX_LINE_BYTES = 64 * 1024
LINE_KEYS = set(GenerationFields.model_fields) | {"custom_id", "metadata"}


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    request_id: str
    fields: dict


@dataclass
class ParsedBatch:
    lines: list[BatchLine] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    error_ids: dict[int, str] = field(default_factory=dict)  # line number -> its custom id, where readable

    def rejected(self) -> list[dict]:
        """The refused lines as the error file reports them: the file's line number, the custom id
        where one could be read (a repeated id is known), and what is wrong."""
        return [{"line": number, "custom_id": self.error_ids.get(number), "error": error}
                for number, error in self.errors]

    @property
    def ok(self) -> bool:
        return not self.errors


def batch_id_for(tenant_id: str, content_digest: str) -> str:
    """The same tenant submitting the same file gets the same batch: re-running resumes it."""
    return "bat_" + hashlib.sha256(f"{tenant_id}\0{content_digest}".encode()).hexdigest()[:24]


def request_id_for(batch_id: str, custom_id: str) -> str:
    return "b-" + hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()[:40]


def parse_lines(raw_lines: Iterable[bytes], batch_id: str) -> ParsedBatch:
    parsed = ParsedBatch()
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if number > MAX_LINES:
            parsed.errors.append((number, f"a batch holds at most {MAX_LINES:,} lines; split the file"))
            break
        if not raw.strip():
            continue
        problem = _line_problem(raw, seen, number)
        if isinstance(problem, str):
            parsed.errors.append((number, problem))
            readable = _readable_custom_id(raw)
            if readable is not None:
                parsed.error_ids[number] = readable
            continue
        custom_id, fields = problem
        seen[custom_id] = number
        parsed.lines.append(BatchLine(number, custom_id, request_id_for(batch_id, custom_id), fields))
    return parsed


def _line_problem(raw: bytes, seen: Mapping[str, int], number: int) -> str | tuple[str, dict]:
    if len(raw) > MAX_LINE_BYTES:
        return f"line is {len(raw):,} bytes; at most {MAX_LINE_BYTES:,}"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        # Its own "line 1 column 5" would be about this line alone (and "line 2" past a stray
        # carriage return); the file's line number is reported beside the message.
        return f"not JSON: {exc.msg} at character {exc.pos + 1}"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(data, dict):
        return "a line must be a JSON object"
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not re.match(limits.CUSTOM_ID_PATTERN, custom_id):
        return "`custom_id` must be 1-64 of A-Z a-z 0-9 . _ : / - (starting with a letter or digit)"
    if custom_id in seen:
        return f"`custom_id` {custom_id!r} repeats line {seen[custom_id]}"
    unknown = sorted(set(data) - LINE_KEYS)
    if unknown:
        return f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
    fields = {key: value for key, value in data.items() if key not in ("custom_id", "tier")}
    if data.get("tier", "batch") != "batch":
        return "`tier` must be batch (or left out) in a batch file"
    try:
        GenerationFields.model_validate({**fields, "tier": "batch"})
    except ValidationError as exc:
        return "; ".join(f"`{e.field}`: {e.message}" for e in describe_errors(exc))
    return custom_id, fields


def _readable_custom_id(raw: bytes) -> str | None:
    """The custom id of a refused line, if it has a well-formed one."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    if isinstance(custom_id, str) and re.match(limits.CUSTOM_ID_PATTERN, custom_id):
        return custom_id
    return None


# --- the manifest --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    lines: list[dict]
    errors: list[dict]
    counts: BatchCounts
    tokens: float

    def jsonl(self) -> bytes:
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in self.lines).encode()

    def errors_jsonl(self) -> bytes:
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in self.errors).encode()


def build_manifest(items: list[dict], statuses: Mapping[str, StatusChanged], rejected: list[dict], *,
                   sign: Callable[[str], tuple[str, datetime]] | None = None,
                   video_link: Callable[[str], str] | None = None) -> Manifest:
    """One line per custom id, in input order: outcome, output key and link, or error code; tokens.

    ``items`` are the input index entries ({"line", "custom_id", "request_id"}); ``rejected``
    are the lines validation refused ({"line", "custom_id", "error"}), reported in the error file.
    ``sign(output key)`` gives a link and its expiry, made now: a link from when the result
    arrived may be dead by the time a long batch ends. ``video_link(request id)`` is the gateway's
    stable link (``video_url``), which outlives every presigned one.
    """
    lines, errors = [], [{"line": r["line"], "custom_id": r.get("custom_id"), "outcome": "rejected",
                          "error": {"code": "invalid_request", "message": r["error"]}} for r in rejected]
    completed = failed = cancelled = 0
    tokens = 0.0
    for item in items:
        status = statuses.get(item["request_id"])
        state = status.state if status is not None else RequestState.CANCELLED
        line = {"custom_id": item["custom_id"], "request_id": item["request_id"], "line": item["line"],
                "outcome": state.value}
        if state is RequestState.COMPLETED and status.output is not None:
            completed += 1
            tokens += status.tokens or 0.0
            url, expires_at = sign(status.output.key) if sign else (status.output.url, status.output.url_expires_at)
            line |= {"output_key": status.output.key, "url": url, "url_expires_at": expires_at.isoformat(),
                     "tokens": status.tokens, "sha256": status.output.sha256}
            if video_link is not None:
                line["video_url"] = video_link(item["request_id"])
        elif state is RequestState.FAILED:
            failed += 1
            error = status.error
            line["error"] = {"code": str(error.code), "message": error.message} if error else None
            errors.append(line)
        else:
            cancelled += 1
            if status is not None and status.error is not None:
                line["error"] = {"code": str(status.error.code), "message": status.error.message}
        lines.append(line)
    counts = BatchCounts(total=len(items), completed=completed, failed=failed, cancelled=cancelled,
                         rejected=len(rejected))
    return Manifest(lines, errors, counts, round(tokens, 3))


# --- progress --------------------------------------------------------------------------------------
LIVE_STATES = {RequestState.DISPATCHED: "running", RequestState.RUNNING: "running"}


def count_lines(request_ids: Iterable[str], state_of: Callable[[str], RequestState | None], *,
                rejected: int = 0) -> BatchCounts:
    """A batch's lines by state; a line with no status yet is queued."""
    tally = {"queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}
    total = 0
    for request_id in request_ids:
        total += 1
        state = state_of(request_id)
        if state is None:
            tally["queued"] += 1
        elif state.is_terminal:
            tally[state.value] += 1
        else:
            tally[LIVE_STATES.get(state, "queued")] += 1
    return BatchCounts(total=total, rejected=rejected, **tally)
