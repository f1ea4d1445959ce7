"""The diffusion engine on wan-tiny: reproducible seeds, batching, switches, prompt cache, cancels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framebus.schemas.events import GenerationRequest
from framebus.schemas.state import ModelName
from framebus.services.common.errors import ConfigurationError
from framebus.services.generator.diffusion import DiffusionEngine
from framebus.services.generator.models import REGISTRY, TinyWanConfig, build_tiny_pipeline, load_pipeline, save_tiny
from framebus.services.generator.optimize import EngineOptions

TINY = REGISTRY[ModelName.WAN_TINY]


def request(number: int, seed: int, prompt: str = "a red fox in the snow", **fields) -> GenerationRequest:
    return GenerationRequest(request_id=f"r-{number}", tenant_id="acme", prompt=prompt, model="wan-tiny", width=64,
                             height=48, num_frames=5, seed=seed, **{"num_inference_steps": 3, **fields})


@pytest.fixture(scope="module")
def engine() -> DiffusionEngine:
    made = DiffusionEngine.load(TINY, EngineOptions(prompt_cache=32))
    made.warm()
    return made


def never(_request) -> bool:
    return False


def test_renders_uint8_frames_of_the_requested_shape(engine):
    [item] = engine.render([request(1, 7)], never)
    assert item.frames.shape == (5, 48, 64, 3) and item.frames.dtype == np.uint8
    assert item.steps_run == 3 and item.gpu_seconds > 0 and item.denoise_s > 0 and item.decode_s > 0
    assert item.text_encode_s is not None and 0 < item.text_encode_s < item.denoise_s
    assert item.frames.std() > 0, "not a blank clip"


def test_a_request_renders_the_same_alone_and_inside_a_batch(engine):
    [alone] = engine.render([request(1, 7)], never)
    batch = engine.render([request(2, 3), request(3, 7), request(4, 11, prompt="a boat")], never)
    # Batched matrix products may round differently in the last bit: at most one level of 255.
    assert np.abs(alone.frames.astype(int) - batch[1].frames.astype(int)).max() <= 1
    assert np.abs(batch[0].frames.astype(int) - batch[1].frames.astype(int)).mean() > 2, "seeds differ"


def test_repeated_prompts_skip_the_text_encoder(engine):
    calls = []
    handle = engine.pipe.text_encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        engine.render([request(1, 1, prompt="lighthouse at dusk"), request(2, 2, prompt="lighthouse at dusk")], never)
        assert len(calls) == 1, "one encoder call for the batch's only new prompt pair"
        engine.render([request(3, 3, prompt="lighthouse at dusk")], never)
        assert len(calls) == 1, "the second time it comes from the cache"
    finally:
        handle.remove()


def test_a_cancel_between_steps_drops_that_request_and_the_rest_completes(engine):
    doomed = request(2, 5)
    steps = []
    engine.pipe.transformer.register_forward_pre_hook(lambda *_: steps.append(1))

    def cancelled(r) -> bool:
        return r.request_id == doomed.request_id and len(steps) >= 2  # after the first step (cond + uncond)

    out = engine.render([request(1, 4), doomed], cancelled)
    assert out[0].frames is not None and out[1].cancelled


def test_when_every_request_is_cancelled_the_pipeline_stops(engine):
    [item] = engine.render([request(1, 4, num_inference_steps=8)], lambda _: True)
    assert item.cancelled and item.steps_run < 8


def test_bf16_keeps_the_fp32_modules_diffusers_names():
    engine = DiffusionEngine.load(TINY, EngineOptions(precision="bf16"))
    transformer = engine.pipe.transformer
    assert transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert transformer.scale_shift_table.dtype == torch.float32
    [item] = engine.render([request(1, 7)], never)
    assert item.frames.shape == (5, 48, 64, 3)


def test_int8_quantizes_only_the_transformer_blocks():
    engine = DiffusionEngine.load(TINY, EngineOptions(quantize="int8"))
    transformer = engine.pipe.transformer
    assert engine.quantized_layers > 0
    assert type(transformer.blocks[0].ffn.net[2].weight).__name__ != "Parameter" or \
        transformer.blocks[0].ffn.net[2].weight.dtype == torch.int8
    assert type(transformer.condition_embedder.time_embedder.linear_1.weight) is torch.nn.Parameter
    [item] = engine.render([request(1, 7)], never)
    assert item.frames.shape == (5, 48, 64, 3)


def test_every_switch_changes_the_engine_id_so_results_are_never_shared_across_them(engine):
    ids = {engine.engine_id}
    for options in (EngineOptions(precision="bf16"), EngineOptions(quantize="int8"),
                    EngineOptions(cache="first-block"), EngineOptions(cache="first-block", cache_threshold=0.3)):
        ids.add(DiffusionEngine.load(TINY, options).engine_id)
    assert len(ids) == 5


def test_first_block_cache_counts_the_steps_it_skips():
    engine = DiffusionEngine.load(TINY, EngineOptions(cache="first-block", cache_threshold=1e6))  # skip whenever it may
    [item] = engine.render([request(1, 7, num_inference_steps=6)], never)
    assert item.steps_run == 6 and item.steps_skipped_by_cache == 5, "all but the first step reuse the cache"


def test_a_saved_checkpoint_loads_from_its_directory_without_a_hub(tmp_path, engine):
    save_tiny(tmp_path / "wan-tiny", TinyWanConfig())
    loaded = DiffusionEngine.load(TINY, EngineOptions(), models_dir=tmp_path)
    assert loaded.engine_id != engine.engine_id, "a checkpoint directory is other weights as far as caching knows"
    [a] = loaded.render([request(1, 7)], never)
    [b] = engine.render([request(1, 7)], never)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


def test_loading_bf16_from_a_directory_keeps_fp32_modules(tmp_path):
    save_tiny(tmp_path / "wan-tiny")
    pipe = load_pipeline(TINY, tmp_path, dtype=torch.bfloat16)
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert pipe.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


def test_a_real_model_without_a_checkpoint_says_where_to_put_it(tmp_path):
    with pytest.raises(ConfigurationError, match=r"wan2.1-t2v-1.3b needs a checkpoint .* at .*wan2.1-t2v-1.3b"):
        load_pipeline(REGISTRY[ModelName.WAN21_T2V_1_3B], tmp_path)


def test_the_fast_vae_norm_is_the_same_function(engine):
    plain = DiffusionEngine.load(TINY, EngineOptions(fast_vae_norm=False))
    [a] = plain.render([request(1, 7)], never)
    [b] = engine.render([request(1, 7)], never)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


def test_compile_with_a_cache_hook_is_refused_with_the_fix():
    with pytest.raises(ConfigurationError, match="FRAMEBUS_ENGINE_CACHE=none"):
        DiffusionEngine.load(TINY, EngineOptions(compile=True, cache="first-block"))


def test_magcache_is_refused_without_ratios_and_rearms_for_each_step_count():
    with pytest.raises(ConfigurationError, match="calibrated magnitude ratios"):
        DiffusionEngine.load(TINY, EngineOptions(cache="magcache"))
    # Ratios of exactly 1 say "nothing changes between steps": skip whenever MagCache may.
    engine = DiffusionEngine(TINY, build_tiny_pipeline(TINY.tiny), EngineOptions(cache="magcache"),
                             weights_id="test", mag_ratios=(1.0,) * 10)
    for steps in (10, 5, 10):
        [item] = engine.render([request(1, 7, num_inference_steps=steps)], never)
        assert item.steps_run == steps, "the hook's step counter follows the batch's step count"
        # retention keeps the first fifth; after that at most 3 skips in a row, then one computed step.
        assert 0 < item.steps_skipped_by_cache < steps - 1
