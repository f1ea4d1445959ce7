"""`up` / `down`: embedded starts and stops its own servers; external starts nothing."""

from __future__ import annotations

from pathlib import Path

import psutil
from kafka import KafkaAdminClient

from framebus.infra.process import free_port
from framebus.schemas.topics import CATALOGUE
from framebus.services.common import storage
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack


def test_external_servers_are_provisioned_and_nothing_is_started(server_settings: Settings, settings: Settings,
                                                                  tmp_path: Path) -> None:
    external = settings.model_copy(update={"state_dir": tmp_path / "state", "s3_bucket": settings.s3_bucket + "-up"})
    report = Stack(external).up()
    assert [s.state for s in report.services] == ["external", "external"]
    assert not (tmp_path / "state").exists()  # no pid files, no data: nothing ran here
    admin = KafkaAdminClient(bootstrap_servers=external.bootstrap_servers)
    try:
        topics = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([external.topic(s.name) for s in CATALOGUE])}
    finally:
        admin.close()
    assert topics == {external.topic(s.name): s.partitions for s in CATALOGUE}
    assert report.bucket_created
    again = Stack(external).up()
    assert not any(t.created for t in again.topics) and not again.bucket_created
    assert Stack(external).down() == []
    client = storage.s3_client(external)
    client.delete_bucket(Bucket=external.s3_bucket)


def test_embedded_up_starts_both_servers_and_down_stops_only_them(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=None, s3_endpoint=None, kafka_port=free_port(), kafka_controller_port=free_port(),
                        s3_port=free_port(), kafka_heap="256m", state_dir=tmp_path / "state")
    stack = Stack(settings)
    try:
        report = stack.up()
        assert [s.state for s in report.services] == ["started", "started"]
        assert len(report.topics) == len(CATALOGUE) and report.bucket_created
        pids = [server.running().pid for server in stack.local_servers()]
        assert all(psutil.pid_exists(pid) for pid in pids)
        assert [s.state for s in Stack(settings).up().services] == ["already running", "already running"]
        assert all(s.state.startswith("running") for s in stack.status())
    finally:
        stopped = Stack(settings).down(purge=True)
    assert stopped == ["S3 server (versitygw)", "Kafka broker"]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert not (tmp_path / "state" / "kafka").exists()
    assert [s.state for s in stack.status()] == ["stopped", "stopped"]
