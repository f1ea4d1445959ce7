"""The topic catalogue: complete, consistent, and the README shows it as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from framebus.schemas.topics import BY_NAME, CATALOGUE, REQUEST_TIERS, Cleanup, render_markdown, request_topic

README = Path(__file__).parents[2] / "README.md"
DESIGN_TOPICS = {
    "framebus.requests.interactive", "framebus.requests.standard", "framebus.requests.batch",
    "framebus.requests.rejected", "framebus.jobs", "framebus.results", "framebus.status", "framebus.usage",
    "framebus.ledger", "framebus.tenants", "framebus.webhooks.dead", "framebus.control",
}


def test_every_topic_of_the_design_is_in_the_catalogue() -> None:
    assert DESIGN_TOPICS <= set(BY_NAME)
    assert len(BY_NAME) == len(CATALOGUE)  # names are unique


def test_compacted_topics_keep_the_latest_value_forever() -> None:
    for name in ("framebus.tenants", "framebus.scheduler.backlog"):
        configs = BY_NAME[name].configs()
        assert configs["cleanup.policy"] == "compact" and configs["retention.ms"] == "-1"


def test_the_ledger_is_never_compacted_or_expired() -> None:
    ledger = BY_NAME["framebus.ledger"]
    assert ledger.cleanup is Cleanup.DELETE and ledger.configs()["retention.ms"] == "-1"


def test_request_topic_per_tier_and_unknown_tier_is_named() -> None:
    assert [request_topic(t) for t in REQUEST_TIERS] == [f"framebus.requests.{t}" for t in REQUEST_TIERS]
    with pytest.raises(ValueError, match="`tier` must be one of interactive, standard, batch but is 'urgent'"):
        request_topic("urgent")


def test_readme_shows_the_current_catalogue() -> None:
    assert render_markdown() in README.read_text(), "README topic table is stale: paste schemas.topics.render_markdown()"
