"""The access plan (services/common/access.py): every role's row, as `framebus acl plan` prints it."""

from __future__ import annotations

import pytest

from framebus.schemas.topics import CATALOGUE
from framebus.services.common import access


def _by(grants: list[access.Grant], principal: str) -> set[tuple[str, str, str]]:
    return {(g.operation, g.resource, g.name) for g in grants if g.principal == principal}


def test_a_tenant_producer_writes_requests_and_control_and_reads_nothing() -> None:
    grants = access.plan("p.", tenant_principals=["User:acme"])
    assert _by(grants, "User:acme") == {("WRITE", "topic", f"p.{t}") for t in (*access.REQUESTS, "framebus.control")}


def test_only_the_scheduler_and_metering_write_the_ledger_and_only_operators_write_tenants_and_keys() -> None:
    grants = access.plan()
    def writers(topic: str) -> set[str]:
        return {g.principal for g in grants if g.name == topic and g.operation == "WRITE"}

    assert writers("framebus.ledger") == {"User:framebus-scheduler", "User:framebus-metering"}
    assert writers("framebus.tenants") == set() and writers("framebus.signing.keys") == set()
    readers = {g.principal for g in grants if g.name == "framebus.signing.keys"}
    assert readers == {"User:framebus-scheduler"}
    operator = _by(grants, "User:framebus-operator")
    assert ("ALL", "topic", "framebus.") in operator and ("ALTER", "cluster", "kafka-cluster") in operator


def test_every_topic_is_written_by_some_role_and_read_by_one_unless_it_is_an_operators_archive() -> None:
    grants = access.plan()
    written = {g.name for g in grants if g.operation == "WRITE" and g.resource == "topic"}
    read = {g.name for g in grants if g.operation == "READ" and g.resource == "topic"}
    # Written by operators alone (the leader topic stays empty: its consumer group is the lease).
    operator_only = {"framebus.tenants", "framebus.signing.keys", "framebus.smoke", "framebus.scheduler.leader"}
    archives = {"framebus.requests.rejected", "framebus.jobs.dead", "framebus.results.dead", "framebus.webhooks.dead",
                "framebus.smoke"}  # read by operators alone
    names = {spec.name for spec in CATALOGUE}
    assert names - written == operator_only
    assert names - read == archives


def test_names_carry_the_deployments_prefix_and_roles_may_be_renamed() -> None:
    grants = access.plan("t1.", {"gateway": "User:edge"})
    assert all(g.name.startswith("t1.") for g in grants if g.resource != "cluster")
    assert _by(grants, "User:edge") and not _by(grants, "User:framebus-gateway")
    with pytest.raises(ValueError, match="no role sheduler"):
        access.plan(principals={"sheduler": "User:x"})


def test_the_readme_table_names_every_role() -> None:
    table = access.render_markdown()
    assert all(f"| {role.name}:" in table for role in access.ROLES)
