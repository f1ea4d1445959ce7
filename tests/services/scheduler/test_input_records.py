"""What one input record makes the scheduler publish when its decision code fails: the request
is refused with the reason and ends `failed`; the scheduler goes on. No Kafka: the producer
here only collects what would be sent."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from framebus.schemas.codec import encode_event
from framebus.services.common.settings import Settings
from framebus.services.scheduler.app import SchedulerService
from framebus.services.scheduler.config import SchedulerConfig
from tests.services.scheduler.helpers import req


class CollectingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, list]] = []

    async def send(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, value, headers))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_a_request_the_scheduler_fails_on_is_refused_with_the_reason_and_ends_failed() -> None:
    service = SchedulerService(Settings(), SchedulerConfig())
    service._producer = producer = CollectingProducer()

    def broken(request, now):
        raise ZeroDivisionError("a bug met by one request")

    service.core.submit = broken
    request = req(request_id="r-bug")
    encoded = encode_event(request, source="/sdk")
    record = SimpleNamespace(topic="framebus.requests.standard", partition=0, offset=3, key=encoded.key,
                             value=encoded.value, headers=tuple(encoded.headers))
    sent: list = []
    asyncio.run(service.on_request(record, sent))

    topics = [topic for topic, _, _ in producer.sent]
    assert topics == ["framebus.requests.rejected", "framebus.results", "framebus.status"]
    rejected_headers = dict(producer.sent[0][2])
    assert rejected_headers["framebus-reject-reason"] == b"internal_error"
    assert b"ZeroDivisionError" in rejected_headers["framebus-reject-detail"]
    status = json.loads(producer.sent[2][1])
    assert status["state"] == "failed" and status["error"]["code"] == "internal_error"
    assert len(sent) == 3, "the lane waits for all three before committing the input"
