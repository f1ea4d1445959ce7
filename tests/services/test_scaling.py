"""Workers per tier and the cost per video (services/common/scaling.py, `framebus scale advise`), on
recorded figures: one wan-shapes worker (batches of 4) finishes 1.88 videos a second on the 2-core
development box (bench/results/e2e.json, generation_split.capacity_per_s)."""

from __future__ import annotations

import math

import pytest

from framebus.schemas.events import GenerationRequest
from framebus.schemas.workers import Shape
from framebus.services.cli.scale import loads_from, service_rate_from
from framebus.services.common import scaling
from framebus.services.scheduler.backlog import BacklogEntry

WAN_SHAPES_CPU = 1.88  # videos per busy worker-second, measured
GPU_1_3B = 2 / 60  # the manifests' assumption: wan2.1-t2v-1.3b at 480p, about two videos a minute


def test_a_tier_keeps_up_with_arrivals_below_its_utilisation_ceiling() -> None:
    standard = scaling.TIERS["standard"]
    # 3 videos/s at 1.88 per worker, at most 80% busy: 3 / (1.88 * 0.8) = 1.99 -> 2 workers.
    assert scaling.workers_needed(standard, arrival_rate=3.0, queue_depth=0, service_rate=WAN_SHAPES_CPU) == 2
    assert scaling.workers_needed(standard, arrival_rate=3.1, queue_depth=0, service_rate=WAN_SHAPES_CPU) == 3


def test_a_backlog_is_cleared_within_the_tiers_target_and_a_slow_video_still_gets_a_worker_each() -> None:
    interactive, batch = scaling.TIERS["interactive"], scaling.TIERS["batch"]
    # A 1.3B video takes 30 s, more than the 10 s target: each queued interactive request needs a worker.
    assert scaling.workers_needed(interactive, arrival_rate=0, queue_depth=7, service_rate=GPU_1_3B) == 7
    # 20,000 overnight lines in 8 hours at 2 a minute per worker: 20,000 / 960 = 20.8 -> 21.
    assert scaling.workers_needed(batch, arrival_rate=0, queue_depth=20_000, service_rate=GPU_1_3B) == 21


def test_bounds_hold_batch_scales_to_zero_and_a_stuck_queue_gets_more() -> None:
    batch, interactive = scaling.TIERS["batch"], scaling.TIERS["interactive"]
    assert scaling.workers_needed(batch, arrival_rate=0, queue_depth=0, service_rate=GPU_1_3B) == 0
    assert scaling.workers_needed(interactive, arrival_rate=0, queue_depth=0, service_rate=GPU_1_3B) == 1
    assert scaling.workers_needed(batch, arrival_rate=0, queue_depth=10**7, service_rate=GPU_1_3B) == batch.max_workers
    assert scaling.workers_needed(interactive, arrival_rate=0, queue_depth=1, service_rate=WAN_SHAPES_CPU,
                                  oldest_wait_s=35.0) == 4  # waited 3.5 targets: the tier is stuck


def test_keda_triggers_say_the_same_arithmetic() -> None:
    triggers = scaling.keda_triggers(scaling.TIERS["standard"], GPU_1_3B)
    assert triggers["arrivals"]["threshold"] == "0.0267"  # 2/60 * 0.8
    assert triggers["backlog"]["threshold"] == "4"  # 2/60 * 120 s
    assert triggers["oldest_wait"]["threshold"] == "120"
    assert 'tier="standard"' in triggers["backlog"]["query"]


def test_cost_per_video_and_the_volume_above_which_framebus_beats_a_hosted_api() -> None:
    # An L40S-class GPU at 1.20/h, two videos a minute, 80% busy: 1.20 / (3600 * 2/60 * 0.8) = 0.0125.
    assert scaling.cost_per_video(1.20, GPU_1_3B, 0.8) == pytest.approx(0.0125)
    # Two always-on workers (interactive and standard) cost 2 * 1.20 * 730 = 1,752 a month; at 0.10 a video
    # from an API, framebus is cheaper above 17,520 videos a month (they can serve 140,160 of them).
    volume = scaling.break_even_videos_per_month(gpu_price_per_hour=1.20, api_price_per_video=0.10,
                                                 service_rate=GPU_1_3B, utilisation=0.8, always_on_workers=2)
    assert volume == pytest.approx(17_520)
    assert scaling.break_even_videos_per_month(gpu_price_per_hour=1.20, api_price_per_video=0.01,
                                               service_rate=GPU_1_3B, utilisation=0.8, always_on_workers=2) is None


def _entry(request_id: str, tier: str, enqueued_at: float, job_id: str | None = None) -> bytes:
    request = GenerationRequest(request_id=request_id, tenant_id="acme", prompt="a red circle", tier=tier)
    return BacklogEntry(request=request, tokens=1.0, shape=Shape.of(request), enqueued_at=enqueued_at, start_tag=0.0,
                        deadline=0.0, seq=1, job_id=job_id).model_dump_json().encode()


def test_loads_come_from_the_backlog_and_the_windows_results() -> None:
    now = 10_000.0
    backlog = [_entry("a", "interactive", now - 4), _entry("b", "interactive", now - 9), _entry("c", "batch", now - 600),
               _entry("d", "interactive", now - 50, job_id="job-1")]  # dispatched: not queued
    results = [("interactive", 0.5), ("interactive", 0.5), ("standard", 0.6), ("batch", None)]  # None: cache hit
    loads = loads_from(backlog, results, window_s=60.0, now=now)
    assert loads["interactive"] == scaling.TierLoad(arrival_rate=2 / 60, queue_depth=2, oldest_wait_s=9.0)
    assert loads["batch"] == scaling.TierLoad(arrival_rate=1 / 60, queue_depth=1, oldest_wait_s=600.0)
    assert loads["standard"].queue_depth == 0
    assert service_rate_from(results) == pytest.approx(3 / 1.6)
    assert service_rate_from([("batch", None)]) is None


def test_framebus_scale_advise_reads_the_stack_and_prints_workers_and_costs(provisioned_settings) -> None:
    """The command end to end on real topics: a backlog as the scheduler writes it, results as workers do."""
    import json

    from framebus.client import FramebusClient
    from framebus.services.scheduler.backlog import BACKLOG_TOPIC
    from tests.services.cli.test_cli import _env_for, framebus
    from tests.services.metering.test_core import completed

    client = FramebusClient(settings=provisioned_settings, source="/tests")
    try:
        producer = client.kafka._producer
        import time as clock

        now = clock.time()
        for n in range(6):  # six interactive requests queued, the oldest for 40 s
            producer.send(provisioned_settings.topic(BACKLOG_TOPIC), key=f"acme/q-{n}".encode(),
                          value=_entry(f"q-{n}", "interactive", now - 40 + n))
        for n in range(30):  # thirty standard requests done in the window, 0.5 GPU seconds each
            request = GenerationRequest(request_id=f"d-{n}", tenant_id="acme", prompt="a red circle", tier="standard",
                                        seed=n)
            client.publish(completed(request, gpu_seconds=0.5), "framebus.results")
        producer.flush(10)
    finally:
        client.close()
    done = framebus("scale", "advise", "--window-s", "600", "--gpu-price", "1.2", "--api-price", "0.05", "--json",
                    env=_env_for(provisioned_settings))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["service_rate"] == pytest.approx(2.0) and report["service_rate_measured"]
    tiers = {row["tier"]: row for row in report["tiers"]}
    assert tiers["interactive"]["queued"] == 6 and tiers["interactive"]["oldest_wait_s"] >= 40
    # 2 videos/s: one worker clears 20 in the 10 s target, but the oldest has waited 4 targets: the tier is stuck.
    assert tiers["interactive"]["workers"] == math.ceil(tiers["interactive"]["oldest_wait_s"] / 10) >= 4
    assert tiers["standard"]["arrivals_per_min"] == pytest.approx(3.0) and tiers["batch"]["workers"] == 0
    assert report["cost_per_video_full"] == pytest.approx(1.2 / 7200)
    assert report["break_even_videos_per_month"] == pytest.approx(2 * 1.2 * 730 / 0.05)


def test_every_keda_query_names_a_metric_the_scheduler_exports() -> None:
    import re

    from framebus.services.common import metrics

    metrics.configure_metrics("scaling-test", "off")
    forget = [metrics.observe("framebus.queue.oldest_wait", lambda: [(12.5, {"tier": "batch"})]),
              metrics.observe("framebus.queue.depth", lambda: [(3.0, {"tier": "batch"})])]
    try:
        metrics.admissions.add(1, {"tier": "batch", "decision": "queued"})
        exported = {line.split("{")[0] for line in metrics.prometheus_text()[0].decode().splitlines()
                    if line and not line.startswith("#")}
    finally:
        for undo in forget:
            undo()
    for trigger in scaling.keda_triggers(scaling.TIERS["batch"]).values():
        named = re.search(r"(framebus_[a-z_]+)\{", trigger["query"]).group(1)
        assert named in exported, (named, sorted(exported))
