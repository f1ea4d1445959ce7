"""Generate the JSON Schema files under schemas/json/ from the models.

    python -m framebus.schemas.export          # write them
    python -m framebus.schemas.export --check  # exit 1 if any file is stale (a test runs this too)

Producers in other languages validate against these files; the models stay the truth.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from framebus.schemas.events import SCHEMA_VERSION
from framebus.schemas.registry import EVENT_MODELS
from framebus.schemas.webhooks import WEBHOOK_PAYLOADS

SCHEMA_DIR = Path(__file__).parent / "json"
ID_BASE = "https://framebus.dev/schemas"


def render_all() -> dict[Path, str]:
    files = {}
    for event_type, model in sorted(EVENT_MODELS.items()):
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{ID_BASE}/{event_type}/{SCHEMA_VERSION.split('.')[0]}",
            "x-cloudevents-type": event_type,
            "x-schema-version": SCHEMA_VERSION,
            **schema,
        }
        files[SCHEMA_DIR / f"{event_type}.schema.json"] = json.dumps(schema, indent=2, sort_keys=False) + "\n"
    for webhook_type, model in sorted(WEBHOOK_PAYLOADS.items()):  # what a webhook receiver is sent
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"{ID_BASE}/webhook.{webhook_type}/{SCHEMA_VERSION.split('.')[0]}",
                  "x-schema-version": SCHEMA_VERSION, **model.model_json_schema(mode="serialization")}
        files[SCHEMA_DIR / f"webhook.{webhook_type}.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return files


def stale_files() -> list[str]:
    rendered = render_all()
    stale = [path.name for path, text in rendered.items() if not path.exists() or path.read_text() != text]
    extra = [p.name for p in SCHEMA_DIR.glob("*.schema.json") if p not in rendered]
    return stale + extra


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        if stale:
            print(f"stale JSON Schema files: {', '.join(stale)}; run `python -m framebus.schemas.export`")
            return 1
        print("JSON Schema files are current")
        return 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path in SCHEMA_DIR.glob("*.schema.json"):
        path.unlink()
    for path, text in render_all().items():
        path.write_text(text)
    print(f"wrote {len(EVENT_MODELS)} event and {len(WEBHOOK_PAYLOADS)} webhook schemas to {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
