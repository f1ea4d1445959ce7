"""Who holds the scheduler lease after a rebalance (the assignment rule alone; the SIGSTOP test in
test_crash.py runs it against the real broker)."""

from __future__ import annotations

from framebus.services.scheduler.lease import LeaseAssignor


def test_the_lease_stays_with_the_scheduler_that_became_active_last() -> None:
    standbys = {"scheduler-001-a": 0, "scheduler-002-b": 0}
    assert LeaseAssignor.choose(standbys) == "scheduler-001-a", "no one active: the oldest"
    running = {"scheduler-001-a": 0, "scheduler-002-b": 5_000, "scheduler-003-c": 0}
    assert LeaseAssignor.choose(running) == "scheduler-002-b", "a standby, even older, never takes over"
    woken = {"scheduler-001-a": 1_000, "scheduler-002-b": 5_000}  # a paused active one rejoins after the takeover
    assert LeaseAssignor.choose(woken) == "scheduler-002-b"
