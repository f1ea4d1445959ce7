"""Settings: embedded by default, external when the environment says so, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from framebus.services.common.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("FRAMEBUS_"):
            monkeypatch.delenv(name)


def test_no_configuration_means_embedded_kafka_and_s3_on_loopback() -> None:
    settings = Settings()
    assert settings.embedded_kafka and settings.embedded_s3
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.s3_endpoint_url == "http://127.0.0.1:7070"
    assert settings.cache_dir == Path.home() / ".cache" / "framebus"


def test_environment_points_framebus_at_existing_servers(monkeypatch) -> None:
    monkeypatch.setenv("FRAMEBUS_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("FRAMEBUS_S3_ENDPOINT", "https://us-east-1.linodeobjects.com")
    monkeypatch.setenv("FRAMEBUS_S3_SECRET_KEY", "s3cr3t")
    settings = Settings()
    assert not settings.embedded_kafka and not settings.embedded_s3
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.s3_endpoint_url == "https://us-east-1.linodeobjects.com"
    assert "s3cr3t" not in repr(settings)  # secrets never reach logs


def test_blank_variables_mean_unset(monkeypatch) -> None:
    monkeypatch.setenv("FRAMEBUS_KAFKA_BOOTSTRAP", "  ")
    assert Settings().embedded_kafka


def test_bad_values_are_rejected_naming_the_field(monkeypatch) -> None:
    monkeypatch.setenv("FRAMEBUS_KAFKA_PORT", "70000")
    with pytest.raises(ValidationError, match="kafka_port"):
        Settings()


def test_topic_prefix_applies_to_catalogue_names() -> None:
    assert Settings(topic_prefix="staging.").topic("framebus.jobs") == "staging.framebus.jobs"


def test_readme_documents_every_setting() -> None:
    from framebus.services.common.settings import render_markdown

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert render_markdown() in readme, "README settings table is stale: paste services.common.settings.render_markdown()"


def test_a_copy_with_another_broker_or_s3_endpoint_talks_to_that_one() -> None:
    """Derived addresses are not cached: a copy made after they were read once (as the tests' own
    broker fixture does) must not keep the first broker (it once created topics on the wrong one)."""
    first = Settings(kafka_bootstrap="127.0.0.1:1", s3_endpoint="http://127.0.0.1:2")
    assert (first.bootstrap_servers, first.s3_endpoint_url) == ("127.0.0.1:1", "http://127.0.0.1:2")
    moved = first.model_copy(update={"kafka_bootstrap": "127.0.0.1:3", "s3_endpoint": "http://127.0.0.1:4"})
    assert (moved.bootstrap_servers, moved.s3_endpoint_url) == ("127.0.0.1:3", "http://127.0.0.1:4")
