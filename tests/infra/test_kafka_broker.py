"""The real Kafka broker: records with headers round-trip through both Python clients,
and every way startup can go wrong ends in one clear line within a bounded time."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer

from framebus.infra.errors import FetchError, PortInUseError, StaleStateError, StartupError
from framebus.infra.kafka import KafkaBroker
from framebus.infra.kafka.broker import read_meta_properties
from framebus.infra.process import ProcessRecord, free_port

HEADERS = [("ce_id", b"evt-1"), ("ce_type", b"framebus.test"), ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]


def _broker(tmp_path: Path, cache_dir: Path, **overrides) -> KafkaBroker:
    options = {"host": "127.0.0.1", "port": free_port(), "controller_port": free_port(), "heap": "256m",
               "state_dir": tmp_path, "cache_dir": cache_dir, "startup_timeout_s": 90}
    return KafkaBroker(**{**options, **overrides})


def _java_processes_under(state_dir: Path) -> list[psutil.Process]:
    marker = f"-Dframebus.state.dir={state_dir}"
    return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def test_kafka_python_round_trips_a_record_with_headers(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("roundtrip", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = producer.send(topic, key=b"tenant-a", value=b'{"n": 1}', headers=HEADERS).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=20000)
    received = next(iter(consumer))
    consumer.close()
    assert (received.partition, received.offset) == (sent.partition, sent.offset)
    assert received.key == b"tenant-a" and received.value == b'{"n": 1}'
    assert list(received.headers) == HEADERS


def test_aiokafka_round_trips_a_record_with_headers(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("roundtrip-aio")

    async def round_trip():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=b"tenant-b", value=b"payload", headers=HEADERS)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                    group_id="aio-test")
        await consumer.start()
        try:
            return await asyncio.wait_for(consumer.getone(), timeout=20)
        finally:
            await consumer.stop()

    received = asyncio.run(round_trip())
    assert received.key == b"tenant-b" and received.value == b"payload"
    assert list(received.headers) == HEADERS


def test_a_record_written_by_one_client_is_read_by_the_other(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("cross")

    async def aio_read():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            return await asyncio.wait_for(consumer.getone(), timeout=20)
        finally:
            await consumer.stop()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, value=b"from kafka-python", headers=HEADERS).get(timeout=30)
    producer.close()
    received = asyncio.run(aio_read())
    assert received.value == b"from kafka-python" and list(received.headers) == HEADERS


def test_a_started_broker_is_the_real_kafka_process_and_stops_cleanly(tmp_path: Path, infra_cache_dir: Path) -> None:
    broker = _broker(tmp_path, infra_cache_dir)
    result = broker.start()
    try:
        process = psutil.Process(result.record.pid)
        assert "kafka.Kafka" in process.cmdline()
        assert broker.start().reused  # a second `up` finds it instead of starting another
        cluster_id = read_meta_properties(broker.data_dir)["cluster.id"]
    finally:
        assert broker.stop()
    assert not _java_processes_under(broker.state_dir)
    assert broker.running() is None and not broker.stop()
    # Data survives down/up: the same log dir comes back with the same cluster id.
    broker.start()
    try:
        assert read_meta_properties(broker.data_dir)["cluster.id"] == cluster_id
    finally:
        broker.stop()


def test_port_taken_by_another_process_fails_fast_with_the_fix(tmp_path: Path, infra_cache_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        broker = _broker(tmp_path, infra_cache_dir, port=holder.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(PortInUseError, match="FRAMEBUS_KAFKA_PORT"):
            broker.start()
    assert time.monotonic() - started < 5
    assert broker.pid_file.read() is None


def test_stale_data_dir_of_another_node_is_refused(tmp_path: Path, infra_cache_dir: Path) -> None:
    broker = _broker(tmp_path, infra_cache_dir)
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("version=1\nnode.id=7\ncluster.id=abc\n")
    with pytest.raises(StaleStateError, match="framebus down --purge"):
        broker.start()
    assert not _java_processes_under(broker.state_dir)


def test_non_kafka_files_in_the_data_dir_are_refused(tmp_path: Path, infra_cache_dir: Path) -> None:
    broker = _broker(tmp_path, infra_cache_dir)
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "notes.txt").write_text("not a log dir")
    with pytest.raises(StaleStateError, match="no meta.properties"):
        broker.start()


def test_failed_download_names_maven_and_the_fix(tmp_path: Path) -> None:
    # Offline with an empty local repository: Maven cannot resolve anything, and says so at once.
    broker = _broker(tmp_path / "state", tmp_path / "empty-cache",
                     maven_args=("-o", f"-Dmaven.repo.local={tmp_path / 'empty-m2'}"))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        broker.start()
    assert time.monotonic() - started < 120
    assert "could not fetch Apache Kafka" in str(caught.value) and "Maven Central" in str(caught.value)
    assert not broker.is_fetched()


def test_missing_maven_is_reported_with_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    broker = _broker(tmp_path / "state", tmp_path / "cache")
    with pytest.raises(FetchError, match="apt-get install maven"):
        broker.start()


def test_broker_that_never_becomes_ready_is_stopped_after_the_timeout(tmp_path: Path, infra_cache_dir: Path) -> None:
    broker = _broker(tmp_path, infra_cache_dir, startup_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(StartupError, match="did not answer within 0.3s"):
        broker.start()
    assert time.monotonic() - started < 60
    assert broker.pid_file.read() is None
    assert not _java_processes_under(broker.state_dir)


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path, infra_cache_dir: Path) -> None:
    bystander = psutil.Popen(["sleep", "30"])
    try:
        broker = _broker(tmp_path, infra_cache_dir)
        # A pid file naming someone else's process (pid reused after a crash, say).
        broker.pid_file.write(_foreign_record(bystander))
        assert not broker.stop()
        assert bystander.is_running()
        assert broker.pid_file.read() is None  # the stale file is cleaned up
    finally:
        bystander.kill()


def _foreign_record(process: psutil.Popen) -> ProcessRecord:
    return ProcessRecord("kafka", process.pid, process.create_time() - 1000, "127.0.0.1:1", ("java",))


def test_pom_fetches_the_kafka_version_the_broker_runs() -> None:
    import xml.etree.ElementTree as ET

    from framebus.infra.kafka.broker import KAFKA_VERSION, POM

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns).text == KAFKA_VERSION
