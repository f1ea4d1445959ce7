"""The engine when memory runs out or leaks (issue #18's GPU path, reproduced on the CPU with
wan-tiny): a batch that runs out of memory mid-denoise is split and both halves render, with
the cache hooks' state reset; allocation failures that cuBLAS/cuDNN raise as RuntimeError count
as out of memory; cached prompt embeddings hold no autograd graph."""

from __future__ import annotations

import pytest
import torch

from framebus.schemas.state import ErrorCode, ModelName
from framebus.services.generator.batching import Refused, render_in_halves
from framebus.services.generator.diffusion import DiffusionEngine
from framebus.services.generator.errors import EngineOutOfMemory
from framebus.services.generator.models import REGISTRY
from framebus.services.generator.optimize import EngineOptions
from tests.services.generator.test_diffusion import never, request

TINY = REGISTRY[ModelName.WAN_TINY]


class MemoryLimit:
    """Makes the transformer's second block fail like a full GPU when a call carries more than
    ``rows`` rows, from the ``after``-th call on (mid-denoise, after the cache hooks hold state)."""

    def __init__(self, engine: DiffusionEngine, rows: int, error: Exception, after: int = 2) -> None:
        self.rows, self.error, self.after, self.calls = rows, error, after, 0
        self.handle = engine.pipe.transformer.blocks[1].register_forward_pre_hook(self._check)

    def _check(self, _module, args):
        self.calls += 1
        if self.calls >= self.after and args[0].shape[0] > self.rows:
            raise self.error

    def remove(self) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def cached_engine() -> DiffusionEngine:
    engine = DiffusionEngine.load(TINY, EngineOptions(cache="first-block", cache_threshold=0.05, prompt_cache=8))
    engine.warm()
    return engine


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
], ids=["oom", "cublas", "cudnn"])
def test_a_batch_out_of_memory_mid_denoise_is_split_and_both_halves_render(cached_engine, error) -> None:
    requests = [request(n, seed=n, num_inference_steps=4) for n in range(4)]
    limit = MemoryLimit(cached_engine, rows=2, error=error)
    try:
        rendered = render_in_halves(cached_engine.render, requests, never)
    finally:
        limit.remove()
    assert [type(item).__name__ for item in rendered] == ["Rendered"] * 4, rendered
    assert all(item.frames is not None and item.frames.shape == (5, 48, 64, 3) for item in rendered)
    # Afterwards a batch of another size still renders: no hook state was left behind.
    assert all(item.frames is not None for item in cached_engine.render(requests[:3], never))


def test_a_request_out_of_memory_even_alone_is_refused_and_the_next_batch_renders(cached_engine) -> None:
    limit = MemoryLimit(cached_engine, rows=0, error=torch.OutOfMemoryError("CUDA out of memory"))
    try:
        [refused] = render_in_halves(cached_engine.render, [request(1, seed=1)], never)
    finally:
        limit.remove()
    assert isinstance(refused, Refused) and refused.code is ErrorCode.OUT_OF_MEMORY
    assert cached_engine.render([request(2, seed=2)], never)[0].frames is not None


def test_other_runtime_errors_are_not_mistaken_for_memory() -> None:
    engine = DiffusionEngine.load(TINY, EngineOptions())
    limit = MemoryLimit(engine, rows=0, error=RuntimeError("mat1 and mat2 shapes cannot be multiplied"), after=1)
    try:
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as raised:
            engine.render([request(1, seed=1)], never)
        assert not isinstance(raised.value, EngineOutOfMemory)
    finally:
        limit.remove()


def test_cached_prompt_embeddings_hold_no_graph_only_their_tokens_and_memory_stays_flat(cached_engine) -> None:
    prompt = "a prompt never seen before"
    cached_engine.render([request(1, seed=1, prompt=prompt)], never)
    embeds, negative = cached_engine.prompts.get((str(cached_engine.model), prompt, request(1, 1).negative_prompt))
    assert embeds.grad_fn is None and not embeds.requires_grad
    assert negative is None or negative.grad_fn is None
    # Trimmed to the prompt's own tokens (wan-tiny's tokenizer: one per byte, and an end token).
    assert embeds.shape[0] == len(prompt.encode()) + 1 < TINY.max_sequence_length

    def cached_bytes() -> int:
        return sum(t.untyped_storage().nbytes() for pair in cached_engine.prompts._entries.values()
                   for t in pair if t is not None)

    cached_engine.prompts.capacity = 8
    for n in range(8):  # fill the LRU, then 42 more new prompts: memory must stay where it is
        cached_engine.render([request(n, seed=n, prompt=f"new prompt {n:03d}")], never)
    full = cached_bytes()
    for n in range(8, 50):
        cached_engine.render([request(n, seed=n, prompt=f"new prompt {n:03d}")], never)
    assert cached_bytes() <= full * 1.05


def test_taylorseer_counts_the_steps_it_extrapolates_and_runs_lite_on_large_models(monkeypatch) -> None:
    from framebus.services.generator import optimize

    engine = DiffusionEngine.load(TINY, EngineOptions(cache="taylorseer"))
    [item] = engine.render([request(1, seed=1, num_inference_steps=6)], never)
    # Steps 0 and 1 compute, then every second step is extrapolated: 2 of 6 skipped (the counter's
    # probe used to fire on the hooked FFN itself and counted none).
    assert (item.steps_run, item.steps_skipped_by_cache) == (6, 2)
    monkeypatch.setattr(optimize, "TAYLORSEER_FULL_MAX_PARAMS", 1)  # wan-tiny counts as large
    lite = DiffusionEngine.load(TINY, EngineOptions(cache="taylorseer"))
    [item] = lite.render([request(1, seed=1, num_inference_steps=6)], never)
    assert item.frames is not None and item.steps_skipped_by_cache == 2
    from diffusers.hooks import HookRegistry

    hooked = [name for name, module in lite.pipe.transformer.named_modules()
              if "taylorseer_cache" in getattr(HookRegistry.check_if_exists_or_initialize(module), "hooks", {})]
    assert "proj_out" in hooked and not any(name.endswith(("attn1", "attn2", "ffn")) for name in hooked), hooked


def test_a_cache_enabled_after_the_transformer_has_run_gets_its_context() -> None:
    """diffusers lists the hook registries once, at the first call: a cache hooked on later (a second
    engine on the same pipeline, MagCache re-armed for another step count) must still be reached."""
    from framebus.services.generator.models import load_pipeline

    pipeline = load_pipeline(TINY, None)
    DiffusionEngine(TINY, pipeline, EngineOptions().resolve(), weights_id="x").render([request(1, seed=1)], never)
    cached = DiffusionEngine(TINY, pipeline, EngineOptions(cache="first-block", cache_threshold=1e6).resolve(),
                             weights_id="x")
    [item] = cached.render([request(2, seed=2, num_inference_steps=4)], never)
    assert item.frames is not None and item.steps_skipped_by_cache == 3
