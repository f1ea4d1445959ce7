"""Where videos go: key layout, upload with checksums, presigned links."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.client import BaseClient

from schemas.events import GenerationRequest, Output
from services.common import storage
from services.generator.encode import EncodedVideo


@dataclass
class VideoStore:
    client: BaseClient
    bucket: str
    presign_expiry_s: int
    _shared: set[str] = field(default_factory=set, repr=False)  # keys of shared clips already stored

    def keys(self, request: GenerationRequest, now: datetime) -> tuple[str, str]:
        base = f"{request.tenant_id}/{now:%Y/%m/%d}/{request.request_id}"
        return f"{base}.mp4", f"{base}.jpg"

    def put(self, request: GenerationRequest, video: EncodedVideo, now: datetime, *, shared: bool = False) -> Output:
        """Upload the video and poster (same key on a re-run: idempotent); return the output record.

        ``shared``: the test engine's identical clips are stored once, content-addressed
        under ``null-engine/``, and every request that rendered one points there.
        """
        digest = hashlib.sha256(video.mp4).hexdigest()
        if shared:
            key, poster_key = f"null-engine/{digest}.mp4", f"null-engine/{digest}.jpg"
        else:
            key, poster_key = self.keys(request, now)
        if key not in self._shared:
            storage.upload(self.client, io.BytesIO(video.mp4), self.bucket, key, content_type="video/mp4")
            storage.upload(self.client, io.BytesIO(video.poster_jpeg), self.bucket, poster_key,
                           content_type="image/jpeg")
            if shared:
                self._shared.add(key)
        url = storage.presigned_get(self.client, self.bucket, key, expires_s=self.presign_expiry_s)
        return Output(bucket=self.bucket, key=key, url=url,
                      url_expires_at=now + timedelta(seconds=self.presign_expiry_s), bytes=len(video.mp4),
                      sha256=digest, duration_s=video.duration_s, codec=video.codec,
                      width=video.width, height=video.height, num_frames=video.num_frames, fps=video.fps,
                      poster_key=poster_key)


def utc_now() -> datetime:
    return datetime.now(UTC)
