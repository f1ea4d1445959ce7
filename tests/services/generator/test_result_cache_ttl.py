"""The result cache expires (real S3 server): an index entry older than the TTL, or one written
before entries carried their time, is a miss and is deleted; the in-memory memo ages the same way."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError

from framebus.services.common import storage
from framebus.services.common.settings import Settings
from framebus.services.generator.storage import RetryPolicy, StorageTarget, VideoStore, result_fingerprint
from tests.services.generator.test_storage import NOW, request, video  # noqa: F401 - `video` is a fixture

TTL = timedelta(days=30)


@pytest.fixture
def store(settings: Settings) -> VideoStore:
    return VideoStore(StorageTarget(storage.s3_client(settings), settings.s3_bucket), presign_expiry_s=600,
                      retry=RetryPolicy(deadline_s=2, first_backoff_s=0.05), result_ttl_s=TTL.total_seconds())


def index_entry(store: VideoStore, fingerprint: str) -> dict | None:
    try:
        body = store.default.client.get_object(Bucket=store.default.bucket,
                                               Key=store.index_key("acme", fingerprint))["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("NoSuchKey", "404")
        return None
    return json.loads(body)


def fresh_worker(store: VideoStore) -> VideoStore:
    """Another worker: nothing in memory, the index is in S3."""
    return VideoStore(store.default, 600, result_ttl_s=store.result_ttl_s)


def test_an_entry_records_when_it_was_written_and_serves_until_the_ttl(store, video) -> None:  # noqa: F811
    fingerprint = result_fingerprint(request(), "engine-a")
    store.put(request(), video, NOW, fingerprint=fingerprint)
    assert index_entry(store, fingerprint)["written_at"] == NOW.isoformat()
    assert fresh_worker(store).cached(request("r-2"), fingerprint, NOW + TTL) is not None  # on the last moment


def test_an_entry_older_than_the_ttl_is_a_miss_and_is_deleted(store, video) -> None:  # noqa: F811
    fingerprint = result_fingerprint(request(), "engine-a")
    store.put(request(), video, NOW, fingerprint=fingerprint)
    later = NOW + TTL + timedelta(seconds=1)
    assert fresh_worker(store).cached(request("r-2"), fingerprint, later) is None
    assert index_entry(store, fingerprint) is None, "the expired entry was deleted"
    # The memo of the worker that wrote it ages the same way, though it never read S3.
    store.put(request(), video, NOW, fingerprint=fingerprint)
    assert store.cached(request("r-3"), fingerprint, later) is None
    assert index_entry(store, fingerprint) is None


def test_a_remembered_entry_expires_but_a_fresher_one_in_s3_still_serves(store, video) -> None:  # noqa: F811
    fingerprint = result_fingerprint(request(), "engine-a")
    store.put(request(), video, NOW, fingerprint=fingerprint)
    assert store.cached(request("r-2"), fingerprint, NOW) is not None  # remembered as written at NOW
    other = fresh_worker(store)
    other.put(request("r-9"), video, NOW + TTL, fingerprint=fingerprint)  # another worker re-indexes it later
    hit = store.cached(request("r-3"), fingerprint, NOW + TTL + timedelta(days=1))
    assert hit is not None and hit.sha256 == index_entry(store, fingerprint)["sha256"]


def test_an_entry_without_a_written_time_counts_as_expired(store, video) -> None:  # noqa: F811
    fingerprint = result_fingerprint(request(), "engine-a")
    store.put(request(), video, NOW, fingerprint=fingerprint)
    legacy = {k: v for k, v in index_entry(store, fingerprint).items() if k != "written_at"}
    store.default.client.put_object(Bucket=store.default.bucket, Key=store.index_key("acme", fingerprint),
                                    Body=json.dumps(legacy).encode(), ContentType="application/json")
    assert fresh_worker(store).cached(request("r-2"), fingerprint, NOW) is None
    assert index_entry(store, fingerprint) is None


def test_a_failed_delete_is_still_a_miss(store, video, settings) -> None:  # noqa: F811
    fingerprint = result_fingerprint(request(), "engine-a")
    store.put(request(), video, NOW, fingerprint=fingerprint)
    worker = fresh_worker(store)

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no deletes"}}, "DeleteObject")

    worker.default.client.meta.events.register("before-call.s3.DeleteObject", refuse)
    try:
        assert worker.cached(request("r-2"), fingerprint, NOW + 2 * TTL) is None
    finally:
        worker.default.client.meta.events.unregister("before-call.s3.DeleteObject", refuse)
    assert index_entry(store, fingerprint) is not None


def test_the_ttl_setting() -> None:
    assert Settings().result_cache_ttl_days == 30 and VideoStore.result_ttl_s == 30 * 86400
    assert Settings(result_cache_ttl_days=7).result_cache_ttl_days == 7
    with pytest.raises(ValueError, match="result_cache_ttl_days"):
        Settings(result_cache_ttl_days=0)
