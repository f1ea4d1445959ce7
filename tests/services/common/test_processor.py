"""The processor runtime against the real broker: read -> handle -> send -> ack -> commit,
the error policy (dead letter, keep going), ordered output, and topics only from the catalogue."""

from __future__ import annotations

import asyncio

import pytest
from kafka.errors import CoordinatorNotAvailableError, NotCoordinatorError

from framebus.errors import ConfigurationError
from framebus.kafka import producer as sync_producer
from framebus.schemas.codec import KafkaRecord
from framebus.services.common.kafka import admin_client, group_consumer, stream_producer
from framebus.services.common.processor import ClientsWedged, Lane, Outputs, Processor, Tick
from framebus.services.common.settings import Settings
from framebus.services.common.watchdog import ClientHealth


def _publish(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = sync_producer(settings.bootstrap_servers)
    for value in values:
        producer.send(settings.topic(topic), key=b"acme", value=value)
    producer.flush()
    producer.close()


def _echo(record, now: float) -> Outputs:
    if record.value == b"poison":
        raise ValueError("a bug met by one record")
    return Outputs().add("framebus.usage", KafkaRecord(record.key, record.value.upper(), []))


def _processor(settings: Settings, lane: Lane, **kwargs) -> Processor:
    return Processor("echo", settings=settings, producer=stream_producer(settings.bootstrap_servers),
                     consumer_for=lambda topics: group_consumer(settings, *topics, group="framebus-metering"),
                     lanes=[lane], outputs=("framebus.usage",), **kwargs)


async def _committed(settings: Settings, topic: str) -> int:
    """How many records of ``topic`` the processors' group has committed, over all partitions."""
    def read() -> int:
        admin = admin_client(settings.bootstrap_servers)
        group = f"{settings.topic_prefix}framebus-metering"
        try:
            offsets = admin.list_group_offsets(group).get(group, {})
        except (CoordinatorNotAvailableError, NotCoordinatorError):  # a fresh broker still placing __consumer_offsets
            return 0
        finally:
            admin.close()
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic(topic) and meta.offset > 0)

    return await asyncio.to_thread(read)


async def _run_until(processor: Processor, done, timeout_s: float = 60.0) -> None:
    task = asyncio.create_task(processor.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not await done():
                if task.done():
                    task.result()
                await asyncio.sleep(0.2)
    finally:
        processor.stop()
        await task


def test_every_record_is_handled_once_outputs_land_before_the_commit_and_a_poison_record_is_dead_lettered(
        provisioned_settings: Settings) -> None:
    settings = provisioned_settings
    values = [f"r{n}".encode() for n in range(40)]
    values.insert(17, b"poison")
    _publish(settings, "framebus.results", values)
    lane = Lane("results", ("framebus.results",), _echo, max_records=7, dead_letter_topic="framebus.results.dead")

    async def scenario() -> None:
        processor = _processor(settings, lane)

        async def all_committed() -> bool:
            return await _committed(settings, "framebus.results") == len(values)

        await _run_until(processor, all_committed)
        assert processor.dead_lettered == 1

    asyncio.run(scenario())
    usage = [r.value for r in _all(settings, "framebus.usage")]
    assert sorted(usage) == sorted(v.upper() for v in values if v != b"poison")
    [dead] = _all(settings, "framebus.results.dead")
    headers = dict(dead.headers)
    assert dead.value == b"poison" and headers["framebus-dead-reason"] == b"internal_error"
    assert b"a bug met by one record" in headers["framebus-dead-detail"]
    assert headers["framebus-dead-source"].startswith(settings.topic("framebus.results").encode())

    # A second member of the group finds everything committed: nothing is handled twice.
    async def again() -> int:
        seen = []
        processor = _processor(settings, Lane("results", ("framebus.results",), lambda r, now: seen.append(r) or Outputs()))
        task = asyncio.create_task(processor.run(max_seconds=8))
        await task
        return len(seen)

    assert asyncio.run(again()) == 0


def _all(settings: Settings, topic: str, *, committed_only: bool = False) -> list:
    """Every record of ``topic`` (not only the latest per key); ``committed_only``: as read_committed readers see it."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000,
                             isolation_level="read_committed" if committed_only else "read_uncommitted")
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_lane_without_a_dead_letter_topic_stops_on_a_failure_without_committing(provisioned_settings: Settings) -> None:
    settings = provisioned_settings
    _publish(settings, "framebus.results", [b"a", b"poison", b"b"])

    async def scenario() -> None:
        processor = _processor(settings, Lane("results", ("framebus.results",), _echo))
        with pytest.raises(ValueError, match="a bug met by one record"):
            await asyncio.wait_for(processor.run(), timeout=60)

    asyncio.run(scenario())
    assert asyncio.run(_committed(settings, "framebus.results")) == 0, "a failed batch is read again, never skipped"


def test_ticks_send_in_the_order_they_decide(provisioned_settings: Settings) -> None:
    settings = provisioned_settings
    counter = iter(range(10_000))

    def tick(now: float) -> Outputs:
        n = next(counter)
        return Outputs().add("framebus.usage", KafkaRecord(b"k", str(n).encode(), []))

    async def scenario() -> None:
        processor = Processor("ticker", settings=settings,
                              producer=stream_producer(settings.bootstrap_servers), outputs=("framebus.usage",),
                              ticks=[Tick("count", 0.001, tick)])
        await processor.run(max_seconds=2)

    asyncio.run(scenario())
    sent = [int(r.value) for r in _all(settings, "framebus.usage")]
    assert len(sent) > 50 and sent == sorted(sent) and sent[0] == 0


def test_topics_outside_the_catalogue_fail_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="framebus.reslts"):
        Processor("typo", settings=Settings(), producer=None,
                  lanes=[Lane("results", ("framebus.reslts",), _echo)])
    with pytest.raises(ConfigurationError, match="framebus.usge"):
        Processor("typo", settings=Settings(), producer=None, outputs=("framebus.usge",))


def test_sending_to_a_topic_not_declared_as_an_output_is_refused() -> None:
    processor = Processor("p", settings=Settings(), producer=None, outputs=("framebus.usage",))
    with pytest.raises(ValueError, match="did not declare"):
        asyncio.run(processor.emit(Outputs().add("framebus.ledger", KafkaRecord(b"k", b"v", []))))


def test_a_transactional_processor_commits_outputs_and_offsets_together_and_a_newer_one_fences_it(
        provisioned_settings: Settings) -> None:
    from framebus.services.common.processor import ProcessorStopped

    settings = provisioned_settings
    _publish(settings, "framebus.results", [f"t{n}".encode() for n in range(30)])

    def transactional(lane: Lane) -> Processor:
        producer = stream_producer(settings.bootstrap_servers, transactional_id=f"{settings.topic_prefix}echo")
        return Processor("echo", settings=settings, producer=producer, lanes=[lane],
                         consumer_for=lambda topics: group_consumer(settings, *topics, group="framebus-metering"),
                         outputs=("framebus.usage",), transactional=True,
                         group_id=f"{settings.topic_prefix}framebus-metering")

    async def scenario() -> None:
        first = transactional(Lane("results", ("framebus.results",), _echo, max_records=7))

        async def all_committed() -> bool:
            return await _committed(settings, "framebus.results") == 30

        task = asyncio.create_task(first.run())
        async with asyncio.timeout(60):
            while not await all_committed():
                await asyncio.sleep(0.2)
        # A second producer with the same transactional id (the scheduler's standby taking over)
        # fences the first: its next transaction fails and it stops instead of writing on.
        second = stream_producer(settings.bootstrap_servers, transactional_id=f"{settings.topic_prefix}echo")
        await second.start()
        try:
            with pytest.raises(ProcessorStopped):
                await asyncio.wait_for(first.emit(Outputs().add("framebus.usage", KafkaRecord(b"k", b"zombie", []))), 30)
            with pytest.raises(ProcessorStopped):
                await asyncio.wait_for(task, 30)
        finally:
            await second.stop()

    asyncio.run(scenario())
    usage = [r.value for r in _all(settings, "framebus.usage", committed_only=True)]
    assert sorted(usage) == sorted(f"T{n}".encode() for n in range(30)), "each output once, none from the zombie"


def test_a_processor_whose_consumer_stops_hearing_the_broker_stops_as_wedged(provisioned_settings: Settings) -> None:
    """The wedge seen after broker restarts (a consumer that never fetched again while the broker
    answered) made here by pausing every partition: the runtime stops with ClientsWedged, for the
    host to exit non-zero and the supervisor to start a fresh service."""
    settings = provisioned_settings.model_copy(update={"client_stall_s": 2.0})

    async def scenario() -> float:
        processor = _processor(settings, Lane("results", ("framebus.results",), _echo))
        task = asyncio.create_task(processor.run())
        async with asyncio.timeout(60):
            while not processor.consumer.assignment() or processor.broker_heard_at() == 0:
                await asyncio.sleep(0.2)
        assert processor.watch.health is ClientHealth.LIVE
        processor.consumer.pause(*processor.consumer.assignment())
        paused_at = asyncio.get_running_loop().time()
        with pytest.raises(ClientsWedged, match="wedged"):
            await asyncio.wait_for(task, timeout=30)
        return asyncio.get_running_loop().time() - paused_at

    took = asyncio.run(scenario())
    assert took < 2.0 + 2.0 + 3.0, f"stopped {took:.1f}s after going silent (stall 2 s, probes every 0.67 s)"


def test_a_processor_without_lanes_that_has_nothing_to_send_is_idle_not_wedged(provisioned_settings: Settings) -> None:
    """The batch tracker has no lane: with no batch open it sends nothing. Its watchdog called that
    silence a wedge after the stall time, and the tracker exited mid-way through a 20,000-line job."""
    settings = provisioned_settings.model_copy(update={"client_stall_s": 1.0})

    async def scenario() -> None:
        processor = Processor("idle", settings=settings, producer=stream_producer(settings.bootstrap_servers),
                              ticks=[Tick("check", 0.2, lambda now: Outputs())], outputs=("framebus.usage",))
        await processor.run(max_seconds=5.0)  # five stall times of nothing to send
        assert processor.watch.health is ClientHealth.LIVE

    asyncio.run(scenario())
