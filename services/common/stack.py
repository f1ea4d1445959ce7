"""``framebus up`` / ``down``: start (or find) Kafka and S3, create the topics and the bucket.

Embedded by default: a local broker and S3 server on 127.0.0.1. A configured
``FRAMEBUS_KAFKA_BOOTSTRAP`` / ``FRAMEBUS_S3_ENDPOINT`` replaces the local one, and then
``up`` only provisions (topics, bucket) and ``down`` leaves it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from framebus.infra.errors import InfraError
from framebus.infra.kafka import KafkaBroker
from framebus.infra.s3 import S3Server
from framebus.infra.server import LocalServer
from framebus.services.common.kafka import TopicOutcome, admin_client, ensure_topics
from framebus.services.common.settings import LOCAL_HOST, Settings
from framebus.services.common.storage import ensure_bucket, s3_client

Step = Callable[[str], None]


@dataclass(frozen=True)
class ServiceReport:
    name: str
    endpoint: str
    state: str  # "started", "already running" or "external"
    seconds: float = 0.0  # time to become ready (fetch excluded)
    fetch_seconds: float = 0.0


@dataclass(frozen=True)
class StackReport:
    services: list[ServiceReport]
    topics: list[TopicOutcome] = field(default_factory=list)
    bucket: str = ""
    bucket_created: bool = False
    seconds: float = 0.0


def local_kafka(settings: Settings) -> KafkaBroker:
    return KafkaBroker(host=LOCAL_HOST, port=settings.kafka_port, controller_port=settings.kafka_controller_port,
                       heap=settings.kafka_heap, state_dir=settings.state_dir, cache_dir=settings.cache_dir,
                       startup_timeout_s=settings.startup_timeout_s)


def local_s3(settings: Settings) -> S3Server:
    return S3Server(host=LOCAL_HOST, port=settings.s3_port, access_key=settings.s3_access_key,
                    secret_key=settings.s3_secret_key.get_secret_value(), region=settings.s3_region,
                    state_dir=settings.state_dir, cache_dir=settings.cache_dir,
                    startup_timeout_s=settings.startup_timeout_s)


class Stack:
    """The servers framebus needs, local or external, as the settings say."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = local_kafka(settings) if settings.embedded_kafka else None
        self.s3 = local_s3(settings) if settings.embedded_s3 else None

    def local_servers(self) -> list[LocalServer]:
        return [server for server in (self.kafka, self.s3) if server is not None]

    def _parts(self) -> list[tuple[str, LocalServer | None, str | None]]:
        return [("Kafka", self.kafka, self.settings.kafka_bootstrap), ("S3", self.s3, self.settings.s3_endpoint)]

    def up(self, step: Step = lambda _: None) -> StackReport:
        """Start what is local, then create topics and the bucket. Idempotent.

        If anything fails, the servers this call started are stopped again, so a failed
        ``up`` leaves nothing behind; servers an earlier ``up`` started keep running.
        """
        started_at = time.monotonic()
        reports: list[ServiceReport] = []
        started_now: list[LocalServer] = []
        try:
            for label, server, external in self._parts():
                if server is None:
                    reports.append(ServiceReport(label, str(external), "external"))
                    continue
                step(f"{'fetching and ' if not server.is_fetched() else ''}starting the {server.title}")
                result = server.start()
                if not result.reused:
                    started_now.append(server)
                reports.append(ServiceReport(server.title, server.endpoint,
                                             "already running" if result.reused else "started",
                                             result.ready_s, result.fetch_s))
            step("creating topics")
            admin = admin_client(self.settings.bootstrap_servers)
            try:
                topics = ensure_topics(admin, self.settings.catalogue(), prefix=self.settings.topic_prefix,
                                       replication=self.settings.replication)
            finally:
                admin.close()
            step(f"creating bucket {self.settings.s3_bucket}")
            created = ensure_bucket(s3_client(self.settings), self.settings.s3_bucket)
        except BaseException:
            for server in reversed(started_now):
                server.stop()
            raise
        return StackReport(reports, topics, self.settings.s3_bucket, created, time.monotonic() - started_at)

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop the local servers ``up`` started (by pid file); with ``purge`` also delete their data."""
        stopped = []
        for server in reversed(self.local_servers()):
            if server.stop():
                stopped.append(server.title)
            if purge:
                server.purge()
        return stopped

    def status(self) -> list[ServiceReport]:
        reports = []
        for label, server, external in self._parts():
            if server is None:
                reports.append(ServiceReport(label, str(external), "external"))
            else:
                record = server.running()
                reports.append(ServiceReport(server.title, server.endpoint,
                                             f"running (pid {record.pid})" if record else "stopped"))
        return reports


__all__ = ["InfraError", "ServiceReport", "Stack", "StackReport"]
