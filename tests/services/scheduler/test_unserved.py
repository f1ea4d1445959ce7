"""A request for a model no worker serves: its status says why it waits, and after the grace it
fails with `model_unavailable` naming the models that are served (pure core, no Kafka)."""

from __future__ import annotations

from framebus.schemas.state import ErrorCode, RequestState
from framebus.services.scheduler import records
from framebus.services.scheduler.config import SchedulerConfig
from tests.services.scheduler.helpers import core, req, worker


def test_a_request_no_worker_serves_says_why_and_fails_after_the_grace() -> None:
    made = core(config=SchedulerConfig(unserved_grace_s=30.0))
    made.worker_announced(worker("w1"), now=0.0)  # serves wan-tiny only
    out = made.submit(req(request_id="big", model="wan2.1-t2v-1.3b"), now=1.0)
    assert "no worker serves model wan2.1-t2v-1.3b" in out.waiting[("acme", "big")]
    assert "models served: wan-tiny" in out.waiting[("acme", "big")]
    status = [r for topic, r in records.for_output(out) if topic == "framebus.status"][0]
    assert b"model_unavailable after 30s" in status.value  # the queued status carries the reason
    for now in (5.0, 20.0, 30.5):
        made.worker_announced(worker("w1"), now=now)
        assert not made.step(now).terminal
    made.worker_announced(worker("w1"), now=31.5)
    [ended] = made.step(now=31.5).terminal
    assert ended.state is RequestState.FAILED and ended.code is ErrorCode.MODEL_UNAVAILABLE
    assert "models served: wan-tiny" in ended.message
    assert made.queue.get("acme", "big") is None and made.balances.of("acme").reserved == 0


def test_a_request_a_worker_serves_waits_without_a_reason_and_runs() -> None:
    made = core(config=SchedulerConfig(unserved_grace_s=30.0))
    made.worker_announced(worker("w1"), now=0.0)
    out = made.submit(req(request_id="tiny"), now=1.0)
    assert out.waiting == {}
    assert [job.requests[0].request_id for job in made.step(now=2.0).jobs] == ["tiny"]


def test_the_grace_counts_from_the_first_worker_this_scheduler_heard() -> None:
    made = core(config=SchedulerConfig(unserved_grace_s=30.0))
    assert made.submit(req(request_id="early"), now=0.0).waiting == {}  # nobody heard yet: no verdict
    assert not made.step(now=100.0).terminal
    made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=100.0)
    made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=129.0)
    assert not made.step(now=129.0).terminal
    made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=130.5)
    [ended] = made.step(now=130.5).terminal
    assert ended.request.request_id == "early" and ended.code is ErrorCode.MODEL_UNAVAILABLE


def test_a_worker_restarting_is_not_a_model_gone() -> None:
    made = core(config=SchedulerConfig(unserved_grace_s=30.0, worker_timeout_s=5.0))
    for now in (0.0, 10.0, 20.0):  # w2 serves wan-tiny but is full, then goes silent after t=20
        made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=now)
        made.worker_announced(worker("w2", slots=0), now=now)
        if now == 0.0:
            assert made.submit(req(request_id="tiny"), now=1.0).waiting == {}
        made.step(now)
    for now in (30.0, 45.0, 49.5):
        made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=now)
        assert not made.step(now).terminal, "the grace counts from when wan-tiny was last announced (t=20)"
    made.worker_announced(worker("w1", model="wan2.1-t2v-1.3b"), now=50.5)
    [ended] = made.step(now=50.5).terminal
    assert ended.request.request_id == "tiny" and ended.code is ErrorCode.MODEL_UNAVAILABLE
