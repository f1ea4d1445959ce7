"""The scheduler's index of finished requests, fed from framebus.status."""

from __future__ import annotations

import time
from types import SimpleNamespace

from framebus.schemas.events import ErrorInfo
from framebus.schemas.state import ErrorCode, RequestState
from framebus.services.scheduler import records
from framebus.services.scheduler.finished import FinishedIndex
from tests.services.scheduler.helpers import req


def _record(request, state: RequestState, **fields):
    _, record = records.status(request, state, **fields)
    return SimpleNamespace(key=record.key, value=record.value, headers=record.headers)


def test_only_terminal_statuses_are_kept_and_live_ones_are_skipped_unparsed() -> None:
    index = FinishedIndex()
    live, done, failed = req(request_id="r-live"), req(request_id="r-done"), req(request_id="r-failed")
    for state in (RequestState.QUEUED, RequestState.DISPATCHED, RequestState.RUNNING):
        index.apply_record(_record(live, state))
    index.apply_record(_record(done, RequestState.QUEUED))
    index.apply_record(_record(done, RequestState.COMPLETED))
    # An error message quoting a live state is JSON-escaped, so it cannot pass for one.
    message = 'worker said {"state":"queued"}'
    index.apply_record(_record(failed, RequestState.FAILED, error=ErrorInfo(code=ErrorCode.INTERNAL_ERROR,
                                                                             message=message)))
    assert not index.contains("acme", "r-live")
    assert index.contains("acme", "r-done") and index.contains("acme", "r-failed")
    assert b'"state":"completed"' in index.record("acme", "r-done").value


def test_finished_requests_are_forgotten_after_the_dedupe_window() -> None:
    index = FinishedIndex(window_s=3600.0)
    now = time.time()
    old, recent = req(request_id="r-old"), req(request_id="r-recent")
    stale = _record(old, RequestState.COMPLETED)
    stale.timestamp = int((now - 7200) * 1000)  # written two hours ago: outside the window at start
    index.apply_record(stale)
    fresh = _record(recent, RequestState.COMPLETED)
    fresh.timestamp = int(now * 1000)
    index.apply_record(fresh)
    assert not index.contains("acme", "r-old") and index.contains("acme", "r-recent")
    index.expire(now + 1800)
    assert index.contains("acme", "r-recent")
    index.expire(now + 3601)  # the window passed while running
    assert not index.contains("acme", "r-recent") and len(index) == 0
