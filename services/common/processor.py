"""The one runtime every stream processor runs on: scheduler, metering, notifier, batch tracker.

A service supplies pure handlers; the runtime owns the Kafka loop and its guarantees:

    read a batch (per lane) -> handle each record -> send every output -> wait for the
    broker's acknowledgements -> commit the batch, for the partitions still owned

- **At least once, made exactly once by the handlers.** Input offsets are committed only
  after everything their records produced is on the broker; a crash replays the
  uncommitted batch, and handlers drop what they already did (every output here is
  idempotent: keyed, compacted or deduplicated on its id).
- **Ordered output.** Deciding and handing records to the producer happen under one
  lock, so records for one key reach Kafka in the order they were decided, whichever
  lane or tick decided them (the scheduler's backlog relies on it).
- **One error policy.** A handler that raises on a record goes to the lane's
  ``on_error`` hook: by default the record is dead-lettered with the reason
  (``internal_error``) and the lane goes on; a lane without a dead-letter topic stops
  the processor. A send the broker refuses always stops it: the service's memory
  would be ahead of Kafka, and the restart rebuilds it from Kafka.
- **A watchdog on the clients** (``watchdog.py``): a processor whose consumer hears no fetch
  response and whose producer gets no acknowledgement for ``client_stall_s`` while the broker
  answers a fresh connection stops with ``ClientsWedged``, and its host exits non-zero.
- **Fencing per input partition** where it matters (metering's money): each input partition
  commits through a transactional producer of its own, so the next owner of a partition fences
  a paused previous one (``producer_per_partition``). A rebalance first lets the batch in hand
  commit, so an ordinary rebalance fences nobody.
- **Topics from the catalogue only**, resolved when the processor is built: a name
  that is not in ``framebus.schemas.topics`` fails at start-up, not as an empty read.

Lanes share one consumer (one group), each reading its own partitions in small
batches, so a burst on one input never delays another (the scheduler reads interactive
requests apart from batch ones). Ticks are periodic handlers (the scheduler's step, the
batch tracker's check) whose outputs go through the same ordered send path.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced

from framebus.kafka import broker_answers
from framebus.schemas.codec import KafkaRecord
from framebus.schemas.state import ErrorCode
from framebus.services.common import metrics
from framebus.services.common.deadletters import dead_letter
from framebus.services.common.settings import Settings
from framebus.services.common.streams import BatchSender, commit_processed, next_offsets, still_owned
from framebus.services.common.watchdog import ClientHealth, ClientWatch

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SMALL_OUTPUT = 3  # below this many records (a webhook attempt's log line), sent into the producer's open batches


@dataclass
class Outputs:
    """What handling produced: (catalogue topic, record) pairs, sent in this order.
    A record whose value is None is a tombstone."""

    records: list[tuple[str, KafkaRecord]] = field(default_factory=list)

    def add(self, topic: str, record: KafkaRecord) -> Outputs:
        self.records.append((topic, record))
        return self

    def extend(self, pairs) -> Outputs:
        self.records.extend(pairs.records if isinstance(pairs, Outputs) else pairs)
        return self

    def __bool__(self) -> bool:
        return bool(self.records)

    def __len__(self) -> int:
        return len(self.records)


Handler = Callable[[object, float], Outputs]  # (consumer record, now) -> outputs
ErrorHook = Callable[[Exception, object, float], Outputs]  # returns what to send instead, or raises to stop


@dataclass(frozen=True)
class Lane:
    """One input of a processor: catalogue topics read together, in batches of at most ``max_records``."""

    name: str
    topics: tuple[str, ...]
    handle: Handler
    max_records: int = 500
    # Where a record the handler fails on goes, with the reason; None: such a failure stops the processor.
    dead_letter_topic: str | None = None
    on_error: ErrorHook | None = None  # replaces the dead letter (the scheduler refuses the request instead)


@dataclass(frozen=True)
class Tick:
    """A handler run every ``interval_s``: ``handle(now)`` decides, the runtime sends (without waiting)."""

    name: str
    interval_s: float
    handle: Callable[[float], Outputs | Awaitable[Outputs]]


class ProcessorStopped(Exception):
    """The broker refused a record the processor sent; it stops rather than run ahead of Kafka."""


class ClientsWedged(Exception):
    """The processor's Kafka clients made no progress while the broker answered: restart the service."""


class Processor:
    """Runs lanes and ticks over a producer and a consumer that ``app.py`` builds (the consumer
    through ``consumer_for(topics)``, for the lanes' topics).

    ``outputs`` names every catalogue topic the handlers may write; sending anywhere else is a bug
    and raises. ``tasks`` are further coroutines that live as long as the processor (the
    scheduler's lease, the notifier's webhook dispatch); one that fails stops the processor.
    """

    # What a failure means for the process, set by its host (hosting.py: exit, even if a client's
    # shutdown hangs). Empty in tests, where processors run inside the test process.
    failure_hooks: ClassVar[list[Callable[[BaseException], None]]] = []

    def __init__(self, name: str, *, settings: Settings, producer: AIOKafkaProducer,
                 consumer_for: Callable[[list[str]], AIOKafkaConsumer] | None = None,
                 lanes: Sequence[Lane] = (), ticks: Sequence[Tick] = (),
                 outputs: Sequence[str] = (), clock: Clock = time.time, transactional: bool = False,
                 group_id: str | None = None, probe: Callable[[], bool] | None = None,
                 followers: Callable[[], Sequence[float]] = tuple,
                 producer_per_partition: Callable[[TopicPartition], AIOKafkaProducer] | None = None,
                 on_assigned: Callable[[set[TopicPartition]], Awaitable[None]] | None = None) -> None:
        self.name = name
        # Transactional: outputs and the input offsets they answer commit together (the producer
        # needs a transactional id; consumers of the outputs read with isolation read_committed).
        self.transactional = transactional
        # Fenced per input partition: each partition's batches commit in transactions of a producer
        # whose transactional id names that partition. Whoever owns the partition next initialises
        # that id, which fences whoever owned it before (a paused process whose partitions moved):
        # its open transaction is aborted and its next one fails. aiokafka sends no group generation
        # with its offsets (no KIP-447), so one id per process could not fence it. ``producer`` then
        # serves only ticks and ``emit``.
        self._producer_per_partition = producer_per_partition
        self._partition_producers: dict[TopicPartition, tuple[AIOKafkaProducer, BatchSender]] = {}
        self._on_assigned = on_assigned  # e.g. metering folds the ledger to its end before settling more
        self._prepared: set[TopicPartition] = set()  # assigned, and ``_assigned`` has run for them
        self.group_id = group_id
        self.producer = producer
        self.lanes = tuple(lanes)
        self.ticks = tuple(ticks)
        self.clock = clock
        # Every name resolved now: a topic outside the catalogue fails here, at start-up.
        self._topics = {topic: settings.topic(topic)
                        for topic in {*outputs, *(lane.dead_letter_topic for lane in self.lanes if lane.dead_letter_topic)}}
        self._lane_topics = {lane.name: {settings.topic(topic) for topic in lane.topics} for lane in self.lanes}
        # One consumer (one group) reads every lane; ``consumer_for`` builds it for their topics.
        self.consumer = consumer_for(self.input_topics()) if consumer_for is not None and self.lanes else None
        if self.consumer is not None:
            self.consumer.subscribe(topics=self.input_topics(), listener=_Rebalance(self))
        self._sender = BatchSender(producer)
        self._emit_lock = asyncio.Lock()
        self._refused: BaseException | None = None
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.handled = 0
        self.dead_lettered = 0
        # Wall-clock seconds throughout: aiokafka stamps fetch responses with time.time().
        self.watch = ClientWatch(settings.watchdog(), time.time())
        self._probe = probe or (lambda: broker_answers(settings.bootstrap_servers))
        self._followers = followers  # when each of the service's other consumers (its tables) last heard the broker
        self._acked_at = 0.0
        self._unacked = 0  # records handed to a producer and not yet acknowledged (or refused)
        # Per input partition: the offset up to which every record was handled (and its outputs sent).
        # Past control records too (the consumer's position), so a transaction marker never holds it back.
        self._handled_through: dict[TopicPartition, int] = {}

    def input_topics(self) -> list[str]:
        """Full names of every lane's topics: what the consumer subscribes to."""
        return sorted({topic for topics in self._lane_topics.values() for topic in topics})

    # --- running ------------------------------------------------------------------------------
    async def run(self, *, tasks: Sequence[Callable[[], Awaitable[None]]] = (),
                  max_seconds: float | None = None) -> None:
        """Start the clients, run lanes, ticks and ``tasks`` until ``stop()``, ``max_seconds`` or a failure."""
        await self.producer.start()
        if self.consumer is not None:
            await self.consumer.start()
        running = [asyncio.create_task(self._lane(lane), name=f"{self.name}:{lane.name}") for lane in self.lanes]
        running += [asyncio.create_task(self._tick(tick), name=f"{self.name}:{tick.name}") for tick in self.ticks]
        running += [asyncio.create_task(task(), name=f"{self.name}:task") for task in tasks]
        running.append(asyncio.create_task(self._watch_clients(), name=f"{self.name}:watchdog"))
        stopping = asyncio.create_task(self._stop.wait(), name=f"{self.name}:stop")
        unobserve = metrics.observe("framebus.consumer.lag", self.lag)
        self.ready.set()
        try:
            done, _ = await asyncio.wait([*running, stopping], timeout=max_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    task.result()  # a lane, tick or task failed: raise it (the host stops the service)
            if self._refused is not None:  # a send or transaction failed while the lanes were idle
                raise ProcessorStopped(f"{self.name}: the broker refused its output") from self._refused
        except Exception as exc:
            for hook in self.failure_hooks:
                hook(exc)
            raise
        finally:
            unobserve()
            for task in [*running, stopping]:
                task.cancel()
            await asyncio.gather(*running, stopping, return_exceptions=True)
            if self.consumer is not None:
                await self.consumer.stop()
            for producer, _ in self._partition_producers.values():
                await _stopped(producer)
            await self.producer.stop()  # flushes what was handed to it
            log.info("%s stopped: %d records handled, %d dead-lettered", self.name, self.handled, self.dead_lettered)

    def stop(self) -> None:
        self._stop.set()

    def lag(self) -> list[tuple[float, dict[str, str]]]:
        """Records not yet handled per input topic (summed over the partitions this instance owns),
        from the high watermark of the latest fetch: read by /metrics, from another thread."""
        if self.consumer is None:
            return []
        per_topic: dict[str, int] = {}
        for tp, handled in list(self._handled_through.items()):
            end = self.consumer.highwater(tp)
            if end is not None:
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, end - handled)
        group = self.group_id or self.name
        return [(float(n), {"group": group, "topic": topic}) for topic, n in sorted(per_topic.items())]

    # --- the watchdog ---------------------------------------------------------------------------
    def broker_heard_at(self) -> float:
        """When the broker last answered this processor (a fetch response or an acknowledged send).
        Without a consumer, a producer with nothing awaiting acknowledgement is idle, not silent:
        it counts as heard now (the batch tracker, which has no lane, sent nothing for 30 s and was
        called wedged); its tables' consumers, its ``followers``, are then what the watchdog hears."""
        if self.consumer is None and self._unacked == 0:
            return time.time()
        heard = self._acked_at
        if self.consumer is not None:
            for tp in self.consumer.assignment():
                polled = self.consumer.last_poll_timestamp(tp)
                if polled is not None:
                    heard = max(heard, polled / 1000)
        return heard

    async def _watch_clients(self) -> None:
        """Stop with ClientsWedged once the clients are wedged (see watchdog.py); log each change of health.
        Progress is that of the client heard from least recently: one wedged consumer is enough."""
        while True:
            await asyncio.sleep(1.0)
            before = self.watch.health
            self.watch.progressed(min([self.broker_heard_at(), *self._followers()]))
            if before is not ClientHealth.LIVE and self.watch.health is ClientHealth.LIVE:
                log.warning("%s: Kafka clients live again", self.name)
            if not self.watch.should_probe(time.time()):
                continue
            health = self.watch.probed(time.time(), await asyncio.to_thread(self._probe))
            if health is ClientHealth.WEDGED:
                log.critical("%s: %s; stopping for a restart", self.name, self.watch.describe(time.time()))
                raise ClientsWedged(f"{self.name}: {self.watch.describe(time.time())}")
            if health is not before:
                log.warning("%s: %s", self.name, self.watch.describe(time.time()))

    async def _lane(self, lane: Lane) -> None:
        assert self.consumer is not None
        topics = self._lane_topics[lane.name]
        while True:
            mine = [tp for tp in self.consumer.assignment() if tp.topic in topics and tp in self._prepared]
            if not mine:  # not assigned yet, or a rebalance moved them away
                await asyncio.sleep(0.1)
                continue
            batches = await self.consumer.getmany(*mine, timeout_ms=200, max_records=lane.max_records)
            if batches:
                await self.process(lane, batches)
                metrics.records_handled.add(sum(map(len, batches.values())), {"processor": self.name, "lane": lane.name})
            # Nothing read since this getmany is unhandled: the positions now are what is handled.
            for tp in mine:
                try:
                    self._handled_through[tp] = await self.consumer.position(tp)
                except IllegalStateError:  # moved away by a rebalance meanwhile
                    self._handled_through.pop(tp, None)

    async def read_to_end(self, lane_name: str, *, poll_s: float = 0.05) -> None:
        """Return once ``lane_name`` has handled every record that was on its partitions when
        called (for read_committed consumers, every committed one): a barrier for a decision
        that must not be taken ahead of that input (the scheduler re-queues a lost worker's
        requests only once the results it may have sent are read)."""
        assert self.consumer is not None
        topics = self._lane_topics[lane_name]
        while not (mine := [tp for tp in self.consumer.assignment() if tp.topic in topics]):
            await asyncio.sleep(poll_s)
        ends = await self.consumer.end_offsets(mine)
        while any(self._handled_through.get(tp, -1) < end for tp, end in ends.items()
                  if tp in self.consumer.assignment()):
            await asyncio.sleep(poll_s)

    async def process(self, lane: Lane, batches: dict[TopicPartition, list]) -> None:
        """Handle one batch, send its outputs, wait until the broker has them all, then commit it
        (in one transaction with the outputs when the processor is transactional)."""
        if self._producer_per_partition is not None:
            await self._in_partition_transactions(lane, batches)
            return
        async with self._emit_lock:
            now = self.clock()
            out = Outputs()
            for records in batches.values():
                for record in records:
                    out.extend(self.handle_record(lane, record, now))
            if self.transactional:
                assert self.consumer is not None
                await self._in_transaction(out, still_owned(self.consumer, next_offsets(batches),
                                                            f"{self.name} {lane.name}"))
                return
            futures = await self._send(out)
        await asyncio.gather(*futures)  # a refused record raises here: the batch is never committed
        if self.consumer is not None:
            await commit_processed(self.consumer, next_offsets(batches), f"{self.name} {lane.name}")

    async def _in_partition_transactions(self, lane: Lane, batches: dict[TopicPartition, list]) -> None:
        """Handle a batch partition by partition; each partition's outputs and offset commit in a
        transaction of its own producer, the partitions' transactions concurrently."""
        async with self._emit_lock:
            now = self.clock()
            assert self.consumer is not None
            owned = self.consumer.assignment()
            commits = []
            for tp, records in batches.items():
                out = Outputs()
                for record in records:
                    out.extend(self.handle_record(lane, record, now))
                if tp not in owned:
                    log.warning("%s %s: %s moved away before its batch was committed; its new owner reads it "
                                "again", self.name, lane.name, tp)
                    continue
                commits.append(self._in_transaction(out, {tp: records[-1].offset + 1},
                                                    via=await self._partition_producer(tp)))
            await asyncio.gather(*commits)

    async def _partition_producer(self, tp: TopicPartition) -> tuple[AIOKafkaProducer, BatchSender]:
        held = self._partition_producers.get(tp)
        if held is None:
            assert self._producer_per_partition is not None
            producer = self._producer_per_partition(tp)
            await producer.start()  # initialises the partition's transactional id: its previous owner is fenced
            held = self._partition_producers[tp] = (producer, BatchSender(producer))
        return held

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        """After a rebalance: fence the previous owners of our partitions at once (not at their next
        record), let go of the producers of partitions now elsewhere, then the service's hook."""
        async with self._emit_lock:  # a producer is made once per partition, never twice at a time
            try:
                if self._producer_per_partition is not None:
                    for tp in [tp for tp in self._partition_producers if tp not in assigned]:
                        await _stopped(self._partition_producers.pop(tp)[0])
                    for tp in sorted(assigned, key=lambda tp: (tp.topic, tp.partition)):
                        await self._partition_producer(tp)
                if self._on_assigned is not None:
                    await self._on_assigned(assigned)
            except Exception as exc:  # noqa: BLE001 - aiokafka would log it and carry on
                # Unprepared partitions would never be read while their consumer looked healthy:
                # stop instead, and the restart prepares them.
                log.critical("%s: could not take over %d partitions; stopping: %r", self.name, len(assigned), exc)
                self._fail(exc)
                return
            self._prepared = set(assigned)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Before a rebalance: the batch in hand finishes and commits first, so its partitions'
        next owner neither reads it again nor fences a transaction that was about to commit."""
        async with self._emit_lock:
            self._prepared -= revoked
            for tp in revoked:
                self._handled_through.pop(tp, None)

    async def _in_transaction(self, out: Outputs, offsets: dict[TopicPartition, int] | None = None,
                              via: tuple[AIOKafkaProducer, BatchSender] | None = None) -> None:
        """Send ``out`` and commit ``offsets`` (input consumed, partitions still owned) as one transaction: all of it becomes
        visible to read_committed readers, or none. Any failure here (a broker refusal, or this
        producer fenced by a newer one with the same transactional id) stops the processor: its
        memory holds decisions Kafka never committed, and the restart rebuilds from what it did.
        ``via``: a partition's own producer (and its sender) instead of the processor's."""
        if not out and not offsets:
            return
        producer, sender = via or (self.producer, self._sender)
        await producer.begin_transaction()
        try:
            futures = await self._send(out, producer, sender)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
            metrics.transactions.add(1, {"processor": self.name})
            self._acked_at = time.time()
            await asyncio.gather(*futures)
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, asyncio.CancelledError):  # cancelled: stopping after another failure
                log.critical("%s: a transaction did not commit; stopping: %s", self.name, _why(exc))
            raise ProcessorStopped(f"{self.name}: a transaction did not commit: {exc!r}") from exc

    def handle_record(self, lane: Lane, record, now: float) -> Outputs:
        """What one record produces: its handler's outputs, or what the error policy makes of a failure."""
        self.handled += 1
        try:
            return lane.handle(record, now)
        except Exception as exc:  # one record's failure must not stop the processor for all the others
            log.exception("%s %s failed on %s/%s/%s", self.name, lane.name, record.topic, record.partition,
                          record.offset)
            if lane.on_error is not None:
                return lane.on_error(exc, record, now)
            if lane.dead_letter_topic is None:
                raise
            self.dead_lettered += 1
            return Outputs().add(lane.dead_letter_topic, dead_letter(
                record, ErrorCode.INTERNAL_ERROR.value, f"{self.name} failed on this record: {exc!r}"))

    async def _tick(self, tick: Tick) -> None:
        while True:
            await asyncio.sleep(tick.interval_s)
            await self.emit(tick.handle, wait=False)

    # --- sending --------------------------------------------------------------------------------
    async def emit(self, decide: Callable[[float], Outputs | Awaitable[Outputs]] | Outputs, *,
                   wait: bool = True) -> None:
        """Decide (``decide(now)``) and send under the ordering lock; ``wait``: until acknowledged.

        Without ``wait``, a refused record stops the processor at its next step.
        """
        if self._refused is not None:
            raise ProcessorStopped(f"{self.name}: the broker refused a record") from self._refused
        async with self._emit_lock:
            if isinstance(decide, Outputs):
                out = decide
            else:
                out = decide(self.clock())
                if inspect.isawaitable(out):
                    out = await out
            if self.transactional:
                await self._in_transaction(out)
                return
            futures = await self._send(out)
        if wait:
            await asyncio.gather(*futures)

    async def _send(self, out: Outputs, producer: AIOKafkaProducer | None = None,
                    sender: BatchSender | None = None) -> list[asyncio.Future]:
        if not out:
            return []
        producer, sender = producer or self.producer, sender or self._sender
        try:
            pairs = [(self._topics[topic], record) for topic, record in out.records]
        except KeyError as exc:
            raise ValueError(f"{self.name} sent to {exc.args[0]!r}, which it did not declare as an output") from exc
        if len(pairs) < SMALL_OUTPUT:
            # One or two records (a webhook attempt's log line and its pending update): the producer's own
            # accumulator batches them with their neighbours; a produce batch each would cost more.
            futures = [await producer.send(topic, record.value, record.key, headers=record.headers)
                       for topic, record in pairs]
        else:
            futures = await sender.send(pairs)
        self._unacked += len(futures)
        for future in futures:
            future.add_done_callback(self._delivered)
        return futures

    def _delivered(self, future: asyncio.Future) -> None:
        self._unacked -= 1
        if not future.cancelled() and future.exception() is None:
            self._acked_at = time.time()
        elif not future.cancelled() and self._refused is None:
            log.critical("the broker refused a record of %s; stopping: %s", self.name, _why(future.exception()))
            self._fail(future.exception())

    def _fail(self, exc: BaseException) -> None:
        """Stop: this processor's memory holds decisions Kafka does not have."""
        self._refused = self._refused or exc
        self._stop.set()


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these before the group moves on (see ``_revoked`` and ``_assigned``)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked) -> None:
        await self.processor._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self.processor._assigned(set(assigned))


async def _stopped(producer: AIOKafkaProducer) -> None:
    """Stop a partition's producer that may have been fenced meanwhile (its partition moved on)."""
    try:
        await producer.stop()
    except Exception as exc:  # noqa: BLE001 - it is being let go of either way
        log.info("a partition producer stopped with %r", exc)


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, ProducerFenced):
        return ("fenced: another instance took over the input partitions while this one was paused "
                f"(its work there is aborted and redone by the new owner) ({exc})")
    return repr(exc)
