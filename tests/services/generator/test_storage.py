"""The video store against the real local S3 server: layout, checksums, links, retries, result cache."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from framebus.schemas.events import GenerationRequest
from framebus.services.common import storage
from framebus.services.common.settings import Settings
from framebus.services.generator.encode import encode_video
from framebus.services.generator.storage import RetryPolicy, StorageTarget, UploadFailed, VideoStore, result_fingerprint

SUBMITTED = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 0, 30, tzinfo=UTC)  # rendered after midnight: the key keeps the submission day


def request(request_id: str = "r-1", tenant: str = "acme", **fields) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, tenant_id=tenant, prompt="a red fox", width=64, height=48,
                             num_frames=9, **{"seed": 7, "submitted_at": SUBMITTED, **fields})


@pytest.fixture
def video(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (9, 48, 64, 3), dtype=np.uint8)
    return encode_video(frames, 16, tmp_path / "spool" / "v.mp4")


@pytest.fixture
def store(settings: Settings) -> VideoStore:
    client = storage.s3_client(settings)
    return VideoStore(StorageTarget(client, settings.s3_bucket), presign_expiry_s=600,
                      retry=RetryPolicy(deadline_s=2, first_backoff_s=0.05))


def test_upload_uses_the_key_layout_and_records_checksum_and_link(store, video, settings):
    output = store.put(request(), video, NOW)
    assert (output.key, output.poster_key) == ("acme/2026/11/21/r-1.mp4", "acme/2026/11/21/r-1.jpg")
    body = video.path.read_bytes()
    assert (output.bytes, output.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    fetched = httpx.get(output.url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == body
    assert fetched.headers["content-type"] == "video/mp4"
    head = store.default.client.head_object(Bucket=settings.s3_bucket, Key=output.poster_key)
    assert head["ContentType"] == "image/jpeg"
    assert (output.width, output.height, output.num_frames, output.fps) == (64, 48, 9, 16)
    assert settings.s3_secret_key.get_secret_value() not in output.model_dump_json()


def test_rerunning_a_request_overwrites_the_same_key_with_the_same_fields(store, video):
    first, second = store.put(request(), video, NOW), store.put(request(), video, NOW)
    strip = {"url", "url_expires_at"}
    assert first.model_dump(exclude=strip) == second.model_dump(exclude=strip)


def test_unreachable_s3_retries_until_the_deadline_then_fails_keeping_the_spooled_file(video, settings):
    dead = storage.make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key="x", secret_key="y")
    naps: list[float] = []
    store = VideoStore(StorageTarget(dead, settings.s3_bucket), 600,
                       retry=RetryPolicy(deadline_s=1.0, first_backoff_s=0.1, max_backoff_s=0.4), sleep=naps.append)
    with pytest.raises(UploadFailed, match=r"failed \d+ times over 1 s"):
        store.put(request(), video, NOW)
    assert len(naps) >= 2 and naps[1] == pytest.approx(0.2)  # exponential backoff
    assert video.path.exists(), "the caller decides what happens to the spooled file"


def test_upload_succeeds_once_s3_is_back_within_the_deadline(video, settings, store):
    dead = storage.make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key="x", secret_key="y")
    healthy = store.default
    flaky = VideoStore(StorageTarget(dead, settings.s3_bucket), 600, retry=RetryPolicy(deadline_s=30))
    flaky.sleep = lambda seconds: setattr(flaky, "default", healthy)  # S3 is back after the first failure
    output = flaky.put(request(), video, NOW)
    assert healthy.client.head_object(Bucket=settings.s3_bucket, Key=output.key)["ContentLength"] == output.bytes


def test_identical_request_is_served_by_a_server_side_copy(store, video, settings):
    fingerprint = result_fingerprint(request(), "engine-a")
    assert store.cached(request("r-2"), fingerprint, NOW) is None
    original = store.put(request(), video, NOW, fingerprint=fingerprint)
    fresh = VideoStore(store.default, 600)  # another worker: nothing in memory, the index is in S3
    copy = fresh.cached(request("r-2"), result_fingerprint(request("r-2"), "engine-a"), NOW)
    assert copy is not None and copy.key == "acme/2026/11/21/r-2.mp4" and copy.sha256 == original.sha256
    copied = httpx.get(copy.url, timeout=10).content
    assert hashlib.sha256(copied).hexdigest() == original.sha256


def test_result_cache_never_crosses_tenants_or_engines(store, video):
    store.put(request(), video, NOW, fingerprint=result_fingerprint(request(), "engine-a"))
    assert store.cached(request("r-2", tenant="other"), result_fingerprint(request(), "engine-a"), NOW) is None
    assert result_fingerprint(request(), "engine-a") != result_fingerprint(request(), "engine-b")
    changed = request(seed=8)
    assert result_fingerprint(changed, "engine-a") != result_fingerprint(request(), "engine-a")


def test_a_deleted_source_is_a_miss_not_an_error(store, video, settings):
    fingerprint = result_fingerprint(request(), "engine-a")
    original = store.put(request(), video, NOW, fingerprint=fingerprint)
    store.default.client.delete_object(Bucket=settings.s3_bucket, Key=original.key)
    assert store.cached(request("r-2"), fingerprint, NOW) is None


@pytest.mark.parametrize("checksums", ["when_required", "when_supported"])
def test_linode_profile_client_options_work_against_the_local_server(settings, checksums, tmp_path):
    """The options the Linode profile sets (path style, checksum policy) with multipart and a presigned link."""
    client = storage.make_client(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                                 access_key=settings.s3_access_key,
                                 secret_key=settings.s3_secret_key.get_secret_value(), addressing_style="path",
                                 checksums=checksums)
    sent: list[dict] = []
    client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(dict(request.headers)))
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(1).bytes(9 * 1024 * 1024))  # above the 8 MiB multipart threshold
    with open(big, "rb") as handle:
        storage.upload(client, handle, settings.s3_bucket, "profile/big.bin", content_type="application/octet-stream")
    head = client.head_object(Bucket=settings.s3_bucket, Key="profile/big.bin")
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].endswith('-2"')
    checksum_headers = [h for headers in sent for h in headers if h.lower().startswith("x-amz-checksum")
                        or h.lower() == "x-amz-sdk-checksum-algorithm"]
    if checksums == "when_required":
        assert checksum_headers == [], "no CRC headers for services that reject them"
    else:
        assert checksum_headers, "boto3's default adds CRC checksums"
    url = storage.presigned_get(client, settings.s3_bucket, "profile/big.bin", expires_s=60)
    assert url.startswith(f"{settings.s3_endpoint_url}/{settings.s3_bucket}/profile/big.bin?")
    assert httpx.get(url, timeout=30).content == big.read_bytes()


def test_a_shared_clip_is_uploaded_once_however_many_requests_use_it(store, video, settings):
    puts: list[str] = []
    store.default.client.meta.events.register("before-call.s3.PutObject",
                                              lambda params, **_: puts.append(params["url_path"]))
    outputs = [store.put(request(f"r-{i}"), video, NOW, shared=True) for i in range(5)]
    assert {o.key for o in outputs} == {f"null-engine/{outputs[0].sha256}.mp4"}
    assert len(puts) == 2, f"video and poster once, not per request: {puts}"
    assert len({o.url for o in outputs}) == 1, "one link, reused while it has most of its life left"
    assert httpx.get(outputs[-1].url, timeout=10).content == video.path.read_bytes()
