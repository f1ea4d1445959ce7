"""Generator benchmarks on this machine, wan-tiny, same model and inputs throughout.

1. speed: plain diffusers ``WanPipeline`` called once per request (fp32, no cache) against
   the framebus engine with each switch alone and all together, in one run; videos per hour,
   the ratio to the plain pipeline, and PSNR of every output against the plain pipeline's
   output for the same request (same seed).
2. roofline: achieved FLOP/s of the transformer (counted with torch.utils.flop_counter)
   over the measured matrix-product peak of this CPU in the same dtype.
3. media: encode speed (frames/s, libx264 and the encoder `auto` picks) and upload
   throughput (MB/s) to a local S3 server.
4. worker: a real worker on a private Kafka and S3 with a backlog of jobs: the share of
   wall time spent in the engine (pipelining), and resident memory after 10 and 100 jobs.

    python -m bench.engine [--quick] [--only speed|roofline|media|worker]

Writes bench/results/engine.json and prints tables. The workload repeats each prompt twice
(bulk files do), so the prompt cache has something to do, but never a whole request (the
result cache is measured by the worker tests, not here).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil
import torch
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from framebus.schemas.events import GenerationRequest
from framebus.schemas.state import ModelName
from framebus.services.common.machine import machine
from framebus.services.generator.diffusion import DiffusionEngine
from framebus.services.generator.models import REGISTRY, build_tiny_pipeline
from framebus.services.generator.optimize import EngineOptions
from framebus.services.shapes.detect import psnr  # the quality gate's: one definition of PSNR

RESULTS = Path(__file__).parent / "results" / "engine.json"
TINY = REGISTRY[ModelName.WAN_TINY]
console = Console()
PROMPTS = ["a red fox running through deep snow", "waves rolling onto a black sand beach",
           "a paper boat drifting down a rain gutter", "city lights at dusk, time lapse"]


@dataclass(frozen=True)
class Workload:
    width: int = 128
    height: int = 128
    num_frames: int = 17
    steps: int = 10
    requests: int = 8
    batch: int = 4

    def make(self) -> list[GenerationRequest]:
        return [GenerationRequest(request_id=f"b-{n}", tenant_id="bench", prompt=PROMPTS[(n // 2) % len(PROMPTS)],
                                  model="wan-tiny", width=self.width, height=self.height, num_frames=self.num_frames,
                                  num_inference_steps=self.steps, guidance_scale=5.0, seed=1000 + n)
                for n in range(self.requests)]


# --- 1. speed ----------------------------------------------------------------------------------
def plain_pipeline(requests: list[GenerationRequest]) -> tuple[float, list[np.ndarray]]:
    """The baseline: diffusers' WanPipeline as a user would call it, once per request, fp32."""
    pipe = build_tiny_pipeline(TINY.tiny, flow_shift=TINY.flow_shift)
    pipe.set_progress_bar_config(disable=True)
    run = lambda r: pipe(prompt=r.prompt, negative_prompt=r.negative_prompt, height=r.height, width=r.width,  # noqa: E731
                         num_frames=r.num_frames, num_inference_steps=r.num_inference_steps,
                         guidance_scale=r.guidance_scale, generator=torch.Generator().manual_seed(r.seed),
                         output_type="np", max_sequence_length=TINY.max_sequence_length).frames[0]
    with torch.inference_mode():
        run(requests[0])  # warm, like the engine's warm-up
        started = time.perf_counter()
        frames = [(np.clip(run(r), 0, 1) * 255 + 0.5).astype(np.uint8) for r in requests]
    return time.perf_counter() - started, frames


def engine_run(options: EngineOptions, requests: list[GenerationRequest], batch: int) -> tuple[float, list[np.ndarray]]:
    engine = DiffusionEngine.load(TINY, options)
    engine.warm_shape = type(engine.warm_shape)(width=requests[0].width, height=requests[0].height,
                                                num_frames=requests[0].num_frames, steps=2)
    engine.warm()
    engine.prompts = type(engine.prompts)(options.prompt_cache)  # the warm-up prompt must not count
    started = time.perf_counter()
    frames = []
    for index in range(0, len(requests), batch):
        frames += [item.frames for item in engine.render(requests[index:index + batch], lambda _: False)]
    return time.perf_counter() - started, frames


OFF = EngineOptions(batching=False, fast_vae_norm=False)  # the engine with every switch off
SWITCHES: list[tuple[str, EngineOptions]] = [
    ("engine, no switches", OFF),
    ("batching (4)", replace(OFF, batching=True)),
    ("bf16", replace(OFF, precision="bf16")),
    ("int8", replace(OFF, quantize="int8")),
    ("fast VAE norm", replace(OFF, fast_vae_norm=True)),
    ("first-block cache", replace(OFF, cache="first-block")),
    ("taylorseer cache", replace(OFF, cache="taylorseer")),
    ("prompt cache", replace(OFF, prompt_cache=64)),
    ("bf16 + batching", replace(OFF, precision="bf16", batching=True)),
    ("int8 + batching", replace(OFF, quantize="int8", batching=True)),
    ("all: bf16, batching, VAE norm, first-block, prompt cache",
     EngineOptions(precision="bf16", cache="first-block", prompt_cache=64)),
    ("all + int8", EngineOptions(precision="bf16", quantize="int8", cache="first-block", prompt_cache=64)),
    # compile and the cache hooks exclude each other; with random weights the cache skips nothing anyway
    ("all, compile instead of first-block", EngineOptions(precision="bf16", prompt_cache=64, compile=True)),
]


def speed(workload: Workload) -> dict:
    requests = workload.make()
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("engine configurations", total=len(SWITCHES) + 1)
        base_s, base_frames = plain_pipeline(requests)
        progress.advance(task)
        for name, options in SWITCHES:
            try:
                seconds, frames = engine_run(options, requests, workload.batch)
            except Exception as exc:  # noqa: BLE001 - one failing switch is a finding, not the end of the run
                rows.append({"config": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
                progress.advance(task)
                continue
            scores = [psnr(a, b) for a, b in zip(base_frames, frames, strict=True)]
            rows.append({"config": name, "seconds": seconds, "videos_per_hour": len(requests) * 3600 / seconds,
                         "ratio": base_s / seconds, "psnr_db_mean": statistics.fmean(min(s, 99.0) for s in scores),
                         "psnr_db_min": min(scores)})
            progress.advance(task)
    return {"workload": workload.__dict__, "baseline": {"config": "plain WanPipeline, per request, fp32",
                                                        "seconds": base_s,
                                                        "videos_per_hour": len(requests) * 3600 / base_s},
            "rows": rows}


def speed_table(result: dict) -> Table:
    w = result["workload"]
    table = Table("configuration", "videos/h", "x plain", "PSNR dB (mean / min)", title_justify="left",
                  title=f"engine speed: wan-tiny {w['width']}x{w['height']}x{w['num_frames']}, {w['steps']} steps, "
                        f"{w['requests']} requests")
    base = result["baseline"]
    table.add_row(base["config"], f"{base['videos_per_hour']:,.0f}", "1.00", "reference")
    for row in result["rows"]:
        if "error" in row:
            table.add_row(row["config"], "failed", "", row["error"])
            continue
        table.add_row(row["config"], f"{row['videos_per_hour']:,.0f}", f"{row['ratio']:.2f}",
                      f"{row['psnr_db_mean']:.1f} / {row['psnr_db_min']:.1f}")
    return table


# --- 2. roofline -------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size ** 3 / min(times)


def roofline(workload: Workload) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for precision in ("fp32", "bf16"):
        engine = DiffusionEngine.load(TINY, EngineOptions(precision=precision))
        transformer, dtype = engine.pipe.transformer, engine.options.dtype
        frames = (workload.num_frames - 1) // 4 + 1
        latents = torch.randn(workload.batch, 16, frames, workload.height // 8, workload.width // 8, dtype=dtype)
        context = torch.randn(workload.batch, TINY.max_sequence_length, TINY.tiny.text_dim, dtype=dtype)
        timestep = torch.full((workload.batch,), 500.0)
        forward = lambda: transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=context,  # noqa: E731
                                      return_dict=False)
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                forward()
            flops = counter.get_total_flops()
            times = []
            for _ in range(5):
                started = time.perf_counter()
                forward()
                times.append(time.perf_counter() - started)
        achieved = flops / statistics.median(times)
        peak = matmul_peak(dtype)
        rows.append({"dtype": precision, "gflop_per_forward": flops / 1e9, "achieved_gflops": achieved / 1e9,
                     "peak_gflops": peak / 1e9, "share_of_peak": achieved / peak})
    return {"batch": workload.batch, "rows": rows}


def roofline_table(result: dict) -> Table:
    table = Table("dtype", "GFLOP/forward", "achieved GFLOP/s", "matmul peak GFLOP/s", "share of peak",
                  title=f"transformer vs this CPU's matrix-product peak (batch {result['batch']})", title_justify="left")
    for row in result["rows"]:
        table.add_row(row["dtype"], f"{row['gflop_per_forward']:.1f}", f"{row['achieved_gflops']:.0f}",
                      f"{row['peak_gflops']:.0f}", f"{row['share_of_peak']:.0%}")
    return table


# --- 3. media ----------------------------------------------------------------------------------
def media(tmp: Path, quick: bool) -> dict:
    from bench.harness import private_stack
    from framebus.services.common import storage
    from framebus.services.generator.encode import EncodeConfig, choose_encoder, encode_video

    engine = DiffusionEngine.load(TINY, EngineOptions(precision="bf16"))
    [item] = engine.render(Workload(num_frames=33, steps=2, requests=1).make()[:1], lambda _: False)
    rows = []
    for label, (width, height) in {"128x128 (the bench shape)": (128, 128), "832x480 (Wan 480p)": (832, 480)}.items():
        frames = item.frames if width == 128 else np.repeat(np.repeat(item.frames, 4, axis=1), 7, axis=2)[:, :height,
                                                                                                        :width]
        frames = np.ascontiguousarray(frames)
        for codec in dict.fromkeys(["libx264", choose_encoder("auto").codec]):
            started = time.perf_counter()
            repeats = 2 if quick else 5
            for n in range(repeats):
                video = encode_video(frames, 16, tmp / f"enc-{n}.mp4", EncodeConfig(codec=codec))
            seconds = (time.perf_counter() - started) / repeats
            rows.append({"what": f"encode {label}, {codec} veryfast", "frames_per_s": len(frames) / seconds,
                         "bytes": video.path.stat().st_size})
    uploads = []
    with private_stack(tmp / "stack") as settings:
        client = storage.s3_client(settings)
        storage.ensure_bucket(client, settings.s3_bucket)
        for size_mb in (4, 64):
            blob = tmp / f"blob-{size_mb}"
            blob.write_bytes(np.random.default_rng(size_mb).bytes(size_mb * 1024 * 1024))
            started = time.perf_counter()
            with open(blob, "rb") as handle:
                storage.upload(client, handle, settings.s3_bucket, f"bench/{size_mb}", content_type="video/mp4")
            uploads.append({"megabytes": size_mb, "mb_per_s": size_mb / (time.perf_counter() - started)})
    return {"encode": rows, "upload": uploads}


def media_table(result: dict) -> Table:
    table = Table("what", "rate", title="encode and upload on this machine", title_justify="left")
    for row in result["encode"]:
        table.add_row(row["what"], f"{row['frames_per_s']:,.0f} frames/s")
    for row in result["upload"]:
        table.add_row(f"upload {row['megabytes']} MB to local S3 (multipart above 8 MB)", f"{row['mb_per_s']:,.0f} MB/s")
    return table


# --- 4. worker under a backlog -----------------------------------------------------------------
def worker_backlog(tmp: Path, jobs: int, workload: Workload) -> dict:
    from bench.harness import private_stack
    from framebus.schemas.codec import encode_event
    from framebus.schemas.workers import JobDispatched, Shape
    from framebus.services.common import kafka as kafka_adapter
    from framebus.services.common import storage
    from framebus.services.generator.app import assemble_worker
    from framebus.services.generator.storage import StorageTarget, VideoStore
    from framebus.services.generator.worker import WorkerConfig

    process = psutil.Process()
    with private_stack(tmp / "stack") as settings:
        client = storage.s3_client(settings)
        storage.ensure_bucket(client, settings.s3_bucket)
        engine = DiffusionEngine.load(TINY, EngineOptions(precision="bf16", prompt_cache=64))
        worker = assemble_worker(settings, engine=engine, spool_dir=tmp / "spool",
                                 store=VideoStore(StorageTarget(client, settings.s3_bucket), 600),
                                 config=WorkerConfig(worker_id="bench-w", max_batch_size=workload.batch))
        thread = threading.Thread(target=worker.run, kwargs={"max_seconds": 1800}, daemon=True)
        thread.start()
        if not worker.ready.wait(timeout=600):
            raise RuntimeError("the worker did not become ready in 10 minutes")
        producer = kafka_adapter.producer(settings.bootstrap_servers)
        per_job = workload.batch
        for seq in range(jobs):
            requests = tuple(GenerationRequest(request_id=f"j{seq}-{n}", tenant_id="bench",
                                               prompt=f"{PROMPTS[n % len(PROMPTS)]} #{seq}", model="wan-tiny",
                                               width=workload.width, height=workload.height,
                                               num_frames=workload.num_frames, num_inference_steps=workload.steps,
                                               seed=seq * 100 + n) for n in range(per_job))
            job = JobDispatched(job_id=f"job-{seq}", worker_id="bench-w", seq=seq, shape=Shape.of(requests[0]),
                                requests=requests)
            record = encode_event(job, source="/bench")
            producer.send(settings.topic("framebus.jobs"), key=b"bench-w", value=record.value, headers=record.headers)
        producer.flush()
        rss = {}
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("worker backlog (videos)", total=jobs * per_job)
            while worker.completed < jobs * per_job and thread.is_alive():
                done = worker.completed
                progress.update(task, completed=done)
                for mark in (10, jobs):
                    if mark not in rss and done >= mark * per_job:
                        rss[mark] = process.memory_info().rss
                time.sleep(0.05)
        rss.setdefault(jobs, process.memory_info().rss)
        share = worker.utilisation.share()
        worker.stop()
        thread.join(timeout=60)
        producer.close()
    return {"jobs": jobs, "videos": jobs * per_job, "engine_share": share,
            "rss_mb_after_10": rss.get(10, 0) / 2**20, "rss_mb_after_all": rss[jobs] / 2**20,
            "rss_growth": rss[jobs] / rss.get(10, rss[jobs]) - 1, "workload": workload.__dict__}


def worker_table(result: dict) -> Table:
    w = result["workload"]
    table = Table("measure", "value", title=f"worker with a backlog of {result['jobs']} jobs of {w['batch']} "
                                            f"({w['width']}x{w['height']}x{w['num_frames']}, {w['steps']} steps)",
                  title_justify="left")
    table.add_row("share of wall time in the engine", f"{result['engine_share']:.1%}")
    table.add_row("resident memory after 10 jobs", f"{result['rss_mb_after_10']:,.0f} MB")
    table.add_row(f"resident memory after {result['jobs']} jobs", f"{result['rss_mb_after_all']:,.0f} MB")
    table.add_row("growth", f"{result['rss_growth']:+.1%}")
    return table


def main(quick: bool = typer.Option(False, help="Smaller workloads (a smoke run, not a measurement)."),
         only: str | None = typer.Option(None, help="speed, roofline, media or worker.")) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() and only else {}
    workload = Workload(requests=4, steps=4) if quick else Workload()
    results["machine"] = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if only in (None, "speed"):
            results["speed"] = speed(workload)
            console.print(speed_table(results["speed"]))
        if only in (None, "roofline"):
            results["roofline"] = roofline(workload)
            console.print(roofline_table(results["roofline"]))
        if only in (None, "media"):
            results["media"] = media(Path(tmp), quick)
            console.print(media_table(results["media"]))
        if only in (None, "worker"):
            backlog = Workload(width=64, height=64, num_frames=9, steps=10, batch=4)
            results["worker"] = worker_backlog(Path(tmp), 20 if quick else 100, backlog)
            console.print(worker_table(results["worker"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**results, "machine": machine()}, indent=2, default=str) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
