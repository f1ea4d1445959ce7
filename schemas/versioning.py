"""Schema versions: a consumer accepts any minor of a major it knows, and names the rest."""

from __future__ import annotations

import re

from framebus.schemas.errors import CodecError
from framebus.schemas.state import ErrorCode

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def parse_version(raw: object) -> tuple[int, int]:
    if not isinstance(raw, str) or not (match := _VERSION.match(raw)):
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION, f"`schema_version` must be \"MAJOR.MINOR\" but is {raw!r}")
    return int(match[1]), int(match[2])


def check_compatible(raw: object, supported: str) -> bool:
    """True when ``raw`` is a newer minor than ``supported`` (extra fields must be ignored).

    Raises CodecError(unsupported_version) for another major.
    """
    major, minor = parse_version(raw)
    our_major, our_minor = parse_version(supported)
    if major != our_major:
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION,
                         f"`schema_version` {raw} has major version {major}; this consumer reads major {our_major}")
    return minor > our_minor
