"""The one way a record that cannot be used is kept: as it came, plus why, on a dead-letter
or rejected topic (framebus.requests.rejected, framebus.results.dead, framebus.jobs.dead).

Headers (one spelling everywhere):
- ``framebus-dead-reason``: a machine-readable reason (an ``ErrorCode`` value);
- ``framebus-dead-detail``: what was wrong, for a person (at most 2,000 characters);
- ``framebus-dead-source``: ``topic/partition/offset`` it came from; after a crash the same
  record may be dead-lettered again, and readers drop copies by this position;
- further ``framebus-dead-*`` headers a service adds (the worker names itself).
"""

from __future__ import annotations

from framebus.schemas.codec import KafkaRecord
from framebus.services.common import metrics

PREFIX = "framebus-dead-"


def dead_letter(record, reason: str, detail: str, **extra: str) -> KafkaRecord:
    """``record`` (a consumer record) as it came, with the reason headers added (and counted)."""
    metrics.dead_letters.add(1, {"topic": record.topic, "reason": reason})
    headers = [*(record.headers or ()),
               (f"{PREFIX}reason", reason.encode()), (f"{PREFIX}detail", detail[:2000].encode()),
               (f"{PREFIX}source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
               *((f"{PREFIX}{name}", value.encode()) for name, value in extra.items())]
    return KafkaRecord(record.key, record.value or b"", headers)


def reason_of(record) -> tuple[str, str]:
    """The (reason, detail) a dead letter carries."""
    headers = dict(record.headers or ())
    return (headers.get(f"{PREFIX}reason", b"").decode(), headers.get(f"{PREFIX}detail", b"").decode())
