"""The CloudEvents ``source`` of every framebus component: one home, because services decide by it
(metering settles only results whose source is the worker; each service skips its own records)."""

from __future__ import annotations

SDK = "/framebus/sdk"
GATEWAY = "/framebus/gateway"
SCHEDULER = "/framebus/scheduler"
WORKER = "/framebus/worker"
METERING = "/framebus/metering"  # each instance appends its own id: /framebus/metering/<id>
NOTIFIER = "/framebus/notifier"
BATCH_SUBMIT = "/framebus/batch"
BATCH_TRACKER = "/framebus/batch-tracker"
