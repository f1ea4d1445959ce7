"""Which scheduler is active: the one holding the single partition of framebus.scheduler.leader.

A scheduler owns every worker's credit and the whole backlog, so exactly one may run
decisions at a time. Kafka's group membership decides which: every scheduler joins the
consumer group ``framebus-scheduler-leader`` on a one-partition topic; the member assigned
that partition is active, the others are standbys that wait (and keep their membership
alive). When the active one dies, its session times out (10 s), the group rebalances and
a standby gets the partition, then restores the backlog and takes over.

Member ids start with the scheduler's start time, and aiokafka's round-robin assignor
hands the partition to the first member id in sorted order, so a standby that joins
later never takes the partition from a running active scheduler. If a rebalance ever
assigns it elsewhere, the active scheduler stops at once (``LeaseLost``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import ConsumerRebalanceListener

from framebus.services.common.kafka import group_consumer
from framebus.services.common.settings import Settings

log = logging.getLogger(__name__)
LEASE_TOPIC = "framebus.scheduler.leader"


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
        # Zero-padded start time first: older schedulers sort first and keep the partition.
        self._consumer = group_consumer(settings, group="framebus-scheduler-leader",
                                        client_id=f"scheduler-{time.time_ns():020d}")
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

    async def hold(self) -> None:
        """Keep the membership alive while active; raises ``LeaseLost`` if the partition moves."""
        while True:
            await self._consumer.getmany(timeout_ms=500)
            if self._watch.lost.is_set():
                raise LeaseLost("another scheduler was given the lease; stopping so only one decides")

    async def release(self) -> None:
        await self._consumer.stop()  # leaves the group: a standby takes over without waiting for the session
