"""Which bucket a tenant's videos go to: its own (from the compacted tenants topic) or framebus's.

Lookups are cached for ``ttl_s`` so a worker reads the tenants topic at most once a minute
per tenant. Credentials come from the worker's environment by the tenant's reference:
``FRAMEBUS_CREDENTIALS_{REF}_ACCESS_KEY_ID`` and ``FRAMEBUS_CREDENTIALS_{REF}_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from framebus.schemas.codec import decode_event
from framebus.schemas.events import TenantStorage, TenantUpdated
from framebus.services.common import storage
from framebus.services.common.compacted import read_latest
from framebus.services.common.errors import StorageError
from framebus.services.common.settings import Settings
from framebus.services.generator.storage import StorageMisconfigured, StorageTarget

log = logging.getLogger(__name__)


class MissingCredentials(StorageMisconfigured):
    pass


def credentials_for(ref: str, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    prefix = f"FRAMEBUS_CREDENTIALS_{ref}_"
    access, secret = environ.get(f"{prefix}ACCESS_KEY_ID"), environ.get(f"{prefix}SECRET_ACCESS_KEY")
    if not access or not secret:
        raise MissingCredentials(f"credentials reference {ref} is not configured on this worker: set "
                                 f"{prefix}ACCESS_KEY_ID and {prefix}SECRET_ACCESS_KEY")
    return access, secret


def tenant_client(own: TenantStorage, checksums: str):
    """An S3 client for a tenant's own bucket, with the credentials its reference names here."""
    access, secret = credentials_for(own.credentials_ref)
    return storage.make_client(endpoint_url=own.endpoint_url, region=own.region, access_key=access,
                               secret_key=secret, addressing_style=own.addressing_style, checksums=checksums)


class TenantTargets:
    """``tenant id -> StorageTarget | None`` for VideoStore.target_for."""

    def __init__(self, settings: Settings, *, ttl_s: float = 60.0, retry_for_s: float = 300.0,
                 lookup: Callable[[str], TenantStorage | None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """A failed lookup (the broker away) is retried for ``retry_for_s`` (three broker restarts
        in a row outlasted 60 s in the outage test); meanwhile a tenant read before keeps its last
        known settings."""
        self.settings = settings
        self.ttl_s = ttl_s
        self.retry_for_s = retry_for_s
        self._sleep = sleep
        self._lookup = lookup or self._read_tenant
        self._cache: dict[str, tuple[float, StorageTarget | None]] = {}
        self._clients: dict[TenantStorage, StorageTarget] = {}
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str) -> StorageTarget | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant_id)
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1]
        deadline = now + self.retry_for_s
        while True:
            try:
                own = self._lookup(tenant_id)
                break
            except Exception as exc:  # noqa: BLE001 - never fall back to framebus's bucket for a tenant we cannot read
                if cached is not None:
                    log.warning("using the last known settings of tenant %s: %s", tenant_id, exc)
                    return cached[1]
                if time.monotonic() >= deadline:
                    raise StorageError(f"cannot read the settings of tenant {tenant_id}: {exc}") from exc
                log.warning("reading the settings of tenant %s failed, retrying: %s", tenant_id, exc)
                self._sleep(1.0)
        target = None if own is None else self._target(own)
        with self._lock:
            self._cache[tenant_id] = (now, target)
        return target

    def _target(self, own: TenantStorage) -> StorageTarget:
        if own not in self._clients:
            self._clients[own] = StorageTarget(tenant_client(own, self.settings.s3_checksums), own.bucket)
        return self._clients[own]

    def _read_tenant(self, tenant_id: str) -> TenantStorage | None:
        record = read_latest(self.settings.bootstrap_servers, self.settings.topic("framebus.tenants"), tenant_id)
        if record is None:
            return None
        event = decode_event(record.headers, record.value).event
        return event.storage if isinstance(event, TenantUpdated) else None
