"""``framebus scale advise``: how many workers each tier needs now, and what a video costs.

Reads what the scheduler and workers already publish: the scheduler's backlog
(framebus.scheduler.backlog: queued requests, their tier and since when) and the results of
the last window (framebus.results: how many requests each tier ended, and each completed
request's share of its batch's GPU time, so videos per busy worker-second). The arithmetic
is ``services/common/scaling.py``, the one the KEDA ScaledObjects use.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.common import scaling
from framebus.services.common.settings import Settings

app = typer.Typer(help="Workers per tier for the load now, and the cost per video.", no_args_is_help=True)


def loads_from(backlog: Iterable[bytes], results: Iterable[tuple[str, float | None]], *, window_s: float,
               now: float) -> dict[str, scaling.TierLoad]:
    """Tier loads from backlog values (BacklogEntry JSON) and (tier, gpu seconds or None) per ended request."""
    from framebus.services.scheduler.backlog import BacklogEntry

    depth: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    for value in backlog:
        entry = BacklogEntry.decode(value)
        if entry.job_id is not None:
            continue  # dispatched: a worker has it
        tier = entry.request.tier.value
        depth[tier] += 1
        oldest[tier] = min(oldest.get(tier, now), entry.enqueued_at)
    ended = Counter(tier for tier, _ in results)
    return {tier: scaling.TierLoad(arrival_rate=ended[tier] / window_s, queue_depth=depth[tier],
                                   oldest_wait_s=max(0.0, now - oldest[tier]) if tier in oldest else 0.0)
            for tier in scaling.TIERS}


def service_rate_from(results: Iterable[tuple[str, float | None]]) -> float | None:
    """Videos per busy worker-second: completed requests over the GPU seconds they took (each
    request carries its share of its batch's time); None without any GPU work in the window."""
    busy = [seconds for _, seconds in results if seconds]
    return len(busy) / sum(busy) if busy else None


def _read(settings: Settings, window_s: float, now: float) -> tuple[list[bytes], list[tuple[str, float | None]]]:
    from framebus.kafka import read_all, read_since
    from framebus.schemas.codec import decode_event
    from framebus.schemas.events import GenerationCompleted
    from framebus.services.scheduler.backlog import BACKLOG_TOPIC

    bootstrap = settings.bootstrap_servers
    backlog = [record.value for record in read_all(bootstrap, settings.topic(BACKLOG_TOPIC)).values() if record.value]
    results = []
    for record in read_since(bootstrap, settings.topic("framebus.results"), now - window_s):
        event = decode_event(record.headers, record.value).event
        seconds = None
        if isinstance(event, GenerationCompleted) and not event.usage.result_cache_hit:
            seconds = event.usage.gpu_seconds
        results.append((event.tier.value, seconds))
    return backlog, results


@app.command("advise")
def advise(
    window_s: Annotated[float, typer.Option(help="Seconds of results to measure arrivals and speed over.")] = 900.0,
    service_rate: Annotated[float | None, typer.Option(
        help="Videos per busy worker-second, instead of measuring it from the window's results.")] = None,
    gpu_price: Annotated[float | None, typer.Option(help="Price of a GPU worker-hour; default: the cost model's for "
                                                         "FRAMEBUS_WORKER_MACHINE or rtx-pro-6000.")] = None,
    api_price: Annotated[float | None, typer.Option(help="A hosted API's price per video, to compare with.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Workers each tier needs for the load now (and its latency target), the cost per video at that
    utilisation, and, given --api-price, the monthly volume above which framebus costs less."""
    settings = Settings()
    now = time.time()
    with errors_exit():
        backlog, results = _read(settings, window_s, now)
    measured = service_rate_from(results)
    rate = service_rate or measured
    if rate is None:
        raise typer.BadParameter("no completed request in the window to measure a worker's speed from: give "
                                 "--service-rate (videos per busy worker-second) or a longer --window-s",
                                 param_hint="--service-rate")
    from framebus.services.metering.report import CostModel

    price = gpu_price if gpu_price is not None else float(
        CostModel.from_settings(settings).hourly(settings.worker_machine or "rtx-pro-6000"))
    rows = scaling.advise(loads_from(backlog, results, window_s=window_s, now=now), rate)
    workers = sum(row.workers for row in rows)
    arrivals = sum(row.load.arrival_rate for row in rows)
    utilisation = min(1.0, arrivals / (rate * workers)) if workers else 0.0
    report = {
        "service_rate": rate, "service_rate_measured": measured is not None and service_rate is None,
        "tiers": [{"tier": r.tier, "arrivals_per_min": r.load.arrival_rate * 60, "queued": r.load.queue_depth,
                   "oldest_wait_s": r.load.oldest_wait_s, "latency_target_s": scaling.TIERS[r.tier].latency_target_s,
                   "workers": r.workers, "utilisation": r.utilisation} for r in rows],
        "workers": workers, "utilisation": utilisation, "gpu_price_per_hour": price,
        "cost_per_video": scaling.cost_per_video(price, rate, utilisation) if utilisation > 0 else None,
        "cost_per_video_full": scaling.cost_per_video(price, rate, 1.0),
    }
    if api_price is not None:
        always_on = sum(t.min_workers for t in scaling.TIERS.values())
        report["api_price_per_video"] = api_price
        report["break_even_videos_per_month"] = scaling.break_even_videos_per_month(
            gpu_price_per_hour=price, api_price_per_video=api_price, service_rate=rate,
            utilisation=scaling.TIERS["standard"].utilisation, always_on_workers=always_on)
    if as_json:
        emit_json(report)
        return
    _print(report, settings.currency)


def _print(report: dict, currency: str) -> None:
    table = Table("tier", "arrivals/min", "queued", "oldest wait", "target wait", "workers", "busy",
                  title=f"workers per tier at {report['service_rate'] * 3600:,.0f} videos per worker-hour "
                        f"({'measured' if report['service_rate_measured'] else 'given'})", title_justify="left")
    for row in report["tiers"]:
        table.add_row(row["tier"], f"{row['arrivals_per_min']:.2f}", str(row["queued"]), f"{row['oldest_wait_s']:.0f} s",
                      f"{row['latency_target_s']:.0f} s", str(row["workers"]), f"{row['utilisation']:.0%}")
    console.print(table)
    console.print(f"{report['workers']} workers at {report['gpu_price_per_hour']:.2f} {currency}/h, "
                  f"{report['utilisation']:.0%} busy: "
                  + (f"{report['cost_per_video']:.4f} {currency} per video" if report["cost_per_video"] is not None
                     else "no videos to cost")
                  + f" ({report['cost_per_video_full']:.4f} when always busy)")
    if "api_price_per_video" in report:
        volume = report["break_even_videos_per_month"]
        console.print(f"against {report['api_price_per_video']:.4f} {currency} per video from a hosted API: " + (
            f"framebus costs less above {volume:,.0f} videos a month" if volume is not None
            else "framebus never costs less at these prices"))
