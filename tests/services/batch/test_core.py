"""Batch files: every bad line reported with its number; valid lines get stable request ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from framebus.schemas.events import ErrorInfo, Output, StatusChanged
from framebus.schemas.state import ErrorCode, RequestState
from framebus.services.batch.core import batch_id_for, build_manifest, count_lines, parse_lines, request_id_for

GOOD = {"prompt": "a red fox", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2,
        "model": "wan-tiny"}


def lines(*rows) -> list[bytes]:
    return [row if isinstance(row, bytes) else json.dumps(row).encode() for row in rows]


def test_each_bad_line_is_reported_with_its_number_and_the_rest_is_accepted():
    parsed = parse_lines(lines({"custom_id": "a", **GOOD}, b"{not json", {"custom_id": "b", **GOOD, "width": 63},
                               {"custom_id": "a", **GOOD}, {"prompt": "no id"}, {"custom_id": "c", **GOOD, "colour": 1},
                               b"", [1, 2], {"custom_id": "d", **GOOD, "tier": "interactive"},
                               {"custom_id": "e", **GOOD}), "bat_x")
    assert [line.custom_id for line in parsed.lines] == ["a", "e"]
    errors = dict(parsed.errors)
    assert errors[2] == "not JSON: Expecting property name enclosed in double quotes at character 2"
    assert parsed.error_ids == {3: "b", 4: "a", 6: "c", 9: "d"}, "the custom id of every refused line that has one"
    assert [r["custom_id"] for r in parsed.rejected()] == [None, "b", "a", None, "c", None, "d"]
    assert "not JSON" in errors[2] and "`width`" in errors[3] and "repeats line 1" in errors[4]
    assert "custom_id" in errors[5] and "unknown field colour" in errors[6] and "JSON object" in errors[8]
    assert "must be batch" in errors[9]
    assert sorted(errors) == [2, 3, 4, 5, 6, 8, 9], "the empty line 7 is skipped, not an error"


def test_ids_are_stable_so_a_resubmission_resumes_the_same_batch():
    assert batch_id_for("acme", "digest") == batch_id_for("acme", "digest") != batch_id_for("other", "digest")
    parsed = parse_lines(lines({"custom_id": "x/1", **GOOD}), "bat_1")
    assert parsed.lines[0].request_id == request_id_for("bat_1", "x/1") == parse_lines(
        lines({"custom_id": "x/1", **GOOD}), "bat_1").lines[0].request_id
    assert len(parsed.lines[0].request_id) <= 128


def test_the_manifest_has_one_line_per_custom_id_and_an_error_file():
    items = [{"line": n, "custom_id": f"c{n}", "request_id": f"r{n}"} for n in (1, 2, 3, 4)]
    output = Output(bucket="b", key="acme/r1.mp4", url="http://x/r1", url_expires_at="2026-12-01T00:00:00Z",
                    bytes=1, sha256="0" * 64, duration_s=1, codec="libx264", width=64, height=64, num_frames=5, fps=5)
    statuses = {
        "r1": StatusChanged(request_id="r1", tenant_id="acme", tier="batch", state=RequestState.COMPLETED, output=output, tokens=2.5),
        "r2": StatusChanged(request_id="r2", tenant_id="acme", tier="batch", state=RequestState.FAILED,
                            error=ErrorInfo(code=ErrorCode.ENCODE_FAILED, message="ffmpeg")),
        "r3": StatusChanged(request_id="r3", tenant_id="acme", tier="batch", state=RequestState.CANCELLED)}
    written = datetime(2026, 12, 2, tzinfo=UTC)
    manifest = build_manifest(items, statuses, rejected=[{"line": 7, "custom_id": "c7", "error": "not JSON"}],
                              sign=lambda key: (f"http://signed/{key}", written + timedelta(days=7)))
    assert [line["custom_id"] for line in manifest.lines] == ["c1", "c2", "c3", "c4"]
    assert manifest.lines[0]["url"] == "http://signed/acme/r1.mp4", "signed as the manifest is written"
    assert manifest.lines[0]["url_expires_at"] == "2026-12-09T00:00:00+00:00" and manifest.lines[0]["tokens"] == 2.5
    assert manifest.lines[1]["error"]["code"] == "encode_failed"
    assert manifest.lines[3]["outcome"] == "cancelled", "a line with no status at the end counts as cancelled"
    assert (manifest.counts.completed, manifest.counts.failed, manifest.counts.cancelled) == (1, 1, 2)
    assert (manifest.counts.total, manifest.counts.rejected) == (4, 1), "with the rejected line: the file's 5"
    assert [(e["line"], e["custom_id"]) for e in manifest.errors] == [(7, "c7"), (2, "c2")]
    assert manifest.jsonl().count(b"\n") == 4 and manifest.tokens == 2.5


def test_progress_counts_every_line_once_and_a_line_without_status_is_queued():
    states = {"r1": RequestState.COMPLETED, "r2": RequestState.RUNNING, "r3": RequestState.DISPATCHED,
              "r4": RequestState.QUEUED, "r5": RequestState.FAILED, "r6": RequestState.ACCEPTED}
    counts = count_lines([f"r{n}" for n in range(1, 9)], states.get, rejected=3)
    assert (counts.queued, counts.running, counts.completed, counts.failed, counts.cancelled) == (4, 2, 1, 1, 0)
    assert (counts.total, counts.ended, counts.rejected) == (8, 2, 3)
