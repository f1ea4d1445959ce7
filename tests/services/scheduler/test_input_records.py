"""What one input record makes the scheduler publish, without Kafka: the handlers return the
records, and the runtime's error policy turns a bug met by one request into a refusal."""

from __future__ import annotations

import json
from types import SimpleNamespace

from framebus.schemas.codec import encode_event
from framebus.schemas.events import LedgerCredited, TenantUpdated
from framebus.services.common.processor import Processor
from framebus.services.common.settings import Settings
from framebus.services.scheduler.app import OUTPUTS, lanes
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.handlers import SchedulerHandlers
from tests.services.scheduler.helpers import req


def _record(request, topic: str = "framebus.requests.standard") -> SimpleNamespace:
    encoded = encode_event(request, source="/sdk")
    return SimpleNamespace(topic=topic, partition=0, offset=3, key=encoded.key, value=encoded.value,
                           headers=tuple(encoded.headers))


def test_a_request_the_scheduler_fails_on_is_refused_with_the_reason_and_ends_failed() -> None:
    handlers = SchedulerHandlers(SchedulerConfig())

    def broken(request, now):
        raise ZeroDivisionError("a bug met by one request")

    handlers.core.submit = broken
    processor = Processor("scheduler", settings=Settings(), producer=None, lanes=lanes(handlers),
                          outputs=OUTPUTS)
    standard = next(lane for lane in processor.lanes if lane.name == "standard")
    out = processor.handle_record(standard, _record(req(request_id="r-bug")), 1000.0)

    assert [topic for topic, _ in out.records] == ["framebus.requests.rejected", "framebus.results", "framebus.status"]
    rejected_headers = dict(out.records[0][1].headers)
    assert rejected_headers["framebus-dead-reason"] == b"internal_error"
    assert b"ZeroDivisionError" in rejected_headers["framebus-dead-detail"]
    assert rejected_headers["framebus-dead-source"] == b"framebus.requests.standard/0/3"
    status = json.loads(out.records[2][1].value)
    assert status["state"] == "failed" and status["error"]["code"] == "internal_error"


def test_a_request_on_the_wrong_tier_topic_is_rejected_and_fails_with_the_reason() -> None:
    handlers = SchedulerHandlers(SchedulerConfig())
    out = handlers.on_input(_record(req(request_id="r-tier", tier="interactive")), 1000.0)
    assert [topic for topic, _ in out.records] == ["framebus.requests.rejected", "framebus.results", "framebus.status"]
    assert dict(out.records[0][1].headers)["framebus-dead-reason"] == b"invalid_request"
    assert handlers.rejected == 1


def test_a_result_ends_the_request_with_a_backlog_tombstone() -> None:
    handlers = SchedulerHandlers(SchedulerConfig())
    record = SimpleNamespace(topic="framebus.results", partition=0, offset=0, key=b"acme",
                             value=json.dumps({"tenant_id": "acme", "request_id": "r-1"}).encode(),
                             headers=(("ce_type", b"framebus.generation.completed"), ("ce_specversion", b"1.0"),
                                      ("ce_id", b"x"), ("ce_source", b"/framebus/worker"),
                                      ("content-type", b"application/json")))
    [(topic, tombstone)] = handlers.on_result(record, 1000.0).records
    assert topic == "framebus.scheduler.backlog" and tombstone.value is None and tombstone.key == b"acme/r-1"


def _structured(record: SimpleNamespace, **changes) -> SimpleNamespace:
    """``record`` as another client may send it: CloudEvents structured mode, the whole event in the value."""
    attributes = {name.removeprefix("ce_"): raw.decode() for name, raw in record.headers if name.startswith("ce_")}
    event = {**attributes, "datacontenttype": "application/json", "data": json.loads(record.value), **changes}
    return SimpleNamespace(**{**vars(record), "value": json.dumps(event).encode(),
                              "headers": (("content-type", b"application/cloudevents+json; charset=utf-8"),)})


def _handlers_with_a_funded_tenant() -> SchedulerHandlers:
    handlers = SchedulerHandlers(SchedulerConfig())
    handlers.tenants["acme"] = TenantUpdated(tenant_id="acme")
    handlers.core.ledger(LedgerCredited(tenant_id="acme", entry_id="credit-acme", tokens=1e9))
    return handlers


def test_a_structured_mode_request_is_admitted_like_a_binary_one() -> None:
    binary, structured = _record(req(request_id="r-bin")), _structured(_record(req(request_id="r-struct")))
    handlers = _handlers_with_a_funded_tenant()
    admitted = [handlers.on_input(record, 1000.0).records for record in (binary, structured)]
    assert [topic for topic, _ in admitted[1]] == [topic for topic, _ in admitted[0]]
    assert "framebus.requests.rejected" not in [topic for topic, _ in admitted[1]] and handlers.rejected == 0
    assert handlers.core.live_digest("acme", "r-struct") is not None


def test_a_structured_mode_request_with_a_bad_envelope_is_rejected_and_ends_failed() -> None:
    handlers = _handlers_with_a_funded_tenant()
    record = _structured(_record(req(request_id="r-noid")), id=None)  # its data still names the request
    out = handlers.on_input(record, 1000.0)
    assert [topic for topic, _ in out.records] == ["framebus.requests.rejected", "framebus.results", "framebus.status"]
    rejected = dict(out.records[0][1].headers)
    assert rejected["framebus-dead-reason"] == b"missing_header" and b"`id` attribute" in rejected[
        "framebus-dead-detail"]
    assert out.records[0][1].value == record.value  # kept as it came
    assert json.loads(out.records[1][1].value)["request_id"] == "r-noid"
