"""framebus.status is compacted and deleted after FRAMEBUS_STATUS_RETENTION_DAYS: the catalogue,
the settings it comes from, and `up`'s check of an existing topic, on the real broker."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from framebus.schemas.topics import BY_NAME, CATALOGUE, DAY_MS, Cleanup, catalogue, render_markdown
from framebus.services.common.kafka import admin_client, ensure_topics, mismatches
from framebus.services.common.settings import Replication, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("FRAMEBUS_"):
            monkeypatch.delenv(name)


def status_of(specs) -> dict[str, str]:
    return next(spec for spec in specs if spec.name == "framebus.status").configs()


def test_status_is_compacted_and_deleted_after_the_settings_days() -> None:
    configs = status_of(Settings().catalogue())
    assert configs["cleanup.policy"] == "compact,delete" and configs["retention.ms"] == str(30 * DAY_MS)
    assert configs["min.cleanable.dirty.ratio"] == "0.1"  # compaction still runs often
    assert status_of(Settings(status_retention_days=3).catalogue())["retention.ms"] == str(3 * DAY_MS)


def test_the_retention_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("FRAMEBUS_STATUS_RETENTION_DAYS", "7")
    assert Settings().status_retention_days == 7
    assert status_of(Settings().catalogue())["retention.ms"] == str(7 * DAY_MS)
    monkeypatch.setenv("FRAMEBUS_STATUS_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError, match="status_retention_days"):
        Settings()


def test_statuses_must_outlast_the_longest_queue_wait() -> None:
    with pytest.raises(ValidationError, match=r"`status_retention_days` \(1\) must outlast .*batch: 172800 s"):
        Settings(status_retention_days=1, scheduler_tier_ttl_s={"batch": 172800})
    assert Settings(status_retention_days=2, scheduler_tier_ttl_s={"batch": 172800},
                    ledger_dedupe_window_s=3 * 86400).status_retention_days == 2


def test_the_ledger_remembers_settlements_longer_than_any_request_waits() -> None:
    with pytest.raises(ValidationError, match=r"`ledger_dedupe_window_s` \(86400\) must outlast .*batch: 86400 s"):
        Settings(ledger_dedupe_window_s=86400, scheduler_tier_ttl_s={"batch": 86400})


def test_only_settable_retention_changes_and_every_setting_named_exists() -> None:
    assert catalogue() == CATALOGUE
    changed = dict(zip(CATALOGUE, catalogue({"status_retention_days": 2}), strict=True))
    assert [spec.name for spec, after in changed.items() if spec != after] == ["framebus.status",
                                                                               "framebus.batches.progress"]
    for spec in CATALOGUE:
        if spec.retention_setting:  # the catalogue's default is the setting's default
            assert Settings.model_fields[spec.retention_setting].default * DAY_MS == spec.retention_ms, spec.name
    # The other state topics stay compacted forever.
    for name in ("framebus.tenants", "framebus.scheduler.backlog", "framebus.webhooks.pending"):
        assert BY_NAME[name].cleanup is Cleanup.COMPACT and BY_NAME[name].configs()["retention.ms"] == "-1"


def test_the_readme_row_names_the_retention_and_its_setting() -> None:
    row = next(line for line in render_markdown().splitlines() if line.startswith("| `framebus.status`"))
    assert "| compacted, 30 d (`FRAMEBUS_STATUS_RETENTION_DAYS`) |" in row


def test_an_existing_status_topic_differing_in_retention_is_one_line() -> None:
    status = status_of(Settings(status_retention_days=30).catalogue())
    spec = next(s for s in Settings(status_retention_days=10).catalogue() if s.name == "framebus.status")
    found = mismatches(spec, (6, 3), status, Replication(3, 2))
    assert found == (f"retention.ms={30 * DAY_MS}, the catalogue asks {10 * DAY_MS}",)
    old = {"cleanup.policy": "compact", "retention.ms": "-1"}  # as created before statuses expired
    assert mismatches(spec, (6, 3), old, Replication(3, 2)) == (
        "cleanup.policy=compact, the catalogue asks compact,delete", f"retention.ms=-1, the catalogue asks {10 * DAY_MS}")


def test_up_creates_the_status_topic_as_the_settings_say_and_finds_it_matching(server_settings) -> None:
    """What the broker reports back for `compact,delete` compares equal to the catalogue (no false mismatch),
    and a changed setting is reported, not applied."""
    prefix = f"t.retention.{uuid.uuid4().hex[:8]}."
    specs = [s for s in server_settings.model_copy(update={"status_retention_days": 12}).catalogue()
             if s.name == "framebus.status"]
    admin = admin_client(server_settings.bootstrap_servers)
    try:
        (created,) = ensure_topics(admin, specs, prefix=prefix)
        assert created.created
        (again,) = ensure_topics(admin, specs, prefix=prefix)
        assert not again.created and again.mismatches == ()
        shorter = [s for s in server_settings.model_copy(update={"status_retention_days": 5}).catalogue()
                   if s.name == "framebus.status"]
        (changed,) = ensure_topics(admin, shorter, prefix=prefix)
        assert changed.mismatches == (f"retention.ms={12 * DAY_MS}, the catalogue asks {5 * DAY_MS}",)
    finally:
        admin.delete_topics([prefix + "framebus.status"])
        admin.close()
