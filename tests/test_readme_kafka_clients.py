"""The README's kcat examples (CloudEvents binary and structured mode), run as written.

Each script is read from README.md itself (the ```bash block after its
``readme-example:kcat-*`` marker), so the test fails as soon as the README drifts from
what framebus accepts. It runs through ``bash`` with the real ``kcat`` against the
session's broker, and the request must end ``completed`` through the real scheduler and
a null worker (the whole worker protocol, without diffusion). The only changes made to
the script are in ``against_the_test_broker``: the local stack's broker address and the
topic prefix of this test's own topics. kcat missing fails the test: setup installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from framebus.schemas.codec import decode_event
from framebus.schemas.events import Event, GenerationCompleted
from framebus.services.common.settings import Settings
from tests.services.scheduler.conftest import Pipeline, running_pipeline

README = Path(__file__).parents[1] / "README.md"
README_BOOTSTRAP = "-b 127.0.0.1:9092"  # the local stack's broker, as the README's scripts name it
README_TOPIC = " -t framebus."  # catalogue topic names, without a prefix
KCAT_TIMEOUT_S = 30.0
COMPLETION_TIMEOUT_S = 30.0


def readme_script(text: str, example: str) -> str:
    """The ```bash block after the ``readme-example:<example>`` marker, as written."""
    start = text.find(f"<!-- readme-example:{example}")
    assert start >= 0, f"README.md has no <!-- readme-example:{example} ...--> marker"
    block = re.search(r"```bash\n(.*?)\n```", text[start:], flags=re.S)
    assert block, f"no ```bash block follows the {example} marker"
    return block.group(1)


def against_the_test_broker(script: str, settings: Settings) -> str:
    """THE ONLY CHANGES to the README's script: the session's broker for the local one, and this
    test's topic prefix on the topic (the two things a user's stack and a test's differ in)."""
    assert script.count(README_BOOTSTRAP) == 1, f"the script does not name the broker as `{README_BOOTSTRAP}`:\n{script}"
    assert script.count(README_TOPIC) == 1, f"the script does not name one topic as `{README_TOPIC}...`:\n{script}"
    return (script.replace(README_BOOTSTRAP, f"-b {settings.bootstrap_servers}")
            .replace(README_TOPIC, f" -t {settings.topic_prefix}framebus."))


def run_kcat(script: str, **env: str) -> None:
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed, and the README's examples use it: infra/setup.sh installs it "
                    "(Debian package `kcat`: apt-get install kcat)")
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                              timeout=KCAT_TIMEOUT_S, env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        pytest.fail(f"the kcat script did not end in {KCAT_TIMEOUT_S:g}s:\n{script}")
    assert done.returncode == 0, f"the kcat script exited {done.returncode}:\n{script}\n{done.stdout}{done.stderr}"


def result_of(settings: Settings, request_id: str, timeout_s: float) -> Event | None:
    """The request's terminal result on framebus.results, or None if none came within ``timeout_s``."""
    consumer = KafkaConsumer(settings.topic("framebus.results"), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    event = decode_event(record.headers, record.value).event
                    if event.request_id == request_id:
                        return event
    finally:
        consumer.close()
    return None


@pytest.fixture(scope="module")
def kcat_pipeline(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One running pipeline for both examples: topics under a fresh prefix, tenant acme in credit (as
    the README's terminal example leaves it), the scheduler and a null worker for the default model."""
    for made in running_pipeline(server_settings, tmp_path_factory.mktemp("kcat")):  # yields once, then cleans up
        made.start_scheduler()
        made.start(["worker", "--engine", "null", "--model", made.settings.default_model.value,
                    "--worker-id", f"kcat-{uuid.uuid4().hex[:6]}", "--heartbeat-s", "0.5"], "worker.log")
        yield made


@pytest.mark.parametrize(("example", "mode_header"), [
    pytest.param("kcat-binary", "ce_type=framebus.generation.requested", id="binary"),
    pytest.param("kcat-structured", "content-type=application/cloudevents+json", id="structured"),
])
def test_a_request_sent_with_the_readme_kcat_example_completes(kcat_pipeline: Pipeline, example: str,
                                                               mode_header: str) -> None:
    script = readme_script(README.read_text(), example)
    assert mode_header in script, f"the {example} example no longer sends `-H {mode_header}`:\n{script}"
    request_id = re.search(r'"request_id": "([^"]+)"', script).group(1)
    run_kcat(against_the_test_broker(script, kcat_pipeline.settings))
    result = result_of(kcat_pipeline.settings, request_id, COMPLETION_TIMEOUT_S)
    assert isinstance(result, GenerationCompleted), (
        f"{request_id} did not complete: {result!r}\n{kcat_pipeline.log('scheduler.log')}")


@pytest.fixture(scope="module")
def signed_pipeline(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A pipeline whose scheduler admits only signed requests; acme has a signing key."""
    for made in running_pipeline(server_settings, tmp_path_factory.mktemp("kcat-signed"),
                                 request_signatures="required"):
        made.signing_key = made.admin.rotate_signing_key("acme").keys[0]
        made.start_scheduler()
        made.start(["worker", "--engine", "null", "--model", made.settings.default_model.value,
                    "--worker-id", f"kcat-s-{uuid.uuid4().hex[:6]}", "--heartbeat-s", "0.5"], "worker.log")
        yield made


def test_a_request_signed_by_hand_with_the_readme_kcat_example_completes_where_signatures_are_required(
        signed_pipeline: Pipeline) -> None:
    script = readme_script(README.read_text(), "kcat-signed")
    assert "framebus-signature=v1," in script and "openssl dgst" in script
    run_kcat(against_the_test_broker(script, signed_pipeline.settings), FRAMEBUS_SIGNING_KEY=signed_pipeline.signing_key)
    result = result_of(signed_pipeline.settings, "kcat-3", COMPLETION_TIMEOUT_S)
    assert isinstance(result, GenerationCompleted), f"kcat-3 did not complete: {result!r}"


def test_the_unsigned_readme_example_is_refused_where_signatures_are_required(signed_pipeline: Pipeline) -> None:
    from framebus.kafka import read_since
    from framebus.services.common.deadletters import reason_of

    settings = signed_pipeline.settings
    run_kcat(against_the_test_broker(readme_script(README.read_text(), "kcat-binary"), settings))
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    refused = []
    while not refused and time.monotonic() < deadline:
        refused = [reason_of(r) for r in read_since(settings.bootstrap_servers, settings.topic("framebus.requests.rejected"),
                                                     600) if b'"kcat-1"' in r.value]
        time.sleep(0.3)
    assert refused and refused[0][0] == "unauthenticated" and "unsigned" in refused[0][1], refused
    assert result_of(settings, "kcat-1", 2) is None
