"""How each rendered item ends, with a fake encoder, store and clock: no ffmpeg, S3 or Kafka."""

from __future__ import annotations

import numpy as np
import pytest

from framebus.schemas.state import ErrorCode
from framebus.services.generator.errors import EncodeError
from framebus.services.generator.fingerprint import result_fingerprint
from framebus.services.generator.finishing import Finisher
from framebus.services.generator.outcomes import Cancelled, Completed, Failed
from framebus.services.generator.rendered import Refused, Rendered, Served
from tests.services.generator.fakes import EPOCH, FakeClock, FakeStore, FakeVideo, output, request

ENGINE_ID = "engine-1"
FRAMES = np.zeros((1, 16, 16, 3), dtype=np.uint8)


def never(request) -> bool:
    return False


class Encoder:
    """Hands out fake videos, or raises ``error``; remembers what it encoded and handed out."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.encoded: list[str] = []
        self.videos: list[FakeVideo] = []

    def __call__(self, item: Rendered) -> FakeVideo:
        self.encoded.append(item.request.request_id)
        if self.error is not None:
            raise EncodeError(self.error)
        self.videos.append(FakeVideo())
        return self.videos[-1]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def encoder() -> Encoder:
    return Encoder()


def finisher(store: FakeStore, encoder: Encoder, engine_id: str = ENGINE_ID) -> Finisher:
    return Finisher(store=store, encode=encoder, clock=FakeClock(), engine_id=engine_id, machine="cpu")


def rendered(request_id: str, **fields) -> Rendered:
    return Rendered(request(request_id, **fields), frames=FRAMES, gpu_seconds=1.5, steps_run=3, denoise_s=1.0,
                    decode_s=0.5)


def test_a_render_is_encoded_stored_and_completed_with_usage_and_stage_timings(store, encoder) -> None:
    outcome = finisher(store, encoder).finish(rendered("r-1"), started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Completed) and outcome.output == output(request("r-1"))
    assert (outcome.usage.gpu_seconds, outcome.usage.steps_run, outcome.usage.machine) == (1.5, 3, "cpu")
    assert not outcome.usage.result_cache_hit and outcome.usage.tokens == request("r-1").quote()
    timings = outcome.timings
    assert (timings.denoise_s, timings.decode_s, timings.encode_s) == (1.0, 0.5, 0.25)
    assert timings.upload_s > 0 and timings.started_at == EPOCH and timings.finished_at > EPOCH
    assert encoder.videos[0].removed, "the spool is emptied after upload"


def test_an_encode_failure_fails_the_request_with_ffmpegs_message_and_its_engine_time(store) -> None:
    encoder = Encoder(error="ffmpeg (libx264) failed: width not divisible by 2 (63x48)")
    outcome = finisher(store, encoder).finish(rendered("odd"), started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Failed) and outcome.error.code == ErrorCode.ENCODE_FAILED
    assert outcome.error.message == "ffmpeg (libx264) failed: width not divisible by 2 (63x48)"
    assert outcome.usage.gpu_seconds == 1.5 and outcome.usage.tokens == request("odd").quote()
    assert outcome.timings.finished_at > EPOCH and store.puts == []


def test_an_upload_failure_fails_the_request_and_still_empties_the_spool(encoder) -> None:
    store = FakeStore(upload_error="upload of acme/x.mp4 failed for 1.5 s: connection refused")
    outcome = finisher(store, encoder).finish(rendered("lost"), started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Failed) and outcome.error.code == ErrorCode.UPLOAD_FAILED
    assert "1.5 s" in outcome.error.message and outcome.usage.gpu_seconds == 1.5
    assert encoder.videos[0].removed


def test_a_shared_clip_is_stored_without_encoding_and_stays_in_place(store, encoder) -> None:
    clip = FakeVideo()
    item = Rendered(request("r-1"), video=clip, gpu_seconds=0.1, shared=True)
    outcome = finisher(store, encoder).finish(item, started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Completed) and outcome.timings.encode_s is None
    assert encoder.encoded == [] and not clip.removed


def test_a_refusal_fails_the_request_with_the_engines_code(store, encoder) -> None:
    item = Refused(request("big"), ErrorCode.OUT_OF_MEMORY, "out of memory even alone: 1 do not fit")
    outcome = finisher(store, encoder).finish(item, started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Failed) and outcome.error.code == ErrorCode.OUT_OF_MEMORY
    assert outcome.usage.gpu_seconds == 0.0


def test_a_cache_hit_is_completed_as_a_copy_with_no_engine_time(store, encoder) -> None:
    served = Served(request("r-4"), output(request("r-4")))
    outcome = finisher(store, encoder).finish(served, started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Completed) and outcome.usage.result_cache_hit and outcome.usage.gpu_seconds == 0
    assert outcome.timings.finished_at > EPOCH and encoder.encoded == [] and store.puts == []


def test_a_request_the_engine_stopped_ends_cancelled_with_the_engine_time_it_used(store, encoder) -> None:
    item = Rendered(request("drop"), gpu_seconds=0.3, steps_run=1)
    outcome = finisher(store, encoder).finish(item, started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Cancelled) and outcome.usage.gpu_seconds == 0.3 and outcome.usage.steps_run == 1
    assert encoder.encoded == []


def test_a_cancel_that_lands_after_rendering_wins_over_storing(store, encoder) -> None:
    outcome = finisher(store, encoder).finish(rendered("late"), started=EPOCH, duplicate=False,
                                              is_cancelled=lambda r: r.request_id == "late")
    assert isinstance(outcome, Cancelled) and outcome.usage.gpu_seconds == 1.5
    assert encoder.encoded == [] and store.puts == []


def test_a_twin_of_a_request_stored_earlier_in_the_job_is_a_copy_not_an_encode(store, encoder) -> None:
    finish = finisher(store, encoder)
    first = finish.finish(rendered("r-1"), started=EPOCH, duplicate=False, is_cancelled=never)
    copy = Rendered(request("r-2"), frames=FRAMES)  # the leader's frames, no engine time of its own
    twin = finish.finish(copy, started=EPOCH, duplicate=True, is_cancelled=never)
    assert isinstance(first, Completed) and isinstance(twin, Completed)
    assert twin.usage.result_cache_hit and twin.output.key.endswith("r-2.mp4")
    assert encoder.encoded == ["r-1"] and store.puts == ["r-1"]


def test_a_twin_whose_original_was_not_stored_is_encoded_itself(store, encoder) -> None:
    outcome = finisher(store, encoder).finish(rendered("r-2"), started=EPOCH, duplicate=True, is_cancelled=never)
    assert isinstance(outcome, Completed) and not outcome.usage.result_cache_hit and encoder.encoded == ["r-2"]


def test_without_an_engine_id_nothing_goes_into_the_result_cache(store, encoder) -> None:
    finisher(store, encoder, engine_id="").finish(rendered("r-1"), started=EPOCH, duplicate=False, is_cancelled=never)
    assert store.index == {} and result_fingerprint(request("r-1"), "") not in store.index


def test_an_unexpected_error_still_ends_the_request_failed(encoder) -> None:
    class Broken(FakeStore):
        def put(self, *args, **kwargs):
            raise KeyError("bucket")

    outcome = finisher(Broken(), encoder).finish(rendered("r-1"), started=EPOCH, duplicate=False, is_cancelled=never)
    assert isinstance(outcome, Failed) and outcome.error.code == ErrorCode.INTERNAL_ERROR
    assert outcome.error.message == "KeyError: 'bucket'" and encoder.videos[0].removed
