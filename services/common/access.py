"""Who may read and write what on the bus: one role per service, tenant producers and operators,
as Kafka ACLs. The one home of the access plan: ``framebus acl plan`` prints it, ``framebus acl
apply`` creates it through the admin API, the README's table is rendered from it and the
authorizer tests hold every role to its row.

Everything not granted is denied (the cluster runs an authorizer with
``allow.everyone.if.no.acl.found=false``). A grant on a topic names it exactly (the
deployment's prefix included); consumer groups and transactional ids are granted by
prefix, since services add suffixes (``framebus-scheduler-leader``, one metering
transactional id per partition). READ and WRITE imply DESCRIBE in Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from framebus.schemas.topics import BY_NAME, REQUEST_TIERS, request_topic

REQUESTS = tuple(request_topic(tier) for tier in REQUEST_TIERS)


@dataclass(frozen=True)
class Role:
    name: str
    who: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # consumer group id prefixes
    transactional_ids: tuple[str, ...] = ()  # transactional id prefixes
    cluster: tuple[str, ...] = ()  # operations on the cluster itself
    every_topic: bool = False  # operators: all framebus topics and groups

    def default_principal(self) -> str:
        return f"User:framebus-{self.name}"


ROLES: tuple[Role, ...] = (
    Role("scheduler", "the scheduler (admission, queues, dispatch)",
         reads=(*REQUESTS, "framebus.control", "framebus.results", "framebus.tenants", "framebus.signing.keys",
                "framebus.ledger", "framebus.ledger.snapshots", "framebus.status", "framebus.workers",
                "framebus.scheduler.backlog", "framebus.scheduler.leader"),
         writes=("framebus.scheduler.backlog", "framebus.status", "framebus.ledger", "framebus.jobs",
                 "framebus.results", "framebus.requests.rejected"),
         groups=("framebus-scheduler",), transactional_ids=("framebus-scheduler",)),
    Role("worker", "generator workers",
         reads=("framebus.jobs", "framebus.tenants"),
         writes=("framebus.results", "framebus.status", "framebus.progress", "framebus.workers", "framebus.jobs.dead",
                 "framebus.control"),
         groups=("framebus-worker",)),
    Role("metering", "metering (usage and charges)",
         reads=("framebus.results", "framebus.ledger", "framebus.ledger.snapshots"),
         writes=("framebus.usage", "framebus.ledger", "framebus.ledger.snapshots", "framebus.results.dead"),
         groups=("framebus-metering",), transactional_ids=("framebus-metering",)),
    Role("notifier", "the webhook notifier",
         reads=("framebus.results", "framebus.tenants", "framebus.webhooks.secrets", "framebus.batches",
                "framebus.webhooks.pending", "framebus.webhooks.attempts"),
         writes=("framebus.webhooks.pending", "framebus.webhooks.attempts", "framebus.webhooks.dead"),
         groups=("framebus-notifier",)),
    Role("tracker", "the batch tracker",
         reads=("framebus.batches", "framebus.batches.progress", "framebus.status"),
         writes=("framebus.batches", "framebus.batches.progress", "framebus.control"),
         groups=("framebus-batch-tracker",)),
    Role("gateway", "the HTTP gateway (acts for the tenant an API key names)",
         reads=("framebus.tenants", "framebus.status", "framebus.progress", "framebus.ledger",
                "framebus.ledger.snapshots", "framebus.usage",
                "framebus.batches", "framebus.batches.progress", "framebus.webhooks.secrets"),
         writes=(*REQUESTS, "framebus.control", "framebus.status", "framebus.batches", "framebus.webhooks.secrets"),
         groups=("framebus-gateway",)),
    Role("operator", "operators and the admin CLI (topics, tenants, credit, keys, ACLs)",
         cluster=("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER", "ALTER_CONFIGS"), every_topic=True),
    Role("tenant", "a tenant's own producers: requests and its own cancels, nothing shared to read",
         writes=(*REQUESTS, "framebus.control")),
)
BY_ROLE = {role.name: role for role in ROLES}


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL binding: ``principal`` may do ``operation`` on a resource (allowed from any host)."""

    principal: str
    resource: str  # topic, group, transactional_id or cluster
    name: str
    pattern: str  # literal or prefixed
    operation: str

    def describe(self) -> str:
        shown = "the cluster" if self.resource == "cluster" else (
            f"{self.resource} {self.name}{'*' if self.pattern == 'prefixed' else ''}")
        return f"{self.principal} {self.operation} {shown}"


def grants(role: Role, principal: str, prefix: str = "") -> list[Grant]:
    """The ACLs of one principal acting in ``role``, for a deployment whose names start with ``prefix``."""
    out: list[Grant] = []
    if role.every_topic:
        out += [Grant(principal, "topic", f"{prefix}framebus.", "prefixed", "ALL"),
                Grant(principal, "group", f"{prefix}framebus", "prefixed", "ALL"),
                Grant(principal, "transactional_id", f"{prefix}framebus", "prefixed", "ALL")]
    out += [Grant(principal, "topic", f"{prefix}{topic}", "literal", "READ") for topic in role.reads]
    out += [Grant(principal, "topic", f"{prefix}{topic}", "literal", "WRITE") for topic in role.writes]
    out += [Grant(principal, "group", f"{prefix}{group}", "prefixed", "READ") for group in role.groups]
    out += [Grant(principal, "transactional_id", f"{prefix}{tid}", "prefixed", operation)
            for tid in role.transactional_ids for operation in ("WRITE", "DESCRIBE")]
    out += [Grant(principal, "cluster", "kafka-cluster", "literal", operation) for operation in role.cluster]
    return sorted(set(out))


def plan(prefix: str = "", principals: Mapping[str, str] | None = None,
         tenant_principals: Sequence[str] = ()) -> list[Grant]:
    """Every grant of the deployment: each service role's principal (``framebus-<role>`` unless
    ``principals`` names another) and each tenant producer's."""
    principals = dict(principals or {})
    unknown = sorted(set(principals) - set(BY_ROLE) - {"tenant"})
    if unknown:
        raise ValueError(f"no role {', '.join(unknown)}; the roles are {', '.join(BY_ROLE)}")
    out: list[Grant] = []
    for role in ROLES:
        if role.name == "tenant":
            for principal in tenant_principals:
                out += grants(role, principal, prefix)
        else:
            out += grants(role, principals.get(role.name, role.default_principal()), prefix)
    return out


def check_catalogue() -> None:
    """Every topic a role names is a catalogue topic (a typo would grant nothing and fail at run time)."""
    for role in ROLES:
        for topic in (*role.reads, *role.writes):
            if topic not in BY_NAME:
                raise ValueError(f"role {role.name} names {topic!r}, which is not a framebus topic")


check_catalogue()


def render_markdown() -> str:
    """The plan by role, for the README."""
    rows = ["| role (default principal) | reads | writes | groups / transactional ids |", "|---|---|---|---|"]
    short = (lambda topics: ", ".join(f"`{t.removeprefix('framebus.')}`" for t in topics) or "nothing")  # noqa: E731
    for role in ROLES:
        principal = "one per tenant" if role.name == "tenant" else f"`{role.default_principal()}`"
        if role.every_topic:
            reads = writes = "every framebus topic"
        else:
            reads, writes = short(role.reads), short(role.writes)
        ids = ", ".join([f"group `{g}*`" for g in role.groups] + [f"txn `{t}*`" for t in role.transactional_ids]
                        + ([f"cluster {', '.join(role.cluster)}"] if role.cluster else [])) or "none"
        rows.append(f"| {role.name}: {role.who} ({principal}) | {reads} | {writes} | {ids} |")
    return "\n".join(rows)


# --- the admin API ------------------------------------------------------------------------------
def to_acl(grant: Grant):
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    return ACL(principal=grant.principal, host="*", operation=ACLOperation[grant.operation],
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(ResourceType[grant.resource.upper()], grant.name,
                                                ACLResourcePatternType[grant.pattern.upper()]))


def from_acl(acl) -> Grant:
    pattern = acl.resource_pattern
    return Grant(acl.principal, pattern.resource_type.name.lower(), pattern.resource_name,
                 pattern.pattern_type.name.lower(), acl.operation.name)


VISIBLE_WITHIN_S = 60.0


def _until_visible(admin, wanted: set[Grant], removed: set[Grant]) -> None:
    """Wait until the broker enforces the change: ACLs reach it through the controller's metadata
    log (measured: a second or more after CreateAcls returns, longer while topics are being created),
    and a service started before then would be refused."""
    deadline = time.monotonic() + VISIBLE_WITHIN_S
    while True:
        have = existing(admin)
        if wanted <= have and not removed & have:
            return
        if time.monotonic() > deadline:
            missing = sorted(wanted - have)
            raise RuntimeError(f"{len(missing)} ACLs were created but the broker does not show them after "
                               f"{VISIBLE_WITHIN_S:g} s, the first {missing[0].describe() if missing else '?'}")
        time.sleep(0.25)


@dataclass(frozen=True)
class Applied:
    created: list[Grant]
    present: list[Grant]
    removed: list[Grant]


def existing(admin) -> set[Grant]:
    """Every ALLOW binding on the cluster."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    found, error = admin.describe_acls(ACLFilter(
        principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
    if error is not None and error.errno != 0:
        raise RuntimeError(f"the cluster refused to list its ACLs: {error}")
    return {from_acl(acl) for acl in found}


def apply(admin, wanted: Iterable[Grant], *, prune: bool = False) -> Applied:
    """Create the grants the cluster lacks (idempotent); with ``prune``, remove other grants of the
    same principals, so a role that lost a permission loses it on the cluster too."""
    wanted = sorted(set(wanted))
    have = existing(admin)
    missing = [grant for grant in wanted if grant not in have]
    if missing:
        result = admin.create_acls([to_acl(grant) for grant in missing])
        failed = result.get("failed", [])
        if failed:
            acl, error = failed[0]
            raise RuntimeError(f"the cluster refused {len(failed)} ACLs, the first {from_acl(acl).describe()}: {error}")
    extra: list[Grant] = []
    if prune:
        principals = {grant.principal for grant in wanted}
        extra = sorted(grant for grant in have if grant.principal in principals and grant not in set(wanted))
        if extra:
            from kafka.admin import ACLFilter, ResourcePatternFilter

            filters = []
            for grant in extra:
                acl = to_acl(grant)
                filters.append(ACLFilter(principal=acl.principal, host=acl.host, operation=acl.operation,
                                         permission_type=acl.permission_type,
                                         resource_pattern=ResourcePatternFilter(
                                             acl.resource_pattern.resource_type, acl.resource_pattern.resource_name,
                                             acl.resource_pattern.pattern_type)))
            admin.delete_acls(filters)
    _until_visible(admin, set(wanted), set(extra))
    return Applied(created=missing, present=[grant for grant in wanted if grant in have], removed=extra)
