"""What one results record makes metering write, without Kafka: entries, or a dead letter with its reason."""

from __future__ import annotations

from types import SimpleNamespace

from framebus.schemas.codec import encode_event
from framebus.services.common.processor import Processor
from framebus.services.common.settings import Settings
from framebus.services.metering.app import DEAD_RESULTS_TOPIC, OUTPUTS, MeteringHandlers, lanes
from tests.services.metering.test_core import completed, request


def _record(value: bytes, headers) -> SimpleNamespace:
    return SimpleNamespace(topic="framebus.results", partition=2, offset=41, key=b"acme", value=value,
                           headers=tuple(headers))


def test_a_completed_result_writes_its_usage_and_its_charge() -> None:
    encoded = encode_event(completed(request(1)), source="/framebus/worker")
    out = MeteringHandlers(instance="i1").meter(_record(encoded.value, encoded.headers), 0.0)
    assert [topic for topic, _ in out.records] == ["framebus.usage", "framebus.ledger"]


def test_a_result_metering_fails_on_is_dead_lettered_with_the_reason_and_metering_goes_on() -> None:
    handlers = MeteringHandlers(instance="i1")

    def broken(result, source):
        raise ZeroDivisionError("a bug met by one result")

    handlers.core.result = broken
    processor = Processor("metering", settings=Settings(), producer=None, lanes=lanes(handlers),
                          outputs=OUTPUTS)
    encoded = encode_event(completed(request(2)), source="/framebus/worker")
    [(topic, dead)] = processor.handle_record(processor.lanes[0], _record(encoded.value, encoded.headers), 0.0).records
    headers = dict(dead.headers)
    assert topic == DEAD_RESULTS_TOPIC and dead.value == encoded.value
    assert headers["framebus-dead-reason"] == b"internal_error"
    assert b"ZeroDivisionError" in headers["framebus-dead-detail"]
    assert headers["framebus-dead-source"] == b"framebus.results/2/41"
    assert handlers.dead == 1
    # The next result is metered as usual.
    fine = encode_event(completed(request(3)), source="/framebus/worker")
    handlers.core.result = type(handlers.core).result.__get__(handlers.core)
    assert len(processor.handle_record(processor.lanes[0], _record(fine.value, fine.headers), 0.0)) == 2


def test_a_record_that_is_not_a_result_is_dead_lettered_with_the_reason() -> None:
    handlers = MeteringHandlers(instance="i1")
    [(topic, dead)] = handlers.meter(_record(b"{not json", [("ce_type", b"x")]), 0.0).records
    assert topic == DEAD_RESULTS_TOPIC and dead.value == b"{not json"
    assert dict(dead.headers)["framebus-dead-reason"]
