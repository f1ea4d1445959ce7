"""How one rendered item ends: exactly one ``Outcome`` per request, whatever fails on the way.

- Refused by the engine: failed with the engine's code and message.
- Served from the result cache: completed as a cache hit (no engine time).
- Cancelled (by the engine, or by a cancel that landed while it waited): cancelled, with
  the engine time it used.
- A twin of a request stored earlier in the same job: completed as a copy of that video
  when the cache has it, otherwise encoded and stored like any other.
- Otherwise encoded (``EncodeError`` -> ENCODE_FAILED) and stored (``UploadFailed`` ->
  UPLOAD_FAILED); a failure after rendering still reports the engine time spent.
- Any other error: failed with INTERNAL_ERROR, never an unreported request.

The encoder, the store and the clock are passed in; a video the encoder wrote is removed
from the spool once stored or failed, unless it is a clip shared between requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from framebus.schemas.events import GenerationRequest, Output, Usage
from framebus.schemas.state import ErrorCode
from framebus.services.generator.clock import Clock
from framebus.services.generator.errors import EncodeError, UploadFailed
from framebus.services.generator.fingerprint import result_fingerprint
from framebus.services.generator.outcomes import Cancelled, Completed, Failed, Outcome, error_info, job_timings
from framebus.services.generator.rendered import IsCancelled, Item, Refused, Rendered, Served

if TYPE_CHECKING:
    from framebus.services.generator.encode import EncodedVideo

log = logging.getLogger(__name__)

Encoder = Callable[[Rendered], "EncodedVideo"]  # frames -> a verified clip in the spool; raises EncodeError


class ResultStore(Protocol):
    """Where videos go (``storage.VideoStore``)."""

    def cached(self, request: GenerationRequest, fingerprint: str, now: datetime) -> Output | None: ...

    def put(self, request: GenerationRequest, video: EncodedVideo, now: datetime, *, fingerprint: str | None = None,
            shared: bool = False) -> Output:
        """Store ``video`` as the request's output; raises ``UploadFailed``."""


class Finisher:
    """Turns each item of a rendered job into its request's outcome."""

    def __init__(self, *, store: ResultStore, encode: Encoder, clock: Clock, engine_id: str, machine: str) -> None:
        self.store = store
        self.encode = encode
        self.clock = clock
        self.engine_id = engine_id  # "" when the engine disables the result cache
        self.machine = machine  # the machine kind the cost model prices engine time by

    def finish(self, item: Item, *, started: datetime, duplicate: bool, is_cancelled: IsCancelled) -> Outcome:
        """The one outcome of ``item``'s request; ``started`` is when its job started, ``duplicate``
        whether its frames are a twin's from the same job."""
        request = item.request
        try:
            if isinstance(item, Refused):
                return self.failed(request, item.code, item.message, started)
            if isinstance(item, Served):
                return self._completed(request, item.output, self.usage(request, result_cache_hit=True),
                                       job_timings(request, started))
            if item.cancelled or is_cancelled(request):  # a cancel may land while it waits for upload
                usage = self.usage(request, gpu_seconds=item.gpu_seconds, steps_run=item.steps_run,
                                   steps_skipped_by_cache=item.steps_skipped_by_cache)
                return Cancelled(request, usage, job_timings(request, started, finished_at=self.clock.now()))
            return self._store(item, started, duplicate)
        except Exception as exc:  # noqa: BLE001 - every request ends in exactly one terminal state
            log.exception("could not finish request %s", request.request_id)
            return self.failed(request, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", started)

    def failed(self, request: GenerationRequest, code: ErrorCode, message: str, started: datetime,
               gpu_seconds: float = 0.0) -> Failed:
        """A failure that still reports the quoted tokens (so metering releases them) and engine time."""
        return Failed(request, error_info(code, message), self.usage(request, gpu_seconds=gpu_seconds),
                      job_timings(request, started, finished_at=self.clock.now()))

    def usage(self, request: GenerationRequest, **fields) -> Usage:
        return Usage(tokens=request.quote(), machine=self.machine, **fields)

    def _completed(self, request: GenerationRequest, output: Output, usage: Usage, timings) -> Completed:
        return Completed(request, output, usage, timings.model_copy(update={"finished_at": self.clock.now()}))

    def _store(self, item: Rendered, started: datetime, duplicate: bool) -> Outcome:
        request = item.request
        fingerprint = result_fingerprint(request, self.engine_id) if self.engine_id else None
        if duplicate and fingerprint is not None:
            output = self.store.cached(request, fingerprint, self.clock.now())
            if output is not None:  # its twin earlier in the batch was stored: a copy, no encode
                return self._completed(request, output, self.usage(request, result_cache_hit=True),
                                       job_timings(request, started))
        video = item.video
        if video is None:
            try:
                video = self.encode(item)
            except EncodeError as exc:
                return self.failed(request, ErrorCode.ENCODE_FAILED, str(exc), started, item.gpu_seconds)
        uploading = self.clock.monotonic()
        try:
            output = self.store.put(request, video, self.clock.now(), fingerprint=fingerprint, shared=item.shared)
        except UploadFailed as exc:
            return self.failed(request, ErrorCode.UPLOAD_FAILED, str(exc), started, item.gpu_seconds)
        finally:
            if not item.shared:
                video.remove()  # out of the spool: uploaded, or the request failed and says so
        usage = self.usage(request, gpu_seconds=item.gpu_seconds, steps_run=item.steps_run,
                           steps_skipped_by_cache=item.steps_skipped_by_cache)
        timings = job_timings(request, started, text_encode_s=item.text_encode_s, denoise_s=item.denoise_s,
                              decode_s=item.decode_s,
                              encode_s=None if item.shared else video.encode_s,
                              upload_s=self.clock.monotonic() - uploading)
        return self._completed(request, output, usage, timings)
