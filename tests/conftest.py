"""Shared fixtures: one real Kafka broker and one real S3 server per test session.

By default the session starts its own servers on free loopback ports with a throwaway
state dir, and stops them at the end. To reuse running servers instead (for example
after ``framebus up``), set FRAMEBUS_KAFKA_BOOTSTRAP and/or FRAMEBUS_S3_ENDPOINT (plus
credentials); nothing is started for what is set.

Every test gets isolated names from the factories: a topic prefix and a bucket of its
own, so tests never see each other's records or objects.

Tests that use a server fixture are marked ``integration``; the rest ``unit``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framebus.infra.kafka import KafkaBroker
from framebus.infra.process import free_port
from framebus.infra.s3 import S3Server
from framebus.infra.server import LocalServer
from framebus.schemas.topics import TopicSpec
from framebus.services.common import storage
from framebus.services.common.kafka import admin_client, ensure_topics
from framebus.services.common.settings import LOCAL_HOST, Settings

SERVER_FIXTURES = {"kafka_bootstrap", "s3_endpoint", "settings", "topic_factory", "bucket_factory",
                   "server_settings", "provisioned_settings"}
TEST_ACCESS_KEY = "framebus-test"
TEST_SECRET_KEY = "framebus-test-secret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_servers = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if uses_servers else pytest.mark.unit)


SERVICE_LOG_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that ran services shows the end of each service's log (in its tmp_path):
    on a CI machine those logs are gone once the run ends, and they say why a request stalled."""
    outcome = yield
    report = outcome.get_result()
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if not report.failed or not isinstance(tmp_path, Path):
        return
    for log_path in sorted(tmp_path.rglob("*.log"))[:12]:
        if log_path.stat().st_size == 0 or "cluster" in log_path.parts:
            continue
        lines = log_path.read_text(errors="replace").splitlines()[-SERVICE_LOG_LINES:]
        report.sections.append((f"log {log_path.relative_to(tmp_path)} (last {len(lines)} lines)", "\n".join(lines)))


@pytest.fixture(scope="session")
def infra_cache_dir() -> Path:
    """The shared download cache (jars, binaries): the same one `framebus up` uses."""
    return Settings().cache_dir


def _session_server(env_var: str, make: Callable[[], LocalServer]) -> Iterator[str]:
    """Yield the endpoint in ``env_var`` if set (reuse), else start a server for the session."""
    external = os.environ.get(env_var, "").strip()
    if external:
        yield external
        return
    server = make()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, infra_cache_dir: Path) -> Iterator[str]:
    yield from _session_server("FRAMEBUS_KAFKA_BOOTSTRAP", lambda: KafkaBroker(
        host=LOCAL_HOST, port=free_port(), controller_port=free_port(), heap="384m",
        state_dir=tmp_path_factory.mktemp("kafka-session"), cache_dir=infra_cache_dir))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory, infra_cache_dir: Path) -> Iterator[str]:
    yield from _session_server("FRAMEBUS_S3_ENDPOINT", lambda: S3Server(
        host=LOCAL_HOST, port=free_port(), access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY,
        state_dir=tmp_path_factory.mktemp("s3-session"), cache_dir=infra_cache_dir))


@pytest.fixture(scope="session")
def server_settings(kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's servers (as external ones: nothing more is started)."""
    credentials = {}
    if not os.environ.get("FRAMEBUS_S3_ENDPOINT", "").strip():
        credentials = {"s3_access_key": TEST_ACCESS_KEY, "s3_secret_key": TEST_SECRET_KEY}
    # One broker: one copy of each record (an existing cluster's default of 3 cannot be placed).
    return Settings(kafka_bootstrap=kafka_bootstrap, s3_endpoint=s3_endpoint, kafka_replication_factor=1,
                    state_dir=tmp_path_factory.mktemp("state"), **credentials)


def _slug(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24].strip("-")
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(server_settings: Settings, request: pytest.FixtureRequest, bucket_factory) -> Settings:
    """Per-test settings: a topic prefix and a bucket no other test uses."""
    slug = _slug(request)
    return server_settings.model_copy(update={"topic_prefix": f"t.{slug}.", "s3_bucket": bucket_factory()})


@pytest.fixture
def provisioned_settings(settings: Settings) -> Settings:
    """Per-test settings whose catalogue topics (under the test's prefix) and bucket exist."""
    from framebus.services.common.stack import Stack

    Stack(settings).up()
    return settings


@pytest.fixture
def topic_factory(server_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Create a topic with a name unique to this test; all are deleted afterwards."""
    admin = admin_client(server_settings.bootstrap_servers)
    prefix = f"t.{_slug(request)}."
    created: list[str] = []

    def make(name: str = "topic", partitions: int = 1, **spec) -> str:
        outcome = ensure_topics(admin, [TopicSpec(name, "test", partitions, "test topic", **spec)], prefix=prefix)[0]
        created.append(outcome.name)
        return outcome.name

    yield make
    if created:
        admin.delete_topics(created)
    admin.close()


@pytest.fixture
def bucket_factory(server_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Create a bucket unique to this test; emptied and deleted afterwards."""
    client = storage.s3_client(server_settings)
    made: list[str] = []

    def make() -> str:
        bucket = f"t-{_slug(request)}"[:63].rstrip("-")
        storage.ensure_bucket(client, bucket)
        made.append(bucket)
        return bucket

    yield make
    for bucket in made:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture
def own_broker(tmp_path: Path, infra_cache_dir: Path) -> Iterator[KafkaBroker]:
    """A broker of the test's own, for tests that stop and restart it (the session's stays up)."""
    broker = KafkaBroker(host=LOCAL_HOST, port=free_port(), controller_port=free_port(), heap="384m",
                         state_dir=tmp_path / "own-kafka", cache_dir=infra_cache_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
