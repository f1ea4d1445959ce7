"""Secrets must never reach a log: the check the secured-Kafka tests share."""

from __future__ import annotations

from pathlib import Path


def assert_no_secret_in_logs(directory: Path, secrets: dict[str, str]) -> None:
    """No ``*.log`` under ``directory`` shows any of ``secrets`` (name -> value, the name for the message)."""
    for log in directory.glob("*.log"):
        text = log.read_text(errors="replace")
        for name, value in secrets.items():
            assert value not in text, f"{log.name} shows {name}"
