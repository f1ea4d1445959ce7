"""kafka-python plumbing the SDK needs (and the services' scripts share): a producer that
never pretends, a plain consumer, the default partitioner, and reading one key's latest
record (or all of them) from a compacted topic."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections import deque

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as SyncTopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from framebus.errors import KafkaAdapterError
from framebus.security import security_for

# Reconnect attempts back off to at most 1 s, not kafka-python's 30 s: after a broker restart a
# client reconnected up to 30 s late, past the scheduler's worker timeout (measured: 12 s).
RECONNECT = {"reconnect_backoff_max_ms": 1000}


class _ConnectionFailures(logging.Handler):
    """Keeps kafka-python's latest connection failures: when a client gives up with a bare
    "Unable to bootstrap", the reason (wrong password, untrusted certificate) is only logged."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.recent: deque[tuple[float, str]] = deque(maxlen=50)

    def emit(self, record: logging.LogRecord) -> None:
        self.recent.append((time.monotonic(), record.getMessage()))


_FAILURES = _ConnectionFailures()


def watch_connection_failures() -> None:
    """(Re)attach the failure log: a logging dictConfig clears the handlers of kafka's child loggers,
    so every client factory calls this before it connects."""
    for name in ("kafka.net.manager", "kafka.net.connection"):
        logger = logging.getLogger(name)
        if _FAILURES not in logger.handlers:
            logger.addHandler(_FAILURES)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)  # the reasons are warnings; our handler is the only reader of them
_REASONS = (
    ("SaslAuthenticationFailedError", "authentication failed: the cluster refused {who} (wrong password or user?)"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS: the broker's certificate is not trusted ({ca}): {detail}"),
    ("WRONG_VERSION_NUMBER", "TLS: the listener does not speak TLS (is FRAMEBUS_KAFKA_SECURITY_PROTOCOL right?)"),
    ("UnsupportedSaslMechanism", "the cluster does not accept SASL mechanism {mechanism}"),
)


def why_unreachable(bootstrap: str, *, within_s: float = 60.0) -> str | None:
    """The reason a connection to the cluster failed, in one line (None: no clue). What the client
    logged, else what a fresh probe finds: the client may only have seen the socket close (the
    broker closes it right after refusing a login, and the refusal is not always read first)."""
    security = security_for(bootstrap)
    who = f"user {security.username!r} ({security.mechanism})"
    if security.uses_oauth:
        from framebus.oauth import TokenRefused

        who = f"the token of OAuth client {security.username!r} (OAUTHBEARER)"
        try:
            security.tokens.token()
        except TokenRefused as exc:  # no token, so no login: the identity provider's answer is the reason
            return str(exc)
    now = time.monotonic()
    for at, message in reversed(_FAILURES.recent):
        if now - at > within_s:
            break
        for marker, template in _REASONS:
            if marker in message:
                detail = message.split(marker, 1)[1].strip(" :]").split(" (_ssl")[0]
                return template.format(who=who, ca=security.cafile or "the system's CAs", detail=detail,
                                       mechanism=security.mechanism)
    if security.uses_tls and (refused := _tls_refusal(bootstrap)) is not None:
        return refused
    if security.uses_sasl and broker_answers(bootstrap):
        return _REASONS[0][1].format(who=who)  # it answers, but not to us: the login
    return None


def _tls_refusal(bootstrap: str) -> str | None:
    """Why a TLS handshake with the first broker fails (None: it succeeds, or the broker is down)."""
    security = security_for(bootstrap)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as raw:
            with security.ssl_context().wrap_socket(raw, server_hostname=host.strip("[]")):
                return None
    except ssl.SSLCertVerificationError as exc:
        return (f"TLS: the broker's certificate is not trusted ({security.cafile or 'the system CAs'}): "
                f"certificate verify failed: {exc.verify_message}")
    except ssl.SSLError as exc:
        return f"TLS: the handshake failed: {exc.reason or exc}"
    except (OSError, ValueError):
        return None


def unreachable(bootstrap: str, exc: Exception) -> KafkaAdapterError:
    """The error to raise when a client cannot connect: the reason where one is known, and how we tried."""
    reason = why_unreachable(bootstrap) or f"{type(exc).__name__}: {exc}"
    return KafkaAdapterError(f"cannot reach Kafka at {bootstrap} ({security_for(bootstrap).describe()}): {reason}")


def producer(bootstrap: str, **overrides) -> KafkaProducer:
    """A producer that never pretends: acks from all in-sync replicas, idempotent, bounded retries."""
    config = {"bootstrap_servers": bootstrap, "acks": "all", "enable_idempotence": True,
              "linger_ms": 5, "delivery_timeout_ms": 30000, "request_timeout_ms": 10000, **RECONNECT,
              **security_for(bootstrap).kafka_python()}
    config.update(overrides)
    watch_connection_failures()
    try:
        return KafkaProducer(**config)
    except KafkaError as exc:
        raise unreachable(bootstrap, exc) from exc


def consumer(bootstrap: str, *topics: str, group_id: str | None, **overrides) -> KafkaConsumer:
    # read_committed: records of transactions that were aborted (a fenced scheduler's) are never seen.
    config = {"bootstrap_servers": bootstrap, "group_id": group_id, "auto_offset_reset": "earliest",
              "enable_auto_commit": False, "isolation_level": "read_committed", **RECONNECT}
    config.update(overrides)
    try:
        return reader(*topics, **config)
    except KafkaError as exc:
        raise unreachable(bootstrap, exc) from exc


def reader(*topics: str, bootstrap_servers: str, **config) -> KafkaConsumer:
    """A kafka-python consumer with the cluster's security (every consumer here is built by this)."""
    watch_connection_failures()
    return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **config,
                         **security_for(bootstrap_servers).kafka_python())


def broker_answers(bootstrap: str, *, timeout_s: float = 5.0) -> bool:
    """True if a broker of ``bootstrap`` answers a Kafka request on a fresh connection.

    A raw ApiVersions (v0) request, not a client library: the watchdog asks this when a
    service's own clients have gone silent, and must not share their state or their bugs."""
    tls = security_for(bootstrap).ssl_context()  # a TLS listener answers after the handshake (SASL: before login)
    for host_port in bootstrap.split(","):
        host, _, port = host_port.strip().rpartition(":")
        request = struct.pack(">hhih", 18, 0, 7, 15) + b"framebus-health"  # api key, version, correlation id, client id
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw:
                with (tls.wrap_socket(raw, server_hostname=host.strip("[]")) if tls else raw) as sock:
                    sock.sendall(struct.pack(">i", len(request)) + request)
                    header = _read_exactly(sock, 8)
        except (OSError, ValueError):
            continue
        if header is not None and struct.unpack(">ii", header)[1] == 7:
            return True
    return False


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (and kafka-python's) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def read_key(bootstrap: str, topic: str, key: str, *, timeout_s: float = 10.0) -> list:
    """Every record still kept for ``key``, oldest first, reading only its partition (a tombstone
    clears what came before it)."""
    consumer = reader(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                      bootstrap_timeout_ms=int(timeout_s * 1000))
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tp = SyncTopicPartition(topic, partition_for(key.encode(), len(partitions)))
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        found: list = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                if record.key == key.encode():
                    found = [] if record.value is None else [*found, record]
        return found
    finally:
        consumer.close()


def read_latest(bootstrap: str, topic: str, key: str, *, timeout_s: float = 10.0):
    """The latest record for ``key`` (None if absent or deleted), reading only its partition."""
    found = read_key(bootstrap, topic, key, timeout_s=timeout_s)
    return found[-1] if found else None


def partitions_of(bootstrap: str, topic: str) -> set[int]:
    consumer = reader(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        return set(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, *, timeout_s: float = 15.0) -> dict[bytes, object]:
    """Every live key's latest record in ``topic`` (tombstones remove keys)."""
    consumer = reader(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                             bootstrap_timeout_ms=int(timeout_s * 1000))
    try:
        tps = [SyncTopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        table: dict[bytes, object] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.value is None:
                        table.pop(record.key, None)
                    else:
                        table[record.key] = record
        return table
    finally:
        consumer.close()


def read_since(bootstrap: str, topic: str, since_s: float, *, timeout_s: float = 60.0) -> list:
    """Every record of ``topic`` with a timestamp at or after ``since_s`` (epoch seconds), in
    partition order, up to the end offsets seen at the start."""
    consumer = reader(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", **RECONNECT)
    try:
        tps = [SyncTopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps})
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        records: list = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
