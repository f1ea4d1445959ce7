"""infra/k8s cannot be applied here (no cluster), so each overlay is rendered with the real
kustomize and checked statically: every object against the Kubernetes API schema (strict: no
unknown field), the KEDA ScaledObjects against KEDA's own CRD schema, and every value that
would only fail once running against the code it configures: settings, CLI commands, probe
paths and ports, the scaling arithmetic, the access plan's principals, where secrets go."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.main import get_command

from framebus.services.cli.main import app
from framebus.services.common.access import BY_ROLE
from framebus.services.common.probes import answer
from framebus.services.common.scaling import TIERS, keda_triggers
from framebus.services.common.settings import Settings
from framebus.services.common.watchdog import ClientHealth
from framebus.signing import new_key

ROOT = Path(__file__).parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.33"  # infra/linode's default k8s_version: tests/infra/test_linode.py holds them equal

# Who may hold what (README, Security: "What an operator keeps private").
SIGNING_KEY_HOLDERS = {"gateway", "tracker", "worker", "scheduler"}
S3_HOLDERS = {"gateway", "tracker", "worker", "operator"}  # videos, manifests, `framebus up`'s bucket check
SECRET_SETTINGS = {f"FRAMEBUS_{name.upper()}" for name, field in Settings.model_fields.items()
                   if "SecretStr" in str(field.annotation)} | {"FRAMEBUS_S3_ACCESS_KEY"}


# --- rendering --------------------------------------------------------------------------------
def kustomize() -> list[str]:
    """infra/setup.sh's kustomize (in the framebus cache), else one on PATH, else kubectl's own."""
    cached = Settings().cache_dir / "bin" / "kustomize"
    if cached.is_file():
        return [str(cached), "build"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    pytest.fail("kustomize renders infra/k8s: infra/setup.sh installs it (go install sigs.k8s.io/kustomize/kustomize/v5)")


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    done = subprocess.run([*kustomize(), str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(item for item in yaml.safe_load_all(done.stdout) if item)


def of_kind(overlay: str, kind: str) -> list[dict]:
    return [item for item in render(overlay) if item["kind"] == kind]


def workloads(overlay: str) -> list[dict]:
    """Deployments and Jobs: everything that runs a pod."""
    return [item for item in render(overlay) if item["kind"] in ("Deployment", "Job")]


def component(workload: dict) -> str:
    """The role a workload runs as (app.kubernetes.io/component is the access plan's role name)."""
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def containers(workload: dict, *, init: bool = True) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def settings_map(overlay: str) -> dict[str, str]:
    (generated,) = [item for item in of_kind(overlay, "ConfigMap") if item["metadata"]["name"].startswith("framebus-settings-")]
    return generated["data"]


def env_value(item: dict) -> str:
    """An env entry's value as the pod would see it, secrets and cloud values by stand-ins."""
    if "value" in item:
        return item["value"]
    source = item["valueFrom"]
    if "secretKeyRef" in source:
        return new_key() if "signing-key" in source["secretKeyRef"]["name"] else "stand-in-secret"
    ref = source["configMapKeyRef"]
    assert ref["name"] == "framebus-cloud", f"{item['name']} reads ConfigMap {ref['name']}"
    return {"s3_endpoint": "https://us-ord-1.linodeobjects.com"}.get(ref["key"], "framebus-stand-in")


def environment(overlay: str, container: dict) -> dict[str, str]:
    """A container's whole environment: its ConfigMaps (envFrom) first, then its own env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"].startswith("framebus-settings-")
        env.update(settings_map(overlay))
    env.update({item["name"]: env_value(item) for item in container.get("env", [])})
    return env


def env_entry(container: dict, name: str) -> dict | None:
    return next((item for item in container.get("env", []) if item["name"] == name), None)


def is_worker(workload: dict) -> bool:
    return component(workload) == "worker"


# --- the objects are valid Kubernetes and valid KEDA ---------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_the_kubernetes_version(overlay: str) -> None:
    kinds = sorted(item["kind"] for item in render(overlay))
    assert kinds.count("Deployment") == 8  # gateway, scheduler, metering, notifier, tracker, three worker pools
    assert kinds.count("ScaledObject") == 3 and kinds.count("PodDisruptionBudget") == 2 and "Job" in kinds
    assert "Secret" not in kinds  # secrets are made outside the tree and only referenced
    for item in render(overlay):
        if item["kind"] != "ScaledObject":
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        assert item["metadata"].get("namespace") == "framebus"


def test_the_kubernetes_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(of_kind("cpu", "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@functools.cache
def scaledobject_schema() -> dict:
    """KEDA's CRD schema (infra/k8s/crds: a copy of KEDA's own file), for validating offline."""
    crd = yaml.safe_load((K8S / "crds" / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(value: object, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not know: the API server drops them silently (a CRD's schema
    allows any by JSON Schema rules), so a misspelt setting would simply not apply."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        known, extra = schema.get("properties"), schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            if known is not None and key in known:
                found += unknown_fields(item, known[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, f"{path}.{key}")
            elif known is not None:
                found.append(f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [found for i, item in enumerate(value) for found in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def scaledobject_errors(item: dict) -> list[str]:
    schema = scaledobject_schema()
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(item)]
    errors += [f"{path}: unknown field" for path in unknown_fields(item, schema)]
    spec = item["spec"]  # the CRD's CEL rule, which jsonschema cannot run
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        errors.append("minReplicaCount must be less than or equal to maxReplicaCount")
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaledobjects_follow_kedas_crd(overlay: str) -> None:
    for item in of_kind(overlay, "ScaledObject"):
        assert item["apiVersion"] == "keda.sh/v1alpha1"
        assert scaledobject_errors(item) == [], item["metadata"]["name"]


def test_the_crd_check_catches_mistakes() -> None:
    good = of_kind("cpu", "ScaledObject")[0]
    numeric = copy.deepcopy(good)
    numeric["spec"]["triggers"][0]["metadata"]["threshold"] = 0.02  # KEDA's metadata is strings only
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["cooldownPeriods"] = 60
    inverted = copy.deepcopy(good)
    inverted["spec"]["minReplicaCount"] = inverted["spec"]["maxReplicaCount"] + 1
    for broken in (numeric, misspelt, inverted):
        assert scaledobject_errors(broken)


# --- autoscaling is services/common/scaling.py ------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_pool_scales_on_exactly_keda_triggers_of_its_tier(overlay: str) -> None:
    prometheus = yaml.safe_load((K8S / "base" / "scaling-values.yaml").read_text())["data"]["prometheusServer"]
    assert prometheus.startswith("http")
    scaled = {item["spec"]["scaleTargetRef"]["name"]: item for item in of_kind(overlay, "ScaledObject")}
    pools = [item for item in of_kind(overlay, "Deployment") if is_worker(item)]
    assert sorted(scaled) == sorted(item["metadata"]["name"] for item in pools)  # one ScaledObject per pool
    tiers = set()
    for pool in pools:
        tier = pool["spec"]["template"]["metadata"]["labels"]["framebus.dev/tier"]
        tiers.add(tier)
        spec = scaled[pool["metadata"]["name"]]["spec"]
        assert "replicas" not in pool["spec"], "KEDA owns the count: an apply must not reset it"
        triggers = {trigger["name"]: trigger for trigger in spec["triggers"]}
        assert {name: {key: trigger["metadata"][key] for key in ("query", "threshold")}
                for name, trigger in triggers.items()} == keda_triggers(TIERS[tier])
        for trigger in triggers.values():
            assert trigger["type"] == "prometheus"
            assert trigger["metadata"]["serverAddress"] == prometheus
    assert tiers == set(TIERS)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_each_pool_keeps_its_tiers_bounds_and_pace(tier: str) -> None:
    scaling = TIERS[tier]
    (item,) = [so for so in of_kind("gpu", "ScaledObject") if so["spec"]["scaleTargetRef"]["name"] == f"framebus-worker-{tier}"]
    spec = item["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (scaling.min_workers, scaling.max_workers)
    assert (spec["cooldownPeriod"], spec["pollingInterval"]) == (scaling.cooldown_s, scaling.polling_s)
    # KEDA's cooldown only times the step to zero; the HPA's window times every other step down.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == scaling.cooldown_s
    if tier == "interactive":  # scales up at once, and may at least double each polling interval
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert any(policy["type"] == "Percent" and policy["value"] >= 100 and policy["periodSeconds"] <= scaling.polling_s
                   for policy in behavior["scaleUp"]["policies"])
    if tier == "batch":
        assert spec["minReplicaCount"] == 0  # scale to zero


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_pools_differ_only_in_their_tier(overlay: str) -> None:
    def without_tier(pool: dict) -> dict:
        template = copy.deepcopy(pool["spec"]["template"])
        del template["metadata"]["labels"]["framebus.dev/tier"]
        return template

    templates = [without_tier(pool) for pool in of_kind(overlay, "Deployment") if is_worker(pool)]
    assert len(templates) == 3 and all(template == templates[0] for template in templates)


# --- GPU and CPU placement --------------------------------------------------------------------
def test_gpu_workers_get_a_gpu_node_and_only_workers_do() -> None:
    for workload in workloads("gpu"):
        spec = workload["spec"]["template"]["spec"]
        main = spec["containers"][0]
        tolerations = spec.get("tolerations", [])
        if is_worker(workload):
            assert main["image"] == "framebus:cuda"
            assert int(main["resources"]["limits"]["nvidia.com/gpu"]) == 1
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
            assert spec["nodeSelector"] == {"framebus.dev/pool": "gpu"}
            assert environment("gpu", main)["FRAMEBUS_ENGINE_DEVICE"] == "cuda"
        else:
            assert main["image"] == "framebus:cpu"
            assert not tolerations and "nodeSelector" not in spec
            assert "nvidia.com/gpu" not in main["resources"]["limits"]


def test_the_cpu_overlay_asks_for_no_gpu() -> None:
    for workload in workloads("cpu"):
        spec = workload["spec"]["template"]["spec"]
        main = spec["containers"][0]
        assert main["image"] == "framebus:cpu"
        assert "nvidia.com/gpu" not in main["resources"]["limits"] and "tolerations" not in spec
        if is_worker(workload):
            assert environment("cpu", main)["FRAMEBUS_ENGINE_DEVICE"] == "cpu"


# --- settings, commands, probes ---------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_framebus_variable_is_a_setting_and_each_services_environment_is_valid(
        overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"FRAMEBUS_{name.upper()}" for name in Settings.model_fields}
    assert set(settings_map(overlay)) <= fields
    for workload in workloads(overlay):
        for container in containers(workload):
            env = environment(overlay, container)
            assert {name for name in env if name.startswith("FRAMEBUS_")} <= fields, container["name"]
            if container["image"].startswith("framebus:"):
                with monkeypatch.context() as patch:  # exactly this environment, as the pod has it
                    for name in [name for name in os.environ if name.startswith("FRAMEBUS_")]:
                        patch.delenv(name)
                    for name, value in env.items():
                        patch.setenv(name, value)
                    settings = Settings()  # refuses what the service would refuse at start
                assert not settings.embedded_kafka, "a pod must never start a local broker"
                assert settings.signatures_required


def test_every_command_is_a_framebus_command_with_valid_options() -> None:
    cli = get_command(app)
    for overlay in OVERLAYS:
        for workload in workloads(overlay):
            command = containers(workload, init=False)[0]["command"]
            assert command[0] == "framebus"
            name, *options = command[1:]
            subcommand = cli.get_command(click.Context(cli), name)
            assert subcommand is not None, f"`framebus {name}` does not exist"
            subcommand.make_context(name, list(options))  # raises on an unknown or invalid option


def probe_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [item["containerPort"] for item in container["ports"] if item["name"] == port]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_paths_and_port_each_service_serves(overlay: str) -> None:
    from framebus.services.gateway.routes import router

    gateway_paths = {route.path for route in router.routes}
    for workload in of_kind(overlay, "Deployment"):
        container = containers(workload, init=False)[0]
        env = environment(overlay, container)
        if component(workload) == "gateway":  # its own HTTP server, on the port its command names
            port = int(container["command"][container["command"].index("--port") + 1])
            serves = gateway_paths.__contains__
        else:  # the probe server of processors and workers, on FRAMEBUS_HEALTH_PORT
            port = int(env["FRAMEBUS_HEALTH_PORT"])
            serves = (lambda path: answer(path, "x", ready=True, kafka=ClientHealth.LIVE) is not None)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # alive, even a standby
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind in container:
                probe = container[kind]["httpGet"]
                assert serves(probe["path"]) and probe_port(container, probe["port"]) == port, (workload["metadata"]["name"], kind)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == port


def test_the_standby_scheduler_stays_up_and_the_rollout_ends() -> None:
    (scheduler,) = [item for item in of_kind("gpu", "Deployment") if component(item) == "scheduler"]
    assert scheduler["spec"]["replicas"] == 2
    # Only the active scheduler is ever ready: a rollout that waited for two ready pods would hang.
    strategy = scheduler["spec"]["strategy"]
    assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxUnavailable"] == "100%"


@pytest.mark.parametrize("name", ["framebus-gateway", "framebus-scheduler"])
def test_gateway_and_scheduler_have_a_disruption_budget(name: str) -> None:
    (budget,) = [item for item in of_kind("gpu", "PodDisruptionBudget") if item["metadata"]["name"] == name]
    (deployment,) = [item for item in of_kind("gpu", "Deployment") if item["metadata"]["name"] == name]
    assert budget["spec"]["minAvailable"] == 1 and deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- hardening --------------------------------------------------------------------------------
def mounted(container: dict, path: str, *, writable: bool) -> bool:
    return any(Path(path).is_relative_to(mount["mountPath"]) and not (writable and mount.get("readOnly"))
               for mount in container.get("volumeMounts", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_bounded_non_root_and_can_write_where_it_must(overlay: str) -> None:
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False, where
            assert isinstance(pod["securityContext"]["runAsUser"], int)  # a named USER cannot be checked as non-root
            assert ":" in container["image"] and not container["image"].endswith(":latest"), where
            if context.get("readOnlyRootFilesystem"):  # what the process writes must be a volume
                env = environment(overlay, container)
                for path in ["/tmp", env.get("HOME", "/"), env.get("FRAMEBUS_STATE_DIR"), env.get("FRAMEBUS_CACHE_DIR")]:
                    if path and path != "/":
                        assert mounted(container, path, writable=True), f"{where} cannot write {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_read_models_from_the_volume_their_init_container_fills(overlay: str) -> None:
    for pool in [item for item in of_kind(overlay, "Deployment") if is_worker(item)]:
        worker = containers(pool, init=False)[0]
        (fetch,) = pool["spec"]["template"]["spec"]["initContainers"]
        models = environment(overlay, worker)["FRAMEBUS_MODELS_DIR"]
        assert mounted(worker, models, writable=False) and mounted(fetch, models, writable=True)
        assert models in fetch["command"] or f"{models}/" in fetch["command"]


# --- secrets: by reference, and only where needed ------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_written_in_the_manifests(overlay: str) -> None:
    assert not SECRET_SETTINGS & set(settings_map(overlay))
    for workload in workloads(overlay):
        for container in containers(workload):
            for item in container.get("env", []):
                name = item["name"]
                credential = name in SECRET_SETTINGS or any(word in name for word in ("PASSWORD", "SECRET", "ACCESS_KEY"))
                if credential or name.endswith("_KEY"):
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{name} must come from a Secret"
                assert not str(item.get("value", "")).startswith("fbsk_")


def secret_names(container: dict) -> set[str]:
    return {item["valueFrom"]["secretKeyRef"]["name"] for item in container.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_gets_its_own_principal_and_only_the_secrets_it_needs(overlay: str) -> None:
    holders: dict[str, set[str]] = {"framebus-service-signing-key": set(), "framebus-s3": set()}
    roles = set()
    for workload in workloads(overlay):
        role = component(workload)
        roles.add(role)
        main = containers(workload, init=False)[0]
        # The user of the access plan (services/common/access.py), the password of that user.
        assert main["env"] and env_entry(main, "FRAMEBUS_KAFKA_SASL_USERNAME")["value"] == BY_ROLE[role].default_principal().removeprefix("User:")
        assert env_entry(main, "FRAMEBUS_KAFKA_SASL_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] == f"framebus-kafka-{role}"
        for container in containers(workload):
            names = secret_names(container)
            assert {name for name in names if name.startswith("framebus-kafka-")} <= {f"framebus-kafka-{role}"}
            for secret, who in holders.items():
                if secret in names:
                    who.add(role)
    assert roles == set(BY_ROLE) - {"tenant"}  # every service role runs, and the operator's Job
    assert holders == {"framebus-service-signing-key": SIGNING_KEY_HOLDERS, "framebus-s3": S3_HOLDERS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_notifier_could_get_webhook_secrets(overlay: str) -> None:
    """Today tenants' webhook secrets reach the notifier on a topic, not its environment; should
    one ever come by environment, it must not reach any other service."""
    for workload in workloads(overlay):
        if component(workload) == "notifier":
            continue
        for container in containers(workload):
            assert not any("webhook" in name for name in secret_names(container))
            assert not [name for name in environment(overlay, container) if "WEBHOOK" in name and "SECRET" in name]
