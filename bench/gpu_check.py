"""The GPU check: the real Wan 2.1 1.3B architecture (random weights) through framebus's engine on
one accelerator, in one prepared run of under 10 minutes on an H100/H200-class GPU.

    python -m bench.gpu_check [--reduced] [--out DIR]      # bench/gpu_check.sh runs it on a GPU machine

For each configuration (bf16 and float8, with and without First Block Cache, batch 1 and 4, at
832x480x81): seconds per denoising step (wall clock and CUDA events), decode time, peak memory,
and speed-ups over bf16 at batch 1. Then the points of the GPU path that only a device shows:

- embeddings: device memory after 50 new prompts stays where the prompt cache's capacity puts it;
- out of memory: a batch of 4 under a memory cap it does not fit splits and every request renders;
- float8: the transformer's block weights really are float8 afterwards;
- TaylorSeer: runs in lite mode at this size, and its peak memory beside plain bf16's;
- the encoder: which H.264 encoder the worker would choose (h264_nvenc on a GPU) and its time.

``--reduced`` runs the same code on the CPU at 64x64x5 and two steps (int8 for float8, a
simulated memory limit), so it is tested where no GPU is (tests/test_gpu_check.py). Prints a
table and writes gpu-check.json to --out (default bench/results).
"""

from __future__ import annotations

import gc
import json
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from framebus.schemas.events import GenerationRequest
from framebus.schemas.state import ModelName
from framebus.services.common.machine import machine
from framebus.services.generator.architectures import ARCHITECTURES, random_pipeline
from framebus.services.generator.batching import render_in_halves
from framebus.services.generator.diffusion import DiffusionEngine
from framebus.services.generator.encode import EncodeConfig, choose_encoder, encode_video
from framebus.services.generator.models import REGISTRY
from framebus.services.generator.optimize import EngineOptions

MODEL = ModelName.WAN21_T2V_1_3B
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Size:
    width: int
    height: int
    frames: int
    steps: int


FULL, REDUCED = Size(832, 480, 81, 4), Size(64, 64, 5, 2)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _peak_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _requests(size: Size, count: int, prompt: str = "a red fox running through snow") -> list[GenerationRequest]:
    return [GenerationRequest(request_id=f"g-{n}", tenant_id="gpu-check", prompt=prompt, model=MODEL,
                              width=size.width, height=size.height, num_frames=size.frames,
                              num_inference_steps=size.steps, seed=n) for n in range(count)]


def _render(engine: DiffusionEngine, requests: list[GenerationRequest], device: str) -> tuple[list, float, float]:
    """The engine's render, timed by the wall clock and (on a GPU) by CUDA events."""
    _reset_peak(device)
    events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if device == "cuda" else None
    if events:
        events[0].record()
    started = time.perf_counter()
    rendered = engine.render(requests, lambda _: False)
    if events:
        events[1].record()
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    return rendered, wall, (events[0].elapsed_time(events[1]) / 1000 if events else wall)


def run(reduced: bool, out: Path) -> dict:
    device = _device()
    size = REDUCED if reduced or device == "cpu" else FULL
    low_precision = "float8" if device == "cuda" else "int8"
    console = Console(width=max(Console().width, 150))
    console.print(f"gpu check on {machine()} ({device}), torch {torch.__version__}, "
                  f"{size.width}x{size.height}x{size.frames}, {size.steps} steps")
    started = time.perf_counter()
    pipeline = random_pipeline(ARCHITECTURES[MODEL], dtype=torch.bfloat16)
    spec = REGISTRY[MODEL]
    report: dict = {"machine": machine(), "device": device, "torch": torch.__version__,
                    "size": vars(size), "build_s": round(time.perf_counter() - started, 1), "rows": [], "checks": {}}

    def engine(**switches) -> DiffusionEngine:
        return DiffusionEngine(spec, pipeline, EngineOptions(device=device, precision="bf16", **switches).resolve(),
                               weights_id="random-1.3b")

    first_frames = None

    def measure(name: str, switches: dict, batch: int) -> None:
        nonlocal first_frames
        made = engine(**switches)
        rendered, wall, timed = _render(made, _requests(size, batch), device)
        if switches.get("cache", "none") != "none":
            pipeline.transformer.disable_cache()
        item = rendered[0]
        first_frames = first_frames if first_frames is not None else item.frames
        report["rows"].append({"config": name, "batch": batch, "s_per_step": round(item.denoise_s / size.steps, 4),
                               "decode_s": round(item.decode_s, 3), "wall_s": round(wall, 3),
                               "events_s": round(timed, 3), "videos_per_s": round(batch / wall, 4),
                               "steps_skipped": item.steps_skipped_by_cache, "peak_gib": round(_peak_gib(device), 2)})

    # Reduced: random weights change a lot between two steps, so the cache is told to skip whenever it
    # may (what is checked there is that skipping runs and is counted at this size).
    first_block = {"cache": "first-block", **({"cache_threshold": 1e6} if size is REDUCED else {})}
    for name, switches, batch in (("bf16", {}, 1), ("bf16", {}, 4), ("bf16 + first-block", first_block, 1)):
        measure(name, switches, batch)
    report["checks"].update(_path_checks(pipeline, spec, size, device, reduced or device == "cpu"))
    # Last: quantizing changes the shared transformer in place (the batch-4 row reuses it as it is).
    measure(f"bf16 + {low_precision}", {"quantize": low_precision}, 1)
    measure(f"bf16 + {low_precision}", {}, 4)
    report["checks"]["low_precision_weights"] = type(pipeline.transformer.blocks[0].attn1.to_q.weight).__name__
    baseline = report["rows"][0]
    for row in report["rows"]:
        row["speed_up_per_video"] = round(row["videos_per_s"] / baseline["videos_per_s"], 2)
    report["checks"]["encoder"] = _encode(first_frames)
    report["total_s"] = round(time.perf_counter() - started, 1)
    _print(report, console)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _path_checks(pipeline, spec, size: Size, device: str, simulated: bool) -> dict:
    """The GPU path's breakages, checked on the device (prompt memory, OOM split, TaylorSeer)."""
    checks: dict = {}
    # Embeddings: 50 new prompts through a cache of 8 must not grow device memory beyond those 8
    # (the text encoder's path alone: denoising them would add nothing to what is checked).
    made = DiffusionEngine(spec, pipeline, EngineOptions(device=device, precision="bf16", prompt_cache=8).resolve(),
                           weights_id="random-1.3b")

    def allocated() -> float:
        gc.collect()
        return torch.cuda.memory_allocated() / 2**20 if device == "cuda" else sum(
            t.untyped_storage().nbytes() for pair in made.prompts._entries.values() for t in pair if t is not None) / 2**20

    for n in range(8):
        made._embeddings(_requests(size, 1, prompt=f"prompt number {n}"), guided=True)
    filled = allocated()
    for n in range(8, 50):
        made._embeddings(_requests(size, 1, prompt=f"prompt number {n}"), guided=True)
    checks["embeddings_mib_after_8_and_50_prompts"] = [round(filled, 1), round(allocated(), 1)]
    checks["embeddings_flat"] = allocated() <= filled * 1.05 + 1
    # Out of memory: a batch of 4 under a cap only smaller batches fit in.
    requests = _requests(size, 4)
    if simulated:
        from framebus.services.generator.errors import EngineOutOfMemory

        real = made.render

        def capped(batch, cancelled, on_step=None):
            if len(batch) > 1:
                raise EngineOutOfMemory("simulated: more than one request does not fit")
            return real(batch, cancelled, on_step)
        items = render_in_halves(capped, requests, lambda _: False)
    else:
        _reset_peak(device)
        made.render(requests[:1], lambda _: False)
        one = torch.cuda.max_memory_allocated()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(0.95, one * 1.6 / total))
        try:
            items = render_in_halves(made.render, requests, lambda _: False)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
    checks["oom_split_rendered"] = sum(getattr(item, "frames", None) is not None for item in items)
    # TaylorSeer at this size: lite mode, and what it costs in memory.
    taylor = DiffusionEngine(spec, pipeline, EngineOptions(device=device, precision="bf16", cache="taylorseer").resolve(),
                             weights_id="random-1.3b")
    _reset_peak(device)
    # At least four steps: TaylorSeer computes the first two and extrapolates every second one after.
    [item] = taylor.render(_requests(Size(size.width, size.height, size.frames, max(size.steps, 4)), 1),
                           lambda _: False)
    pipeline.transformer.disable_cache()
    checks["taylorseer_peak_gib"] = round(_peak_gib(device), 2)
    checks["taylorseer_steps_skipped"] = item.steps_skipped_by_cache
    return checks


def _encode(frames) -> dict:
    choice = choose_encoder("auto")
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        encode_video(frames, 16, Path(scratch) / "check.mp4", EncodeConfig(codec=choice.codec))
        return {"codec": choice.codec, "reason": choice.reason, "seconds": round(time.perf_counter() - started, 3)}


def _print(report: dict, console: Console) -> None:
    table = Table("config", "batch", "s/step", "wall s", "CUDA events s", "decode s", "videos/s", "x bf16 b1", "skipped",
                  "peak GiB", title=f"1.3B (random weights) on {report['machine']} ({report['device']})",
                  title_justify="left")
    for row in report["rows"]:
        table.add_row(row["config"], str(row["batch"]), f"{row['s_per_step']:.3f}", f"{row['wall_s']:.2f}",
                      f"{row['events_s']:.2f}",
                      f"{row['decode_s']:.2f}", f"{row['videos_per_s']:.3f}", f"{row['speed_up_per_video']:.2f}",
                      str(row["steps_skipped"]), f"{row['peak_gib']:.1f}")
    console.print(table)
    for name, value in report["checks"].items():
        console.print(f"  {name}: {value}")
    console.print(f"built in {report['build_s']} s, all in {report['total_s']} s")


def main(reduced: bool = typer.Option(False, help="CPU-sized: 64x64x5, two steps, int8, a simulated memory cap."),
         out: Path = typer.Option(RESULTS, help="Where gpu-check.json goes.")) -> None:
    run(reduced, out)


if __name__ == "__main__":
    typer.run(main)
