"""The demo's pipeline run: four requests through scheduler and worker, each completed."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from services.common.settings import Settings
from services.common.stack import Stack
from services.demo.pipeline import run_demo


def test_demo_requests_complete_with_fetchable_videos(server_settings: Settings, tmp_path: Path) -> None:
    settings = server_settings.model_copy(update={"topic_prefix": f"demo.{uuid.uuid4().hex[:8]}.",
                                                  "s3_bucket": f"demo-{uuid.uuid4().hex[:8]}"})
    Stack(settings).up()
    progress = []
    results = run_demo(settings, tmp_path, on_progress=lambda done, total: progress.append(done))
    assert [r.status.state.value for r in results] == ["completed"] * 4
    assert progress[-1] == 4
    video = httpx.get(results[0].status.output.url, timeout=10)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"  # an MP4
