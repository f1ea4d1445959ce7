"""The checked-in JSON Schema files match the models, and validate what the models accept."""

from __future__ import annotations

import json

import jsonschema
import pytest

from framebus.schemas import export
from framebus.schemas.events import GenerationRequest


def test_checked_in_json_schemas_are_current() -> None:
    assert export.stale_files() == [], "run `python -m framebus.schemas.export` and commit schemas/json/"


def test_a_changed_file_is_reported_stale(tmp_path, monkeypatch) -> None:
    for path, text in export.render_all().items():
        (tmp_path / path.name).write_text(text)
    monkeypatch.setattr(export, "SCHEMA_DIR", tmp_path)
    assert export.stale_files() == []
    target = tmp_path / "framebus.generation.requested.schema.json"
    target.write_text(target.read_text().replace('"maximum": 1920', '"maximum": 4096'))
    assert export.stale_files() == ["framebus.generation.requested.schema.json"]


@pytest.fixture(scope="module")
def request_schema() -> dict:
    return json.loads((export.SCHEMA_DIR / "framebus.generation.requested.schema.json").read_text())


def test_json_schema_accepts_what_the_model_emits(request_schema) -> None:
    event = GenerationRequest(request_id="r-1", tenant_id="acme", prompt="a red fox", metadata={"k": "v"})
    jsonschema.Draft202012Validator(request_schema).validate(event.model_dump(mode="json"))


@pytest.mark.parametrize("bad", [{"width": 100}, {"tier": "urgent"}, {"num_inference_steps": 0}, {"widht": 832}])
def test_json_schema_rejects_what_the_model_rejects(request_schema, bad) -> None:
    body = {"schema_version": "1.0", "request_id": "r-1", "tenant_id": "acme", "prompt": "a red fox", **bad}
    assert list(jsonschema.Draft202012Validator(request_schema).iter_errors(body))
