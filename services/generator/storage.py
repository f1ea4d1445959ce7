"""Where videos go: key layout, upload with retries from the spool, checksums, presigned links,
and the result cache (an identical request is a server-side copy, not a render).

Key layout: ``{tenant}/{yyyy}/{mm}/{dd}/{request_id}.mp4`` (the submission day) and ``.jpg``. A
re-run of a request overwrites the same keys with the same bytes (seeded, deterministic
engines), so results are idempotent. The result-cache index lives in the same bucket under
``_results/{tenant}/{fingerprint}.json``: per tenant, so one tenant can never learn
another's prompts from a cache hit. Each entry records when it was written; one older than
the cache's TTL (FRAMEBUS_RESULT_CACHE_TTL_DAYS) is a miss and is deleted, so the index does
not outlive the videos it points at (the bucket's lifecycle rule expires both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from framebus.schemas.events import GenerationRequest, Output
from framebus.services.common import storage
from framebus.services.common.errors import StorageError
from framebus.services.generator.encode import EncodedVideo
from framebus.services.generator.errors import StorageMisconfigured, UploadFailed
from framebus.services.generator.fingerprint import result_fingerprint

__all__ = ["RetryPolicy", "StorageMisconfigured", "StorageTarget", "UploadFailed", "VideoStore", "file_sha256",
           "result_fingerprint"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 300.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass(frozen=True)
class StorageTarget:
    """A bucket and the client that reaches it: the default one, or a tenant's own."""

    client: BaseClient
    bucket: str


def file_sha256(path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass
class VideoStore:
    default: StorageTarget
    presign_expiry_s: int
    retry: RetryPolicy = RetryPolicy()
    target_for: Callable[[str], StorageTarget | None] = lambda tenant_id: None  # a tenant's own bucket
    sleep: Callable[[float], None] = time.sleep
    result_ttl_s: float = 30 * 86400.0  # a result-cache entry older than this is a miss (and is deleted)
    _index: OrderedDict[str, dict] = field(default_factory=OrderedDict, repr=False)  # result-cache LRU
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def target(self, tenant_id: str) -> StorageTarget:
        return self.target_for(tenant_id) or self.default

    @staticmethod
    def keys(request: GenerationRequest, now: datetime | None = None) -> tuple[str, str]:
        """The day is the request's submission day (UTC), so a re-run days later still hits the same key."""
        day = request.submitted_at.astimezone(UTC)
        base = f"{request.tenant_id}/{day:%Y/%m/%d}/{request.request_id}"
        return f"{base}.mp4", f"{base}.jpg"

    # --- upload ----------------------------------------------------------------------------
    def put(self, request: GenerationRequest, video: EncodedVideo, now: datetime, *,
            fingerprint: str | None = None, shared: bool = False) -> Output:
        """Upload the video and poster from the spool, retrying until the deadline; return the output.

        ``shared``: the null engine's identical clips go once to ``null-engine/{sha}``.
        ``fingerprint``: also index the result so an identical request is served by a copy.
        Raises UploadFailed once the deadline passes; the spooled files stay for the caller.
        """
        try:
            target = self.target(request.tenant_id)
        except StorageMisconfigured as exc:
            raise UploadFailed(str(exc)) from exc
        if shared:
            return self._shared(target, request, video, now)
        digest, size = file_sha256(video.path)
        key, poster_key = self.keys(request, now)
        # The target is looked up on every attempt: a tenant's fixed storage settings apply at once.
        self._retrying(f"upload of s3://{target.bucket}/{key}",
                       lambda: self._upload(self.target(request.tenant_id), video, key, poster_key))
        target = self.target(request.tenant_id)
        output = self._output(target, key, poster_key, now, digest, size, video.codec, video.width, video.height,
                              video.num_frames, video.fps)
        if fingerprint is not None:
            self._retrying("result-cache index", lambda: self._write_index(target, request.tenant_id, fingerprint,
                                                                            output, now))
        return output

    def _shared(self, target: StorageTarget, request: GenerationRequest, video: EncodedVideo, now: datetime) -> Output:
        """A clip many requests share: uploaded once; its output (and link) reused while the link has half its life."""
        memo = f"shared:{target.bucket}/{video.path}"
        known: Output | None = self._known(memo)
        if known is not None and (known.url_expires_at - now).total_seconds() >= self.presign_expiry_s / 2:
            return known
        digest, size = file_sha256(video.path)
        key, poster_key = f"null-engine/{digest}.mp4", f"null-engine/{digest}.jpg"
        if known is None:
            self._retrying(f"upload of s3://{target.bucket}/{key}",
                           lambda: self._upload(self.target(request.tenant_id), video, key, poster_key))
        output = self._output(target, key, poster_key, now, digest, size, video.codec, video.width, video.height,
                              video.num_frames, video.fps)
        self._remember(memo, output)
        return output

    def _upload(self, target: StorageTarget, video: EncodedVideo, key: str, poster_key: str) -> None:
        with open(video.path, "rb") as handle:
            storage.upload(target.client, handle, target.bucket, key, content_type="video/mp4")
        with open(video.poster_path, "rb") as handle:
            storage.upload(target.client, handle, target.bucket, poster_key, content_type="image/jpeg")

    def _retrying(self, what: str, action: Callable[[], object]):
        deadline = time.monotonic() + self.retry.deadline_s
        backoff, attempt = self.retry.first_backoff_s, 0
        while True:
            attempt += 1
            try:
                return action()
            except StorageMisconfigured as exc:
                raise UploadFailed(f"{what} cannot succeed: {exc}") from exc
            except (StorageError, ClientError, BotoCoreError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UploadFailed(f"{what} failed {attempt} times over {self.retry.deadline_s:g} s; "
                                       f"last error: {exc}") from exc
                log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, attempt, min(backoff, left), exc)
                self.sleep(min(backoff, left))
                backoff = min(backoff * 2, self.retry.max_backoff_s)

    def _output(self, target: StorageTarget, key: str, poster_key: str, now: datetime, digest: str, size: int,
                codec: str, width: int, height: int, num_frames: int, fps: int) -> Output:
        url = storage.presigned_get(target.client, target.bucket, key, expires_s=self.presign_expiry_s)
        return Output(bucket=target.bucket, key=key, url=url,
                      url_expires_at=now + timedelta(seconds=self.presign_expiry_s), bytes=size, sha256=digest,
                      duration_s=num_frames / fps, codec=codec, width=width, height=height, num_frames=num_frames,
                      fps=fps, poster_key=poster_key)

    # --- result cache ----------------------------------------------------------------------
    @staticmethod
    def index_key(tenant_id: str, fingerprint: str) -> str:
        return f"_results/{tenant_id}/{fingerprint}.json"

    def _write_index(self, target: StorageTarget, tenant_id: str, fingerprint: str, output: Output,
                     now: datetime) -> None:
        entry = output.model_dump(mode="json", include={"key", "poster_key", "sha256", "bytes", "codec", "width",
                                                        "height", "num_frames", "fps"})
        entry["written_at"] = now.astimezone(UTC).isoformat()  # its age decides when it stops serving
        body = json.dumps(entry).encode()
        target.client.put_object(Bucket=target.bucket, Key=self.index_key(tenant_id, fingerprint), Body=body,
                                 ContentType="application/json")
        self._remember(f"{target.bucket}/{tenant_id}/{fingerprint}", entry)

    def cached(self, request: GenerationRequest, fingerprint: str, now: datetime) -> Output | None:
        """Serve ``request`` from an identical earlier result by a server-side copy; None on a miss.

        Any failure (no index, source deleted, S3 trouble) is a miss: the request renders.
        """
        try:
            target = self.target(request.tenant_id)
        except StorageError as exc:  # the upload will say so; a lookup is only a lookup
            log.warning("result cache skipped for %s: %s", request.tenant_id, exc)
            return None
        memo = f"{target.bucket}/{request.tenant_id}/{fingerprint}"
        index_key = self.index_key(request.tenant_id, fingerprint)
        try:
            entry = self._known(memo)
            if entry is not None and self._expired(entry, now):
                with self._lock:
                    self._index.pop(memo, None)
                entry = None  # another worker may have indexed the same result since: S3 decides
            if entry is None:
                entry = json.loads(target.client.get_object(Bucket=target.bucket, Key=index_key)["Body"].read())
                if self._expired(entry, now):
                    self._forget(target, index_key)
                    return None
                self._remember(memo, entry)
            key, poster_key = self.keys(request, now)
            if key != entry["key"]:
                for source, destination in ((entry["key"], key), (entry["poster_key"], poster_key)):
                    target.client.copy_object(Bucket=target.bucket, Key=destination,
                                              CopySource={"Bucket": target.bucket, "Key": source},
                                              MetadataDirective="COPY")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
                log.warning("result cache lookup failed, rendering instead: %s", exc)
            with self._lock:
                self._index.pop(memo, None)
            return None
        except (BotoCoreError, ValueError, KeyError) as exc:
            log.warning("result cache lookup failed, rendering instead: %s", exc)
            return None
        return self._output(target, key, poster_key, now, entry["sha256"], entry["bytes"], entry["codec"],
                            entry["width"], entry["height"], entry["num_frames"], entry["fps"])

    def _expired(self, entry: dict, now: datetime) -> bool:
        """Older than the TTL, or from before entries carried their time (so of unknown age)."""
        try:
            written_at = datetime.fromisoformat(entry["written_at"])
        except (KeyError, TypeError, ValueError):
            return True
        if written_at.tzinfo is None:
            return True
        return (now - written_at).total_seconds() > self.result_ttl_s

    @staticmethod
    def _forget(target: StorageTarget, index_key: str) -> None:
        """Delete an expired index entry, best effort: a failure leaves it to the next reader or the
        bucket's lifecycle rule, and the lookup is a miss either way."""
        try:
            target.client.delete_object(Bucket=target.bucket, Key=index_key)
        except (ClientError, BotoCoreError) as exc:
            log.info("could not delete the expired result-cache entry %s: %s", index_key, exc)

    def _known(self, memo: str):
        with self._lock:
            entry = self._index.get(memo)
            if entry is not None:
                self._index.move_to_end(memo)
            return entry

    def _remember(self, memo: str, entry, capacity: int = 10_000) -> None:
        with self._lock:
            self._index[memo] = entry
            self._index.move_to_end(memo)
            while len(self._index) > capacity:
                self._index.popitem(last=False)

