"""The smoke check of `framebus demo` passes on real servers and fails clearly without them."""

from __future__ import annotations

import time

import pytest

from framebus.infra.process import free_port
from framebus.services.common.errors import KafkaAdapterError
from framebus.services.common.settings import Settings
from framebus.services.demo.smoke import check_kafka, run_smoke


def test_smoke_check_passes_on_real_kafka_and_s3(settings: Settings) -> None:
    results = run_smoke(settings)
    assert [r.name for r in results] == ["Kafka", "S3", "ffmpeg"]
    assert "round-tripped" in results[0].detail and "HTTP 200" in results[1].detail


def test_smoke_check_without_a_broker_fails_within_bounded_time() -> None:
    nowhere = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(KafkaAdapterError, match="cannot reach Kafka"):
        check_kafka(nowhere)
    assert time.monotonic() - started < 30
