"""Child-process plumbing shared by the local servers: pid files, ports, waits, stops.

A pid file records the pid *and* the process start time, so ``framebus down`` only
ever signals a process that ``framebus up`` started, even after the pid was reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from framebus.infra.errors import PortInUseError, StartupError


@dataclass(frozen=True)
class ProcessRecord:
    """What ``up`` wrote about a server it started."""

    name: str
    pid: int
    create_time: float  # psutil's start time of ``pid``; guards against pid reuse
    endpoint: str
    command: tuple[str, ...]

    @classmethod
    def for_process(cls, name: str, pid: int, endpoint: str, command: Sequence[str]) -> ProcessRecord:
        return cls(name, pid, psutil.Process(pid).create_time(), endpoint, tuple(command))


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> ProcessRecord | None:
        try:
            raw = json.loads(self.path.read_text())
            raw["command"] = tuple(raw["command"])
            return ProcessRecord(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            # A torn or foreign file says nothing we can trust; treat it as absent.
            return None

    def write(self, record: ProcessRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def is_alive(record: ProcessRecord) -> bool:
    """True when ``record.pid`` is still the very process that was recorded."""
    try:
        proc = psutil.Process(record.pid)
        return abs(proc.create_time() - record.create_time) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(host: str, port: int, *, what: str, setting: str) -> None:
    if not port_is_free(host, port):
        raise PortInUseError(
            f"{what} cannot start: {host}:{port} is already in use by another process",
            f"stop that process, or choose another port with {setting}=<port>",
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (for tests that want their own servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tcp_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def spawn(command: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own session so Ctrl-C in the CLI does not reach it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def wait_until_ready(probe: Callable[[], bool], *, process: subprocess.Popen[bytes], what: str,
                     timeout_s: float, log_path: Path, poll_s: float = 0.2) -> float:
    """Poll ``probe`` until it answers; return the seconds it took.

    Raises StartupError at once if the process exits, or after ``timeout_s``. Either way
    nothing is left running.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last_error = ""
    while True:
        code = process.poll()
        if code is not None:
            raise StartupError(
                f"{what} exited with code {code} during startup; last log lines: {tail(log_path)}",
                f"read {log_path}",
            )
        try:
            if probe():
                return time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - any probe failure just means "not yet"
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            terminate(process.pid, timeout_s=5)
            raise StartupError(
                f"{what} did not answer within {timeout_s:g}s"
                + (f" (last probe error: {last_error})" if last_error else "")
                + f"; last log lines: {tail(log_path)}",
                f"read {log_path}; a slow machine may need a larger FRAMEBUS_STARTUP_TIMEOUT_S",
            )
        time.sleep(poll_s)


def terminate(pid: int, *, timeout_s: float) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [proc, *proc.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so two processes never fetch into the same cache dir at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
