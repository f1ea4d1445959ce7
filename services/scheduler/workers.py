"""What the scheduler knows of workers: capacity from announcements, jobs it sent, liveness.

Credit rule: a worker has room while ``slots`` > the jobs the scheduler counts for it,
which are the jobs it reports running plus those sent after the last sequence number
it reports having received. A job on its way through Kafka therefore always counts, so
a late announcement never opens a slot twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framebus.schemas.workers import JobDispatched, Shape, WorkerAnnounced


@dataclass
class WorkerState:
    announcement: WorkerAnnounced
    last_seen: float  # scheduler clock of the latest announcement
    next_seq: int = 0
    jobs: dict[str, JobDispatched] = field(default_factory=dict)  # sent and not known finished

    @property
    def worker_id(self) -> str:
        return self.announcement.worker_id

    def held(self) -> int:
        """Jobs taking a slot: those it runs (known to us or not) plus those it has not received yet."""
        unseen = [job for job in self.jobs.values() if job.seq > self.announcement.last_job_seq]
        return len(self.announcement.running_job_ids) + len(unseen)

    def free_slots(self) -> int:
        if not self.announcement.warm or self.announcement.stopping:
            return 0
        return max(0, self.announcement.slots - self.held())


DEAF_AFTER_S = 2.0  # no fetch answered for this long: the scheduler itself cannot hear Kafka


class WorkerRegistry:
    def __init__(self, timeout_s: float, reconnect_grace_s: float = 0.0) -> None:
        self.timeout_s = timeout_s
        self.reconnect_grace_s = reconnect_grace_s
        self.deaf_since: float | None = None  # when the scheduler last heard Kafka, while it cannot
        self._quiet_until = float("-inf")  # after hearing again: workers are reconnecting until then
        self._replaced: list[WorkerState] = []  # earlier processes of restarted workers: their jobs need a home
        self._workers: dict[str, WorkerState] = {}
        self.first_heard_at: float | None = None  # the first announcement since this scheduler started
        self.model_seen_at: dict[str, float] = {}  # model -> when a worker last announced it

    def announce(self, announcement: WorkerAnnounced, now: float) -> None:
        if self.first_heard_at is None:
            self.first_heard_at = now
        self.model_seen_at[announcement.model] = now
        state = self._workers.get(announcement.worker_id)
        if state is None:
            self._workers[announcement.worker_id] = WorkerState(announcement, now)
            return
        started = state.announcement.started_at
        if started is not None and announcement.started_at is not None and announcement.started_at != started:
            # The same worker id from a new process (a supervisor restarted it): the earlier one's
            # jobs are gone with it, and the new one reads its partition from the end.
            self._replaced.append(state)
            self._workers[announcement.worker_id] = WorkerState(announcement, now)
            return
        state.announcement, state.last_seen = announcement, now
        # Jobs it received and no longer runs are finished: forget them.
        for job in list(state.jobs.values()):
            if job.seq <= announcement.last_job_seq and job.job_id not in announcement.running_job_ids:
                del state.jobs[job.job_id]

    def with_room(self) -> list[WorkerState]:
        """Workers that can take a job now, the emptiest first (spreads load)."""
        ready = [w for w in self._workers.values() if w.free_slots() > 0]
        return sorted(ready, key=lambda w: (-w.free_slots(), w.worker_id))

    def next_seq(self, worker_id: str) -> int:
        state = self._workers[worker_id]
        seq = max(state.next_seq, state.announcement.last_job_seq + 1)
        state.next_seq = seq + 1
        return seq

    def record(self, job: JobDispatched) -> None:
        self._workers[job.worker_id].jobs[job.job_id] = job

    def finish(self, job_id: str) -> None:
        for state in self._workers.values():
            state.jobs.pop(job_id, None)

    def adopt(self, job: JobDispatched, now: float) -> None:
        """Track a job sent before a restart; its worker counts as silent until it announces."""
        state = self._workers.get(job.worker_id)
        if state is None:
            placeholder = WorkerAnnounced(worker_id=job.worker_id, model=job.shape.model, warm=False,
                                          max_batch_size=len(job.requests), slots=0)
            state = self._workers[job.worker_id] = WorkerState(placeholder, now)
        state.jobs[job.job_id] = job
        state.next_seq = max(state.next_seq, job.seq + 1)

    def holder_of(self, job_id: str) -> WorkerState | None:
        return next((w for w in self._workers.values() if job_id in w.jobs), None)

    def lapsed(self, now: float, heard_at: float | None = None) -> list[WorkerState]:
        """Remove and return workers silent for longer than the timeout (their jobs need a new home).

        ``heard_at``: when the broker last answered the scheduler. While the scheduler cannot hear
        Kafka no heartbeat can reach it, so no worker lapses; once it hears again, the deaf time
        is not counted against anyone (a broker outage is not every worker dying at once), and
        for ``reconnect_grace_s`` after that nobody lapses while the workers reconnect."""
        replaced, self._replaced = self._replaced, []
        if heard_at is not None and now - heard_at > DEAF_AFTER_S:
            if self.deaf_since is None:
                self.deaf_since = heard_at
            return replaced
        if self.deaf_since is not None:
            deaf_for = now - self.deaf_since
            for state in self._workers.values():
                state.last_seen += deaf_for
            self.deaf_since = None
            # The workers' clients reconnect too, some slower than ours (measured: up to 13 s for
            # kafka-python after an expired batch); one that cannot, exits by its own watchdog.
            self._quiet_until = now + self.reconnect_grace_s
        if now < self._quiet_until:
            return replaced
        dead = [w for w in self._workers.values() if now - w.last_seen > self.timeout_s]
        for state in dead:
            del self._workers[state.worker_id]
        return replaced + dead

    def accepts_any(self, shape: Shape) -> bool:
        return any(w.announcement.accepts(shape) for w in self._workers.values())

    def served_models(self) -> list[str]:
        return sorted({str(w.announcement.model) for w in self._workers.values()})

    def __len__(self) -> int:
        return len(self._workers)
