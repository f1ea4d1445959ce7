"""The gateway's OpenAPI document, committed as docs/openapi.json for client generators.

    python -m framebus.services.gateway.openapi          # write it
    python -m framebus.services.gateway.openapi --check  # exit 1 if it is stale (a test runs this too)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def render() -> str:
    from framebus.services.common.settings import Settings
    from framebus.services.gateway.app import create_app

    return json.dumps(create_app(Settings(telemetry="off")).openapi(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is stale; run `python -m framebus.services.gateway.openapi`")
            return 1
        print(f"{DOCUMENT} is current")
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
