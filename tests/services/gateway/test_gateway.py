"""The HTTP gateway as a client sees it: a real uvicorn process on the real broker."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from framebus.schemas.codec import decode_event
from tests.framebus.test_client import end_offsets, raw_records
from tests.services.gateway.conftest import RunningGateway, start_gateway
from tests.waiting import eventually

FOX = {"prompt": "a red fox running through snow", "tier": "interactive", "num_frames": 17, "width": 256,
       "height": 256}


def post(gw: RunningGateway, tenant: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/generations", json=body, headers=gw.auth(tenant), timeout=30, **kwargs)


def unique(prefix: str = "http") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_submit_returns_201_and_the_record_is_on_kafka(gateway: RunningGateway) -> None:
    request_id = unique()
    response = post(gateway, "acme", {**FOX, "request_id": request_id})
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["request_id"] == request_id and receipt["tenant_id"] == "acme" and receipt["tokens"] == 0.288
    records = raw_records(gateway.settings.bootstrap_servers, receipt["topic"], expected=100, timeout_s=3)
    [record] = [r for r in records if r.offset == receipt["offset"] and r.partition == receipt["partition"]]
    headers = dict(record.headers)
    assert headers["ce_source"] == b"/framebus/gateway" and headers["ce_subject"] == b"acme"
    assert record.key == b"acme" and json.loads(record.value)["request_id"] == request_id
    assert decode_event(record.headers, record.value).event.num_frames == 17


def test_same_body_twice_returns_the_same_receipt_and_sends_once(gateway: RunningGateway) -> None:
    body = {**FOX, "request_id": unique()}
    first = post(gateway, "acme", body)
    topic = first.json()["topic"]
    before = end_offsets(gateway.settings.bootstrap_servers, topic)
    second = post(gateway, "acme", body)
    assert second.status_code == 201 and second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert end_offsets(gateway.settings.bootstrap_servers, topic) == before


def test_same_id_with_another_body_is_a_conflict(gateway: RunningGateway) -> None:
    request_id = unique()
    post(gateway, "acme", {**FOX, "request_id": request_id})
    response = post(gateway, "acme", {**FOX, "request_id": request_id, "num_frames": 21})
    assert response.status_code == 409 and response.json()["error"]["code"] == "duplicate_request"


def test_a_tenant_cannot_see_cancel_or_detect_another_tenants_request(gateway: RunningGateway) -> None:
    request_id = unique()
    post(gateway, "acme", {**FOX, "request_id": request_id})
    theirs = httpx.get(f"{gateway.url}/v1/generations/{request_id}", headers=gateway.auth("globex"))
    missing = httpx.get(f"{gateway.url}/v1/generations/{unique()}", headers=gateway.auth("globex"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    cancel = httpx.post(f"{gateway.url}/v1/generations/{request_id}/cancel", headers=gateway.auth("globex"))
    assert cancel.status_code == 404
    # The same id is free for globex: ids are per tenant.
    assert post(gateway, "globex", {**FOX, "request_id": request_id}).status_code == 201
    mine = httpx.get(f"{gateway.url}/v1/generations/{request_id}", headers=gateway.auth("acme")).json()
    assert mine["state"] == "accepted" and mine["terminal"] is False


def test_invalid_body_gets_422_naming_each_field_and_sends_nothing(gateway: RunningGateway) -> None:
    topic = gateway.settings.topic("framebus.requests.standard")
    before = end_offsets(gateway.settings.bootstrap_servers, topic)
    response = post(gateway, "acme", {"prompt": "x", "width": 100, "num_frames": 10, "widht": 3})
    assert response.status_code == 422
    fields = {p["field"]: p["message"] for p in response.json()["error"]["fields"]}
    assert fields["width"] == "`width` must be a multiple of 16 but is 100"
    assert "4k+1" in fields["num_frames"] and "widht" in fields
    webhook = post(gateway, "acme", {"prompt": "x", "webhook_url": "http://hooks.example.com/x"})
    assert webhook.status_code == 422 and webhook.json()["error"]["fields"][0]["field"] == "webhook_url"
    assert end_offsets(gateway.settings.bootstrap_servers, topic) == before


def test_http_webhook_allowed_for_allowlisted_host(gateway: RunningGateway) -> None:
    response = post(gateway, "acme", {**FOX, "request_id": unique(), "webhook_url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer fb_0000000000_xxxxxxxxxxxxxxxxxxxxxxxxxx", "Basic x"])
def test_requests_without_a_valid_key_get_401(gateway: RunningGateway, header) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{gateway.url}/v1/generations", json=FOX, headers=headers)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_key_stops_working(gateway: RunningGateway) -> None:
    issued = gateway.admin.issue_key("globex")
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    assert eventually(lambda: httpx.get(f"{gateway.url}/v1/generations/x", headers=headers).status_code == 404)
    gateway.admin.revoke_key("globex", issued.record.key_id)
    assert eventually(lambda: httpx.get(f"{gateway.url}/v1/generations/x", headers=headers).status_code == 401)


def test_oversized_body_gets_413(gateway: RunningGateway) -> None:
    response = post(gateway, "acme", {**FOX, "prompt": "x" * (70 * 1024)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_rate_limit_answers_429_with_retry_after(gateway: RunningGateway) -> None:
    codes = [post(gateway, "slowco", {**FOX, "request_id": unique()}) for _ in range(4)]
    assert [c.status_code for c in codes] == [201, 201, 201, 429]
    assert 1 <= int(codes[-1].headers["Retry-After"]) <= 20


def test_cancel_and_quote(gateway: RunningGateway) -> None:
    request_id = unique()
    post(gateway, "acme", {**FOX, "request_id": request_id})
    cancel = httpx.post(f"{gateway.url}/v1/generations/{request_id}/cancel", headers=gateway.auth("acme"))
    assert cancel.status_code == 202 and cancel.json() == {"request_id": request_id, "state": "accepted",
                                                           "cancel_requested": True}
    quote = httpx.get(f"{gateway.url}/v1/quote", params={"prompt": "x" * 100, "model": "wan2.1-t2v-1.3b",
                                                          "width": 1024, "height": 1024})
    assert quote.status_code == 200 and quote.json()["tokens"] == 100.0
    assert quote.json()["num_frames"] == 81, "what the request leaves out is its model's own"
    default = httpx.get(f"{gateway.url}/v1/quote", params={"prompt": "a red circle"}).json()
    assert (default["model"], default["width"], default["num_frames"]) == ("wan-shapes", 64, 17)
    assert httpx.get(f"{gateway.url}/v1/quote", params={"prompt": "x", "width": 100}).status_code == 422


def test_a_second_replica_answers_from_kafka(gateway: RunningGateway, tmp_path) -> None:
    request_id = unique()
    post(gateway, "acme", {**FOX, "request_id": request_id})
    process, url = start_gateway(gateway.settings, tmp_path / "replica.log")
    try:
        response = httpx.get(f"{url}/v1/generations/{request_id}", headers=gateway.auth("acme"))
        assert response.status_code == 200 and response.json()["state"] == "accepted"
        replay = httpx.post(f"{url}/v1/generations", json={**FOX, "request_id": request_id},
                            headers=gateway.auth("acme"))
        assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    finally:
        from framebus.infra.process import terminate

        terminate(process.pid, timeout_s=10)


def test_openapi_document_describes_every_route_and_is_the_committed_one(gateway: RunningGateway) -> None:
    from framebus.services.gateway.openapi import DOCUMENT

    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert set(spec["paths"]) == {"/v1/generations", "/v1/generations/{request_id}", "/v1/generations/{request_id}/video",
                                  "/v1/generations/{request_id}/events", "/v1/generations/{request_id}/cancel",
                                  "/v1/webhooks/secret", "/v1/quote", "/v1/usage", "/v1/batches",
                                  "/v1/batches/{batch_id}"}
    assert spec == json.loads(DOCUMENT.read_text()), "docs/openapi.json is stale: run `make readme`"
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "fb_<key id>_<secret>",
        "description": "The tenant's API key (`framebus tenants issue-key TENANT`)."}
    assert spec["paths"]["/v1/generations"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/v1/quote"]["get"]


def test_schemathesis_authenticates_from_the_committed_document_alone_and_finds_no_server_error(
        gateway: RunningGateway, tmp_path) -> None:
    """Credentials go in by the document's security scheme name, not as a hand-made header: what a
    generated client does. `ignored_auth` also checks each secured route refuses a request without them."""
    import subprocess
    import sys

    from framebus.services.gateway.openapi import DOCUMENT

    (tmp_path / "schemathesis.toml").write_text(f'[auth.openapi.HTTPBearer]\nbearer = "{gateway.keys["fuzzer"]}"\n')
    accepted_before = _submissions_accepted(gateway)
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", str(DOCUMENT), "--url", gateway.url, "--checks",
         "not_a_server_error,ignored_auth", "--max-examples", "40", "--seed", "1",
         # One worker: CPython 3.11's ast.parse is not thread-safe, and schemathesis parses in threads.
         "--workers", "1", "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
         # The event stream of a request lasts until the request ends: not one for a fuzzer.
         "--exclude-path-regex", "/events$"],
        capture_output=True, text=True, timeout=270, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _submissions_accepted(gateway) > accepted_before, "schemathesis never got past authentication"


def _submissions_accepted(gateway: RunningGateway) -> float:
    """201s the gateway answered to POST /v1/generations, from its own HTTP server metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway.url}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name.startswith("http_server_") and sample.name.endswith("_count")
               and {"201", "/v1/generations", "POST"} <= set(sample.labels.values()))


def test_usage_shows_only_the_callers_own_settled_requests(gateway: RunningGateway) -> None:
    from datetime import UTC, datetime

    from framebus.client import FramebusClient
    from framebus.schemas.events import LedgerCharged, LedgerReleased

    today = datetime.now(UTC)
    with FramebusClient(settings=gateway.settings, source="/framebus/metering") as client:
        for tenant, rid, tier, tokens in (("acme", "u-1", "interactive", 10.0), ("acme", "u-2", "batch", 4.0),
                                          ("globex", "u-3", "interactive", 99.0)):
            client.publish(LedgerCharged(tenant_id=tenant, entry_id=f"charge:{tenant}/{rid}", request_id=rid,
                                         tokens=tokens, tier=tier, model="wan-tiny", video_seconds=5.0,
                                         gpu_seconds=30.0, machine="rtx-pro-6000"), "framebus.ledger").get(10)
        client.publish(LedgerReleased(tenant_id="acme", entry_id="release:acme/u-4", request_id="u-4", tokens=3.0,
                                      tier="batch", outcome="failed"), "framebus.ledger").get(10)
    answer = httpx.get(f"{gateway.url}/v1/usage", params={"group_by": "tier"}, headers=gateway.auth("acme"),
                       timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tenant_id"] == "acme" and body["group_by"] == "tier"
    groups = {g["group"]: g for g in body["groups"]}
    assert groups["interactive"]["tokens"] == 10.0 and groups["interactive"]["amount"] == "0.0500"  # 10/1000 x $5.00
    assert groups["batch"]["tokens"] == 4.0 and groups["batch"]["failed"] == 1 and groups["batch"]["completed"] == 1
    assert groups["batch"]["amount"] == "0.0100"  # batch pays half
    assert body["total"]["tokens"] == 14.0 and body["total"]["requests"] == 3
    assert "gpu_cost" not in body["total"] and "margin" not in body["total"], "operator figures stay internal"
    by_day = httpx.get(f"{gateway.url}/v1/usage", headers=gateway.auth("acme"), timeout=30).json()
    assert [g["group"] for g in by_day["groups"]] == [f"{today:%Y-%m-%d}"]


def test_usage_with_an_empty_or_inverted_window_is_422(gateway: RunningGateway) -> None:
    answer = httpx.get(f"{gateway.url}/v1/usage", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
                       headers=gateway.auth("acme"), timeout=30)
    assert answer.status_code == 422 and "must be after" in answer.json()["error"]["message"]
    naive = httpx.get(f"{gateway.url}/v1/usage", params={"from": "2026-11-01T00:00:00"}, headers=gateway.auth("acme"),
                      timeout=30)
    assert naive.status_code == 422 and "time zone" in naive.json()["error"]["message"]


def test_a_batch_file_uploads_over_http_and_reports_its_bad_lines(gateway: RunningGateway) -> None:
    good = {"prompt": "a fox", "model": "wan-tiny", "width": 64, "height": 64, "num_frames": 5,
            "num_inference_steps": 2}
    body = "\n".join([json.dumps({"custom_id": "one", **good}), "{broken", json.dumps({"custom_id": "two", **good})])
    body += f"\n{json.dumps({'custom_id': unique('three'), **good})}\n"
    created = httpx.post(f"{gateway.url}/v1/batches", content=body.encode(), headers={
        **gateway.auth("acme"), "content-type": "application/jsonl"}, params={"completion_window_s": 3600}, timeout=60)
    assert created.status_code == 201, created.text
    report = created.json()
    assert report["accepted"] == 3 and report["published"] == 3 and [r["line"] for r in report["rejected"]] == [2]
    batch_id = report["batch_id"]
    again = httpx.post(f"{gateway.url}/v1/batches", content=body.encode(), headers={
        **gateway.auth("acme"), "content-type": "application/jsonl"}, timeout=60).json()
    assert (again["batch_id"], again["published"], again["already_in"]) == (batch_id, 0, 3), "resubmitting resumes"
    assert eventually(lambda: httpx.get(f"{gateway.url}/v1/batches/{batch_id}", headers=gateway.auth("acme"),
                                        timeout=30).status_code == 200, timeout_s=30)
    view = httpx.get(f"{gateway.url}/v1/batches/{batch_id}", headers=gateway.auth("acme"), timeout=30).json()
    assert view["state"] == "running" and sum(view["counts"].values()) == 3 and view["rejected"] == 1
    hidden = httpx.get(f"{gateway.url}/v1/batches/{batch_id}", headers=gateway.auth("globex"), timeout=30)
    assert hidden.status_code == 404
    empty = httpx.post(f"{gateway.url}/v1/batches", content=b"{broken\n", headers=gateway.auth("acme"), timeout=30)
    assert empty.status_code == 422 and "no valid line" in empty.json()["error"]["message"]
    bad_hook = httpx.post(f"{gateway.url}/v1/batches", content=body.encode(), headers=gateway.auth("acme"),
                          params={"webhook_url": "ftp://example.com/x"}, timeout=30)
    assert bad_hook.status_code == 422


def test_a_replay_gets_the_same_receipt_whatever_state_the_request_is_in(gateway: RunningGateway, tmp_path) -> None:
    from framebus.infra.process import terminate
    from framebus.services.common.children import launch

    scheduler = launch(gateway.settings, ["scheduler"], tmp_path / "scheduler.log")
    try:
        body = {**FOX, "request_id": unique()}
        first = post(gateway, "acme", body)
        assert first.status_code == 201, first.text
        status_url = f"{gateway.url}/v1/generations/{body['request_id']}"
        # acme has no credit: the scheduler refuses it, so the request moves on to `failed`.
        assert eventually(lambda: httpx.get(status_url, headers=gateway.auth("acme")).json()["state"] == "failed",
                          timeout_s=90), (tmp_path / "scheduler.log").read_text()[-3000:]
        again = post(gateway, "acme", body)
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert post(gateway, "acme", {**body, "num_frames": 21}).status_code == 409
        cancel = httpx.post(f"{status_url}/cancel", headers=gateway.auth("acme"))
        assert cancel.status_code == 409 and cancel.json()["error"]["code"] == "already_finished"
        # A replica started now knows only what Kafka has, and answers the same.
        process, url = start_gateway(gateway.settings, tmp_path / "replica.log")
        try:
            replayed = httpx.post(f"{url}/v1/generations", json=body, headers=gateway.auth("acme"), timeout=30)
            assert replayed.status_code == 201 and replayed.json() == first.json()
        finally:
            terminate(process.pid, timeout_s=10)
    finally:
        terminate(scheduler.pid, timeout_s=15)


def test_a_chunked_body_over_the_cap_gets_413_in_the_error_shape(gateway: RunningGateway) -> None:
    def chunks():
        yield b'{"prompt": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    response = httpx.post(f"{gateway.url}/v1/generations", content=chunks(), timeout=30,
                          headers={**gateway.auth("acme"), "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large" and response.json()["error"]["fields"] == []


def test_oversized_headers_get_431_in_the_error_shape(gateway: RunningGateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/generations", json={**FOX, "request_id": unique()}, timeout=30,
                          headers={**gateway.auth("acme"), "x-padding": "y" * 64 * 1024})
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"


def test_malformed_json_names_the_body_not_a_character_offset(gateway: RunningGateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/generations", content=b'{"prompt": "a fox", "width": ', timeout=30,
                          headers={**gateway.auth("acme"), "content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and [f["field"] for f in error["fields"]] == ["(body)"]
    assert "not valid JSON" in error["fields"][0]["message"]


def test_a_webhook_to_a_private_address_is_refused_at_submission(gateway: RunningGateway) -> None:
    for url in ("https://169.254.169.254/latest", "https://10.1.2.3/hook", "https://localhost/hook"):
        response = post(gateway, "acme", {**FOX, "request_id": unique(), "webhook_url": url})
        assert response.status_code == 422, url
        assert [f["field"] for f in response.json()["error"]["fields"]] == ["webhook_url"]


def test_metrics_parse_as_prometheus_and_count_the_requests_served(gateway: RunningGateway) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def served() -> float:
        text = httpx.get(f"{gateway.url}/metrics").text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name.startswith("http_server_") and sample.name.endswith("_count"))

    before = served()
    for _ in range(3):
        assert httpx.get(f"{gateway.url}/v1/quote", params={"prompt": "x"}).status_code == 200
    assert served() >= before + 3
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    assert httpx.get(f"{gateway.url}/healthz").json()["status"] == "alive"
