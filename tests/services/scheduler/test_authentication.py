"""Admission of signed records (services/scheduler/authenticate.py), without Kafka: who may submit
or cancel as a tenant, and that a refused record leaves nothing in that tenant's name."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from framebus.schemas.codec import encode_event
from framebus.schemas.events import CancelRequested, LedgerCredited, TenantUpdated
from framebus.schemas.webhooks import SigningKeys
from framebus.schemas.workers import WorkReturned
from framebus.services.scheduler.authenticate import Authenticator
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.handlers import SchedulerHandlers
from framebus.signing import new_key, sign
from tests.services.scheduler.helpers import req

ACME, GLOBEX, SERVICES = new_key(), new_key(), new_key()


def _record(event, topic: str = "framebus.requests.standard", key: str | None = None) -> SimpleNamespace:
    encoded = encode_event(event, source="/producer")
    if key is not None:
        encoded = sign(encoded, key)
    return SimpleNamespace(topic=topic, partition=0, offset=7, key=encoded.key, value=encoded.value,
                           headers=tuple(encoded.headers))


def _handlers(*, required: bool = True) -> SchedulerHandlers:
    handlers = SchedulerHandlers(SchedulerConfig(), authenticator=Authenticator(
        required=required, service_keys=(SERVICES,), max_age_s=300))
    for tenant_id, key in (("acme", ACME), ("globex", GLOBEX)):
        handlers.tenants[tenant_id] = TenantUpdated(tenant_id=tenant_id)
        handlers.core.ledger(LedgerCredited(tenant_id=tenant_id, entry_id=f"credit-{tenant_id}", tokens=1e9))
        handlers.apply_signing_keys(_record(SigningKeys(tenant_id=tenant_id, keys=(key,)), "framebus.signing.keys"))
    return handlers


def _topics(out) -> list[str]:
    return [topic for topic, _ in out.records]


def _refusal(out) -> tuple[str, str]:
    [(topic, record)] = out.records
    assert topic == "framebus.requests.rejected"
    headers = dict(record.headers)
    return headers["framebus-dead-reason"].decode(), headers["framebus-dead-detail"].decode()


def test_a_request_signed_by_its_tenant_or_the_services_is_admitted() -> None:
    handlers = _handlers()
    now = time.time()
    for request_id, key in (("r-own", ACME), ("r-svc", SERVICES)):
        out = handlers.on_input(_record(req(request_id=request_id), key=key), now)
        assert "framebus.ledger" in _topics(out), request_id  # reserved: admitted


def test_another_tenants_key_or_none_is_refused_with_nothing_in_the_named_tenants_name() -> None:
    handlers = _handlers()
    for key, expected in ((GLOBEX, "not signed by a key of tenant 'acme'"), (None, "unsigned")):
        reason, detail = _refusal(handlers.on_input(_record(req(request_id="r-x"), key=key), time.time()))
        assert reason == "unauthenticated" and expected in detail
    assert handlers.core.live_digest("acme", "r-x") is None and handlers.core.in_flight() == 0


def test_a_replay_is_refused_by_its_event_id_and_an_old_record_by_its_time() -> None:
    handlers = _handlers()
    record = _record(req(request_id="r-once"), key=ACME)
    now = time.time()
    assert "framebus.ledger" in _topics(handlers.on_input(record, now))
    reason, detail = _refusal(handlers.on_input(record, now + 1))
    assert reason == "unauthenticated" and "already admitted" in detail
    reason, detail = _refusal(handlers.on_input(_record(req(request_id="r-late"), key=ACME), now + 301))
    assert "beyond 300 s" in detail


def test_unreadable_records_fail_a_request_only_in_the_name_of_a_tenant_who_signed_them() -> None:
    handlers = _handlers()
    broken = _record(req(request_id="r-bad"), key=GLOBEX)
    data = json.loads(broken.value)
    data["num_frames"] = "many"
    forged = SimpleNamespace(**{**vars(broken), "value": json.dumps(data).encode()})
    assert _topics(handlers.on_input(forged, time.time())) == ["framebus.requests.rejected"]
    own = _record(req(request_id="r-bad2"), key=ACME)
    data = json.loads(own.value)
    data["num_frames"] = "many"
    own = sign(SimpleNamespace(key=own.key, value=json.dumps(data).encode(), headers=list(own.headers)), ACME)
    record = SimpleNamespace(topic="framebus.requests.standard", partition=0, offset=8, key=own.key, value=own.value,
                             headers=tuple(own.headers))
    assert _topics(handlers.on_input(record, time.time())) == [
        "framebus.requests.rejected", "framebus.results", "framebus.status"]


def test_a_cancel_needs_its_tenants_signature_and_a_hand_back_the_services() -> None:
    handlers = _handlers()
    now = time.time()
    cancel = CancelRequested(request_id="r-1", tenant_id="acme")
    assert _refusal(handlers.on_input(_record(cancel, "framebus.control", key=GLOBEX), now))[0] == "unauthenticated"
    assert handlers.on_input(_record(cancel, "framebus.control", key=ACME), now).records == []  # nothing to cancel
    returned = WorkReturned(tenant_id="acme", request_id="r-1", job_id="j-1", worker_id="w-1", reason="stopping")
    reason, detail = _refusal(handlers.on_input(_record(returned, "framebus.control", key=ACME), now))
    assert reason == "unauthenticated" and "not signed by the services' key" in detail
    assert handlers.on_input(_record(returned, "framebus.control", key=SERVICES), now).records == []


def test_with_signatures_optional_unsigned_passes_but_a_wrong_signature_never_does() -> None:
    handlers = _handlers(required=False)
    now = time.time()
    assert "framebus.ledger" in _topics(handlers.on_input(_record(req(request_id="r-plain")), now))
    assert _refusal(handlers.on_input(_record(req(request_id="r-wrong"), key=GLOBEX), now))[0] == "unauthenticated"


def test_a_rotated_key_and_its_predecessor_both_pass_until_the_next_rotation() -> None:
    handlers = _handlers()
    fresh = new_key()
    handlers.apply_signing_keys(_record(SigningKeys(tenant_id="acme", keys=(fresh, ACME)), "framebus.signing.keys"))
    now = time.time()
    for request_id, key in (("r-old", ACME), ("r-new", fresh)):
        assert "framebus.ledger" in _topics(handlers.on_input(_record(req(request_id=request_id), key=key), now))
    handlers.apply_signing_keys(_record(SigningKeys(tenant_id="acme", keys=(new_key(), fresh)), "framebus.signing.keys"))
    assert _refusal(handlers.on_input(_record(req(request_id="r-gone"), key=ACME), now))[0] == "unauthenticated"
