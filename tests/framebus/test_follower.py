"""The status follower is the one thread every ``wait`` of a client hangs on: a failed read
(a broker away, a partition leader moving) must cost a retry, never the thread."""

from __future__ import annotations

import queue
import time

from kafka.errors import KafkaTimeoutError

from framebus import follower as follower_module
from framebus.follower import StatusFollower
from framebus.kafka import producer
from framebus.schemas.codec import encode_event
from framebus.schemas.events import RequestState, StatusChanged


class FlakyConsumer:
    """A real consumer whose first end-offset lookup times out and whose first position is
    unknown, as kafka-python answers while a partition's leader is away."""

    def __init__(self, real) -> None:
        self.real = real
        self.failures = {"end_offsets": 1, "position": 1}

    def end_offsets(self, partitions, timeout_ms=None):
        if self.failures["end_offsets"]:
            self.failures["end_offsets"] -= 1
            raise KafkaTimeoutError("Failed to get offsets by times in 10000 ms")
        return self.real.end_offsets(partitions, timeout_ms=timeout_ms)

    def position(self, partition, timeout_ms=None):
        if self.failures["position"]:
            self.failures["position"] -= 1
            return None
        return self.real.position(partition, timeout_ms=timeout_ms)

    def __getattr__(self, name):
        return getattr(self.real, name)


def publish(bootstrap: str, topic: str, state: RequestState) -> None:
    record = encode_event(StatusChanged(request_id="r1", tenant_id="acme", tier="standard", state=state),
                          source="/tests")
    sender = producer(bootstrap)
    sender.send(topic, key=record.key, value=record.value, headers=record.headers).get(timeout=10)
    sender.close()


def test_a_failed_read_costs_a_retry_and_waiters_still_hear_every_change(kafka_bootstrap, topic_factory,
                                                                          monkeypatch) -> None:
    status_topic, progress_topic = topic_factory("status", 3), topic_factory("progress", 3)
    made: list[FlakyConsumer] = []
    real_consumer = follower_module.kafka_adapter.consumer
    monkeypatch.setattr(follower_module.kafka_adapter, "consumer",
                        lambda *a, **kw: made.append(FlakyConsumer(real_consumer(*a, **kw))) or made[-1])
    publish(kafka_bootstrap, status_topic, RequestState.ACCEPTED)
    follower = StatusFollower(kafka_bootstrap, status_topic, progress_topic, "acme")
    try:
        heard: queue.Queue = queue.Queue()
        follower.listen("r1", heard.put, timeout_s=30)
        assert follower.status("r1", timeout_s=30).state is RequestState.ACCEPTED
        assert made[0].failures == {"end_offsets": 0, "position": 0}, "both faults were met, and survived"
        publish(kafka_bootstrap, status_topic, RequestState.COMPLETED)
        states = [heard.get(timeout=30).state for _ in range(2)]
        assert states == [RequestState.ACCEPTED, RequestState.COMPLETED]
        assert follower._thread.is_alive()
    finally:
        follower.close()


def test_statuses_past_retention_are_never_read(kafka_bootstrap, topic_factory) -> None:
    status_topic, progress_topic = topic_factory("status", 1), topic_factory("progress", 1)
    sender = producer(kafka_bootstrap)
    long_ago = int((time.time() - 40 * 86400) * 1000)
    for n in range(50):  # forty days old: a 30-day retention has them deleted, or about to be
        record = encode_event(StatusChanged(request_id=f"old-{n}", tenant_id="acme", tier="standard",
                                            state=RequestState.COMPLETED), source="/tests")
        sender.send(status_topic, key=record.key, value=record.value, headers=record.headers, timestamp_ms=long_ago)
    sender.flush(timeout=10)
    sender.close()
    publish(kafka_bootstrap, status_topic, RequestState.ACCEPTED)
    follower = StatusFollower(kafka_bootstrap, status_topic, progress_topic, "acme", since_s=30 * 86400)
    try:
        assert follower.status("r1", timeout_s=30).state is RequestState.ACCEPTED
        assert follower.status("old-7", timeout_s=30) is None
        assert follower.records_read == 1, "the window's one record, none of the fifty before it"
    finally:
        follower.close()
