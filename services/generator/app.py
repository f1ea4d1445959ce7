"""`framebus worker`: the only place the worker reads settings and builds real clients."""

from __future__ import annotations

import signal

from schemas.state import ModelName
from services.common.ffmpeg import require_ffmpeg
from services.common.settings import Settings
from services.common.storage import ensure_bucket, s3_client
from services.generator.engine import NullEngine
from services.generator.storage import VideoStore
from services.generator.worker import Worker, WorkerConfig, new_worker_id


def build_worker(settings: Settings, *, engine: str, model: ModelName, delay_ms: float, batch: int, slots: int,
                 worker_id: str | None = None, heartbeat_s: float = 2.0) -> Worker:
    require_ffmpeg()
    if engine != "null":
        raise ValueError(f"`engine` must be 'null' but is {engine!r}")
    client = s3_client(settings)
    ensure_bucket(client, settings.s3_bucket)
    return Worker(settings=settings, engine=NullEngine(model=model, delay_ms=delay_ms),
                  store=VideoStore(client, settings.s3_bucket, settings.s3_presign_expiry_s),
                  config=WorkerConfig(worker_id=worker_id or new_worker_id(), max_batch_size=batch, slots=slots,
                                      heartbeat_interval_s=heartbeat_s))


def run(worker: Worker, *, max_seconds: float | None = None) -> None:
    """Serve in the foreground; SIGTERM or Ctrl-C finishes the job in hand, then stops."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run(max_seconds=max_seconds)
