"""What the engine renders for a job, without an engine, Kafka, S3 or ffmpeg: out-of-memory
halving, identical requests sharing a render, the result cache, and cancels before a render."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framebus.schemas.state import ErrorCode
from framebus.services.generator.batching import JobPlan, render_in_halves, render_job, request_key
from framebus.services.generator.cancels import CancelBook
from framebus.services.generator.errors import EngineBroken, EngineOutOfMemory, classify_device_error
from framebus.services.generator.fingerprint import result_fingerprint
from framebus.services.generator.rendered import Refused, Rendered, Served
from tests.services.generator.fakes import FakeEngine, output, request

ENGINE_ID = "engine-1"


def nothing_cached(request, fingerprint):
    return None


def never(request) -> bool:
    return False


def test_out_of_memory_splits_the_batch_in_halves_until_it_fits() -> None:
    engine = FakeEngine(fits=1)
    requests = [request(f"s-{n}", seed=n) for n in range(3)]
    items = render_in_halves(engine.render, requests, never)
    assert [len(batch) for batch in engine.batches] == [3, 1, 2, 1, 1]
    assert [item.request.request_id for item in items] == ["s-0", "s-1", "s-2"]
    assert all(isinstance(item, Rendered) and not item.cancelled for item in items)


def test_out_of_memory_even_alone_refuses_that_request() -> None:
    [item] = render_in_halves(FakeEngine(fits=0).render, [request("big")], never)
    assert isinstance(item, Refused) and item.code == ErrorCode.OUT_OF_MEMORY
    assert "out of memory even alone" in item.message


def test_only_a_request_that_does_not_fit_alone_is_refused() -> None:
    engine = FakeEngine()

    def huge_never_fits(requests, cancelled):
        if any(r.request_id == "huge" for r in requests):
            raise EngineOutOfMemory("the huge one does not fit")
        return engine.render(requests, cancelled)

    items = render_in_halves(huge_never_fits, [request("a", seed=1), request("huge", seed=2)], never)
    assert [(type(item), item.request.request_id) for item in items] == [(Rendered, "a"), (Refused, "huge")]


def test_any_other_engine_error_refuses_the_whole_batch_with_its_message() -> None:
    engine = FakeEngine(fails=RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    items = render_in_halves(engine.render, [request("a"), request("b", seed=2)], never)
    assert [item.code for item in items] == [ErrorCode.GENERATION_ERROR] * 2
    assert items[0].message == "RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    assert len(engine.batches) == 1, "only running out of memory is worth a retry"


def test_a_broken_device_is_not_a_refusal_the_worker_hands_the_job_back() -> None:
    engine = FakeEngine(fails=EngineBroken("CUDA error: an illegal memory access was encountered"))
    with pytest.raises(EngineBroken):
        render_in_halves(engine.render, [request("a"), request("b", seed=2)], never)


@pytest.mark.parametrize(("error", "meant"), [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), EngineBroken),
    (RuntimeError("CUDA error: device-side assert triggered"), EngineBroken),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), EngineOutOfMemory),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), EngineOutOfMemory),
    (MemoryError(), EngineOutOfMemory),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), type(None)),
])
def test_device_errors_are_told_apart(error: Exception, meant: type) -> None:
    assert isinstance(classify_device_error(error), meant)


def test_identical_requests_share_one_render_and_the_copies_carry_no_engine_time() -> None:
    engine = FakeEngine()
    job = [request("r-1"), request("r-2"), request("r-3", prompt="a lighthouse")]
    done = render_job(job, render=engine.render, engine_id=ENGINE_ID, cancels=CancelBook(), cached=nothing_cached)
    assert engine.batches == [["r-1", "r-3"]]
    items = {item.request.request_id: item for item in done.items}
    assert set(items) == {"r-1", "r-2", "r-3"}
    assert items["r-1"].gpu_seconds == 1.0 and items["r-2"].gpu_seconds == 0.0 and items["r-2"].steps_run == 0
    assert items["r-2"].frames is items["r-1"].frames
    assert [done.is_duplicate(r) for r in job] == [False, True, False]


def test_a_request_stored_before_is_served_from_the_cache_without_the_engine() -> None:
    engine = FakeEngine()
    earlier = request("r-0")
    index = {result_fingerprint(earlier, ENGINE_ID): output(earlier)}
    done = render_job([request("r-1")], render=engine.render, engine_id=ENGINE_ID, cancels=CancelBook(),
                      cached=lambda r, fingerprint: index.get(fingerprint))
    [item] = done.items
    assert isinstance(item, Served) and item.request.request_id == "r-1" and engine.batches == []


def test_without_an_engine_id_nothing_is_shared_or_looked_up() -> None:
    looked_up: list[str] = []
    engine = FakeEngine()
    job = [request("r-1"), request("r-2")]
    done = render_job(job, render=engine.render, engine_id="", cancels=CancelBook(),
                      cached=lambda r, fingerprint: looked_up.append(r.request_id))
    assert engine.batches == [["r-1", "r-2"]] and looked_up == [] and done.duplicates == frozenset()


def test_the_same_request_id_from_two_tenants_is_two_requests() -> None:
    engine = FakeEngine()
    job = [request("same", tenant_id="acme"), request("same", tenant_id="globex", seed=9)]
    done = render_job(job, render=engine.render, engine_id="", cancels=CancelBook(), cached=nothing_cached)
    assert [(i.request.tenant_id, i.request.request_id) for i in done.items] == [("acme", "same"), ("globex", "same")]


def test_a_request_cancelled_before_its_job_starts_is_not_rendered() -> None:
    cancels = CancelBook()
    cancels.cancel("acme", "drop")
    engine = FakeEngine()
    done = render_job([request("keep"), request("drop", seed=9)], render=engine.render, engine_id=ENGINE_ID,
                      cancels=cancels, cached=nothing_cached)
    assert engine.batches == [["keep"]]
    dropped = next(item for item in done.items if item.request.request_id == "drop")
    assert isinstance(dropped, Rendered) and dropped.cancelled


def test_a_shared_render_stops_only_when_every_request_sharing_it_is_cancelled() -> None:
    seen: dict[str, bool] = {}

    class AsksAboutCancels(FakeEngine):
        def render(self, requests, cancelled, on_step=None):
            cancels.cancel("acme", "twin")  # lands while the batch denoises
            seen.update({r.request_id: cancelled(r) for r in requests})
            return super().render(requests, cancelled)

    cancels = CancelBook()
    done = render_job([request("first"), request("twin")], render=AsksAboutCancels().render, engine_id=ENGINE_ID,
                      cancels=cancels, cached=nothing_cached)
    assert seen == {"first": False}, "the leader keeps rendering for the request that still wants it"
    first, twin = done.items
    assert not first.cancelled and twin.cancelled


def test_a_refusal_of_a_shared_render_fails_every_request_sharing_it() -> None:
    done = render_job([request("a"), request("b")], render=FakeEngine(fits=0).render, engine_id=ENGINE_ID,
                      cancels=CancelBook(), cached=nothing_cached)
    assert [(type(i), i.request.request_id) for i in done.items] == [(Refused, "a"), (Refused, "b")]


def test_a_leader_the_engine_returns_nothing_for_is_refused_not_lost() -> None:
    done = render_job([request("a"), request("b", seed=2)], render=lambda requests, cancelled: [],
                      engine_id=ENGINE_ID, cancels=CancelBook(), cached=nothing_cached)
    assert [i.code for i in done.items] == [ErrorCode.GENERATION_ERROR] * 2


@given(seeds=st.lists(st.integers(0, 3), min_size=1, max_size=12), fits=st.integers(0, 4),
       cancelled=st.sets(st.integers(0, 11)), cached_seeds=st.sets(st.integers(0, 3)))
def test_every_request_of_a_job_comes_back_exactly_once(seeds, fits, cancelled, cached_seeds) -> None:
    job = [request(f"r-{n}", seed=seed) for n, seed in enumerate(seeds)]
    cancels = CancelBook()
    for n in cancelled:
        cancels.cancel("acme", f"r-{n}")
    index = {result_fingerprint(request("x", seed=s), ENGINE_ID) for s in cached_seeds}
    engine = FakeEngine(fits=fits)
    done = render_job(job, render=engine.render, engine_id=ENGINE_ID, cancels=cancels,
                      cached=lambda r, fingerprint: output(r) if fingerprint in index else None)
    assert sorted(request_key(item.request) for item in done.items) == sorted(request_key(r) for r in job)
    rendered_ids = {rid for batch in engine.batches for rid in batch}
    assert not rendered_ids & {f"r-{n}" for n in cancelled}, "a request cancelled before the job is never rendered"


def test_a_plan_names_the_copies_by_tenant_and_request_id() -> None:
    plan = JobPlan.from_requests([request("a"), request("b"), request("c", seed=3)], engine_id=ENGINE_ID,
                                 is_cancelled=never, cached=nothing_cached)
    assert [g.leader.request_id for g in plan.groups] == ["a", "c"] and plan.duplicates == {("acme", "b")}
