"""The CLI's exit codes and its --json and --version conventions, without a broker (in process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from kafka.errors import KafkaTimeoutError
from typer.testing import CliRunner

from framebus.errors import FramebusError, KafkaAdapterError
from framebus.schemas.events import ErrorInfo, StatusChanged
from framebus.schemas.state import ErrorCode, RequestState, Tier
from framebus.services.cli.exits import MEANINGS, ExitCode, NotFound, Refused, exit_code_of
from framebus.services.cli.main import app
from framebus.services.cli.output import emit_json
from framebus.services.cli.requests import outcome_exit_code
from framebus.services.gateway.tenants import TenantError

README = Path(__file__).parents[3] / "README.md"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "FRAMEBUS_DEFAULT_MODEL": "wan-shapes"})


def test_help_lists_every_exit_code_with_its_meaning() -> None:
    shown = invoke("--help")
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())  # the help box wraps long lines
    assert "Exit codes:" in text and "--json" in text
    for code in ExitCode:
        assert f"{code.value} {code.name.lower().replace('_', ' ')}: {MEANINGS[code]}" in text, code


def test_the_readme_table_is_the_clis() -> None:
    text = README.read_text()
    for code in ExitCode:
        assert f"| {code.value} | {code.name.lower().replace('_', ' ')} | {MEANINGS[code]} |" in text, code


def test_version_prints_the_installed_version_and_exits_0() -> None:
    shown = invoke("--version")
    assert shown.exit_code == 0 and shown.output == f"framebus {version('framebus')}\n"


def test_usage_errors_exit_with_clicks_code() -> None:
    assert click.UsageError.exit_code == ExitCode.USAGE
    assert invoke("no-such-command").exit_code == ExitCode.USAGE
    assert invoke("quote", "x", "--width", "100").exit_code == ExitCode.USAGE  # invalid field, named on stderr


@pytest.mark.parametrize(("error", "code"), [
    (NotFound("no request 'x'"), ExitCode.NOT_FOUND),
    (Refused("tenant 'acme' already exists"), ExitCode.REFUSED),
    (TenantError("`tokens` must be positive"), ExitCode.FAILED),
    (KafkaTimeoutError("Unable to bootstrap"), ExitCode.UNAVAILABLE),
], ids=["not-found", "refused", "framebus-error", "kafka-timeout"])
def test_errors_map_to_their_exit_codes(error: Exception, code: ExitCode) -> None:
    assert exit_code_of(error) is code


def test_a_wrapped_connection_error_is_unavailable() -> None:
    try:
        try:
            raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")
        except KafkaTimeoutError as exc:
            raise KafkaAdapterError("cannot create a producer") from exc
    except KafkaAdapterError as wrapped:
        assert exit_code_of(wrapped) is ExitCode.UNAVAILABLE
    assert exit_code_of(KafkaAdapterError("topic refused")) is ExitCode.FAILED


def test_sdk_call_errors_map_by_their_http_status() -> None:
    class Gone(FramebusError):
        status_code = 404

    class Busy(FramebusError):
        status_code = 503

    class WaitedTooLong(FramebusError, TimeoutError):
        pass

    assert exit_code_of(Gone("x")) is ExitCode.NOT_FOUND
    assert exit_code_of(Busy("x")) is ExitCode.UNAVAILABLE
    assert exit_code_of(WaitedTooLong("x")) is ExitCode.TIMEOUT


@pytest.mark.parametrize(("state", "error", "code"), [
    (RequestState.COMPLETED, None, ExitCode.OK),
    (RequestState.FAILED, ErrorCode.INSUFFICIENT_BALANCE, ExitCode.REFUSED),
    (RequestState.FAILED, ErrorCode.GENERATION_ERROR, ExitCode.FAILED),
    (RequestState.CANCELLED, None, ExitCode.FAILED),
])
def test_a_followed_request_exits_with_how_it_ended(state: RequestState, error: ErrorCode | None,
                                                     code: ExitCode) -> None:
    final = StatusChanged(request_id="r", tenant_id="acme", state=state, tier=Tier.STANDARD,
                          error=ErrorInfo(code=error, message="why") if error else None)
    assert outcome_exit_code(final) is code


def test_emit_json_prints_one_compact_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    emit_json({"at": datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "tier": Tier.BATCH}, {"n": 2})
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"at": "2026-01-02T03:04:00Z", "tier": "batch"}, {"n": 2}]


def test_json_output_of_commands_that_need_no_broker_parses() -> None:
    quote = invoke("quote", "a red circle", "--json")
    assert quote.exit_code == 0
    assert json.loads(quote.stdout) == {"tokens": 0.012, "model": "wan-shapes", "width": 64, "height": 64,
                                        "num_frames": 17, "num_inference_steps": 20, "fps": 16}
    models = [json.loads(line) for line in invoke("model", "list", "--json").stdout.splitlines()]
    assert [m["model"] for m in models if m["default"]] == ["wan-shapes"]
    assert {"model", "width", "height", "num_frames", "fps", "num_inference_steps"} <= set(models[0])
    topics = [json.loads(line) for line in invoke("topics", "--json").stdout.splitlines()]
    assert {"name", "partitions", "key", "configs", "event_types"} <= set(topics[0])
