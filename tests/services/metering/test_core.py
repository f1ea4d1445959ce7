"""Metering decisions: exactly one settlement per worker result, never both, the invariant holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from framebus.schemas.events import (
    ErrorInfo,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    GenerationRequest,
    LedgerCharged,
    LedgerCredited,
    LedgerReleased,
    Output,
    Timings,
    Usage,
)
from framebus.schemas.state import ErrorCode, Tier
from framebus.services.common.settings import Settings
from framebus.services.metering.core import WORKER_SOURCE, Metering
from framebus.services.metering.report import CostModel, PriceBook, UsageReport
from framebus.services.scheduler.core import release, reservation

SCHEDULER = "/framebus/scheduler"


def request(number: int, tenant: str = "acme", tier: Tier = Tier.STANDARD, **fields) -> GenerationRequest:
    return GenerationRequest(request_id=f"r-{number}", tenant_id=tenant, tier=tier, prompt="a red fox",
                             model="wan-tiny", height=64, num_frames=5, num_inference_steps=4, seed=number,
                             **{"width": 64, **fields})


def common(req: GenerationRequest) -> dict:
    return {"request_id": req.request_id, "tenant_id": req.tenant_id, "tier": req.tier, "model": req.model,
            "timings": Timings()}


def completed(req: GenerationRequest, gpu_seconds: float = 2.0, machine: str = "rtx-pro-6000") -> GenerationCompleted:
    output = Output(bucket="b", key=f"{req.tenant_id}/{req.request_id}.mp4", url="http://x", bytes=10,
                    url_expires_at=datetime(2026, 11, 23, tzinfo=UTC), sha256="0" * 64, duration_s=0.3125,
                    codec="libx264", width=64, height=64, num_frames=5, fps=16)
    return GenerationCompleted(**common(req), output=output, seed=req.seed,
                               usage=Usage(tokens=req.quote(), gpu_seconds=gpu_seconds, machine=machine))


def failed(req: GenerationRequest) -> GenerationFailed:
    return GenerationFailed(**common(req), error=ErrorInfo(code=ErrorCode.ENCODE_FAILED, message="ffmpeg"),
                            usage=Usage(tokens=req.quote(), gpu_seconds=1.0, machine="cpu"))


def cancelled(req: GenerationRequest) -> GenerationCancelled:
    return GenerationCancelled(**common(req), usage=Usage(tokens=req.quote()))


def test_a_completed_request_is_charged_its_quote_and_recorded_once():
    meter, req = Metering(), request(1)
    meter.ledger(reservation(req, req.quote()))
    first = meter.result(completed(req), WORKER_SOURCE)
    [charge] = first.ledger
    assert isinstance(charge, LedgerCharged) and charge.tokens == req.quote() and charge.entry_id == "charge:acme/r-1"
    assert (charge.tier, charge.gpu_seconds, charge.video_seconds, charge.machine) == (Tier.STANDARD, 2.0, 0.3125,
                                                                                      "rtx-pro-6000")
    [usage] = first.usage
    assert (usage.tenant_id, usage.tokens, usage.video_seconds, usage.num_frames) == ("acme", req.quote(), 0.3125, 5)
    again = meter.result(completed(req), WORKER_SOURCE)  # a redelivery, or a dead worker's late result
    assert again.ledger == [] and again.usage == [] and again.skipped == "already settled"
    balance = meter.balances.of("acme")
    assert balance.reserved == 0 and balance.charged == Decimal(repr(req.quote()))


def test_failed_and_cancelled_release_the_reserved_tokens_and_never_charge():
    meter = Metering()
    for number, result in ((1, failed), (2, cancelled)):
        req = request(number)
        meter.ledger(reservation(req, req.quote()))
        [entry] = meter.result(result(req), WORKER_SOURCE).ledger
        assert isinstance(entry, LedgerReleased) and entry.tokens == req.quote()
        assert entry.outcome == ("failed" if number == 1 else "cancelled")
        assert meter.result(completed(req), WORKER_SOURCE).ledger == [], "released, so a later completion is not billed"
    assert meter.balances.of("acme").charged == 0 and meter.balances.of("acme").reserved == 0


def test_what_the_scheduler_ended_is_left_to_the_scheduler():
    meter, req = Metering(), request(1)
    meter.ledger(reservation(req, req.quote()))
    meter.ledger(release(req, req.quote(), "expired", "expired"))
    out = meter.result(failed(req), SCHEDULER)
    assert out.ledger == [] and "scheduler" in out.skipped


def test_a_result_read_before_its_reservation_still_settles_it():
    meter, req = Metering(), request(1)
    meter.result(completed(req), WORKER_SOURCE)
    meter.ledger(reservation(req, req.quote()))  # the reservation arrives later on another partition read
    assert meter.balances.of("acme").reserved == 0


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_reservation_invariant_over_a_randomized_run(rng: random.Random):
    """credits + credit limit >= reserved + charged at all times; reserved = 0 once everything ended."""
    meter, credit_limit = Metering(), 50.0
    meter.ledger(LedgerCredited(tenant_id="acme", entry_id="credit", tokens=200))
    open_requests, number = [], 0

    def invariant() -> None:
        held = meter.balances.of("acme")
        assert held.credited + Decimal(repr(credit_limit)) >= held.reserved + held.charged

    for _ in range(rng.randint(10, 80)):
        if open_requests and rng.random() < 0.5:
            req = open_requests.pop(rng.randrange(len(open_requests)))
            outcome = rng.choice([completed, failed, cancelled])
            for _ in range(rng.choice([1, 1, 2])):  # sometimes redelivered
                for entry in meter.result(outcome(req), WORKER_SOURCE).ledger:
                    meter.ledger(entry)  # the follower reads our own entry back: counted once
        else:
            number += 1
            req = request(number, width=rng.choice([64, 128]))
            if meter.balances.can_reserve("acme", req.quote(), credit_limit):  # what admission checks
                meter.ledger(reservation(req, req.quote()))
                open_requests.append(req)
        invariant()
    for req in open_requests:
        meter.result(rng.choice([completed, failed, cancelled])(req), WORKER_SOURCE)
        invariant()
    assert meter.balances.of("acme").reserved == 0


def test_usage_report_prices_tokens_per_tier_and_costs_gpu_seconds_per_machine():
    settings = Settings(price_per_1k_tokens=0.40, tier_price_factors={"interactive": 1.0, "standard": 0.8,
                                                                      "batch": 0.5},
                        gpu_hour_costs={"rtx-pro-6000": 2.50, "cpu": 0.10})
    report = UsageReport(PriceBook.from_settings(settings), CostModel.from_settings(settings), group_by="tier")
    meter = Metering()
    entries = []
    for number, tier in enumerate([Tier.INTERACTIVE, Tier.BATCH, Tier.BATCH]):
        req = request(number, tier=tier)
        entries += meter.result(completed(req, gpu_seconds=36.0), WORKER_SOURCE).ledger
    entries += meter.result(failed(request(9)), WORKER_SOURCE).ledger
    report.fold(entries + entries)  # redelivered: counted once
    rows = dict(report.rows())
    quote = Decimal(repr(request(0).quote()))
    assert rows["interactive"].revenue == quote / 1000 * Decimal("0.4")
    assert rows["batch"].revenue == 2 * quote / 1000 * Decimal("0.4") * Decimal("0.5")
    assert rows["batch"].gpu_cost == Decimal(72) / 3600 * Decimal("2.5")  # two videos of 36 GPU s at $2.50/h
    total = report.total()
    assert (total.completed, total.failed, total.requests) == (3, 1, 4)
    assert total.gpu_cost == Decimal(108) / 3600 * Decimal("2.5") + Decimal(1) / 3600 * Decimal("0.1")
    assert total.cost_per_video == total.gpu_cost / 3


def test_the_readme_bill_is_what_the_report_computes():
    from pathlib import Path

    settings = Settings(price_per_1k_tokens=5.00, gpu_hour_costs={"rtx-pro-6000": 2.50})
    report = UsageReport(PriceBook.from_settings(settings), CostModel.from_settings(settings))
    prompt = "x" * 100
    for number, (tier, gpu) in enumerate([("interactive", 95.0), ("batch", 95.0), ("batch", 0.0)]):
        req = GenerationRequest(request_id=f"r{number}", tenant_id="acme", tier=tier, prompt=prompt, width=832,
                                height=480, num_frames=81, num_inference_steps=50)
        assert req.quote() == 38.086
        report.add(LedgerCharged(tenant_id="acme", entry_id=f"c{number}", request_id=req.request_id,
                                 tokens=req.quote(), tier=tier, gpu_seconds=gpu, machine="rtx-pro-6000"))
    total = report.total().as_dict("USD")
    assert (total["tokens"], total["revenue"], total["gpu_cost"], total["margin"], total["cost_per_video"]) == \
        (114.258, "0.3809", "0.1319", "0.2489", "0.0440")
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    for figure in ("$0.3809", "$0.1319", "$0.2489", "$0.0440", "114.258"):
        assert figure in readme


def test_a_detected_gpu_name_finds_its_price_by_the_key_it_contains() -> None:
    from decimal import Decimal

    from framebus.services.metering.report import CostModel

    model = CostModel({"h100": Decimal("3.00"), "rtx-pro-6000": Decimal("2.50"), "default": Decimal("1.00")})
    assert model.hourly("nvidia-h100-80gb-hbm3") == Decimal("3.00")
    assert model.hourly("NVIDIA RTX-PRO-6000 Blackwell") == Decimal("2.50")
    assert model.hourly("rtx-pro-6000") == Decimal("2.50")
    assert model.hourly("amd-mi300x") == Decimal("1.00") and model.hourly(None) == Decimal("1.00")
    assert model.cost(Decimal(7200), "nvidia-h100-80gb-hbm3") == Decimal("6.00")
