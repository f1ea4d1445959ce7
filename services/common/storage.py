"""Thin S3 adapter over boto3: client, bucket, multipart upload, presigned GET."""

from __future__ import annotations

from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from framebus.services.common.errors import StorageError
from framebus.services.common.settings import Settings

MIB = 1024 * 1024
# Multipart above 8 MiB in 8 MiB parts: videos of a few MB go in one PUT, long ones in parallel parts.
DEFAULT_TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)


def s3_client(settings: Settings) -> BaseClient:
    return make_client(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                       access_key=settings.s3_access_key, secret_key=settings.s3_secret_key.get_secret_value(),
                       addressing_style=settings.s3_addressing_style, checksums=settings.s3_checksums)


def make_client(*, endpoint_url: str, region: str, access_key: str, secret_key: str, addressing_style: str = "path",
                checksums: str = "when_required") -> BaseClient:
    """SigV4 with the addressing style and checksum policy of the service.

    boto3 >= 1.36 adds CRC32 checksums to every upload by default (``when_supported``);
    Ceph-based services such as Linode Object Storage have rejected those, so the
    default here is ``when_required`` (checksums only where the API demands them).
    """
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": addressing_style},
                      request_checksum_calculation=checksums, response_checksum_validation=checksums,
                      retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def ensure_bucket(client: BaseClient, bucket: str) -> bool:
    """Create ``bucket`` if missing. Returns True when it was created now."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"cannot check bucket {bucket!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot reach S3 to check bucket {bucket!r}: {exc}") from exc
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise StorageError(f"cannot create bucket {bucket!r}: {exc}") from exc
        return False
    return True


def upload(client: BaseClient, fileobj: BinaryIO, bucket: str, key: str, *, content_type: str,
           transfer: TransferConfig = DEFAULT_TRANSFER) -> None:
    try:
        client.upload_fileobj(fileobj, bucket, key, ExtraArgs={"ContentType": content_type}, Config=transfer)
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"upload of s3://{bucket}/{key} failed: {exc}") from exc


def presigned_get(client: BaseClient, bucket: str, key: str, *, expires_s: int) -> str:
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s)
