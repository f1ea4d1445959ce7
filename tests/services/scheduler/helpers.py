"""Hand-built inputs for the scheduler core: requests, tenants, workers, a clock."""

from __future__ import annotations

import itertools

from framebus.schemas.events import GenerationRequest, LedgerCredited, TenantUpdated
from framebus.schemas.workers import WorkerAnnounced
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.core import SchedulerCore

_ids = itertools.count()
SMALL = {"width": 256, "height": 256, "num_frames": 17, "num_inference_steps": 4, "model": "wan-tiny"}


def req(tenant: str = "acme", tier: str = "standard", **changes) -> GenerationRequest:
    fields = {"request_id": f"r{next(_ids)}", "tenant_id": tenant, "tier": tier, "prompt": "a red fox", **SMALL,
              **changes}
    return GenerationRequest(**fields)


def worker(worker_id: str = "w1", *, slots: int = 1, batch: int = 4, running=(), last_seq: int = -1,
           warm: bool = True, model: str = "wan-tiny") -> WorkerAnnounced:
    return WorkerAnnounced(worker_id=worker_id, model=model, warm=warm, max_batch_size=batch, slots=slots,
                           running_job_ids=tuple(running), last_job_seq=last_seq)


def core(*tenants: str, credit: float = 1e9, config: SchedulerConfig | None = None, **tenant_fields) -> SchedulerCore:
    known = {t: TenantUpdated(tenant_id=t, **tenant_fields) for t in (tenants or ("acme",))}
    made = SchedulerCore(config or SchedulerConfig(), tenants=known.get)
    for tenant in known:
        made.ledger(LedgerCredited(tenant_id=tenant, entry_id=f"credit-{tenant}", tokens=credit))
    return made


def finish_job(made: SchedulerCore, job, worker_id: str, now: float, **worker_fields) -> None:
    """The worker reports every request of ``job`` done and announces its room again."""
    for request in job.requests:
        made.request_finished(request.tenant_id, request.request_id)
    made.worker_announced(worker(worker_id, last_seq=job.seq, **worker_fields), now)
