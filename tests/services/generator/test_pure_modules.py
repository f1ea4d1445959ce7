"""The worker's decision modules import no Kafka, S3, ffmpeg or HTTP code, directly or through
another generator module, so their tests need no servers and no tools."""

from __future__ import annotations

import ast
import importlib.util

import pytest

PURE = ("batching", "cancels", "clock", "errors", "finishing", "fingerprint", "outcomes", "rendered")
TRANSPORT = {"kafka", "aiokafka", "faust", "boto3", "botocore", "ffmpeg", "httpx", "requests", "torch"}
ADAPTERS = {"framebus.services.common.kafka", "framebus.services.common.storage", "framebus.kafka",
            "framebus.client"}


def imports_of(module: str) -> set[str]:
    """Modules imported at run time (not under TYPE_CHECKING) by ``module``'s source."""
    source = open(importlib.util.find_spec(module).origin).read()
    try:
        tree = ast.parse(source)
    except SystemError:  # CPython 3.11 < 3.11.8 (gh-106905): a spurious recursion-depth mismatch with threads about
        tree = ast.parse(source)
    found: set[str] = set()
    skipped = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
               and getattr(stmt.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def reachable(module: str, seen: set[str] | None = None) -> set[str]:
    """Everything ``module`` imports, following framebus.services.* modules."""
    seen = set() if seen is None else seen
    for name in imports_of(module):
        if name not in seen:
            seen.add(name)
            if name.startswith("framebus.services.") and importlib.util.find_spec(name) is not None:
                reachable(name, seen)
    return seen


@pytest.mark.parametrize("name", PURE)
def test_a_decision_module_reaches_no_transport(name: str) -> None:
    imported = reachable(f"framebus.services.generator.{name}")
    assert not {m for m in imported if m.split(".")[0] in TRANSPORT} | (imported & ADAPTERS)
    assert not {m for m in imported if m.startswith("framebus.services.generator.")} - {
        f"framebus.services.generator.{pure}" for pure in PURE}, "a decision module imports an adapter"

