"""Which requests of a job reach the engine, in which batches, and what each request gets back.

- A request cancelled before its job starts is not rendered.
- Identical requests (same result fingerprint) share one render: the first of them, the
  leader, renders; the others get the same frames with no engine time charged to them.
- A request identical to one stored earlier is served from the result cache.
- A batch that runs out of memory is split in halves, recursively; a request that does
  not fit even alone is refused with OUT_OF_MEMORY. Any other engine error refuses the
  whole batch with GENERATION_ERROR: one bad batch must not stop the worker.

Every request of a job comes back as exactly one item. Nothing here talks to Kafka, S3 or
ffmpeg: the engine's ``render`` and the result-cache lookup are passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from framebus.schemas.events import GenerationRequest, Output
from framebus.schemas.state import ErrorCode
from framebus.services.generator.cancels import CancelBook
from framebus.services.generator.errors import EngineBroken, EngineOutOfMemory, RenderInterrupted
from framebus.services.generator.fingerprint import result_fingerprint
from framebus.services.generator.rendered import IsCancelled, Item, Refused, Rendered, Served

log = logging.getLogger(__name__)

CacheLookup = Callable[[GenerationRequest, str], Output | None]  # (request, fingerprint) -> an earlier video
Render = Callable[[Sequence[GenerationRequest], IsCancelled], list[Rendered]]  # the engine's render


def request_key(request: GenerationRequest) -> tuple[str, str]:
    """Requests are told apart by tenant and id: two tenants may choose the same request id."""
    return request.tenant_id, request.request_id


@dataclass(frozen=True)
class Group:
    """Identical requests that share one render; the first, the leader, is the one the engine sees."""

    members: tuple[GenerationRequest, ...]

    @property
    def leader(self) -> GenerationRequest:
        return self.members[0]


@dataclass(frozen=True)
class JobPlan:
    settled: tuple[Rendered | Served, ...]  # cancelled before starting (no frames), or served from the cache
    groups: tuple[Group, ...]  # one engine row each, in the job's order of their leaders

    @classmethod
    def from_requests(cls, requests: Sequence[GenerationRequest], *, engine_id: str, is_cancelled: IsCancelled,
                      cached: CacheLookup) -> JobPlan:
        """Plan a job. An empty ``engine_id`` disables the result cache and the sharing of renders."""
        settled: list[Rendered | Served] = []
        by_fingerprint: dict[str, list[GenerationRequest]] = {}
        alone: list[list[GenerationRequest]] = []
        order: list[list[GenerationRequest]] = []  # groups in the order their leaders came
        for request in requests:
            if is_cancelled(request):
                settled.append(Rendered(request))
                continue
            if not engine_id:
                alone.append([request])
                order.append(alone[-1])
                continue
            fingerprint = result_fingerprint(request, engine_id)
            if fingerprint in by_fingerprint:
                by_fingerprint[fingerprint].append(request)
            elif (output := cached(request, fingerprint)) is not None:
                settled.append(Served(request, output))
            else:
                by_fingerprint[fingerprint] = [request]
                order.append(by_fingerprint[fingerprint])
        return cls(tuple(settled), tuple(Group(tuple(members)) for members in order))

    @property
    def duplicates(self) -> frozenset[tuple[str, str]]:
        """Keys (``request_key``) of the requests that get a leader's frames."""
        return frozenset(request_key(member) for group in self.groups for member in group.members[1:])


@dataclass(frozen=True)
class RenderedRequests:
    items: tuple[Item, ...]  # exactly one per request of the job
    duplicates: frozenset[tuple[str, str]]  # keys of requests whose frames are a twin's: store them as copies

    def is_duplicate(self, request: GenerationRequest) -> bool:
        return request_key(request) in self.duplicates


def render_in_halves(render: Render, requests: Sequence[GenerationRequest],
                     cancelled: IsCancelled) -> list[Rendered | Refused]:
    """Render ``requests``, splitting the batch in halves while it does not fit in memory."""
    try:
        return list(render(requests, cancelled))
    except EngineOutOfMemory as exc:
        # Only the message is kept: the halves run after this handler, once the exception (and the
        # failed attempt's tensors its traceback holds) is gone.
        failure = str(exc)
    except (RenderInterrupted, EngineBroken):
        raise  # the worker is stopping (or must): its requests go back to the scheduler, not to a result
    except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the worker
        log.exception("engine failed on %d requests", len(requests))
        return [Refused(r, ErrorCode.GENERATION_ERROR, f"{type(exc).__name__}: {exc}") for r in requests]
    if len(requests) == 1:
        return [Refused(requests[0], ErrorCode.OUT_OF_MEMORY, f"out of memory even alone: {failure}")]
    half = len(requests) // 2
    log.warning("batch of %d is out of memory; retrying as %d + %d", len(requests), half, len(requests) - half)
    return render_in_halves(render, requests[:half], cancelled) + render_in_halves(render, requests[half:], cancelled)


def fan_out(groups: Sequence[Group], rendered: Sequence[Rendered | Refused], is_cancelled: IsCancelled) -> list[Item]:
    """One item per member of every group, from its leader's item: a refusal applies to every
    member; a member cancelled meanwhile ends cancelled; copies carry no engine time. A leader
    the engine returned nothing for is refused, so no request goes unreported."""
    by_leader = {id(item.request): item for item in rendered}
    items: list[Item] = []
    for group in groups:
        item = by_leader.get(id(group.leader))
        if item is None:
            item = Refused(group.leader, ErrorCode.GENERATION_ERROR, "the engine returned no result for it")
        for member in group.members:
            if isinstance(item, Refused):
                items.append(replace(item, request=member))
            elif is_cancelled(member):
                items.append(Rendered(member))
            elif member is group.leader:
                items.append(item)
            else:
                items.append(replace(item, request=member, gpu_seconds=0.0, steps_run=0, steps_skipped_by_cache=0))
    return items


def render_job(requests: Sequence[GenerationRequest], *, render: Render, engine_id: str, cancels: CancelBook,
               cached: CacheLookup) -> RenderedRequests:
    """Plan the job, render its groups' leaders as one batch, and give every request its item.
    A leader's render is cancelled only when every request that shares it is."""
    plan = JobPlan.from_requests(requests, engine_id=engine_id, is_cancelled=cancels.is_cancelled, cached=cached)
    rendered: list[Rendered | Refused] = []
    if plan.groups:
        members_of = {id(group.leader): group.members for group in plan.groups}
        rendered = render_in_halves(render, [group.leader for group in plan.groups],
                                    lambda leader: cancels.all_cancelled(members_of.get(id(leader), (leader,))))
    return RenderedRequests((*plan.settled, *fan_out(plan.groups, rendered, cancels.is_cancelled)), plan.duplicates)
