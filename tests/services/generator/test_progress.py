"""Progress lines are thinned: a 50-step job reports a handful of steps, always the first and the last."""

from __future__ import annotations

from framebus.schemas.events import GenerationRequest
from framebus.services.generator.progress import StepReporter


def request(n: int) -> GenerationRequest:
    return GenerationRequest(request_id=f"r{n}", tenant_id="acme", prompt="a red circle")


def test_first_and_last_steps_and_at_most_one_a_second_between_for_each_request_of_the_batch() -> None:
    sent, clock = [], [0.0]
    reporter = StepReporter([request(1), request(2)], lambda publishes: sent.extend(publishes), lambda: clock[0])
    for step in range(1, 51):  # 50 steps, 0.1 s each
        clock[0] = step * 0.1
        reporter(step, 50)
    steps = [p.event.step for p in sent if p.event.request_id == "r1"]
    assert steps[0] == 1 and steps[-1] == 50 and len(steps) <= 7, steps
    assert [p.event.step for p in sent if p.event.request_id == "r2"] == steps
    assert {p.topic for p in sent} == {"framebus.progress"} and {p.event.stage for p in sent} == {"denoising"}


def test_a_step_already_reported_is_not_sent_again() -> None:
    sent = []
    reporter = StepReporter([request(1)], lambda publishes: sent.extend(publishes), lambda: 0.0)
    reporter(4, 4)
    reporter(4, 4)
    assert [p.event.step for p in sent] == [4]
