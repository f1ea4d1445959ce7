"""Refresh the generated tables in README.md (topics, settings, model defaults, the access plan): ``python -m framebus.schemas.readme``.

Tests fail while the README shows tables that differ from the code (`make readme` runs this).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def tables() -> dict[str, str]:
    from framebus.schemas.models import render_markdown as models
    from framebus.schemas.topics import render_markdown as topics
    from framebus.services.common.access import render_markdown as access
    from framebus.services.common.settings import render_markdown as settings

    return {"topics": topics(), "settings": settings(), "models": models(), "access": access()}


def refreshed(text: str) -> str:
    for name, table in tables().items():
        text = re.sub(rf"<!-- {name}:start -->\n.*?\n<!-- {name}:end -->",
                      lambda _: f"<!-- {name}:start -->\n{table}\n<!-- {name}:end -->", text, flags=re.S)
    return text


def main() -> int:
    text = README.read_text()
    new = refreshed(text)
    README.write_text(new)
    print("README tables refreshed" if new != text else "README tables were current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
