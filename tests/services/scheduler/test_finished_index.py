"""The scheduler's index of finished requests, fed from framebus.status."""

from __future__ import annotations

from types import SimpleNamespace

from schemas.events import ErrorInfo
from schemas.state import ErrorCode, RequestState
from services.scheduler import records
from services.scheduler.app import FinishedIndex
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
