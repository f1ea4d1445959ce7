"""infra/linode cannot be planned here (no Linode account, no provider download), so the
Terraform is parsed with python-hcl2 and held to what the Kubernetes manifests expect of it:
the GPU pool they select, the cloud values they read, the retention the outputs get."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import hcl2
from hcl2 import SerializationOptions

from framebus.services.common.settings import Settings
from tests.infra.test_k8s import KUBERNETES_VERSION, component, workloads

LINODE = Path(__file__).parents[2] / "infra" / "linode"
PLAIN = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


@functools.cache
def terraform() -> dict[str, list]:
    """Every top-level block of every .tf file, by block type (resource, variable, output, ...)."""
    blocks: dict[str, list] = {}
    for path in sorted(LINODE.glob("*.tf")):
        for kind, items in hcl2.loads(path.read_text(), serialization_options=PLAIN).items():
            blocks.setdefault(kind, []).extend(items)
    return blocks


def named(kind: str) -> dict[str, dict]:
    return {name: body for item in terraform().get(kind, []) for name, body in item.items()}


def resources(kind: str) -> dict[str, dict]:
    return {name: body for item in terraform()["resource"] for rtype, found in item.items() if rtype == kind
            for name, body in found.items()}


def var(name: str) -> str:
    return f"${{var.{name}}}"


def test_provider_and_terraform_versions_are_pinned() -> None:
    (settings,) = terraform()["terraform"]
    assert settings["required_version"]
    providers = {name: spec for block in settings["required_providers"] for name, spec in block.items()}
    assert providers["linode"]["source"] == "linode/linode"
    for name, spec in providers.items():
        assert re.fullmatch(r"=?\s*\d+\.\d+\.\d+", spec["version"]), f"{name} {spec['version']!r} is a range, not a version"


def test_every_variable_used_is_declared_and_every_declared_one_used() -> None:
    text = "\n".join(path.read_text() for path in LINODE.glob("*.tf"))
    used = set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", text))
    assert used == set(named("variable"))


def test_the_cluster_has_a_cpu_and_a_gpu_pool_sized_by_variables() -> None:
    (cluster,) = resources("linode_lke_cluster").values()
    assert cluster["k8s_version"] == var("k8s_version")
    assert named("variable")["k8s_version"]["default"] == KUBERNETES_VERSION  # what infra/k8s is validated against
    cpu, gpu = cluster["pool"]
    assert (cpu["type"], cpu["count"]) == (var("cpu_pool_type"), var("cpu_pool_count"))
    assert gpu["type"] == var("gpu_pool_type")
    (autoscaler,) = gpu["autoscaler"]
    assert (autoscaler["min"], autoscaler["max"]) == (var("gpu_pool_count"), var("gpu_pool_max_count"))
    assert "taint" not in cpu  # the services schedule there untolerated


def test_the_gpu_pool_is_what_the_gpu_overlays_workers_select_and_tolerate() -> None:
    (cluster,) = resources("linode_lke_cluster").values()
    gpu = cluster["pool"][1]
    taints = gpu["taint"]
    workers = [item for item in workloads("gpu") if component(item) == "worker"]
    assert workers
    for worker in workers:
        spec = worker["spec"]["template"]["spec"]
        assert spec["nodeSelector"].items() <= gpu["labels"].items()
        for taint in taints:  # each taint of the pool is tolerated, or the workers never land there
            assert any(toleration["key"] == taint["key"] and toleration["effect"] == taint["effect"]
                       and (toleration["operator"] == "Exists" or toleration.get("value") == taint["value"])
                       for toleration in spec["tolerations"]), taint


def test_outputs_expire_after_the_retention_variable_and_models_never() -> None:
    buckets = resources("linode_object_storage_bucket")
    (rule,) = buckets["outputs"]["lifecycle_rule"]
    (expiration,) = rule["expiration"]
    assert rule["enabled"] is True and expiration["days"] == var("output_retention_days")
    retention = named("variable")["output_retention_days"]
    assert retention["type"] == "number"
    # A batch manifest's links live up to FRAMEBUS_BATCH_LINK_EXPIRY_S: what they point at must outlive them.
    longest_link_s = next(rule.le for rule in Settings.model_fields["batch_link_expiry_s"].metadata if hasattr(rule, "le"))
    assert retention["default"] * 86400 >= longest_link_s
    assert "lifecycle_rule" not in buckets["models"]


def test_every_cloud_value_the_manifests_read_has_an_output() -> None:
    """Each key the pods read from the framebus-cloud ConfigMap or the framebus-s3 Secret is a
    `terraform output` of the same name, so the README's kubectl commands fill them one to one."""
    read = set()
    for workload in workloads("gpu"):
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            for item in container.get("env", []):
                for ref, name in (("configMapKeyRef", "framebus-cloud"), ("secretKeyRef", "framebus-s3")):
                    source = item.get("valueFrom", {}).get(ref)
                    if source and source["name"] == name:
                        read.add(source["key"])
    assert {"s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key", "s3_models_bucket"} <= read
    outputs = named("output")
    assert read <= set(outputs)
    assert outputs["s3_endpoint"]["value"].startswith("https://")  # FRAMEBUS_S3_ENDPOINT is a URL
    for secret in ("s3_secret_key", "kubeconfig"):
        assert outputs[secret].get("sensitive") is True, secret
    assert outputs["s3_bucket"]["value"] == "${linode_object_storage_bucket.outputs.label}"


def test_the_services_key_reaches_the_two_buckets_only() -> None:
    (key,) = resources("linode_object_storage_key").values()
    access = {entry["bucket_name"]: entry["permissions"] for entry in key["bucket_access"]}
    assert access == {"${linode_object_storage_bucket.outputs.label}": "read_write",
                      "${linode_object_storage_bucket.models.label}": "read_only"}
    assert named("output")["s3_access_key"]["value"] == "${linode_object_storage_key.services.access_key}"
