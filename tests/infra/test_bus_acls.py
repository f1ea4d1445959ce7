"""Who may write what on the bus, on a broker that enforces it: SASL/SCRAM over TLS with KRaft's
StandardAuthorizer denying whatever no ACL allows. The ACLs are the access plan
(``framebus acl apply``); each service runs on its own principal, tenants on theirs.

- every role is held to its row: a test per denied operation (a tenant crediting itself,
  reading every tenant's statuses, a worker writing the ledger, ...);
- a request signed with tenant B's key but naming tenant A is refused (``unauthenticated``)
  and A is charged nothing; an unsigned one too; a replayed signed record is refused;
- the whole pipeline runs end to end, every service on its own principal, requests coming
  from a tenant's own Kafka producer (signed by the SDK) and through the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import SecretStr

from framebus.client import FramebusClient
from framebus.errors import ConfigurationError
from framebus.infra.kafka.secured import SecuredKafkaBroker
from framebus.infra.process import free_port, terminate
from framebus.kafka import read_since
from framebus.schemas.codec import KafkaRecord, encode_event
from framebus.schemas.events import GenerationRequest, LedgerCredited, TenantUpdated
from framebus.services.common import access
from framebus.services.common.children import child_env, launch
from framebus.services.common.deadletters import reason_of
from framebus.services.common.kafka import admin_client
from framebus.services.common.settings import LOCAL_HOST, Settings
from framebus.services.common.stack import Stack
from framebus.services.demo.receiver import VerifyingReceiver
from framebus.services.gateway.tenants import TenantAdmin
from framebus.signing import new_key, sign
from tests.infra.secrets import assert_no_secret_in_logs
from tests.waiting import eventually

ROLES = ("scheduler", "worker", "metering", "notifier", "tracker", "gateway")
TENANTS = ("acme", "globex")
SERVICE_KEY = new_key()


def _password() -> str:
    return f"pw-{uuid.uuid4().hex}"


@dataclass
class Bus:
    broker: SecuredKafkaBroker
    base: Settings
    passwords: dict[str, str]
    first_apply: access.Applied
    second_apply: access.Applied
    signing_keys: dict[str, str] = field(default_factory=dict)

    def as_user(self, user: str, **changes) -> Settings:
        return self.base.model_copy(update={"kafka_sasl_username": user,
                                            "kafka_sasl_password": SecretStr(self.passwords[user]), **changes})

    def role(self, name: str) -> Settings:
        return self.as_user(f"framebus-{name}", service_signing_key=SecretStr(SERVICE_KEY))

    def tenant(self, tenant_id: str) -> Settings:
        return self.as_user(f"tenant-{tenant_id}", tenant=tenant_id)


@pytest.fixture(scope="module")
def bus(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory, infra_cache_dir: Path) -> Iterator[Bus]:
    users = ["admin", *(f"framebus-{role}" for role in ROLES), *(f"tenant-{t}" for t in TENANTS)]
    passwords = {user: _password() for user in users}  # admin first: the broker's own probe logs in as it
    broker = SecuredKafkaBroker(users=passwords, authorizer=True, super_users=("admin",), host=LOCAL_HOST,
                                port=free_port(), controller_port=free_port(), heap="384m",
                                state_dir=tmp_path_factory.mktemp("acl-kafka"), cache_dir=infra_cache_dir)
    broker.start()
    try:
        base = server_settings.model_copy(update={
            "kafka_bootstrap": broker.endpoint, "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_ssl_cafile": broker.cafile,
            "topic_prefix": f"acl.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"acl-{uuid.uuid4().hex[:8]}",
            "webhook_http_hosts": frozenset({"127.0.0.1"}), "webhook_allowed_hosts": frozenset({"127.0.0.1"}),
            "signature_max_age_s": 60.0})
        bus = Bus(broker, base, passwords, *_apply_plan(base.model_copy(update={
            "kafka_sasl_username": "admin", "kafka_sasl_password": SecretStr(passwords["admin"])})))
        yield bus
    finally:
        broker.stop()


def _apply_plan(admin: Settings) -> tuple[access.Applied, access.Applied]:
    """Topics and bucket as the super user, then the plan applied twice (the second must change nothing)."""
    Stack(admin).up()
    grants = access.plan(admin.topic_prefix, tenant_principals=[f"User:tenant-{t}" for t in TENANTS])
    applied = []
    for _ in range(2):
        client = admin_client(admin.bootstrap_servers)
        try:
            applied.append(access.apply(client, grants))
        finally:
            client.close()
    return applied[0], applied[1]


# --- what each principal may not do -------------------------------------------------------------------
def _write(settings: Settings, topic: str, record: KafkaRecord) -> Exception | None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_block_ms=15000,
                             **settings.kafka_security.kafka_python())
    try:
        producer.send(settings.topic(topic), key=record.key, value=record.value,
                      headers=record.headers).get(timeout=15)
        return None
    except KafkaError as exc:
        return exc
    finally:
        producer.close(timeout=5)


def _read(settings: Settings, topic: str) -> Exception | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             **settings.kafka_security.kafka_python())
    try:
        partition = TopicPartition(settings.topic(topic), 0)
        consumer.assign([partition])
        consumer.beginning_offsets([partition])  # the first request that needs the topic
        consumer.poll(timeout_ms=2000)
        return None
    except KafkaError as exc:
        return exc
    finally:
        consumer.close()


def _credit(tenant_id: str) -> KafkaRecord:
    return encode_event(LedgerCredited(tenant_id=tenant_id, entry_id=f"forged-{uuid.uuid4().hex}",
                                       tokens=1e9, reason="forged", actor="attacker"), source="/attacker")


def _tenant_update(tenant_id: str) -> KafkaRecord:
    return encode_event(TenantUpdated(tenant_id=tenant_id, credit_limit_tokens=1e12), source="/attacker")


DENIED = [
    ("tenant acme credits itself on the ledger", "tenant:acme", "write", "framebus.ledger", lambda: _credit("acme")),
    ("tenant acme raises its own limits", "tenant:acme", "write", "framebus.tenants", lambda: _tenant_update("acme")),
    ("tenant acme reads every tenant's statuses", "tenant:acme", "read", "framebus.status", None),
    ("tenant acme reads every tenant's results", "tenant:acme", "read", "framebus.results", None),
    ("tenant acme reads every tenant's usage", "tenant:acme", "read", "framebus.usage", None),
    ("tenant acme reads other tenants' requests", "tenant:acme", "read", "framebus.requests.standard", None),
    ("tenant acme reads the signing keys", "tenant:acme", "read", "framebus.signing.keys", None),
    ("a worker writes the ledger", "role:worker", "write", "framebus.ledger", lambda: _credit("acme")),
    ("a worker reads webhook secrets", "role:worker", "read", "framebus.webhooks.secrets", None),
    ("the gateway writes the ledger", "role:gateway", "write", "framebus.ledger", lambda: _credit("acme")),
    ("the gateway reads the signing keys", "role:gateway", "read", "framebus.signing.keys", None),
    ("metering writes tenants", "role:metering", "write", "framebus.tenants", lambda: _tenant_update("acme")),
    ("the notifier writes requests", "role:notifier", "write", "framebus.requests.interactive",
     lambda: encode_event(GenerationRequest(request_id="n-1", tenant_id="acme", prompt="x"), source="/n")),
    ("the tracker reads the ledger", "role:tracker", "read", "framebus.ledger", None),
]


def _settings_of(bus: Bus, who: str) -> Settings:
    kind, name = who.split(":")
    return bus.tenant(name) if kind == "tenant" else bus.role(name)


def test_the_plan_applies_once_and_a_second_apply_changes_nothing(bus: Bus) -> None:
    assert len(bus.first_apply.created) > 50
    assert bus.second_apply.created == [] and len(bus.second_apply.present) == len(bus.first_apply.created)


@pytest.mark.parametrize(("what", "who", "operation", "topic", "record"), DENIED, ids=[row[0] for row in DENIED])
def test_each_principal_is_denied_what_its_row_does_not_grant(bus: Bus, what: str, who: str, operation: str,
                                                              topic: str, record) -> None:
    settings = _settings_of(bus, who)
    error = _write(settings, topic, record()) if operation == "write" else _read(settings, topic)
    assert error is not None, f"{what}: allowed"
    assert "Authorization" in type(error).__name__, f"{what}: {error!r}"


def test_a_tenant_may_write_requests_but_only_as_itself(bus: Bus) -> None:
    """The denials above are the authorizer, not a broken login: the same principal may write its row."""
    record = encode_event(GenerationRequest(request_id=f"ok-{uuid.uuid4().hex[:6]}", tenant_id="acme", prompt="x"),
                          source="/tenant")
    assert _write(bus.tenant("acme"), "framebus.requests.standard", record) is None


# --- the pipeline, every service on its own principal ---------------------------------------------
@dataclass
class Pipeline:
    bus: Bus
    operator: FramebusClient
    receiver: VerifyingReceiver
    gateway_url: str
    api_key: str
    processes: list


@pytest.fixture(scope="module")
def pipeline(bus: Bus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("acl-logs")
    operator_settings = bus.as_user("admin", service_signing_key=SecretStr(SERVICE_KEY))
    operator = FramebusClient(settings=operator_settings, tenant_id="acme", source="/tests")  # follows acme
    admin = TenantAdmin(operator)
    for tenant_id in TENANTS:
        admin.create(tenant_id)
        admin.credit(tenant_id, 10_000)
        bus.signing_keys[tenant_id] = admin.rotate_signing_key(tenant_id).keys[0]
    receiver = VerifyingReceiver(admin.rotate_webhook_secret("acme").secrets[0])
    api_key = admin.issue_key("acme").plaintext
    port = free_port()
    processes = [launch(bus.role(role), args, logs / f"{role}.log") for role, args in (
        ("scheduler", ["scheduler"]), ("metering", ["metering"]), ("notifier", ["notifier"]),
        ("tracker", ["batch-tracker"]),
        ("worker", ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "acl-w", "--heartbeat-s", "0.5"]),
        ("gateway", ["gateway", "--host", LOCAL_HOST, "--port", str(port)]))]
    try:
        assert eventually(lambda: _answers(f"http://{LOCAL_HOST}:{port}/readyz"), timeout_s=120), "gateway not ready"
        yield Pipeline(bus, operator, receiver, f"http://{LOCAL_HOST}:{port}", api_key, processes)
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        receiver.close()
        operator.close()
        assert_no_secret_in_logs(logs, {**{f"the password of {user}": pw for user, pw in bus.passwords.items()},
                                        "the services' key": SERVICE_KEY})


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _rejected(bus: Bus, request_id: str, *, within_s: float = 60) -> list[tuple[str, str]]:
    """(reason, detail) of each rejected record naming ``request_id`` (read as an operator)."""
    settings = bus.as_user("admin")
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = [reason_of(record) for record in
                 read_since(settings.bootstrap_servers, settings.topic("framebus.requests.rejected"), 600)
                 if json.loads(record.value).get("request_id") == request_id]
        if found:
            return found
        time.sleep(0.5)
    return []


def _ledger_entries(bus: Bus, tenant_id: str, request_id: str) -> list[dict]:
    settings = bus.as_user("admin")
    return [json.loads(r.value) for r in read_since(settings.bootstrap_servers, settings.topic("framebus.ledger"), 600)
            if json.loads(r.value).get("tenant_id") == tenant_id and json.loads(r.value).get("request_id") == request_id]


def _signed_request(bus: Bus, tenant_id: str, key: str, request_id: str, *, at: datetime | None = None) -> KafkaRecord:
    request = GenerationRequest(request_id=request_id, tenant_id=tenant_id, prompt="a red circle moving left",
                                tier="standard")
    record = encode_event(request, source="/tenant")
    if at is not None:  # a record made earlier: its own time, signed then
        stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()
        record = KafkaRecord(record.key, record.value,
                             [(n, stamp if n == "ce_time" else v) for n, v in record.headers])
    return sign(record, key)


def test_a_request_signed_with_another_tenants_key_is_refused_and_nothing_is_charged(pipeline: Pipeline) -> None:
    bus = pipeline.bus
    forged = f"forged-{uuid.uuid4().hex[:6]}"
    # globex's producer (its own principal may write requests) signs a request naming acme with globex's key.
    assert _write(bus.tenant("globex"), "framebus.requests.standard",
                  _signed_request(bus, "acme", bus.signing_keys["globex"], forged)) is None
    unsigned = f"unsigned-{uuid.uuid4().hex[:6]}"
    assert _write(bus.tenant("globex"), "framebus.requests.standard", encode_event(
        GenerationRequest(request_id=unsigned, tenant_id="acme", prompt="x"), source="/tenant")) is None
    genuine = f"genuine-{uuid.uuid4().hex[:6]}"
    assert _write(bus.tenant("acme"), "framebus.requests.standard",
                  _signed_request(bus, "acme", bus.signing_keys["acme"], genuine)) is None
    for request_id in (forged, unsigned):
        refused = _rejected(bus, request_id)
        assert refused and refused[0][0] == "unauthenticated", refused
    assert pipeline.operator.kafka.status(genuine, timeout_s=30) is not None
    assert eventually(lambda: pipeline.operator.kafka.status(genuine).state.value == "completed", timeout_s=60)
    for request_id in (forged, unsigned):
        assert _ledger_entries(bus, "acme", request_id) == [], "acme was charged for a request it never made"
        assert pipeline.operator.kafka.status(request_id, timeout_s=2) is None


def test_a_replayed_signed_request_is_refused(pipeline: Pipeline) -> None:
    bus = pipeline.bus
    request_id = f"replay-{uuid.uuid4().hex[:6]}"
    record = _signed_request(bus, "acme", bus.signing_keys["acme"], request_id)
    assert _write(bus.tenant("acme"), "framebus.requests.standard", record) is None
    assert eventually(lambda: (s := pipeline.operator.kafka.status(request_id)) is not None
                      and s.state.value == "completed", timeout_s=60)
    assert _write(bus.tenant("acme"), "framebus.requests.standard", record) is None  # the same bytes again
    refused = _rejected(bus, request_id)
    assert refused and refused[0][0] == "unauthenticated" and "replayed" in refused[0][1], refused
    stale_id = f"stale-{uuid.uuid4().hex[:6]}"
    stale = _signed_request(bus, "acme", bus.signing_keys["acme"], stale_id,
                            at=datetime.now(UTC) - timedelta(seconds=bus.base.signature_max_age_s * 3))
    assert _write(bus.tenant("acme"), "framebus.requests.standard", stale) is None
    refused = _rejected(bus, stale_id)
    assert refused and "replayed" in refused[0][1], refused
    reserved = [e for e in _ledger_entries(bus, "acme", request_id) if e.get("entry_id", "").startswith("reserve")]
    assert len(_ledger_entries(bus, "acme", stale_id)) == 0
    assert len(reserved) <= 1


def test_the_pipeline_runs_with_every_service_on_its_own_principal(pipeline: Pipeline) -> None:
    bus = pipeline.bus
    tenant = FramebusClient(settings=bus.tenant("acme"), signing_key=bus.signing_keys["acme"], source="/acme")
    try:
        over_kafka = [tenant.submit({"request_id": f"k-{n}-{uuid.uuid4().hex[:4]}", "prompt": "a red circle moving left",
                                     "webhook_url": pipeline.receiver.url}) for n in range(3)]
        # Its producer may not read the statuses all tenants share: told at once, not left waiting.
        with pytest.raises(ConfigurationError, match="may not read framebus.status"):
            over_kafka[0].wait(timeout=30)
    finally:
        tenant.close()
    http = FramebusClient(base_url=pipeline.gateway_url, api_key=pipeline.api_key)
    try:
        over_http = [http.submit({"request_id": f"h-{n}-{uuid.uuid4().hex[:4]}", "prompt": "a blue square moving up",
                                  "webhook_url": pipeline.receiver.url}) for n in range(2)]
        for handle in over_http:
            assert handle.wait(timeout=120).state.value == "completed"
    finally:
        http.close()
    ids = {h.request_id for h in over_kafka} | {h.request_id for h in over_http}
    for request_id in ids:
        assert eventually(lambda r=request_id: (s := pipeline.operator.kafka.status(r)) is not None
                   and s.state.value == "completed", timeout_s=120)
    settings = bus.as_user("admin")
    assert eventually(lambda: ids <= {json.loads(r.value)["request_id"] for r in
                               read_since(settings.bootstrap_servers, settings.topic("framebus.usage"), 600)},
               timeout_s=60)
    assert eventually(lambda: ids <= pipeline.receiver.request_ids(), timeout_s=60)
    assert all(process.poll() is None for process in pipeline.processes), "a service exited"


def test_framebus_acl_plan_prints_every_role(bus: Bus) -> None:
    done = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "acl", "plan", "--json",
                           "--tenant-principal", "User:tenant-acme"], env=child_env(bus.as_user("admin")),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert {row["principal"] for row in rows} >= {*(f"User:framebus-{r}" for r in ROLES), "User:framebus-operator",
                                                   "User:tenant-acme"}
    tenant_rows = {(r["operation"], r["name"].removeprefix(bus.base.topic_prefix)) for r in rows
                   if r["principal"] == "User:tenant-acme"}
    assert tenant_rows == {("WRITE", t) for t in (*access.REQUESTS, "framebus.control")}
