"""What one results record makes metering write, without Kafka: entries, or a dead letter with its reason."""

from __future__ import annotations

from types import SimpleNamespace

from framebus.schemas.codec import encode_event
from framebus.services.common.settings import Settings
from framebus.services.metering.app import DEAD_RESULTS_TOPIC, MeteringService
from tests.services.metering.test_core import completed, request


def _record(value: bytes, headers) -> SimpleNamespace:
    return SimpleNamespace(topic="framebus.results", partition=2, offset=41, key=b"acme", value=value,
                           headers=tuple(headers))


def test_a_completed_result_writes_its_usage_and_its_charge() -> None:
    encoded = encode_event(completed(request(1)), source="/framebus/worker")
    out = MeteringService(Settings()).meter(_record(encoded.value, encoded.headers))
    assert [topic for topic, _ in out] == ["framebus.usage", "framebus.ledger"]


def test_a_result_metering_fails_on_is_dead_lettered_with_the_reason_and_metering_goes_on() -> None:
    service = MeteringService(Settings())

    def broken(result, source):
        raise ZeroDivisionError("a bug met by one result")

    service.core.result = broken
    encoded = encode_event(completed(request(2)), source="/framebus/worker")
    [(topic, dead)] = service.meter(_record(encoded.value, encoded.headers))
    headers = dict(dead.headers)
    assert topic == DEAD_RESULTS_TOPIC and dead.value == encoded.value
    assert headers["framebus-dead-reason"] == b"internal_error"
    assert b"ZeroDivisionError" in headers["framebus-dead-detail"]
    assert headers["framebus-dead-source"] == b"framebus.results/2/41"
    assert service.dead == 1
