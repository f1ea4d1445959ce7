"""Crash safety against the real broker: kill -9 the scheduler or a worker mid-run.

What makes it safe: each live request is on framebus.scheduler.backlog before its input
offset is committed, so a restarted scheduler rebuilds its queue and in-flight jobs
from there; replays of uncommitted input are dropped as duplicates; a worker that stops
heartbeating has its unfinished requests re-dispatched elsewhere.
"""

from __future__ import annotations

import collections

from framebus.schemas.events import GenerationCompleted
from framebus.services.common.children import launch
from tests.services.scheduler.conftest import Pipeline
from tests.services.scheduler.test_pipeline import request
from tests.waiting import eventually


def _outcomes(pipeline: Pipeline, expected: int) -> dict[str, list]:
    grouped = collections.defaultdict(list)
    for result in pipeline.results(until=expected, timeout_s=120):
        grouped[result.request_id].append(result)
    return grouped


def test_kill_9_of_the_scheduler_loses_and_repeats_nothing(pipeline: Pipeline) -> None:
    scheduler = pipeline.start_scheduler()
    pipeline.start_worker("w1", delay_ms=400, batch=2, slots=1)
    pipeline.client.submit_many([request(n, tier=("batch", "standard")[n % 2]) for n in range(30)])
    assert len(pipeline.results(until=6, timeout_s=60)) >= 6  # some done, some in flight, most queued
    pipeline.kill(scheduler)
    pipeline.client.submit_many([request(n) for n in range(30, 36)])  # accepted while it is down
    pipeline.start_scheduler()
    outcomes = _outcomes(pipeline, expected=36)
    assert sorted(outcomes) == sorted(f"req-{n}" for n in range(36)), pipeline.log("scheduler.log")
    repeated = {rid: len(r) for rid, r in outcomes.items() if len(r) != 1}
    assert repeated == {}
    assert all(isinstance(r[0], GenerationCompleted) for r in outcomes.values())


def test_a_lost_workers_unfinished_requests_run_elsewhere_once(pipeline: Pipeline) -> None:
    pipeline.start_scheduler()
    doomed = pipeline.start_worker("doomed", delay_ms=20_000, batch=4, slots=1)
    pipeline.client.submit_many([request(n, tier="interactive") for n in range(4)])
    # Wait until the doomed worker holds the job (status `running`), then kill it.
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = pipeline.client.status("req-0")
        if status is not None and status.state.value == "running":
            break
        time.sleep(0.3)
    pipeline.kill(doomed)
    pipeline.start_worker("rescuer", batch=4)
    outcomes = _outcomes(pipeline, expected=4)
    assert sorted(outcomes) == [f"req-{n}" for n in range(4)], pipeline.log("scheduler.log")
    assert all(len(r) == 1 and isinstance(r[0], GenerationCompleted) for r in outcomes.values())


def test_a_second_scheduler_waits_as_a_standby_and_takes_over_when_the_active_one_dies(pipeline: Pipeline) -> None:
    import time

    active = pipeline.start_scheduler()
    time.sleep(6)  # the first one holds the lease before the second starts
    standby = launch(pipeline.settings, ["scheduler"], pipeline.logs / "standby.log")
    pipeline.processes.append(standby)
    pipeline.start_worker("w1", delay_ms=300, batch=2, slots=1)
    standby_log = lambda: (pipeline.logs / "standby.log").read_text(errors="replace")  # all of it
    assert eventually(lambda: "standby:" in standby_log(), timeout_s=60), "the second one waits"
    pipeline.client.submit_many([request(n) for n in range(20)])
    assert len(pipeline.results(until=4, timeout_s=60)) >= 4
    assert "scheduler restored" not in standby_log(), "and decided nothing while the first was active"
    pipeline.kill(active)
    outcomes = _outcomes(pipeline, expected=20)
    assert sorted(outcomes) == sorted(f"req-{n}" for n in range(20)), pipeline.log("standby.log")
    assert all(len(r) == 1 and isinstance(r[0], GenerationCompleted) for r in outcomes.values())
    assert "scheduler restored" in standby_log(), "the standby took over"


def test_a_paused_active_scheduler_is_fenced_when_it_wakes_and_nothing_runs_twice(pipeline: Pipeline) -> None:
    """SIGSTOP, not kill: the paused scheduler's group session lapses, the standby takes over with the
    same transactional id (fencing the first), and the first, woken with SIGCONT, stops instead of
    writing on. No request is dispatched twice in committed jobs, and each ends once."""
    import os
    import signal
    import time

    from kafka import KafkaConsumer

    from framebus.schemas.codec import decode_event
    from framebus.schemas.workers import JobDispatched

    active = pipeline.start_scheduler()
    time.sleep(6)
    standby = launch(pipeline.settings, ["scheduler"], pipeline.logs / "standby.log")
    pipeline.processes.append(standby)
    pipeline.start_worker("w1", delay_ms=300, batch=2, slots=1)
    standby_log = lambda: (pipeline.logs / "standby.log").read_text(errors="replace")  # noqa: E731
    assert eventually(lambda: "standby:" in standby_log(), timeout_s=60)
    pipeline.client.submit_many([request(n) for n in range(20)])
    assert len(pipeline.results(until=4, timeout_s=60)) >= 4
    os.kill(active.pid, signal.SIGSTOP)
    try:
        assert eventually(lambda: "scheduler restored" in standby_log(), timeout_s=60), "the standby takes over"
    finally:
        os.kill(active.pid, signal.SIGCONT)
    assert eventually(lambda: active.poll() is not None, timeout_s=60), "the woken scheduler stops"
    # It rejoins the lease group as its oldest member, but the lease stays with the scheduler
    # that became active most recently (LeaseAssignor): the standby that took over carries on.
    assert not eventually(lambda: standby.poll() is not None, timeout_s=15), pipeline.log("standby.log")
    outcomes = _outcomes(pipeline, expected=20)
    assert sorted(outcomes) == sorted(f"req-{n}" for n in range(20)), pipeline.log("standby.log")
    assert all(len(r) == 1 and isinstance(r[0], GenerationCompleted) for r in outcomes.values())
    consumer = KafkaConsumer(pipeline.settings.topic("framebus.jobs"), bootstrap_servers=pipeline.settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000,
                             isolation_level="read_committed")
    dispatched = collections.Counter()
    for record in consumer:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, JobDispatched):
            dispatched.update(r.request_id for r in event.requests)
    consumer.close()
    twice = {rid: n for rid, n in dispatched.items() if n > 1}
    assert twice == {}, twice


def test_sigterm_mid_render_hands_the_requests_back_and_the_worker_exits_in_seconds(
        server_settings, tmp_path) -> None:
    """A worker asked to stop in the middle of a long render stops between denoising steps, hands
    its requests back (they run elsewhere at once, not after the worker timeout) and exits 0."""
    import signal
    import time

    from tests.services.scheduler.conftest import running_pipeline

    for pipeline in running_pipeline(server_settings, tmp_path, scheduler_worker_timeout_s=120.0):
        pipeline.start_scheduler()
        slow = pipeline.start_worker("slow", delay_ms=60_000, batch=2, slots=1)
        pipeline.client.submit_many([request(n, tier="interactive") for n in range(2)])
        assert eventually(lambda: (s := pipeline.client.status("req-0")) is not None and s.state.value == "running",
                          timeout_s=60), pipeline.log("scheduler.log")
        stopped_at = time.monotonic()
        slow.send_signal(signal.SIGTERM)
        assert slow.wait(timeout=15) == 0, pipeline.log("worker-slow.log")
        took = time.monotonic() - stopped_at
        assert took < 8.0, f"the worker took {took:.1f}s to stop"
        assert "handing back job" in pipeline.log("worker-slow.log")
        pipeline.start_worker("fresh", batch=2)
        outcomes = _outcomes(pipeline, expected=2)
        assert sorted(outcomes) == ["req-0", "req-1"]
        assert all(len(r) == 1 and isinstance(r[0], GenerationCompleted) for r in outcomes.values())
        assert time.monotonic() - stopped_at < 60, "handed back, not left until the 120 s worker timeout"
        print(f"SIGTERM mid-render: the worker exited after {took:.1f}s; both requests done elsewhere "
              f"{time.monotonic() - stopped_at:.0f}s after the signal")
