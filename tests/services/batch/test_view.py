"""A batch as its owner sees it: found during the run and after it, started when first submitted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from framebus.schemas.events import BatchCompleted, BatchCounts, BatchProgress, BatchSubmitted
from framebus.services.batch.view import BatchTable

FIRST = datetime(2026, 12, 1, 14, 35, 17, tzinfo=UTC)


def submitted(at: datetime) -> BatchSubmitted:
    return BatchSubmitted(batch_id="bat_1", tenant_id="acme", accepted=10, rejected=2, input_key="k",
                          completion_window_s=3600, submitted_at=at)


def test_a_resumed_submission_keeps_the_first_start_and_deadline():
    table = BatchTable()
    table.apply(submitted(FIRST))
    table.apply(submitted(FIRST + timedelta(seconds=17)))  # the re-run after a kill
    summary = table.summary("bat_1")
    assert summary.submitted_at == FIRST and summary.submitted.deadline == FIRST + timedelta(hours=1)


def test_progress_then_completion_and_the_batch_stays_visible_once_finished():
    table = BatchTable()
    table.apply(submitted(FIRST))
    assert table.summary("bat_1").counts.queued == 10, "before the tracker counted it: all queued"
    table.apply(BatchProgress(batch_id="bat_1", tenant_id="acme",
                              counts=BatchCounts(total=10, completed=4, running=2, queued=4, rejected=2)))
    summary = table.summary("bat_1")
    assert (summary.state, summary.counts.ended, summary.counts.running) == ("running", 4, 2)
    table.apply(BatchCompleted(batch_id="bat_1", tenant_id="acme", tokens=1.0, manifest_key="m", manifest_url="u",
                               counts=BatchCounts(total=10, completed=9, failed=1, rejected=2)))
    summary = table.summary("bat_1")
    assert (summary.state, summary.counts.completed, summary.completed.manifest_url) == ("finished", 9, "u")
    assert [s.batch_id for s in table.of_tenant("acme")] == ["bat_1"] and table.of_tenant("globex") == []
    assert table.summary("bat_other") is None
