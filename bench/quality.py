"""The engine benchmark on wan-shapes: every speed figure beside a quality check.

Every configuration renders the same held-out prompts with the same seeds (wan-shapes'
defaults: 64x64, 17 frames, 20 steps, guidance 5). For each: videos per hour, speed-up over
plain diffusers in fp32 and in bf16, prompt adherence (the detector reads colour, shape,
direction and background back from each clip), PSNR against the plain fp32 output for the
same seed, and the transformer calls a cache skipped.

    python -m bench.quality [--cases 100] [--quick] [--no-sweep]

Writes bench/results/quality.json, a PNG of speed-up against PSNR and adherence over a sweep
of cache thresholds (quality-sweep.png), and a grid of first, middle and last frames of a few
prompts per configuration (quality-samples.png).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from framebus.schemas.state import ModelName
from framebus.services.common.machine import machine
from framebus.services.common.settings import Settings
from framebus.services.generator.diffusion import DiffusionEngine, engine_options
from framebus.services.generator.models import REGISTRY, checkpoint_dir, load_pipeline
from framebus.services.generator.optimize import BlockCounter, EngineOptions
from framebus.services.shapes.quality import Case, held_out_cases, judge, pipeline_render

RESULTS = Path(__file__).parent / "results"
SPEC = REGISTRY[ModelName.WAN_SHAPES]
STEPS = 20
console = Console()


@dataclass
class Run:
    seconds: float
    clips: list[np.ndarray]
    calls: int  # denoising steps (one step is two transformer calls under guidance), summed over batches
    skipped: int  # steps a cache answered without running the transformer's blocks


Runner = Callable[[list[Case]], Run]


def plain(dtype: torch.dtype, cache: str = "none", threshold: float | None = None) -> Runner:
    """diffusers' WanPipeline as a user would call it: one request at a time, optionally one cache."""
    def run(cases: list[Case]) -> Run:
        pipe = load_pipeline(SPEC, None, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if cache == "first-block":
            from diffusers.hooks import FirstBlockCacheConfig

            pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        elif cache == "cache-dit":
            import cache_dit

            cache_dit.enable_cache(pipe)  # its default DBCache
        elif cache == "cache-dit-F1B0":
            import cache_dit
            from cache_dit import DBCacheConfig

            cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0,
                                                                    max_warmup_steps=4,
                                                                    residual_diff_threshold=threshold or 0.08))
        counter = BlockCounter(pipe.transformer)
        render = pipeline_render(pipe, steps=STEPS, batch=1)
        render(cases[:1])  # warm
        counter.reset()
        started = time.perf_counter()
        clips = render(cases)
        seconds = time.perf_counter() - started
        calls, computed = counter.reset()
        return Run(seconds, clips, calls // 2, (calls - computed) // 2)  # guidance: two calls a step
    return run


def engine(options: EngineOptions, batch: int = 4) -> Runner:
    def run(cases: list[Case]) -> Run:
        from framebus.services.shapes.quality import engine_render

        made = DiffusionEngine.load(SPEC, options)
        made.warm()
        tally: list[tuple[int, int]] = []
        render = engine_render(made, steps=STEPS, batch=batch, tally=tally)
        started = time.perf_counter()
        clips = render(cases)
        seconds = time.perf_counter() - started
        # Per batch: denoising steps run and skipped (both passes of guidance count as one step).
        return Run(seconds, clips, sum(run for run, _ in tally), sum(skipped for _, skipped in tally))
    return run


def default_options() -> EngineOptions:
    """The engine as a worker starts it with no FRAMEBUS_ENGINE_* settings."""
    return engine_options(Settings())


ALL = EngineOptions(precision="bf16", cache="first-block", prompt_cache=1024)


def configurations() -> list[tuple[str, Runner]]:
    threshold = SPEC.cache_threshold
    fp32 = EngineOptions(prompt_cache=1024)
    return [
        ("plain diffusers, fp32", plain(torch.float32)),
        ("plain diffusers, bf16", plain(torch.bfloat16)),
        (f"plain + diffusers First Block Cache @{threshold:g}", plain(torch.float32, "first-block", threshold)),
        ("plain + cache-dit, default DBCache", plain(torch.float32, "cache-dit")),
        ("plain + cache-dit DBCache F1B0 @0.08", plain(torch.float32, "cache-dit-F1B0", 0.08)),
        (f"framebus engine, default ({default_options().describe()})", engine(default_options())),
        ("framebus engine, all: bf16, first-block, batching, prompt cache", engine(ALL)),
        ("framebus engine, all + int8", engine(replace(ALL, quantize="int8"))),
        ("framebus engine, bf16 + magcache", engine(replace(ALL, cache="magcache"))),
        ("engine switch alone: bf16", engine(replace(fp32, precision="bf16"))),
        ("engine switch alone: int8", engine(replace(fp32, quantize="int8"))),
        (f"engine switch alone: first-block @{threshold:g}", engine(replace(fp32, cache="first-block"))),
        ("engine switch alone: magcache", engine(replace(fp32, cache="magcache"))),
        ("engine switch alone: taylorseer", engine(replace(fp32, cache="taylorseer"))),
    ]


def sweep_configurations() -> list[tuple[str, float, Runner]]:
    out = []
    for threshold in (0.05, 0.2, 0.4):
        out.append(("first-block", threshold, engine(replace(ALL, cache_threshold=threshold))))
    for threshold in (0.12, 0.25, 0.5):
        out.append(("magcache", threshold, engine(replace(ALL, cache="magcache", cache_threshold=threshold))))
    return out


def measure(cases: list[Case], runner: Runner, reference: list[np.ndarray] | None) -> tuple[dict, Run]:
    run = runner(cases)
    report = judge(cases, run.clips, reference if reference is not None else run.clips)
    summary = report.summary()
    return {"seconds": round(run.seconds, 2), "videos_per_hour": round(len(cases) * 3600 / run.seconds, 1),
            "adherence": summary["adherence"], "per_attribute": summary["per_attribute"],
            "psnr_db": summary["psnr_db"], "min_psnr_db": summary["min_psnr_db"],
            "steps": run.calls, "steps_skipped": run.skipped}, run


def main(cases: int = typer.Option(100, help="Held-out prompts (each with its own seed)."),
         quick: bool = typer.Option(False, help="16 cases and no sweep: a smoke run."),
         sweep: bool = typer.Option(True, help="Also sweep cache thresholds for the plot.")) -> None:
    if checkpoint_dir(SPEC, None) is None:
        raise typer.BadParameter("models/wan-shapes is missing: train it with `framebus model train`")
    count = 16 if quick else cases
    held_out = held_out_cases(count)
    rows, samples = [], {}
    configs = configurations()
    sweeps = sweep_configurations() if sweep and not quick else []
    reference = None
    with Progress(console=console) as progress:
        task = progress.add_task("configurations", total=len(configs) + len(sweeps))
        for name, runner in configs:
            progress.update(task, description=name[:60])
            try:
                row, run = measure(held_out, runner, reference)
            except Exception as exc:  # noqa: BLE001 - one failing configuration is a finding, not the end of the run
                rows.append({"config": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
                progress.advance(task)
                continue
            if reference is None:
                reference = run.clips  # plain fp32: the quality reference for everything after it
            rows.append({"config": name, **row})
            samples[name] = [run.clips[i] for i in range(min(4, count))]
            progress.advance(task)
        swept = []
        half = max(1, count // 2)  # the sweep reads trends, not the gate: half the cases
        for kind, threshold, runner in sweeps:
            progress.update(task, description=f"sweep {kind} @{threshold:g}")
            row, _ = measure(held_out[:half], runner, reference[:half] if reference else None)
            swept.append({"cache": kind, "threshold": threshold, **row})
            progress.advance(task)
    base = rows[0]["seconds"]
    bf16 = next((r["seconds"] for r in rows if r["config"] == "plain diffusers, bf16" and "seconds" in r), None)
    for row in rows:
        if "seconds" in row:
            row["x_plain_fp32"] = round(base / row["seconds"], 2)
            row["x_plain_bf16"] = round(bf16 / row["seconds"], 2) if bf16 else None
    for row in swept:  # half the cases: compare with half the plain time
        row["x_plain_fp32"] = round(base * (count // 2) / count / row["seconds"], 2)
        row["x_plain_bf16"] = round(bf16 * (count // 2) / count / row["seconds"], 2) if bf16 else None
    result = {"machine": machine(), "torch": torch.__version__, "model": str(SPEC.name), "steps": STEPS,
              "cases": count, "rows": rows, "sweep": swept,
              "shape": {"width": 64, "height": 64, "num_frames": 17, "guidance_scale": 5.0}}
    RESULTS.mkdir(exist_ok=True)
    name = "quality-quick.json" if quick else "quality.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    console.print(table(result))
    if swept:
        plot_sweep(result, RESULTS / "quality-sweep.png")
    plot_samples(samples, held_out, RESULTS / ("quality-samples-quick.png" if quick else "quality-samples.png"))
    console.print(f"results in {RESULTS / name}")


def table(result: dict) -> Table:
    out = Table("configuration", "videos/h", "x fp32", "x bf16", "adherence", "PSNR dB (mean / min)", "steps skipped",
                title=f"wan-shapes 64x64x17, {result['steps']} steps, {result['cases']} held-out prompts, on "
                      f"{result['machine']}", title_justify="left")
    for row in result["rows"]:
        if "error" in row:
            out.add_row(row["config"], "failed", "", "", "", row["error"][:60], "")
            continue
        psnr = "reference" if row is result["rows"][0] else f"{row['psnr_db']:.1f} / {row['min_psnr_db']:.1f}"
        out.add_row(row["config"], f"{row['videos_per_hour']:,.0f}", f"{row['x_plain_fp32']:.2f}",
                    f"{row['x_plain_bf16']:.2f}" if row["x_plain_bf16"] else "-", f"{row['adherence']:.0%}", psnr,
                    f"{row['steps_skipped']}/{row['steps']}")
    return out


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in ("first-block", "magcache"):
        points = [row for row in result["sweep"] if row["cache"] == kind]
        speed = [row["x_plain_fp32"] for row in points]
        left.plot(speed, [row["psnr_db"] for row in points], "o-", label=kind)
        right.plot(speed, [100 * row["adherence"] for row in points], "o-", label=kind)
        for row in points:
            left.annotate(f"{row['threshold']:g}", (row["x_plain_fp32"], row["psnr_db"]), fontsize=7)
    left.axhline(30, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="speed-up over plain fp32", ylabel="PSNR vs plain fp32 (dB)", title="quality kept")
    plain_adherence = 100 * result["rows"][0]["adherence"]
    right.axhline(plain_adherence - 2, color="grey", linestyle="--", linewidth=1)
    right.set(xlabel="speed-up over plain fp32", ylabel="prompt adherence (%)", title="prompt adherence")
    left.legend()
    figure.suptitle(f"cache threshold sweep (bf16 engine), wan-shapes, {result['machine']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_samples(samples: dict[str, list[np.ndarray]], cases: list[Case], path: Path) -> None:
    from PIL import Image, ImageDraw

    names = list(samples)
    tile, label_width = 64, 330
    count = len(next(iter(samples.values()))) if samples else 0
    canvas = Image.new("RGB", (label_width + count * 3 * tile + count * 6, len(names) * (tile + 4) + 20), "white")
    draw = ImageDraw.Draw(canvas)
    for column in range(count):
        draw.text((label_width + column * (3 * tile + 6), 4), cases[column].prompt[:44], fill="black")
    for row, name in enumerate(names):
        y = 20 + row * (tile + 4)
        draw.text((4, y + tile // 2 - 6), name[:54], fill="black")
        for column, clip in enumerate(samples[name]):
            for k, frame in enumerate((0, len(clip) // 2, len(clip) - 1)):
                canvas.paste(Image.fromarray(clip[frame]), (label_width + column * (3 * tile + 6) + k * tile, y))
    canvas.save(path)


if __name__ == "__main__":
    typer.run(main)
