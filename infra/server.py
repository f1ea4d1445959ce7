"""A local server framebus fetches, starts, watches and stops: the shared life cycle.

Subclasses say how to fetch, prepare, launch and probe one server; this class owns the
order (pid file, port checks, spawn, readiness wait, clean stop) so Kafka and S3 behave
the same way under ``framebus up`` / ``down`` and in the test fixtures.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from framebus.infra.errors import StartupError
from framebus.infra.process import (
    PidFile,
    ProcessRecord,
    is_alive,
    require_free_port,
    spawn,
    terminate,
    wait_until_ready,
)


@dataclass(frozen=True)
class StartResult:
    record: ProcessRecord
    reused: bool  # True when an earlier ``up`` had already started it
    fetch_s: float
    ready_s: float


@dataclass(frozen=True)
class PortSpec:
    port: int
    setting: str  # the env var that moves it, named in the error when it is taken


class LocalServer(ABC):
    name: str  # short name: pid file, log and messages use it
    title: str  # what people call it: "Kafka broker", "S3 server"

    def __init__(self, *, host: str, state_dir: Path, cache_dir: Path,
                 startup_timeout_s: float = 90.0, stop_timeout_s: float = 30.0) -> None:
        self.host = host
        self.state_dir = state_dir / self.name
        self.cache_dir = cache_dir
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.pid_file = PidFile(self.state_dir / "pid.json")
        self.log_path = self.state_dir / f"{self.name}.out"

    # --- what each server defines -------------------------------------------------
    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def ports(self) -> Sequence[PortSpec]: ...

    @abstractmethod
    def is_fetched(self) -> bool: ...

    @abstractmethod
    def fetch(self) -> None:
        """Download or build the server into the cache; raise FetchError on failure."""

    @abstractmethod
    def prepare(self) -> None:
        """Make the data directory ready (format storage, write config)."""

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def probe(self) -> bool:
        """True once the server answers real requests, not just TCP."""

    def env(self) -> Mapping[str, str]:
        return {}

    # --- the life cycle -------------------------------------------------------------
    def running(self) -> ProcessRecord | None:
        """The record of a server an earlier ``start`` left running, if it still runs.

        A pid file whose process is gone is stale: it is removed here.
        """
        record = self.pid_file.read()
        if record is None:
            return None
        if is_alive(record):
            return record
        self.pid_file.remove()
        return None

    def start(self) -> StartResult:
        existing = self.running()
        if existing is not None:
            return StartResult(existing, reused=True, fetch_s=0.0, ready_s=0.0)
        for spec in self.ports():
            require_free_port(self.host, spec.port, what=self.title, setting=spec.setting)
        fetch_started = time.monotonic()
        if not self.is_fetched():
            self.fetch()
        fetch_s = time.monotonic() - fetch_started
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        command = self.command()
        try:
            process = spawn(command, log_path=self.log_path, env=self.env(), cwd=self.state_dir)
        except OSError as exc:
            raise StartupError(f"{self.title} could not be launched: {exc}", "check the install") from exc
        record = ProcessRecord.for_process(self.name, process.pid, self.endpoint, command)
        self.pid_file.write(record)
        try:
            ready_s = wait_until_ready(self.probe, process=process, what=self.title,
                                       timeout_s=self.startup_timeout_s, log_path=self.log_path)
        except StartupError:
            self.pid_file.remove()
            raise
        return StartResult(record, reused=False, fetch_s=fetch_s, ready_s=ready_s)

    def stop(self) -> bool:
        """Stop the server this pid file names; never touch any other process."""
        record = self.running()
        if record is None:
            return False
        terminate(record.pid, timeout_s=self.stop_timeout_s)
        self.pid_file.remove()
        return True

    def purge(self) -> None:
        """Stop the server if it runs, then delete its data, logs and pid file."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)
