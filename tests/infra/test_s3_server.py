"""The real S3 server (versitygw) through boto3: buckets, multipart uploads, presigned GETs,
and the same bounded, one-line failures as the broker."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from framebus.infra.errors import FetchError, PortInUseError
from framebus.infra.process import free_port
from framebus.infra.s3 import S3Server
from framebus.services.common import storage
from framebus.services.common.settings import Settings

MIB = 1024 * 1024


@pytest.fixture
def s3(server_settings: Settings):
    return storage.s3_client(server_settings)


def test_create_bucket_and_list_it(s3, server_settings: Settings, bucket_factory) -> None:
    bucket = bucket_factory()
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert storage.ensure_bucket(s3, bucket) is False  # idempotent


def test_multipart_upload_of_20_mib_stores_every_byte(s3, bucket_factory) -> None:
    bucket = bucket_factory()
    payload = os.urandom(20 * MIB)
    storage.upload(s3, io.BytesIO(payload), bucket, "videos/big.mp4", content_type="video/mp4")
    head = s3.head_object(Bucket=bucket, Key="videos/big.mp4")
    assert head["ContentLength"] == 20 * MIB and head["ContentType"] == "video/mp4"
    # An S3 multipart ETag is "<md5 of part md5s>-<part count>": 20 MiB in 8 MiB parts is 3 parts.
    assert head["ETag"].strip('"').endswith("-3")
    body = s3.get_object(Bucket=bucket, Key="videos/big.mp4")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()


def test_explicit_multipart_api_with_four_parts(s3, bucket_factory) -> None:
    bucket = bucket_factory()
    parts = [os.urandom(5 * MIB) for _ in range(4)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="parts.bin")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="parts.bin", UploadId=upload_id, PartNumber=n, Body=part)["ETag"]
             for n, part in enumerate(parts, start=1)]
    listed = s3.list_parts(Bucket=bucket, Key="parts.bin", UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2, 3, 4]
    s3.complete_multipart_upload(Bucket=bucket, Key="parts.bin", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]})
    assert s3.get_object(Bucket=bucket, Key="parts.bin")["Body"].read() == b"".join(parts)


def test_presigned_get_is_fetched_with_plain_http(s3, bucket_factory) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="a/clip.mp4", Body=b"not really a video")
    url = storage.presigned_get(s3, bucket, "a/clip.mp4", expires_s=300)
    assert "X-Amz-Signature=" in url and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.content == b"not really a video"
    assert httpx.get(url.split("?")[0], timeout=10).status_code == 403  # no signature, no access
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered, timeout=10).status_code == 403


def test_presigned_get_expires(s3, bucket_factory) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="short.txt", Body=b"x")
    url = storage.presigned_get(s3, bucket, "short.txt", expires_s=1)
    time.sleep(2.2)
    assert httpx.get(url, timeout=10).status_code == 403


def test_wrong_secret_is_refused(server_settings: Settings, bucket_factory) -> None:
    bucket = bucket_factory()
    intruder = boto3.client("s3", endpoint_url=server_settings.s3_endpoint_url, region_name="us-east-1",
                            aws_access_key_id=server_settings.s3_access_key, aws_secret_access_key="wrong",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as caught:
        intruder.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_server_port_taken_fails_fast(tmp_path: Path, infra_cache_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = S3Server(host="127.0.0.1", port=holder.getsockname()[1], access_key="a", secret_key="b" * 8,
                          state_dir=tmp_path, cache_dir=infra_cache_dir)
        with pytest.raises(PortInUseError, match="FRAMEBUS_S3_PORT"):
            server.start()


def test_missing_go_is_reported_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    server = S3Server(host="127.0.0.1", port=free_port(), access_key="a", secret_key="b" * 8,
                      state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    with pytest.raises(FetchError, match="FRAMEBUS_S3_ENDPOINT"):
        server.start()


def test_s3_server_restart_keeps_objects(tmp_path: Path, infra_cache_dir: Path) -> None:
    server = S3Server(host="127.0.0.1", port=free_port(), access_key="restart", secret_key="restart-secret",
                      state_dir=tmp_path, cache_dir=infra_cache_dir)
    settings = Settings(s3_endpoint=server.endpoint, s3_access_key="restart", s3_secret_key="restart-secret")
    server.start()
    try:
        client = storage.s3_client(settings)
        storage.ensure_bucket(client, "kept-bucket")
        client.put_object(Bucket="kept-bucket", Key="k", Body=b"survives")
    finally:
        assert server.stop()
    server.start()
    try:
        assert storage.s3_client(settings).get_object(Bucket="kept-bucket", Key="k")["Body"].read() == b"survives"
    finally:
        server.stop()
