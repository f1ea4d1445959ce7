"""Which scheduler is active: the one holding the single partition of framebus.scheduler.leader.

A scheduler owns every worker's credit and the whole backlog, so exactly one may run
decisions at a time. Kafka's group membership decides which: every scheduler joins the
consumer group ``framebus-scheduler-leader`` on a one-partition topic; the member assigned
that partition is active, the others are standbys that wait (and keep their membership
alive). When the active one dies, its session times out (10 s), the group rebalances and
a standby gets the partition, then restores the backlog and takes over.

Who gets the partition at a rebalance is decided by ``LeaseAssignor``: the member that
became active most recently keeps it (each member's join metadata says since when it is
active); with no active member, the oldest standby gets it (member ids start with the
scheduler's start time). So a standby that joins later never takes the partition from a
running scheduler, and a paused scheduler that wakes after its standby took over (SIGSTOP,
a long GC) does not take it back when it rejoins: it was active earlier, it gets nothing,
and it stops (its transactions are fenced anyway). If a rebalance ever assigns the
partition elsewhere, the active scheduler stops at once (``LeaseLost``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import ConsumerRebalanceListener
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from framebus.services.common.kafka import group_consumer
from framebus.services.common.settings import Settings

log = logging.getLogger(__name__)
LEASE_TOPIC = "framebus.scheduler.leader"


class LeaseAssignor:
    """The lease group's assignment protocol (an aiokafka partition assignor, used as an object):
    the one-partition lease topic goes to the member active most recently, else the oldest."""

    name = "framebus-lease"
    version = 0

    def __init__(self) -> None:
        self.active_since_ns = 0  # 0: a standby

    def metadata(self, topics) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), str(self.active_since_ns).encode())

    @classmethod
    def choose(cls, members: dict[str, int]) -> str:
        """Member id -> active since (0: standby); the one that holds the lease."""
        active = [member for member, since in members.items() if since > 0]
        if active:
            return max(active, key=lambda member: (members[member], member))
        return min(members)  # ids start with the start time: the oldest standby

    def assign(self, cluster, members) -> dict[str, ConsumerProtocolMemberAssignment]:
        since = {member: int(meta.user_data or b"0") for member, meta in members.items()}
        holder = self.choose(since)
        topics = sorted({topic for meta in members.values() for topic in meta.subscription})
        # The lease topic has one partition (the catalogue says so); a leader whose metadata does not
        # list it yet (a topic just created) still hands it out, or nobody would hold the lease.
        held = [(topic, sorted(cluster.partitions_for_topic(topic) or (0,))) for topic in topics]
        return {member: ConsumerProtocolMemberAssignment(self.version, held if member == holder else [], b"")
                for member in members}

    def on_assignment(self, assignment) -> None:
        pass


class LeaseLost(RuntimeError):
    """Another scheduler holds the lease now: this one must stop deciding."""


class _Watch(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.lost = asyncio.Event()
        self.standby = asyncio.Event()  # joined, and another member holds the partition

    async def on_partitions_revoked(self, revoked) -> None:
        pass  # every rebalance revokes first; what counts is the assignment that follows

    async def on_partitions_assigned(self, assigned) -> None:
        if assigned:
            self.held.set()
        elif self.held.is_set():
            self.lost.set()
        else:
            self.standby.set()


class SchedulerLease:
    def __init__(self, settings: Settings) -> None:
        self._watch = _Watch()
        self._assignor = LeaseAssignor()
        # Zero-padded start time first: among standbys, older schedulers sort first.
        self._consumer = group_consumer(settings, group="framebus-scheduler-leader",
                                        client_id=f"scheduler-{time.time_ns():020d}",
                                        partition_assignment_strategy=(self._assignor,))
        self._topic = settings.topic(LEASE_TOPIC)

    async def acquire(self) -> None:
        """Return once this scheduler is the active one; until then it is a standby."""
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self._watch)
        said = False
        while not self._watch.held.is_set():
            if self._watch.standby.is_set() and not said:
                log.info("standby: another scheduler is active; this one takes over when it stops")
                said = True
            await self._consumer.getmany(timeout_ms=500)  # polling keeps the membership alive
        self._assignor.active_since_ns = time.time_ns()  # said at every later join: the newest active keeps it

    async def hold(self) -> None:
        """Keep the membership alive while active; raises ``LeaseLost`` if the partition moves."""
        while True:
            await self._consumer.getmany(timeout_ms=500)
            if self._watch.lost.is_set():
                raise LeaseLost("another scheduler was given the lease; stopping so only one decides")

    async def release(self) -> None:
        await self._consumer.stop()  # leaves the group: a standby takes over without waiting for the session
