"""Fresh links to stored videos: the stable ``/v1/generations/{id}/video`` answers with one.

A presigned URL dies after ``s3_presign_expiry_s``; the gateway's stable link never does,
because each GET signs a new URL (locally: no call to S3) with the credentials of the
bucket the video is in: framebus's own, or the tenant's (by its credentials reference).
"""

from __future__ import annotations

import threading

from botocore.client import BaseClient

from framebus.schemas.events import Output, TenantStorage, TenantUpdated
from framebus.services.common import storage
from framebus.services.common.settings import Settings
from framebus.services.generator.tenants import tenant_client


class VideoLinks:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[TenantStorage | None, BaseClient] = {}

    def presign(self, tenant: TenantUpdated, output: Output) -> str:
        own = tenant.storage if tenant.storage is not None and tenant.storage.bucket == output.bucket else None
        return storage.presigned_get(self._client(own), output.bucket, output.key,
                                     expires_s=self.settings.s3_presign_expiry_s)

    def _client(self, own: TenantStorage | None) -> BaseClient:
        with self._lock:  # building a boto3 client takes tens of ms: once per bucket owner
            if own not in self._clients:
                self._clients[own] = (storage.s3_client(self.settings) if own is None
                                      else tenant_client(own, self.settings.s3_checksums))
            return self._clients[own]
