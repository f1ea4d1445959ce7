"""The event contract: every bound is enforced with a message naming the field and value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from framebus.schemas.events import SCHEMA_VERSION, GenerationRequest, StatusChanged, TenantUpdated, furthest
from framebus.schemas.registry import EVENT_MODELS
from framebus.schemas.state import RequestState
from framebus.schemas.tokens import quote_tokens

BASE = {"request_id": "order-42", "tenant_id": "acme", "prompt": "a red fox running through snow"}


def request(**changes) -> GenerationRequest:
    return GenerationRequest(**{**BASE, **changes})


def rejects(field: str, fragment: str, context=None, **changes) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate({**BASE, **changes}, context=context)
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}
    assert field in errors, errors
    assert fragment in errors[field], errors[field]


def test_defaults_make_a_valid_request() -> None:
    made = request()
    assert (made.model, made.width, made.height, made.num_frames, made.num_inference_steps, made.tier.value) == (
        "wan-shapes", 64, 64, 17, 20, "standard"), "the stack's default model, at that model's own clip"
    assert made.schema_version == SCHEMA_VERSION == "1.8"


def test_what_a_request_leaves_out_comes_from_its_model_or_the_stacks_default() -> None:
    big = request(model="wan2.1-t2v-14b")
    assert (big.width, big.height, big.num_frames, big.num_inference_steps) == (1280, 720, 81, 50)
    chosen = request(model="wan2.1-t2v-14b", width=832, height=480, num_frames=None)
    assert (chosen.width, chosen.height, chosen.num_frames) == (832, 480, 81), "what is given wins; None is unset"
    on_a_gpu_stack = GenerationRequest.model_validate(BASE, context={"default_model": "wan2.2-ti2v-5b"})
    assert (on_a_gpu_stack.model, on_a_gpu_stack.width, on_a_gpu_stack.num_frames, on_a_gpu_stack.fps) == (
        "wan2.2-ti2v-5b", 1280, 121, 24)
    assert request(model="wan-tiny").num_frames == 5
    from framebus.schemas.models import MODEL_DEFAULTS
    from framebus.schemas.state import ModelName

    assert set(MODEL_DEFAULTS) == set(ModelName), "every model has its defaults"
    for defaults in MODEL_DEFAULTS.values():  # and each is a valid request
        GenerationRequest.model_validate({**BASE, **defaults.fields()})


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("width", 100, "`width` must be a multiple of 16 but is 100"),
    ("height", 1000, "`height` must be a multiple of 16 but is 1000"),
    ("width", 0, "greater than or equal to 16"),
    ("height", 4096, "less than or equal to 1920"),
    ("num_frames", 10, "`num_frames` must be 4k+1 (e.g. 9 or 13) but is 10"),
    ("num_frames", 261, "less than or equal to 257"),
    ("num_inference_steps", 0, "greater than or equal to 1"),
    ("num_inference_steps", 101, "less than or equal to 100"),
    ("guidance_scale", -1.0, "greater than or equal to 0"),
    ("guidance_scale", math.inf, "finite number"),
    ("fps", 0, "greater than or equal to 1"),
    ("seed", -5, "greater than or equal to 0"),
    ("tier", "urgent", "'interactive', 'standard' or 'batch'"),
    ("model", "sora", "wan-tiny"),
    ("prompt", "   ", "`prompt` must contain more than whitespace"),
    ("prompt", "é" * 2049, "`prompt` must be at most 4096 UTF-8 bytes but is 4098"),
    ("request_id", "has space", "should match pattern"),
    ("request_id", "x" * 129, "should match pattern"),
    ("tenant_id", "ACME", "should match pattern"),
    ("metadata", {f"k{i}": "v" for i in range(17)}, "at most 16 keys but has 17"),
    ("metadata", {"owner": "x" * 513}, "at most 512 characters but is 513"),
    ("metadata", {"bad key": "v"}, "must be 1-64 of"),
    ("metadata", {f"k{i}": "é" * 200 for i in range(16)}, "at most 4096 bytes"),
    ("webhook_url", "http://hooks.example.com/x", "must use https"),
    ("webhook_url", "https://user:pw@hooks.example.com/x", "must not carry credentials"),
    ("webhook_url", "not a url", "not a valid URL"),
    ("widht", 832, "Extra inputs are not permitted"),
])
def test_each_bound_names_the_field_and_the_value(field, value, fragment) -> None:
    rejects(field, fragment, **{field: value})


def test_prompt_limit_counts_bytes_not_characters() -> None:
    assert request(prompt="é" * 2048).prompt  # 2048 characters, exactly 4096 bytes


def test_http_webhook_only_for_allowlisted_hosts() -> None:
    allow = {"webhook_http_hosts": frozenset({"127.0.0.1"})}
    assert GenerationRequest.model_validate({**BASE, "webhook_url": "http://127.0.0.1:9000/hook"}, context=allow)
    rejects("webhook_url", "must use https", context=allow, webhook_url="http://10.0.0.1/hook")


def test_one_standard_unit_is_100_tokens() -> None:
    assert quote_tokens(width=1024, height=1024, num_frames=81, num_inference_steps=50, prompt="x" * 100) == 100.0


def test_quotes_round_up_to_a_thousandth_and_are_never_free() -> None:
    tiny = quote_tokens(width=16, height=16, num_frames=1, num_inference_steps=1, prompt="")
    assert tiny == 0.001
    # 832x480, 81 frames, 50 steps, 30 characters: 100 * 0.380859375 * sqrt(0.3) = 20.8602... -> 20.861
    assert request(model="wan2.1-t2v-1.3b").quote() == 20.861


def test_prompt_length_counts_unicode_characters() -> None:
    assert quote_tokens(width=1024, height=1024, num_frames=81, num_inference_steps=50, prompt="é" * 100) == 100.0


@given(frames=st.integers(0, 63).map(lambda k: 4 * k + 1), steps=st.integers(1, 100), chars=st.integers(1, 500))
def test_quote_grows_with_every_dimension(frames, steps, chars) -> None:
    base = quote_tokens(width=512, height=512, num_frames=frames, num_inference_steps=steps, prompt="a" * chars)
    assert base > 0
    assert quote_tokens(width=512, height=512, num_frames=frames + 4, num_inference_steps=steps, prompt="a" * chars) >= base
    assert quote_tokens(width=512, height=512, num_frames=frames, num_inference_steps=steps, prompt="a" * (chars + 1)) >= base


def test_digest_ignores_submission_time_but_not_content() -> None:
    assert request().digest() == request().digest()
    assert request().digest() != request(num_frames=21).digest()
    assert request().digest() == request(num_frames=17).digest(), "the default spelt out is the same request"


def test_terminal_states_are_exactly_completed_failed_cancelled() -> None:
    assert {s for s in RequestState if s.is_terminal} == {RequestState.COMPLETED, RequestState.FAILED,
                                                           RequestState.CANCELLED}


def test_status_key_separates_tenants_choosing_the_same_request_id() -> None:
    a = StatusChanged(request_id="r1", tenant_id="acme", state="accepted", tier="batch")
    b = StatusChanged(request_id="r1", tenant_id="globex", state="accepted", tier="batch")
    assert a.partition_key() != b.partition_key()


def test_every_design_event_type_has_a_model() -> None:
    assert {"framebus.generation.requested", "framebus.generation.completed", "framebus.generation.failed",
            "framebus.generation.cancelled", "framebus.usage.recorded", "framebus.ledger.credited",
            "framebus.ledger.charged", "framebus.ledger.reserved", "framebus.ledger.released",
            "framebus.batch.completed", "framebus.control.cancel"} <= set(EVENT_MODELS)


def test_tenant_records_never_hold_a_key_secret() -> None:
    assert "secret" not in " ".join(TenantUpdated.model_fields) and "secret_sha256" in str(TenantUpdated.model_json_schema())


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data", "https://10.1.2.3/hook",
                                 "https://192.168.0.4/h", "https://[::1]/h", "https://localhost/h",
                                 "https://api.localhost/h", "https://127.0.0.1:8443/h", "https://0.0.0.0/h"])
def test_a_webhook_to_a_local_or_private_address_is_refused_naming_the_field(url: str) -> None:
    rejects("webhook_url", "must point to a public address", webhook_url=url)


def test_allowlisted_hosts_may_be_private_and_public_names_pass() -> None:
    GenerationRequest(**{**BASE, "webhook_url": "https://hooks.example.com/x"})
    GenerationRequest.model_validate({**BASE, "webhook_url": "http://127.0.0.1:9000/x"},
                                     context={"webhook_http_hosts": frozenset({"127.0.0.1"})})
    GenerationRequest.model_validate({**BASE, "webhook_url": "https://10.0.0.5/x"},
                                     context={"webhook_allowed_hosts": frozenset({"10.0.0.5"})})


def test_a_status_reader_only_sees_states_move_forward_and_keeps_the_first_terminal() -> None:
    def status(state: str, **more) -> StatusChanged:
        return StatusChanged(request_id="r1", tenant_id="acme", state=state, tier="standard", **more)

    from datetime import UTC, datetime

    receipt_time, submitted = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    accepted = status("accepted", request_digest="d" * 64, request_topic="framebus.requests.standard", tokens=0.7,
                      request_partition=2, request_offset=7, request_event_id="e1",
                      timings={"accepted_at": receipt_time})
    queued = status("queued", timings={"accepted_at": submitted})  # the scheduler only knows the submission time
    kept = furthest(furthest(None, queued), accepted)  # the late `accepted` lands after `queued`
    assert kept.state.value == "queued" and kept.request_offset == 7 and kept.request_digest == "d" * 64
    assert kept.timings.accepted_at == receipt_time and kept.tokens == 0.7
    kept = furthest(furthest(kept, status("completed")), status("running"))  # a stale attempt's `running`
    assert kept.state.value == "completed" and kept.request_partition == 2
    assert furthest(kept, status("failed")).state.value == "completed"  # one terminal result


def test_a_request_without_a_seed_renders_with_one_derived_from_its_identity() -> None:
    one, again = GenerationRequest(**BASE), GenerationRequest(**BASE)
    other = GenerationRequest(**{**BASE, "request_id": "another"})
    assert one.seed is None and one.effective_seed() == again.effective_seed() != other.effective_seed()
    assert GenerationRequest(**{**BASE, "seed": 5}).effective_seed() == 5


def test_the_contract_document_lists_every_error_code() -> None:
    from pathlib import Path

    from framebus.schemas.state import ErrorCode

    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text()
    assert [code.value for code in ErrorCode if f"`{code.value}`" not in contract] == []


def test_each_model_says_what_its_sizes_must_be_multiples_of() -> None:
    """Wan 2.2 TI2V-5B needs multiples of 32: its pipeline would silently floor 720 to 704."""
    made = request(model="wan2.2-ti2v-5b", width=1280, height=704)
    assert (made.width, made.height) == (1280, 704)
    with pytest.raises(ValidationError, match="`height` must be a multiple of 32 for wan2.2-ti2v-5b but is 720"):
        request(model="wan2.2-ti2v-5b", width=1280, height=720)
    assert request(model="wan2.1-t2v-14b", width=1280, height=720).height == 720  # 16 suffices there
