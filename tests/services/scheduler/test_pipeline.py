"""The scheduler and null workers as real processes on the real broker and S3 server."""

from __future__ import annotations

import collections
import json
import time

from kafka import KafkaProducer

from framebus.schemas.codec import encode_event
from framebus.schemas.events import GenerationCompleted, GenerationRequest
from tests.services.scheduler.conftest import Pipeline
from tests.waiting import eventually

SMALL = {"model": "wan-tiny", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}


def request(n: int, **changes) -> dict:
    return {"request_id": f"req-{n}", "prompt": f"a red fox, take {n}", **SMALL, **changes}


def by_request(results) -> dict[str, list]:
    grouped = collections.defaultdict(list)
    for result in results:
        grouped[result.request_id].append(result)
    return grouped


def test_every_request_ends_completed_exactly_once_with_its_video_in_s3(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()
    pipeline.start_worker("w1", batch=4)
    tiers = ["interactive", "standard", "batch"]
    pipeline.client.submit_many([request(n, tier=tiers[n % 3]) for n in range(24)])
    results = pipeline.results(until=24)
    grouped = by_request(results)
    assert len(grouped) == 24 and all(len(r) == 1 for r in grouped.values()), pipeline.log("scheduler.log")
    assert all(isinstance(r[0], GenerationCompleted) for r in grouped.values())
    sample = grouped["req-0"][0]
    from framebus.services.common.storage import s3_client

    head = s3_client(pipeline.settings).head_object(Bucket=sample.output.bucket, Key=sample.output.key)
    assert head["ContentLength"] == sample.output.bytes
    assert sample.output.key == f"null-engine/{sample.output.sha256}.mp4"  # the test engine's shared clip
    status = pipeline.client.status("req-0")
    assert status.state.value == "completed" and status.output.url == sample.output.url


def test_poison_records_are_rejected_with_reasons_and_the_consumer_keeps_going(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()
    pipeline.start_worker("w1")
    topic = pipeline.settings.topic("framebus.requests.standard")
    good = GenerationRequest(tenant_id="acme", **request(1))
    record = encode_event(good, source="/tests")
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.bootstrap_servers)
    poison = [
        (record.headers, b"{not json"),  # bad JSON
        ([], json.dumps({**json.loads(record.value), "request_id": "no-headers"}).encode()),  # no ce_* headers
        (record.headers, json.dumps({**json.loads(record.value), "request_id": "bad-width", "width": 100}).encode()),
        (record.headers, json.dumps({**json.loads(record.value), "request_id": "v2", "schema_version": "2.0"}).encode()),
    ]
    for headers, value in poison:
        producer.send(topic, key=b"acme", value=value, headers=headers)
    stranger = encode_event(GenerationRequest(tenant_id="nobody", **request(2)), source="/tests")
    producer.send(topic, key=stranger.key, value=stranger.value, headers=stranger.headers)
    producer.send(topic, key=record.key, value=record.value, headers=record.headers)  # a good one after them
    producer.flush()
    rejected = pipeline.records("framebus.requests.rejected", until=5)
    reasons = {dict(r.headers)["framebus-dead-reason"].decode(): r for r in rejected}
    assert sorted(reasons) == ["invalid_json", "invalid_request", "missing_header", "unknown_tenant",
                               "unsupported_version"]
    assert b"width" in dict(reasons["invalid_request"].headers)["framebus-dead-detail"]
    assert reasons["invalid_json"].value == b"{not json"  # the record is kept as it came
    results = by_request(pipeline.results(until=5))
    assert results["req-1"][0].outcome == "completed"  # the scheduler kept going
    assert results["no-headers"][0].error.code.value == "missing_header"
    assert results["bad-width"][0].error.code.value == "invalid_request"
    assert results["v2"][0].error.code.value == "unsupported_version"
    assert results["req-2"][0].error.code.value == "unknown_tenant"


def test_a_resubmitted_request_runs_once(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()
    pipeline.start_worker("w1")
    pipeline.client.submit(request(7))
    pipeline.client.submit(request(7))
    pipeline.client.submit(request(8))
    assert len(pipeline.results(until=2, timeout_s=60)) >= 2
    time.sleep(2)  # room for a second run of req-7 to show up, if there were one
    results = by_request(pipeline.results(until=3, timeout_s=1))
    assert len(results["req-7"]) == 1 and len(results["req-8"]) == 1


def test_cancel_of_a_queued_request_and_refusals(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()  # no worker: requests stay queued
    pipeline.client.submit(request(1))
    assert eventually(lambda: (s := pipeline.client.status("req-1")) is not None and s.state.value == "queued")
    pipeline.client.cancel("req-1")
    from framebus.client import FramebusClient

    with FramebusClient(tenant_id="poor", settings=pipeline.settings) as poor:
        poor.submit(request(2, width=512, height=512))  # costs more than its 0.001 tokens
    results = by_request(pipeline.results(until=2, timeout_s=60))
    assert results["req-1"][0].outcome == "cancelled"
    assert results["req-2"][0].error.code.value == "insufficient_balance"


def test_a_wrong_key_and_a_reused_id_with_another_body_are_rejected_with_reasons(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()
    pipeline.start_worker("w1")
    topic = pipeline.settings.topic("framebus.requests.standard")
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.bootstrap_servers)
    forged = encode_event(GenerationRequest(tenant_id="acme", **request(30)), source="/tests")
    producer.send(topic, key=b"someone-else", value=forged.value, headers=forged.headers)  # key names another tenant
    unkeyed = encode_event(GenerationRequest(tenant_id="acme", **request(31)), source="/tests")
    producer.send(topic, key=None, value=unkeyed.value, headers=unkeyed.headers)
    producer.flush()
    pipeline.client.submit(request(32))
    assert eventually(lambda: (s := pipeline.client.status("req-32")) is not None and s.state.is_terminal, timeout_s=60)
    pipeline.client.submit(request(32, prompt="a different prompt under the same id"))
    rejected = pipeline.records("framebus.requests.rejected", until=3)
    by_id = {json.loads(r.value)["request_id"]: (dict(r.headers)["framebus-dead-reason"].decode(),
                                                 dict(r.headers)["framebus-dead-detail"].decode()) for r in rejected}
    assert sorted(by_id) == ["req-30", "req-31", "req-32"]  # partitions differ: no order across them
    assert by_id["req-30"][0] == "invalid_request" and "someone-else" in by_id["req-30"][1]
    assert "record key must be the tenant id 'acme'" in by_id["req-30"][1]
    assert by_id["req-31"][0] == "invalid_request" and "no key" in by_id["req-31"][1]
    assert by_id["req-32"][0] == "duplicate_request" and "already used with a different body" in by_id["req-32"][1]
    time.sleep(2)  # room for anything wrongly run or failed to show up
    results = by_request(pipeline.results(until=1, timeout_s=1))
    assert set(results) == {"req-32"} and results["req-32"][0].outcome == "completed", "the original is untouched"
    assert pipeline.client.status("req-32").state.value == "completed"
    assert pipeline.client.status("req-30") is None and pipeline.client.status("req-31") is None
