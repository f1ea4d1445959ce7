"""The metering service on the real broker: exact settlement across a kill -9, dead letters, reports."""

from __future__ import annotations

import collections
import signal
import subprocess
import threading
import time
from decimal import Decimal

import pytest
from kafka import KafkaConsumer, TopicPartition

from framebus.infra.process import terminate
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.events import GenerationCompleted
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common.children import launch
from framebus.services.common.settings import Settings
from framebus.services.metering.queries import balances, usage_report
from framebus.services.scheduler.core import reservation
from tests.services.metering.test_core import cancelled, completed, failed, request
from tests.waiting import eventually

TENANTS = ("acme", "globex", "initech")


def read_all(settings: Settings, topic: str) -> list:
    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def ledger_records(settings: Settings) -> int:
    """How many records the ledger holds, from its end offsets (cheap enough to poll)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        topic = settings.topic("framebus.ledger")
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def settlements(settings: Settings) -> list:
    return [decode_event(r.headers, r.value).event for r in read_all(settings, "framebus.ledger")
            if r.headers and dict(r.headers).get("ce_type", b"").startswith((b"framebus.ledger.charged",
                                                                             b"framebus.ledger.released"))]


@pytest.fixture
def start_metering(provisioned_settings: Settings, tmp_path):
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = launch(provisioned_settings, ["metering"], tmp_path / f"metering-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        terminate(process.pid, timeout_s=10)


def test_kill_9_mid_run_settles_every_request_exactly_once(provisioned_settings: Settings, start_metering):
    settings = provisioned_settings
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=20)
    results, expected_tokens = [], collections.Counter()
    outcomes = (completed, completed, completed, failed, cancelled)
    for number in range(2000):
        req = request(number, tenant=TENANTS[number % 3], width=(64, 128)[number % 2])
        record = encode_event(reservation(req, req.quote()), source="/framebus/scheduler")
        producer.send(settings.topic("framebus.ledger"), key=record.key, value=record.value, headers=record.headers)
        result = outcomes[number % len(outcomes)](req)
        results.append(result)
        if isinstance(result, GenerationCompleted):
            expected_tokens[req.tenant_id] += Decimal(repr(req.quote()))
    producer.flush()

    def publish(chunk) -> None:
        for index, result in chunk:
            record = encode_event(result, source="/framebus/worker")
            producer.send(settings.topic("framebus.results"), key=record.key, value=record.value,
                          headers=record.headers)
            if index == 700:  # a poison record in the middle of the stream
                producer.send(settings.topic("framebus.results"), key=b"acme", value=b"{broken",
                              headers=[("ce_type", b"framebus.generation.completed")])
            if index % 3 == 0:  # redeliveries, as after a producer retry
                producer.send(settings.topic("framebus.results"), key=record.key, value=record.value,
                              headers=record.headers)
        producer.flush()

    numbered = list(enumerate(results))
    first = start_metering()
    publish(numbered[:1200])
    assert eventually(lambda: ledger_records(settings) - 2000 >= 300, timeout_s=120, interval_s=0.05), \
        "metering settled results before the kill"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = ledger_records(settings) - 2000
    publish(numbered[1200:])  # results keep coming while metering is down
    start_metering()
    assert eventually(lambda: len({(e.tenant_id, e.request_id) for e in settlements(settings)}) >= 2000,
                      timeout_s=180, interval_s=1.0)
    time.sleep(1.0)  # let any straggling duplicate land before we count
    assert at_kill < 2000, "the kill landed mid-run"

    entries = settlements(settings)
    by_request = collections.defaultdict(set)
    for entry in entries:
        by_request[(entry.tenant_id, entry.request_id)].add(entry.entry_id)
    assert len(by_request) == 2000
    both = [key for key, ids in by_request.items() if len(ids) != 1]
    assert both == [], "a request charged twice, or charged and released"
    for tenant in TENANTS:
        report = usage_report(settings, tenant_id=tenant)
        assert report.total().tokens == expected_tokens[tenant], "to the token"
        held = balances(settings, tenant).of(tenant)
        assert held.reserved == 0 and held.charged == expected_tokens[tenant]
    dead = read_all(settings, "framebus.results.dead")
    # A crash before the commit may dead-letter it twice: copies name the same source position.
    assert {r.value for r in dead} == {b"{broken"}
    assert len({dict(r.headers)["framebus-dead-source"] for r in dead}) == 1
    assert dict(dead[0].headers)["framebus-dead-reason"]


def test_two_instances_share_the_results_and_one_survives_the_others_kill(provisioned_settings: Settings,
                                                                          start_metering):
    """Metering scales out by consumer group: two instances split the partitions; when one is
    killed its partitions move to the other, which settles the rest, each request once."""
    settings = provisioned_settings
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=20)
    reqs = [request(number, tenant=TENANTS[number % 3]) for number in range(1500)]
    for req in reqs:
        record = encode_event(reservation(req, req.quote()), source="/framebus/scheduler")
        producer.send(settings.topic("framebus.ledger"), key=record.key, value=record.value, headers=record.headers)
    producer.flush()
    first, _second = start_metering(), start_metering()
    time.sleep(8.0)  # both have joined the group and split the partitions

    def publish() -> None:  # paced over about 3 s, so the kill lands mid-run
        for start in range(0, len(reqs), 50):
            for req in reqs[start:start + 50]:
                record = encode_event(completed(req), source="/framebus/worker")
                producer.send(settings.topic("framebus.results"), key=record.key, value=record.value,
                              headers=record.headers)
            producer.flush()
            time.sleep(0.1)

    publisher = threading.Thread(target=publish)
    publisher.start()
    assert eventually(lambda: ledger_records(settings) - 1500 >= 200, timeout_s=120, interval_s=0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = ledger_records(settings) - 1500
    publisher.join()
    assert at_kill < 1500, "the kill landed mid-run"
    assert eventually(lambda: len({(e.tenant_id, e.request_id) for e in settlements(settings)}) >= 1500,
                      timeout_s=120, interval_s=1.0)
    time.sleep(1.0)
    by_request = collections.defaultdict(set)
    for entry in settlements(settings):
        by_request[(entry.tenant_id, entry.request_id)].add(entry.entry_id)
    assert len(by_request) == 1500 and all(len(ids) == 1 for ids in by_request.values())
    writers = {dict(r.headers)["ce_source"] for r in read_all(settings, "framebus.ledger")
               if dict(r.headers)["ce_source"].startswith(b"/framebus/metering/")}
    assert len(writers) == 2, "both instances settled a share"
    for tenant in TENANTS:
        held = balances(settings, tenant).of(tenant)
        assert held.reserved == 0
        assert held.charged == sum(Decimal(repr(r.quote())) for r in reqs if r.tenant_id == tenant)
    # A usage record may repeat after the kill, always under the same CloudEvents id (consumers dedupe on it).
    usage_ids = {dict(r.headers)["ce_id"] for r in read_all(settings, "framebus.usage")}
    assert len(usage_ids) == 1500


class TransactionWatch:
    """Whether a transaction writing to a topic is open: some partition's end offset for a
    read_uncommitted reader (the high watermark) is past the last stable offset, where
    read_committed readers stop."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.stable = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, isolation_level="read_committed")
        self.latest = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        self.tps = [TopicPartition(topic, p) for p in self.stable.partitions_for_topic(topic)]

    def open(self) -> bool:
        stable = self.stable.end_offsets(self.tps)
        return any(end > stable[tp] for tp, end in self.latest.end_offsets(self.tps).items())

    def close(self) -> None:
        self.stable.close()
        self.latest.close()


def committed(settings: Settings, topic: str) -> list:
    """What a read_committed reader (every framebus reader) sees on ``topic``."""
    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_an_instance_paused_mid_transaction_is_fenced_by_the_one_that_takes_its_partitions(
        provisioned_settings: Settings, start_metering):
    """SIGSTOP an instance while its transaction is open; a second instance takes the partitions
    and settles the rest; on SIGCONT the first finds itself fenced and stops, and nothing it sends
    after the pause is seen by a read_committed reader: no usage record or settlement twice."""
    settings = provisioned_settings
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=20)
    reqs = [request(number, tenant=TENANTS[number % 3]) for number in range(12000)]
    for req in reqs:
        record = encode_event(reservation(req, req.quote()), source="/framebus/scheduler")
        producer.send(settings.topic("framebus.ledger"), key=record.key, value=record.value, headers=record.headers)
    producer.flush()

    def publish(chunk) -> None:
        for req in chunk:
            record = encode_event(completed(req), source="/framebus/worker")
            producer.send(settings.topic("framebus.results"), key=record.key, value=record.value,
                          headers=record.headers)
        producer.flush()

    first = start_metering()
    publish(reqs[:1])
    assert eventually(lambda: ledger_records(settings) > 12000, timeout_s=120, interval_s=0.2), "first is settling"
    # A steady stream (about 1,500 a second for 8 s): one small transaction after another.
    publisher = threading.Thread(target=lambda: [(publish(reqs[start:start + 150]), time.sleep(0.1))
                                                 for start in range(1, len(reqs), 150)])
    publisher.start()
    watch = TransactionWatch(settings, settings.topic("framebus.usage"))
    try:
        deadline = time.monotonic() + 60
        while True:  # pause it with a transaction open (still open a moment later: not about to commit)
            assert time.monotonic() < deadline, "never caught the first instance mid-transaction"
            if watch.open():
                first.send_signal(signal.SIGSTOP)
                time.sleep(1.0)
                if watch.open():
                    break
                first.send_signal(signal.SIGCONT)
    finally:
        watch.close()
    try:
        publisher.join()
        second = start_metering()
        assert eventually(lambda: len({(e.tenant_id, e.request_id) for e in settlements(settings)}) >= 12000,
                          timeout_s=180, interval_s=1.0), "the second instance settled the rest"
    finally:
        first.send_signal(signal.SIGCONT)
    try:
        first_exit = first.wait(60)
    except subprocess.TimeoutExpired:
        first_exit = None  # still running: it was not fenced
    time.sleep(2.0)  # whatever it sent after waking has landed

    usage = [dict(r.headers)["ce_id"] for r in committed(settings, "framebus.usage")]
    charges = [dict(r.headers)["ce_id"] for r in committed(settings, "framebus.ledger")
               if dict(r.headers)["ce_type"].startswith(b"framebus.ledger.charged")]
    assert (len(usage), len(charges)) == (12000, 12000), \
        f"each usage record and charge once, as a reader sees them: {len(usage) - len(set(usage))} usage " \
        f"and {len(charges) - len(set(charges))} charges twice"
    assert first_exit not in (None, 0), "the woken instance was fenced and stopped"
    assert second.poll() is None, "the instance that took over carries on"
    for tenant in TENANTS:
        held = balances(settings, tenant).of(tenant)
        assert held.reserved == 0
        assert held.charged == sum(Decimal(repr(r.quote())) for r in reqs if r.tenant_id == tenant)
