"""Turning pydantic's errors into field-by-field messages people and programs can use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path, e.g. "metadata.owner" or "width"
    message: str
    value: Any = None


def describe_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "(body)"
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        errors.append(FieldError(path, message, value if isinstance(value, (str, int, float, bool, type(None))) else None))
    return errors
