"""The process plumbing: pid files that survive pid reuse, port checks, bounded waits and stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from framebus.infra.errors import PortInUseError, StartupError
from framebus.infra.process import (
    PidFile,
    ProcessRecord,
    free_port,
    is_alive,
    port_is_free,
    require_free_port,
    spawn,
    terminate,
    wait_until_ready,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sleeper(tmp_path: Path):
    process = spawn(SLEEPER, log_path=tmp_path / "sleeper.log")
    yield process
    terminate(process.pid, timeout_s=5)


def test_pid_file_round_trips_a_record(tmp_path: Path, sleeper) -> None:
    pid_file = PidFile(tmp_path / "x" / "pid.json")
    record = ProcessRecord.for_process("x", sleeper.pid, "127.0.0.1:1", SLEEPER)
    pid_file.write(record)
    assert pid_file.read() == record
    pid_file.remove()
    assert pid_file.read() is None


def test_torn_pid_file_reads_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "pid.json"
    path.write_text('{"name": "kafka", "pid": 12')
    assert PidFile(path).read() is None


def test_record_of_a_reused_pid_is_not_alive(sleeper) -> None:
    record = ProcessRecord.for_process("x", sleeper.pid, "e", SLEEPER)
    assert is_alive(record)
    # Same pid, different start time: a different process that happens to have the pid.
    assert not is_alive(ProcessRecord("x", sleeper.pid, record.create_time - 100, "e", ()))


def test_record_of_an_exited_process_is_not_alive(tmp_path: Path) -> None:
    process = spawn([sys.executable, "-c", "pass"], log_path=tmp_path / "log")
    record = ProcessRecord.for_process("x", process.pid, "e", ())
    process.wait(10)
    assert not is_alive(record)


def test_port_in_use_names_the_setting_that_moves_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        with pytest.raises(PortInUseError) as caught:
            require_free_port("127.0.0.1", port, what="Kafka broker", setting="FRAMEBUS_KAFKA_PORT")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "FRAMEBUS_KAFKA_PORT=" in message and "\n" not in message
    assert port_is_free("127.0.0.1", free_port())


def test_wait_reports_a_process_that_exits_during_startup(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    process = spawn([sys.executable, "-c", "print('config error: bad listener'); raise SystemExit(3)"], log_path=log)
    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        wait_until_ready(lambda: False, process=process, what="Test server", timeout_s=30, log_path=log)
    assert time.monotonic() - started < 10
    assert "exited with code 3" in str(caught.value) and "config error: bad listener" in str(caught.value)


def test_wait_gives_up_in_bounded_time_and_leaves_nothing_running(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    process = spawn(SLEEPER, log_path=log)

    def probe() -> bool:
        raise ConnectionRefusedError("not listening yet")

    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        wait_until_ready(probe, process=process, what="Test server", timeout_s=0.5, log_path=log)
    assert time.monotonic() - started < 10
    assert "did not answer within 0.5s" in str(caught.value)
    assert "ConnectionRefusedError: not listening yet" in str(caught.value)
    assert process.wait(5) is not None


def test_terminate_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = spawn([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                     log_path=tmp_path / "log")
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    terminate(stubborn.pid, timeout_s=0.5)
    assert stubborn.wait(5) is not None
    assert time.monotonic() - started < 5
    assert not psutil.pid_exists(stubborn.pid) or psutil.Process(stubborn.pid).status() == psutil.STATUS_ZOMBIE


def test_spawned_process_runs_in_its_own_session(tmp_path: Path, sleeper) -> None:
    # Ctrl-C in the CLI goes to the CLI's process group, not to servers it started.
    assert psutil.Process(sleeper.pid).as_dict(["pid"])  # still running
    assert subprocess.run(["ps", "-o", "sid=", "-p", str(sleeper.pid)], capture_output=True, text=True).stdout.strip() \
        == str(sleeper.pid)

