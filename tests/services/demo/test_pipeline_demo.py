"""The demo's pipeline run: four requests through scheduler and worker, each completed, each video
showing what its prompt asked for."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.demo.pipeline import run_demo
from framebus.services.generator.encode import probe


def test_demo_requests_complete_with_fetchable_videos(server_settings: Settings, tmp_path: Path) -> None:
    settings = server_settings.model_copy(update={"topic_prefix": f"demo.{uuid.uuid4().hex[:8]}.",
                                                  "s3_bucket": f"demo-{uuid.uuid4().hex[:8]}"})
    Stack(settings).up()
    progress = []
    run = run_demo(settings, tmp_path, on_progress=lambda done, total: progress.append(done))
    results = run.results
    assert [r.status.state.value for r in results] == ["completed"] * 4
    assert progress[-1] == 4
    video = httpx.get(results[0].status.output.url, timeout=10)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"  # an MP4
    output = results[0].status.output
    local = tmp_path / "demo.mp4"
    local.write_bytes(video.content)
    found = probe(local)  # the diffusers worker's clip, as a viewer gets it
    assert (found.codec, found.width, found.height, found.num_frames) == ("h264", 64, 64, 17)
    assert (output.width, output.num_frames, output.sha256) == (64, 17, hashlib.sha256(video.content).hexdigest())
    # wan-shapes draws what it is asked: the detector reads each delivered video back. Colour,
    # direction and background it gets right every time; its squares and triangles can come
    # out round enough to read as circles (README), so one of four may miss on shape alone.
    drawn = [(r.prompt, r.drew) for r in results]
    assert all(set(r.wrong) <= {"shape"} for r in results), drawn
    assert sum(bool(r.as_asked) for r in results) >= 3, drawn
    # Metering settled every reservation: the tokens charged are exactly the four quotes.
    assert run.balance.reserved == 0
    assert run.balance.charged == pytest.approx(sum(r.status.tokens for r in results))
    # And one signed webhook per request, verified by the demo's receiver (http to 127.0.0.1, allowlisted).
    assert run.webhooks_verified == 4
