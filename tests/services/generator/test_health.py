"""What a worker tells its supervisor (/healthz, /readyz), and how it rides out a broker outage
in its tenant lookups."""

from __future__ import annotations

import pytest

from framebus.schemas.events import TenantStorage
from framebus.services.common.errors import StorageError
from framebus.services.common.probes import answer
from framebus.services.common.settings import Settings
from framebus.services.common.watchdog import ClientHealth
from framebus.services.generator.tenants import TenantTargets


def test_the_worker_health_answers_say_wedged_and_not_ready() -> None:
    assert answer("/healthz", "framebus-worker", ready=True, kafka=ClientHealth.LIVE)[0] == 200
    code, body = answer("/healthz", "framebus-worker", ready=True, kafka=ClientHealth.WEDGED)
    assert (code, body["status"]) == (503, "wedged")
    assert answer("/healthz", "framebus-worker", ready=True, kafka=ClientHealth.BROKER_DOWN)[0] == 200, "an outage is not death"
    assert answer("/readyz", "framebus-worker", ready=True, kafka=ClientHealth.LIVE)[0] == 200
    code, body = answer("/readyz", "framebus-worker", ready=True, kafka=ClientHealth.BROKER_DOWN)
    assert (code, body["status"]) == (503, "broker_down")
    assert answer("/readyz", "framebus-worker", ready=False, kafka=ClientHealth.LIVE)[1]["status"] == "starting"
    assert answer("/metrics", "framebus-worker", ready=True, kafka=ClientHealth.LIVE) is None


class FlakyTenants:
    """A tenants lookup that fails ``failures`` times (the broker away), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, tenant_id: str) -> TenantStorage | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("Connection reset by peer")
        return None


def test_a_tenant_lookup_during_a_broker_blip_is_retried_not_failed() -> None:
    lookup = FlakyTenants(failures=3)
    targets = TenantTargets(Settings(), lookup=lookup, sleep=lambda s: None)
    assert targets("acme") is None  # framebus's own bucket, after three failed reads
    assert lookup.calls == 4


def test_a_tenant_read_before_keeps_its_settings_while_the_broker_is_away() -> None:
    lookup = FlakyTenants(failures=0)
    targets = TenantTargets(Settings(), ttl_s=0.0, lookup=lookup, sleep=lambda s: None)
    assert targets("acme") is None
    lookup.failures = 10**6  # from now on every read fails
    assert targets("acme") is None, "the last known settings, not a failed request"


def test_a_tenant_never_read_fails_clearly_once_the_retries_run_out() -> None:
    targets = TenantTargets(Settings(), retry_for_s=0.0, lookup=FlakyTenants(failures=10**6), sleep=lambda s: None)
    with pytest.raises(StorageError, match="cannot read the settings of tenant acme"):
        targets("acme")
