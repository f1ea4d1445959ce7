"""The scheduler core, driven by hand: priority, aging, fairness, batching, credits, recovery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from framebus.schemas.events import CancelRequested
from framebus.schemas.state import ErrorCode, RequestState
from framebus.services.scheduler.config import SchedulerConfig
from tests.services.scheduler.helpers import core, finish_job, req, worker


def test_a_late_interactive_request_overtakes_5000_queued_batch_requests() -> None:
    made = core()
    for _ in range(5000):
        made.submit(req(tier="batch"), now=0.0)
    made.worker_announced(worker(batch=4), now=0.0)
    [busy] = made.step(now=5.0).jobs  # the worker takes batch work while nothing better exists
    urgent = req(tier="interactive")
    made.submit(urgent, now=6.0)
    finish_job(made, busy, "w1", now=7.0, batch=4)
    [next_job] = made.step(now=7.0).jobs
    assert urgent.request_id in [r.request_id for r in next_job.requests]


def test_aging_lets_old_batch_work_overtake_fresh_interactive_work() -> None:
    made = core(config=SchedulerConfig(aging_s=10.0))
    old = req(tier="batch", width=512)  # another shape, so it cannot ride along in the same batch
    made.submit(old, now=0.0)
    made.submit(req(tier="interactive"), now=15.0)  # arrived 15 s later: < 2 x aging_s, interactive wins
    made.worker_announced(worker(batch=1), now=15.0)
    first = made.step(now=15.1).jobs[0]
    assert first.requests[0].tier.value == "interactive"
    made.submit(req(tier="interactive"), now=25.0)  # 25 s after the batch request: > 2 x 10 s
    finish_job(made, first, "w1", now=25.1, batch=1)
    second = made.step(now=25.1).jobs[0]
    assert second.requests[0].request_id == old.request_id


def test_batch_work_progresses_under_a_steady_interactive_load() -> None:
    made = core(config=SchedulerConfig(aging_s=5.0))
    waiting = req(tier="batch", width=512)
    made.submit(waiting, now=0.0)
    made.worker_announced(worker(batch=1), now=0.0)
    served_at = None
    for tick in range(1, 200):  # one interactive request per second, one job per second
        now = float(tick)
        made.submit(req(tier="interactive"), now=now)
        jobs = made.step(now=now + 0.5).jobs
        for job in jobs:
            if job.requests[0].request_id == waiting.request_id:
                served_at = now
            finish_job(made, job, "w1", now=now + 0.9, batch=1)
        if served_at:
            break
    assert served_at is not None and served_at <= 2 * 5.0 + 2


def test_a_tenant_arriving_later_is_not_queued_behind_another_tenants_bulk() -> None:
    made = core("bulk", "small")
    for _ in range(1000):
        made.submit(req("bulk"), now=0.0)
    mine = [req("small") for _ in range(10)]
    for request in mine:
        made.submit(request, now=1.0)
    made.worker_announced(worker(batch=1), now=1.0)
    served = []
    for n in range(40):
        [job] = made.step(now=2.0 + n).jobs
        served.append(job.requests[0].tenant_id)
        finish_job(made, job, "w1", now=2.0 + n, batch=1)
    # The 10 small requests are done within the first 20 jobs: one in every two.
    assert served[:20].count("small") == 10


def test_requests_of_one_shape_share_a_batch_up_to_the_worker_size() -> None:
    made = core()
    for _ in range(6):
        made.submit(req(tier="batch"), now=0.0)
    made.submit(req(tier="batch", width=512), now=0.0)
    made.worker_announced(worker(slots=3, batch=4), now=0.0)
    jobs = made.step(now=0.1).jobs  # the 4 of one shape are full: they go now
    assert [len(j.requests) for j in jobs] == [4]
    later = made.step(now=3.5).jobs  # after the batch tier's 3 s max wait the partial ones go too
    assert sorted(len(j.requests) for j in later) == [1, 2]
    assert all(len({r.width for r in j.requests}) == 1 for j in jobs + later)


def test_a_partial_interactive_batch_waits_only_its_tiers_max_wait() -> None:
    made = core()
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker(batch=4), now=0.0)
    assert made.step(now=0.01).jobs == []
    assert len(made.step(now=0.031).jobs) == 1


def test_credit_a_stale_announcement_never_opens_a_slot_twice() -> None:
    made = core()
    for _ in range(3):
        made.submit(req(tier="batch"), now=0.0)
    made.worker_announced(worker(batch=1), now=0.0)
    [job] = made.step(now=5.0).jobs
    made.worker_announced(worker(batch=1, last_seq=-1), now=5.1)  # sent before it saw the job
    assert made.step(now=5.2).jobs == []
    made.worker_announced(worker(batch=1, last_seq=job.seq, running=[job.job_id]), now=5.3)
    assert made.step(now=5.4).jobs == []
    finish_job(made, job, "w1", now=6.0, batch=1)
    assert len(made.step(now=6.1).jobs) == 1


def test_cold_or_stopping_workers_get_nothing() -> None:
    made = core()
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker(warm=False), now=0.0)
    assert made.step(now=1.0).jobs == []


def test_a_lost_workers_jobs_go_to_another_worker_with_the_same_seeds() -> None:
    made = core(config=SchedulerConfig(worker_timeout_s=5.0))
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker("w1", batch=1), now=0.0)
    [first] = made.step(now=0.1).jobs
    made.worker_announced(worker("w2", batch=1), now=8.0)
    [second] = made.step(now=8.0).jobs  # w1 silent for 8 s > 5 s
    assert second.worker_id == "w2" and second.attempt == 2
    assert second.requests[0].effective_seed() == first.requests[0].effective_seed()
    assert first.requests[0].seed is None, "the request goes as its producer sent it"


def test_a_broker_outage_is_not_counted_against_workers() -> None:
    """While the scheduler hears nothing from Kafka no heartbeat can reach it; once it hears again,
    each worker still has the time it had left when the outage began (no job runs twice)."""
    made = core(config=SchedulerConfig(worker_timeout_s=5.0, reconnect_grace_s=8.0))
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker("w1", batch=1), now=0.0)
    [job] = made.step(now=0.1, heard_at=0.1).jobs
    # The broker goes at t=1: the scheduler last heard it then; 20 s of outage.
    for t in (2.0, 6.0, 12.0, 21.0):
        assert made.step(now=t, heard_at=1.0).requeued == [], f"nobody lapses while deaf (t={t})"
    # Heard again at t=21.5: w1 has its 4 s left (last seen at 0, deaf from 1), then lapses.
    assert made.step(now=23.0, heard_at=23.0).requeued == []
    made.worker_announced(worker("w1", batch=1, running=(job.job_id,), last_seq=job.seq), now=24.0)
    assert made.step(now=28.0, heard_at=28.0).requeued == [], "it announced in time"
    [requeued] = made.step(now=34.0, heard_at=34.0).requeued  # silent since 24 s: 10 s > 5 s
    assert requeued.attempt == 2


def test_a_worker_that_stays_silent_after_an_outage_lapses_once_the_reconnect_grace_is_over() -> None:
    made = core(config=SchedulerConfig(worker_timeout_s=5.0, reconnect_grace_s=8.0))
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker("w1", batch=1), now=0.0)
    made.step(now=0.1, heard_at=0.1)
    made.step(now=10.0, heard_at=1.0)  # deaf from 1
    assert made.step(now=12.0, heard_at=12.0).requeued == []  # heard again: w1's last sight moves to 11
    assert made.step(now=19.5, heard_at=19.5).requeued == [], "its clients may still be reconnecting"
    [requeued] = made.step(now=20.5, heard_at=20.5).requeued  # grace over, silent 9.5 s > 5 s
    assert requeued.request.request_id


def test_a_worker_restarted_under_the_same_id_gets_its_lost_jobs_again_at_once() -> None:
    """A supervisor restarts a wedged worker with the same id (a StatefulSet pod name): the new
    process reads its partition from the end and never sees the jobs the earlier one held."""
    from datetime import UTC, datetime

    first_run, second_run = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    made = core(config=SchedulerConfig(worker_timeout_s=60.0))
    made.submit(req(tier="interactive"), now=0.0)
    made.worker_announced(worker("w1", batch=1).model_copy(update={"started_at": first_run}), now=0.0)
    [lost] = made.step(now=0.1).jobs
    made.worker_announced(worker("w1", batch=1).model_copy(update={"started_at": second_run}), now=5.0)
    out = made.step(now=5.1)
    assert [entry.attempt for entry in out.requeued] == [2], "not after the 60 s timeout: at once"
    [again] = out.jobs
    assert again.worker_id == "w1" and again.requests[0].request_id == lost.requests[0].request_id


def test_a_lost_workers_requests_wait_for_the_results_it_may_have_sent_before_going_again() -> None:
    """A restarted worker's earlier process may have finished a request just before it went: its
    result is on Kafka, not yet read. Re-queuing it then ran it twice (seen after broker outages)."""
    from datetime import UTC, datetime

    made = core(config=SchedulerConfig(worker_timeout_s=60.0))
    done, unfinished = req(tier="interactive"), req(tier="interactive")
    made.submit(done, now=0.0)
    made.submit(unfinished, now=0.0)
    made.worker_announced(worker("w1", batch=2).model_copy(update={"started_at": datetime(2026, 1, 1, tzinfo=UTC)}),
                          now=0.0)
    [job] = made.step(now=0.1, results_read_at=0.1).jobs
    made.worker_announced(worker("w1", batch=2).model_copy(
        update={"started_at": datetime(2026, 1, 1, 0, 5, tzinfo=UTC)}), now=5.0)
    for now, read_at in ((5.1, 4.9), (6.0, 5.0), (9.0, 5.05)):
        out = made.step(now=now, results_read_at=read_at)
        assert not out.requeued and not out.jobs, f"results not read up to the loss yet (t={now})"
    made.request_finished(done.tenant_id, done.request_id)  # its result is read at last
    out = made.step(now=9.5, results_read_at=9.4)
    assert [(e.request.request_id, e.attempt) for e in out.requeued] == [(unfinished.request_id, 2)]
    [again] = out.jobs
    assert [r.request_id for r in again.requests] == [unfinished.request_id], "the finished one never runs twice"
    assert job.job_id != again.job_id


def test_a_request_cancelled_while_its_worker_is_lost_ends_cancelled_instead_of_running_again() -> None:
    made = core(config=SchedulerConfig(worker_timeout_s=5.0, unreported_grace_s=1.0))
    request = req(tier="interactive")
    made.submit(request, now=0.0)
    made.worker_announced(worker("w1", batch=1), now=0.0)
    [job] = made.step(now=0.1).jobs
    out = made.cancel(CancelRequested(request_id=request.request_id, tenant_id="acme"), now=1.0)
    assert [c.job_id for c in out.cancels] == [job.job_id]  # w1 never answers: it is gone
    assert made.step(now=7.0, results_read_at=5.0).terminal == [], "lost at 7: waits for the results"
    made.worker_announced(worker("w2", batch=1), now=7.5)
    assert made.step(now=8.5, results_read_at=6.9).terminal == [], "not failed as unreported while it waits"
    out = made.step(now=9.0, results_read_at=8.9)
    assert [(t.request.request_id, t.state) for t in out.terminal] == [(request.request_id, RequestState.CANCELLED)]
    assert not out.requeued and not out.jobs
    assert made.balances.of("acme").reserved == 0


def test_requests_a_stopping_worker_hands_back_are_queued_again_at_once() -> None:
    from framebus.schemas.workers import WorkReturned

    made = core(config=SchedulerConfig(worker_timeout_s=60.0))
    first, second = req(tier="interactive"), req(tier="interactive")
    made.submit(first, now=0.0)
    made.submit(second, now=0.0)
    made.worker_announced(worker("w1", batch=2), now=0.0)
    [job] = made.step(now=0.1).jobs

    def back(request, job_id=job.job_id):
        return WorkReturned(tenant_id=request.tenant_id, request_id=request.request_id, job_id=job_id,
                            worker_id="w1")

    out = made.returned(back(first), now=1.0)
    assert [(e.request.request_id, e.attempt) for e in out.requeued] == [(first.request_id, 2)]
    assert made.returned(back(first), now=1.1).requeued == [], "a duplicate hand-back changes nothing"
    assert made.returned(back(second, "job-other"), now=1.2).requeued == [], "only from the job that holds it"
    made.returned(back(second), now=1.3)
    made.worker_announced(worker("w2", batch=2), now=1.4)
    [again] = made.step(now=1.5).jobs
    assert {r.request_id for r in again.requests} == {first.request_id, second.request_id}


def test_expired_requests_fail_and_release_their_tokens() -> None:
    made = core()
    request = req(tier="interactive")
    made.submit(request, now=0.0)
    out = made.step(now=301.0)
    [ended] = out.terminal
    assert ended.state is RequestState.FAILED and ended.code is ErrorCode.EXPIRED
    assert [e.event_type for e in out.ledger] == ["framebus.ledger.released"]
    assert made.balances.of("acme").reserved == 0


def test_cancel_ends_a_queued_request_and_forwards_a_dispatched_one() -> None:
    made = core()
    queued, flying = req(tier="batch"), req(tier="interactive")
    made.submit(queued, now=0.0)
    made.submit(flying, now=0.0)
    made.worker_announced(worker(batch=1), now=0.0)
    [job] = made.step(now=1.0).jobs
    assert job.requests[0].request_id == flying.request_id
    out = made.cancel(CancelRequested(request_id=queued.request_id, tenant_id="acme"), now=1.1)
    assert [t.state for t in out.terminal] == [RequestState.CANCELLED]
    out = made.cancel(CancelRequested(request_id=flying.request_id, tenant_id="acme"), now=1.2)
    assert [(c.worker_id, c.job_id) for c in out.cancels] == [("w1", job.job_id)] and not out.terminal


def test_refused_and_duplicate_requests() -> None:
    made = core(credit=0.0)
    out = made.submit(req(), now=0.0)
    assert out.terminal[0].code is ErrorCode.INSUFFICIENT_BALANCE and not out.queued
    rich = core()
    request = req()
    rich.submit(request, now=0.0)
    assert rich.submit(request, now=1.0).duplicates == [request]
    assert len(rich.queue) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "resubmit", "cancel", "step", "finish", "crash", "announce"]),
                          st.integers(0, 30)), min_size=1, max_size=120))
def test_every_admitted_request_is_in_exactly_one_place(ops) -> None:
    """Queued, in flight or ended: never two of them, never none (no loss, no double run)."""
    made = core(config=SchedulerConfig(worker_timeout_s=3.0, aging_s=2.0))
    now, admitted, ended = 0.0, [], set()
    jobs = []
    made.worker_announced(worker("w1", slots=2, batch=3), now)
    for op, n in ops:
        now += 0.5
        if op == "submit" or (op == "resubmit" and not admitted):
            request = req(tier=("interactive", "standard", "batch")[n % 3], width=256 + 16 * (n % 2))
            out = made.submit(request, now)
            if out.queued:
                admitted.append(request)
        elif op == "resubmit":
            assert made.submit(admitted[n % len(admitted)], now).duplicates
        elif op == "cancel" and admitted:
            target = admitted[n % len(admitted)]
            out = made.cancel(CancelRequested(request_id=target.request_id, tenant_id="acme"), now)
            ended |= {t.request.request_id for t in out.terminal}
        elif op == "step":
            out = made.step(now)
            jobs.extend(out.jobs)
            ended |= {t.request.request_id for t in out.terminal}
        elif op == "finish" and jobs:
            job = jobs.pop(0)
            for request in job.requests:
                if (request.tenant_id, request.request_id) in made._in_flight:
                    ended.add(request.request_id)
            finish_job(made, job, job.worker_id, now, slots=2, batch=3)
        elif op == "crash":
            now += 5.0  # w1 misses heartbeats and is declared dead; w2 takes over
            made.worker_announced(worker("w2", slots=2, batch=3), now)
        elif op == "announce":
            made.worker_announced(worker("w2", slots=2, batch=3, last_seq=10_000), now)
        queued = {e.request.request_id for e in made.queue}
        flying = {rid for (_, rid) in made._in_flight}
        for request in admitted:
            places = (request.request_id in queued) + (request.request_id in flying) + (request.request_id in ended)
            assert places == 1, (request.request_id, queued, flying, ended)


def test_a_newcomer_shares_from_now_on_and_does_not_jump_the_whole_queue() -> None:
    made = core("bulk", "newcomer")
    for _ in range(200):
        made.submit(req("bulk"), now=0.0)
    made.worker_announced(worker(batch=1), now=0.0)
    served = []
    for n in range(120):
        [job] = made.step(now=1.0 + n).jobs
        served.append(job.requests[0].tenant_id)
        finish_job(made, job, "w1", now=1.0 + n, batch=1)
        if n == 99:  # after 100 bulk jobs the newcomer arrives with 10 requests
            for _ in range(10):
                made.submit(req("newcomer"), now=1.0 + n)
    after = served[100:120]
    # Alternating from its arrival: neither starved nor served 10 in a row ahead of everyone.
    assert after.count("newcomer") == 10
    assert max(len(run) for run in "".join("n" if t == "newcomer" else "b" for t in after).split("b")) <= 2


def test_requests_a_live_worker_let_go_of_without_a_result_fail_after_the_grace() -> None:
    made = core(config=SchedulerConfig(unreported_grace_s=60.0))
    made.submit(req(request_id="r-lost", tier="interactive"), now=0.0)
    made.submit(req(request_id="r-done", tier="interactive"), now=0.0)
    made.worker_announced(worker("w1", batch=2), now=0.0)
    [job] = made.step(now=0.1).jobs
    made.request_finished("acme", "r-done")  # one result arrives, the other never does
    for now in (5.0, 30.0, 64.0):  # alive, and no longer running the job
        made.worker_announced(worker("w1", batch=2, last_seq=job.seq), now=now)
        assert not made.step(now).terminal
    made.worker_announced(worker("w1", batch=2, last_seq=job.seq), now=66.0)
    [ended] = made.step(now=66.0).terminal
    assert ended.request.request_id == "r-lost" and ended.code.value == "worker_lost"
    reservations = made.balances.of("acme").reservations
    assert "r-lost" not in reservations and "r-done" in reservations, "its reservation is released (r-done's is metering's)"
    made.worker_announced(worker("w1", batch=2, last_seq=job.seq), now=200.0)
    assert not made.step(now=200.0).terminal, "and it ends once"


def test_a_job_still_running_is_never_failed_as_unreported() -> None:
    made = core(config=SchedulerConfig(unreported_grace_s=60.0))
    made.submit(req(request_id="slow", tier="interactive"), now=0.0)
    made.worker_announced(worker("w1"), now=0.0)
    [job] = made.step(now=0.1).jobs
    for now in range(5, 600, 5):
        made.worker_announced(worker("w1", running=(job.job_id,), last_seq=job.seq), now=float(now))
        assert not made.step(float(now)).terminal

