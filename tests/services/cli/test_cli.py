"""The `framebus` command as a user runs it: a real process, real output, real exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from framebus.infra.process import free_port
from framebus.services.cli.exits import ExitCode
from framebus.services.common.settings import Settings


def framebus(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_")}
    return subprocess.run([sys.executable, "-m", "framebus.services.cli.main", *args], capture_output=True, text=True,
                          env={**clean, "COLUMNS": "200", **env}, timeout=timeout)


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict]:
    """stdout of a --json command: every line one JSON object, nothing else."""
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return {"FRAMEBUS_KAFKA_BOOTSTRAP": settings.bootstrap_servers, "FRAMEBUS_S3_ENDPOINT": settings.s3_endpoint_url,
            "FRAMEBUS_S3_ACCESS_KEY": settings.s3_access_key,
            "FRAMEBUS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
            "FRAMEBUS_TOPIC_PREFIX": settings.topic_prefix, "FRAMEBUS_S3_BUCKET": settings.s3_bucket,
            "FRAMEBUS_STATE_DIR": str(settings.state_dir), "FRAMEBUS_KAFKA_REPLICATION_FACTOR": "1", **extra}


def test_up_against_existing_servers_reports_them_as_external(settings: Settings) -> None:
    done = framebus("up", env=_env_for(settings))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("external") == 2 and settings.bootstrap_servers in done.stdout
    from framebus.schemas.topics import CATALOGUE

    assert f"topics: {len(CATALOGUE)} ready ({len(CATALOGUE)} created now)" in done.stdout


def test_smoke_command_prints_each_check(settings: Settings) -> None:
    done = framebus("smoke", env=_env_for(settings))
    assert done.returncode == 0, done.stderr
    for check in ("ok Kafka", "ok S3", "ok ffmpeg"):
        assert check in done.stdout


def test_up_with_a_taken_port_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = framebus("up", env={"FRAMEBUS_KAFKA_PORT": str(holder.getsockname()[1]),
                                   "FRAMEBUS_KAFKA_CONTROLLER_PORT": str(free_port()),
                                   "FRAMEBUS_S3_PORT": str(free_port()), "FRAMEBUS_STATE_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "already in use" in done.stderr and "FRAMEBUS_KAFKA_PORT" in done.stderr


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    done = framebus("down", env={"FRAMEBUS_STATE_DIR": str(tmp_path)})
    assert done.returncode == 0 and "nothing was running" in done.stdout


def test_topics_lists_the_catalogue() -> None:
    done = framebus("topics", env={})
    assert done.returncode == 0 and "framebus.requests.interactive" in done.stdout


def test_submit_status_and_cancel_from_the_terminal(provisioned_settings: Settings) -> None:
    env = _env_for(provisioned_settings, FRAMEBUS_TENANT="acme")
    submitted = framebus("submit", "a red fox running through snow", "--tier", "interactive", "--frames", "17",
                         "--width", "256", "--height", "256", "--id", "cli-fox-1", env=env)
    assert submitted.returncode == 0, submitted.stderr
    assert "accepted cli-fox-1 for acme (interactive): wan-shapes 256x256, 17 frames, 20 steps: 0.288 tokens" in submitted.stdout
    status = framebus("status", "cli-fox-1", env=env)
    assert status.returncode == 0 and "cli-fox-1: accepted (tier interactive, 0.288 tokens" in status.stdout
    cancel = framebus("cancel", "cli-fox-1", env=env)
    assert cancel.returncode == 0 and "cancel requested for cli-fox-1 (was accepted)" in cancel.stdout
    other = framebus("status", "cli-fox-1", "--tenant", "globex", env=env)
    assert other.returncode == ExitCode.NOT_FOUND and "no request 'cli-fox-1' for tenant 'globex'" in other.stderr
    assert framebus("trace", "cli-nobody", env=env).returncode == ExitCode.NOT_FOUND


def test_json_output_and_exit_codes_of_submit_and_status(provisioned_settings: Settings) -> None:
    env = _env_for(provisioned_settings, FRAMEBUS_TENANT="acme")
    # No scheduler runs here: the request stays accepted, so --wait gives up (3) with only the receipt on stdout.
    waited = framebus("submit", "a red fox", "--id", "cli-json-1", "--json", "--wait", "--timeout", "1", env=env)
    assert waited.returncode == ExitCode.TIMEOUT, waited.stderr
    [receipt] = [json.loads(line) for line in waited.stdout.splitlines()]
    assert receipt["request_id"] == "cli-json-1" and receipt["tenant_id"] == "acme" and receipt["state"] == "accepted"
    assert {"tier", "tokens", "topic", "partition", "offset", "model", "width", "height", "num_frames"} <= set(receipt)
    [status] = json_lines(framebus("status", "cli-json-1", "--json", env=env))
    assert (status["request_id"], status["state"], status["tokens"]) == ("cli-json-1", "accepted", receipt["tokens"])
    assert {"tier", "updated_at", "timings", "output", "error"} <= set(status)
    [cancelled] = json_lines(framebus("cancel", "cli-json-1", "--json", env=env))
    assert cancelled == {"request_id": "cli-json-1", "cancel_requested": True, "was": "accepted"}


def test_a_command_that_cannot_reach_kafka_exits_unavailable() -> None:
    done = framebus("status", "x", env={"FRAMEBUS_KAFKA_BOOTSTRAP": "127.0.0.1:1", "FRAMEBUS_SUBMIT_DEADLINE_S": "1"})
    assert done.returncode == ExitCode.UNAVAILABLE and done.stdout == ""
    assert "Traceback" not in done.stderr and "framebus up" in done.stderr


def test_invalid_submit_names_each_field_and_exits_2(provisioned_settings: Settings) -> None:
    done = framebus("submit", "x", "--width", "100", "--frames", "10", env=_env_for(provisioned_settings))
    assert done.returncode == 2
    assert "invalid width: `width` must be a multiple of 16 but is 100" in done.stderr
    assert "invalid num_frames" in done.stderr and "Traceback" not in done.stderr


def test_quote_prints_tokens_without_a_broker() -> None:
    done = framebus("quote", "x" * 100, "--model", "wan2.1-t2v-1.3b", "--width", "1024", "--height", "1024", env={})
    assert done.returncode == 0 and done.stdout.strip() == "100 tokens (wan2.1-t2v-1.3b 1024x1024, 81 frames, 50 steps)"
    tiny = framebus("quote", "a red circle", env={"FRAMEBUS_DEFAULT_MODEL": "wan-tiny"})
    assert tiny.stdout.strip().endswith("(wan-tiny 64x64, 5 frames, 4 steps)"), "the stack's model, its own clip"


def test_tenants_create_issue_and_revoke_keys(provisioned_settings: Settings) -> None:
    env = _env_for(provisioned_settings)
    created = framebus("tenants", "create", "initech", "--name", "Initech", "--with-key", env=env)
    assert created.returncode == 0 and "created tenant initech" in created.stdout
    key = created.stdout.split("store it now): ")[1].split()[0]
    assert key.startswith("fb_")
    again = framebus("tenants", "create", "initech", env=env)
    assert again.returncode == ExitCode.REFUSED and "already exists" in again.stderr
    key_id = key.split("_")[1]
    shown = framebus("tenants", "show", "initech", env=env)
    assert key_id in shown.stdout and key.split("_", 2)[2] not in shown.stdout  # never the secret
    [record] = json_lines(framebus("tenants", "show", "initech", "--json", env=env))
    assert record["tenant_id"] == "initech" and record["display_name"] == "Initech"
    assert [k["key_id"] for k in record["api_keys"]] == [key_id] and "secret_sha256" not in record["api_keys"][0]
    revoked = framebus("tenants", "revoke-key", "initech", key_id, env=env)
    assert revoked.returncode == 0 and f"revoked key {key_id}" in revoked.stdout


def test_usage_cost_and_balance_from_the_ledger(provisioned_settings: Settings) -> None:
    import csv
    import io

    from framebus.client import FramebusClient
    from framebus.schemas.events import LedgerCharged, LedgerCredited, LedgerReleased, LedgerReserved

    env = _env_for(provisioned_settings)
    assert framebus("tenants", "create", "acme", env=env).returncode == 0
    with FramebusClient(settings=provisioned_settings, source="/tests") as client:
        entries = [LedgerCredited(tenant_id="acme", entry_id="credit-1", tokens=500),
                   LedgerReserved(tenant_id="acme", entry_id="reserve:acme/a", request_id="a", tokens=40),
                   LedgerReserved(tenant_id="acme", entry_id="reserve:acme/b", request_id="b", tokens=10),
                   LedgerReserved(tenant_id="acme", entry_id="reserve:acme/c", request_id="c", tokens=7),
                   LedgerCharged(tenant_id="acme", entry_id="charge:acme/a", request_id="a", tokens=40, tier="batch",
                                 model="wan-tiny", gpu_seconds=72, video_seconds=5, machine="rtx-pro-6000"),
                   LedgerReleased(tenant_id="acme", entry_id="release:acme/b", request_id="b", tokens=10,
                                  tier="batch", outcome="cancelled")]
        for entry in entries + entries[-1:]:  # the last one redelivered
            client.publish(entry, "framebus.ledger").get(10)
    balance = framebus("tenants", "balance", "acme", "--json", env=env)
    assert balance.returncode == 0, balance.stderr
    assert json.loads(balance.stdout) == {"tenant": "acme", "credited": 500.0, "credit_limit": 0.0,
                                               "reserved": 7.0, "charged": 40.0, "available": 453.0,
                                               "open_reservations": 1}
    usage = framebus("usage", "--tenant", "acme", "--group-by", "tier", "--format", "json", env=env)
    assert usage.returncode == 0, usage.stderr
    batch = json.loads(usage.stdout)["groups"]["batch"]
    assert (batch["completed"], batch["cancelled"], batch["tokens"], batch["revenue"]) == (1, 1, 40.0, "0.1000")
    cost = framebus("cost", "--format", "csv", env=env)
    rows = {row["tenant"]: row for row in csv.DictReader(io.StringIO(cost.stdout))}
    assert rows["acme"]["gpu_cost"] == "0.0500" and rows["acme"]["margin"] == "0.0500"  # 72 s at $2.50/h
    assert rows["total"]["completed"] == "1"
    table = framebus("usage", "--tenant", "acme", env=env)
    assert table.returncode == 0 and "usage of acme" in table.stdout and "total" in table.stdout
    bad = framebus("usage", "--from", "yesterday", env=env)
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


def test_webhook_secret_rotation_keeps_the_previous_secret_signing(provisioned_settings: Settings) -> None:
    import re

    from framebus.schemas.codec import decode_event
    from framebus.services.common.compacted import read_latest

    env = _env_for(provisioned_settings)
    assert framebus("tenants", "create", "acme", env=env).returncode == 0
    first = framebus("webhooks", "secret", "acme", env=env)
    second = framebus("webhooks", "secret", "acme", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    old, new = (re.search(r"whsec_\S+", done.stdout).group(0) for done in (first, second))
    record = read_latest(provisioned_settings.bootstrap_servers,
                         provisioned_settings.topic("framebus.webhooks.secrets"), "acme")
    assert decode_event(record.headers, record.value).event.secrets == (new, old)
    shown = framebus("tenants", "show", "acme", env=env)
    assert "whsec_" not in shown.stdout, "secrets are never echoed back"
    missing = framebus("webhooks", "secret", "nobody", env=env)
    assert missing.returncode == ExitCode.NOT_FOUND and "no tenant 'nobody'" in missing.stderr


def test_signing_key_rotation_keeps_the_previous_key_valid_and_shows_each_key_once(
        provisioned_settings: Settings) -> None:
    from framebus.schemas.codec import decode_event
    from framebus.services.common.compacted import read_latest
    from framebus.signing import key_bytes

    env = _env_for(provisioned_settings)
    assert framebus("tenants", "create", "acme", env=env).returncode == 0
    first, second = (json.loads(framebus("tenants", "signing-key", "acme", "--json", env=env).stdout) for _ in range(2))
    assert not first["previous_kept"] and second["previous_kept"]
    key_bytes(second["signing_key"])
    record = read_latest(provisioned_settings.bootstrap_servers, provisioned_settings.topic("framebus.signing.keys"),
                         "acme")
    assert decode_event(record.headers, record.value).event.keys == (second["signing_key"], first["signing_key"])
    dropped = json.loads(framebus("tenants", "signing-key", "acme", "--no-keep-previous", "--json", env=env).stdout)
    record = read_latest(provisioned_settings.bootstrap_servers, provisioned_settings.topic("framebus.signing.keys"),
                         "acme")
    assert decode_event(record.headers, record.value).event.keys == (dropped["signing_key"],)
    missing = framebus("tenants", "signing-key", "nobody", env=env)
    assert missing.returncode == ExitCode.NOT_FOUND and "no tenant 'nobody'" in missing.stderr
    made = framebus("acl", "service-key", "--json", env={})
    assert made.returncode == 0 and key_bytes(json.loads(made.stdout)["service_signing_key"])


def test_batch_submit_reports_bad_lines_and_list_status_cancel_follow(provisioned_settings: Settings,
                                                                        tmp_path: Path) -> None:
    import re

    env = _env_for(provisioned_settings, FRAMEBUS_TENANT="acme")
    assert framebus("tenants", "create", "acme", env=env).returncode == 0
    good = {"prompt": "a fox", "model": "wan-tiny", "width": 64, "height": 64, "num_frames": 5}
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([json.dumps({"custom_id": "a", **good}), json.dumps({"custom_id": "a", **good}),
                               json.dumps({"custom_id": "b", **good, "frames": 3})]) + "\n")
    strict = framebus("batch", "submit", str(path), "--strict", env=env)
    assert strict.returncode == 2 and "line 2:" in strict.stderr and "line 3:" in strict.stderr
    assert "nothing published" in strict.stderr
    done = framebus("batch", "submit", str(path), "--completion-window", "2h", env=env)
    assert done.returncode == 0, done.stderr
    assert "repeats line 1" in done.stderr and "unknown field frames" in done.stderr
    batch_id = re.search(r"batch (bat_\w+): 1 lines accepted, 2 rejected; published 1", done.stdout).group(1)
    listed = framebus("batch", "list", env=env)
    assert batch_id in listed.stdout and "running" in listed.stdout
    [status] = json_lines(framebus("batch", "status", batch_id, "--no-follow", "--json", env=env))
    assert (status["batch_id"], status["state"], status["accepted"], status["rejected"]) == (batch_id, "running", 1, 2)
    assert status["counts"]["queued"] == 1 and status["manifest_url"] is None
    assert framebus("batch", "status", "bat_nope", env=env).returncode == ExitCode.NOT_FOUND
    cancelled = framebus("batch", "cancel", batch_id, env=env)
    assert cancelled.returncode == 0 and "cancel sent for the 1 lines" in cancelled.stdout
    window = framebus("batch", "submit", str(path), "--completion-window", "soon", env=env)
    assert window.returncode == 2 and "not a duration" in window.stderr


def test_a_batch_file_over_the_size_cap_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"custom_id":"x","prompt":"p"}\n' * 200)
    done = framebus("batch", "submit", str(big), env={"FRAMEBUS_BATCH_MAX_BYTES": "1024",
                                                      "FRAMEBUS_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert done.returncode == 1 and "at most 1,024 bytes (FRAMEBUS_BATCH_MAX_BYTES): split it" in done.stderr


def test_webhooks_log_lists_every_attempt_of_a_request(provisioned_settings: Settings) -> None:
    from framebus.client import FramebusClient
    from framebus.schemas.webhooks import WebhookAttempted

    env = _env_for(provisioned_settings)
    with FramebusClient(settings=provisioned_settings, source="/framebus/notifier") as client:
        for attempt, outcome, status in ((1, "retry", 500), (2, "delivered", 204)):
            client.publish(WebhookAttempted(delivery_id="msg_abc", tenant_id="acme", request_id="r-9",
                                            url="https://hooks.example.com/x", attempt=attempt, status_code=status,
                                            outcome=outcome, duration_ms=12.5), "framebus.webhooks.attempts").get(10)
    done = framebus("webhooks", "log", "r-9", env=env)
    assert done.returncode == 0, done.stderr
    assert "retry" in done.stdout and "delivered" in done.stdout and "500" in done.stdout and "msg_abc" in done.stdout
    attempts = json_lines(framebus("webhooks", "log", "r-9", "--json", env=env))
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [(1, "retry", 500), (2, "delivered", 204)]
    assert "no webhook attempts for r-10" in framebus("webhooks", "log", "r-10", env=env).stdout


def test_up_refuses_more_copies_than_the_cluster_has_brokers_in_one_line(settings: Settings) -> None:
    done = framebus("up", env=_env_for(settings, FRAMEBUS_KAFKA_REPLICATION_FACTOR="3"))
    assert done.returncode == 1  # the cluster answers: a setting to fix, not an outage
    assert "topics need 3 copies but the cluster has 1 broker(s): set FRAMEBUS_KAFKA_REPLICATION_FACTOR to at most 1" \
        in done.stderr and "Traceback" not in done.stderr


def test_bad_arguments_are_usage_errors_before_anything_is_read() -> None:
    """Exit 2 at once, with no broker to reach (port 1 would only time out)."""
    env = {"FRAMEBUS_KAFKA_PORT": "1"}
    negative = framebus("tenants", "credit", "acme", "--", "-5", env=env, timeout=30)
    assert negative.returncode == 2 and "must be positive but is -5" in negative.stderr
    for command in (("tenants", "balance", "acme"), ("usage", "--tenant", "acme"), ("cost",)):
        done = framebus(*command, "--format", "xml", env=env, timeout=30)
        assert done.returncode == 2 and "must be one of table, json, csv but is 'xml'" in done.stderr, command
