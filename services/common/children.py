"""Run `framebus <command>` as a child process that sees exactly the given settings.

The demo, the tests and the benchmarks start the scheduler, workers and gateway this way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from framebus.services.common.settings import Settings


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child `framebus ...` process see ``settings`` (and nothing inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_")}
    return {**env, **settings.as_env(), **extra}


def launch(settings: Settings, args: list[str], log_path: Path, **extra_env: str) -> subprocess.Popen:
    """Start `framebus <args>` as a child in its own session, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "framebus.services.cli.main", *args],
                                env=child_env(settings, **extra_env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
