"""`framebus worker`: the only place the worker reads settings and builds real clients,
its clock and its id source."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Literal

from framebus.kafka import broker_answers
from framebus.schemas.state import ModelName
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common import metrics
from framebus.services.common.ffmpeg import require_ffmpeg
from framebus.services.common.metrics import configure_metrics
from framebus.services.common.probes import serve_probes
from framebus.services.common.settings import Settings
from framebus.services.common.storage import ensure_bucket, s3_client
from framebus.services.common.telemetry import configure
from framebus.services.generator.clock import SystemClock
from framebus.services.generator.encode import EncodeConfig, choose_encoder
from framebus.services.generator.engine import Engine, NullEngine
from framebus.services.generator.storage import RetryPolicy, StorageTarget, VideoStore
from framebus.services.generator.tenants import TenantTargets
from framebus.services.generator.worker import Worker, WorkerConfig

log = logging.getLogger(__name__)
EngineKind = Literal["null", "diffusers"]


def new_id() -> str:
    """A fresh random id: event ids and spool file names."""
    return str(uuid.uuid4())


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"[:64]


def assemble_worker(settings: Settings, *, engine: Engine, store: VideoStore, config: WorkerConfig, spool_dir: Path,
                    encode: EncodeConfig = EncodeConfig()) -> Worker:
    """A worker on the real broker, with the system clock and random ids. Its jobs consumer is
    unassigned here: the worker picks its partition once its engine is warm."""
    # A send blocks at most 2 s waiting for metadata (kafka-python's default is 60 s): the heartbeat
    # thread, which also runs the watchdog, must never stall behind an outage; results retry instead.
    producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=2, max_block_ms=2000)
    jobs_consumer = kafka_adapter.consumer(settings.bootstrap_servers, group_id=None)
    return Worker(settings=settings, engine=engine, store=store, config=config, spool_dir=spool_dir, encode=encode,
                  producer=producer, jobs_consumer=jobs_consumer, clock=SystemClock(), new_id=new_id,
                  probe=lambda: broker_answers(settings.bootstrap_servers))


def build_engine(settings: Settings, kind: EngineKind, model: ModelName, *, delay_ms: float = 0.0,
                 worker_id: str = "worker") -> Engine:
    if kind == "null":
        return NullEngine(settings.state_dir / "null-clips" / worker_id, model=model, delay_ms=delay_ms)
    if kind == "diffusers":
        from framebus.services.generator.diffusion import DiffusionEngine  # torch loads only for real engines

        return DiffusionEngine.from_settings(settings, model)
    raise ValueError(f"`engine` must be 'null' or 'diffusers' but is {kind!r}")


def machine_kind(engine: EngineKind, settings: Settings) -> str:
    """What the GPU seconds of this worker cost, as the cost model names it: the GPU's name
    (e.g. "nvidia-h100-80gb-hbm3"), "cpu", or "none" for the null engine."""
    if engine == "null":
        return "none"
    import re

    import torch

    if settings.engine_device != "cpu" and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")[:64]
    return "cpu"


def build_worker(settings: Settings, *, engine: EngineKind, model: ModelName, delay_ms: float = 0.0, batch: int = 4,
                 slots: int = 3, worker_id: str | None = None, heartbeat_s: float = 2.0) -> Worker:
    tools = require_ffmpeg()
    encoder = choose_encoder(settings.encoder, tools.ffmpeg)
    log.info("encoder %s: %s", encoder.codec, encoder.reason)
    client = s3_client(settings)
    ensure_bucket(client, settings.s3_bucket)
    worker_id = worker_id or new_worker_id()
    store = VideoStore(StorageTarget(client, settings.s3_bucket), settings.s3_presign_expiry_s,
                       retry=RetryPolicy(deadline_s=settings.s3_upload_deadline_s), target_for=TenantTargets(settings),
                       result_ttl_s=settings.result_cache_ttl_days * 86400)
    built_engine = build_engine(settings, engine, model, delay_ms=delay_ms, worker_id=worker_id)
    return assemble_worker(settings, engine=built_engine, store=store,
                           config=WorkerConfig(worker_id=worker_id, max_batch_size=batch, slots=slots,
                                               heartbeat_interval_s=heartbeat_s,
                                               machine=settings.worker_machine or machine_kind(engine, settings)),
                           spool_dir=settings.state_dir / "spool" / worker_id,
                           encode=EncodeConfig(codec=encoder.codec, x264_preset=settings.x264_preset,
                                               nvenc_preset=settings.nvenc_preset))


def serve_worker_probes(worker: Worker) -> None:
    """Telemetry, metrics and /healthz, /readyz, /metrics, from before the model warms up: an
    orchestrator sees the worker alive and not ready until it is warm and announcing."""
    configure("framebus-worker", worker.settings.telemetry)
    configure_metrics("framebus-worker", worker.settings.telemetry)
    metrics.observe("framebus.worker.ready", lambda: [(1.0 if worker.ready.is_set() else 0.0,
                                                       {"worker": worker.config.worker_id})])
    serve_probes("framebus-worker", worker.settings.health_port, worker.settings.state_dir,
                 ready=worker.ready.is_set, kafka=lambda: worker.watch.health)


def run(worker: Worker, *, max_seconds: float | None = None) -> None:
    """Serve in the foreground; SIGTERM or Ctrl-C finishes the jobs in hand, then stops. A worker
    whose Kafka clients are wedged exits with status 1 at once, for its supervisor to restart it."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    # `kill -USR1 <pid>` prints every thread's stack to the log: what a stuck worker is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    worker.run(max_seconds=max_seconds)
    if worker.engine_broken is not None:  # its work is handed back; a restart gets a fresh device context
        logging.shutdown()
        sys.exit(1)
    if worker.failure is not None:
        logging.shutdown()
        os._exit(1)  # not sys.exit: the wedged client's threads may never let the interpreter finish
