"""The outputs bucket's lifecycle rule also expires the result-cache index (`_results/`), and the
workers' cache TTL stays within the retention of the videos its entries point at."""

from __future__ import annotations

from framebus.services.common.settings import Settings
from framebus.services.generator.storage import VideoStore
from tests.infra.test_linode import named, resources


def test_the_outputs_rule_has_no_prefix_so_it_covers_the_result_cache_index() -> None:
    (rule,) = resources("linode_object_storage_bucket")["outputs"]["lifecycle_rule"]
    assert not rule.get("prefix") and "filter" not in rule, "a prefix would leave `_results/` to grow forever"
    assert VideoStore.index_key("acme", "f").startswith("_results/")


def test_the_cache_ttl_default_is_within_the_output_retention() -> None:
    """An entry whose video has expired is only ever a miss: the default TTL never outlives the default retention."""
    retention_days = named("variable")["output_retention_days"]["default"]
    assert Settings.model_fields["result_cache_ttl_days"].default <= retention_days
