"""The diffusion engine: a warm Wan pipeline serving batches, with the switches of ``optimize``.

One pipeline call per batch (``EngineOptions.batching``), each request with its own
``torch.Generator`` seeded from the request, so a request's initial noise, and with the
cache off its video, are the same alone or in any batch. Prompt embeddings come from an
LRU keyed by model and prompts, so repeated prompts skip the text encoder. Cancels are
checked between denoising steps: a cancelled request's frames are never decoded, and when
every request of the batch is cancelled the pipeline stops at once.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from framebus.schemas.events import GenerationRequest
from framebus.services.common.errors import ConfigurationError
from framebus.services.common.settings import Settings
from framebus.services.generator.errors import classify_device_error
from framebus.services.generator.magcache import load_ratios
from framebus.services.generator.models import REGISTRY, ModelSpec, checkpoint_dir, load_pipeline
from framebus.services.generator.optimize import (
    BlockCounter,
    EngineOptions,
    apply_cache,
    cast_keeping_fp32_modules,
    quantize_transformer,
    speed_up_vae_norms,
)
from framebus.services.generator.rendered import IsCancelled, Rendered, StepReport

log = logging.getLogger(__name__)
MAGCACHE_DEFAULT_STEPS = 50  # what MagCache is armed with until a batch says otherwise


@dataclass(frozen=True)
class WarmShape:
    width: int = 64
    height: int = 64
    num_frames: int = 5
    steps: int = 2


def _trimmed(embedding: torch.Tensor) -> torch.Tensor:
    """One prompt's embedding without the zero rows the pipeline pads it with, in storage of its own
    (a slice would keep the whole batch's tensor alive): what the LRU keeps."""
    used = embedding.abs().sum(dim=-1).nonzero()
    length = int(used[-1]) + 1 if len(used) else 1
    return embedding[:length].clone()


def _padded(embedding: torch.Tensor, length: int) -> torch.Tensor:
    """A trimmed embedding zero-padded back to ``length`` rows, as the pipeline expects."""
    return torch.nn.functional.pad(embedding, (0, 0, 0, length - embedding.shape[0]))


class PromptCache:
    """LRU of text-encoder outputs, keyed by (model, prompt, negative prompt)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: tuple, value: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def engine_options(settings: Settings) -> EngineOptions:
    """The switches a worker starts with: FRAMEBUS_ENGINE_* settings, ``auto`` resolved for this machine."""
    return EngineOptions(device=settings.engine_device, precision=settings.engine_precision,
                         quantize=settings.engine_quantize, cache=settings.engine_cache,
                         cache_threshold=settings.engine_cache_threshold, prompt_cache=settings.engine_prompt_cache,
                         compile=settings.engine_compile).resolve()


class DiffusionEngine:
    name = "diffusers"

    def __init__(self, spec: ModelSpec, pipeline, options: EngineOptions, *, weights_id: str,
                 warm_shape: WarmShape = WarmShape(), mag_ratios: tuple[float, ...] | None = None) -> None:
        self.spec = spec
        self.mag_ratios = mag_ratios or spec.mag_ratios
        self._cache_steps = MAGCACHE_DEFAULT_STEPS
        self.model = spec.name
        self.options = options
        self.pipe = pipeline
        self.pipe.set_progress_bar_config(disable=True)
        self.prompts = PromptCache(options.prompt_cache)
        self.warm_shape = warm_shape
        self.quantized_layers = 0
        self._warm = False
        self._free_before_next = False
        self._apply_switches()
        self.blocks = BlockCounter(self.pipe.transformer)
        # What decides the pixels besides the request: a different engine id never shares results.
        self.engine_id = hashlib.sha256(json.dumps(
            {"model": str(spec.name), "weights": weights_id, "precision": options.precision,
             "quantize": options.quantize, "cache": options.cache, "threshold": self.cache_threshold,
             "vae_norm": options.fast_vae_norm},
            sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_settings(cls, settings: Settings, model) -> DiffusionEngine:
        if settings.engine_threads:
            torch.set_num_threads(settings.engine_threads)
        return cls.load(REGISTRY[model], engine_options(settings), models_dir=settings.models_dir)

    @classmethod
    def load(cls, spec: ModelSpec, options: EngineOptions, *, models_dir=None) -> DiffusionEngine:
        options = options.resolve()
        pipeline = load_pipeline(spec, models_dir, dtype=options.dtype)
        directory = checkpoint_dir(spec, models_dir)
        if directory is not None:
            weights_id = f"dir:{directory.resolve()}:{(directory / 'model_index.json').stat().st_mtime_ns}"
        else:
            weights_id = f"config:{json.dumps(asdict(spec.tiny), sort_keys=True)}"
        log.info("engine %s: %s", spec.name, options.describe())
        return cls(spec, pipeline, options, weights_id=weights_id, mag_ratios=load_ratios(directory))

    def _match_cache_to_steps(self, steps: int) -> None:
        """MagCache walks its ratios step by step and resets after the step count it was armed with:
        a batch with another count re-arms it (cheap: hooks only)."""
        if self.options.cache == "magcache" and steps != self._cache_steps:
            self.pipe.transformer.disable_cache()
            self._cache_steps = steps
            apply_cache(self.pipe.transformer, "magcache", self.cache_threshold, self.mag_ratios, steps)

    @property
    def cache_threshold(self) -> float:
        return self.options.cache_threshold if self.options.cache_threshold is not None else self.spec.cache_threshold

    def _apply_switches(self) -> None:
        pipe, options = self.pipe, self.options
        pipe.to(options.device)
        if options.fast_vae_norm:
            speed_up_vae_norms(pipe.vae)
        if options.precision == "bf16" and pipe.transformer.dtype != torch.bfloat16:
            cast_keeping_fp32_modules(pipe.transformer, torch.bfloat16)
        self.quantized_layers = quantize_transformer(pipe.transformer, options.quantize)
        apply_cache(pipe.transformer, options.cache, self.cache_threshold, self.mag_ratios, self._cache_steps)
        if options.compile:
            if options.cache != "none":
                raise ConfigurationError("`compile` and a cache hook do not mix: the hooks' skip decision breaks "
                                         "the graph and recompiles every block; set FRAMEBUS_ENGINE_CACHE=none")
            pipe.transformer.compile_repeated_blocks(fullgraph=True, dynamic=True)

    # --- engine protocol ---------------------------------------------------------------------
    def warm(self) -> None:
        """One full generation (text encoder, every denoising step, VAE decode) before any job."""
        if self._warm:
            return
        shape = self.warm_shape
        request = GenerationRequest(request_id="warm-up", tenant_id="framebus", prompt="warm up", model=self.model,
                                    width=shape.width, height=shape.height, num_frames=shape.num_frames,
                                    num_inference_steps=shape.steps, seed=0)
        started = time.perf_counter()
        self.render([request], lambda _: False)
        if self.options.compile:  # a second batch size makes torch.compile treat the batch dim as dynamic
            self.render([request, request.model_copy(update={"request_id": "warm-up-2"})], lambda _: False)
        self._warm = True
        log.info("engine warm in %.2f s", time.perf_counter() - started)

    def render(self, requests: Sequence[GenerationRequest], cancelled: IsCancelled,
               on_step: StepReport | None = None) -> list[Rendered]:
        if not self.options.batching and len(requests) > 1:
            return [item for request in requests for item in self.render([request], cancelled, on_step)]
        if self._free_before_next:  # the failed attempt's tensors are gone now; give their memory back
            self._free_before_next = False
            gc.collect()
            if self.options.device == "cuda":
                torch.cuda.empty_cache()
        try:
            return self._render_batch(list(requests), cancelled, on_step)
        except (RuntimeError, MemoryError) as exc:
            failure = classify_device_error(exc)
            if failure is None:
                raise
        finally:
            self._reset_cache_hooks()
        # Raised here, outside the handler: the original's traceback (and the failed attempt's tensors
        # its frames hold) is gone by now, so the retry of the halves has that memory back.
        self._free_before_next = True
        raise failure

    def _reset_cache_hooks(self) -> None:
        """A cache hook keeps per-call state (the previous step's residuals, its batch size) that the
        pipeline resets only when a call ends normally; after a failure mid-denoise the next call,
        of another batch size, would meet it (measured: a size mismatch in both halves of a split)."""
        if self.options.cache == "none":
            return
        from diffusers.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(self.pipe.transformer)
        registry._set_context(None)  # cache_context() leaves its name set when the call raises
        self.pipe.transformer._reset_stateful_cache()

    def _render_batch(self, requests: list[GenerationRequest], cancelled: IsCancelled,
                      on_step: StepReport | None) -> list[Rendered]:
        first = requests[0]
        guided = first.guidance_scale > 1.0
        started = time.perf_counter()
        prompt_embeds, negative_embeds = self._embeddings(requests, guided)
        encoded = time.perf_counter()
        self._match_cache_to_steps(first.num_inference_steps)
        generators = [torch.Generator(self.options.device).manual_seed(r.effective_seed()) for r in requests]
        stopped: set[int] = set()

        def between_steps(pipe, step, timestep, tensors):
            for row, request in enumerate(requests):
                if row not in stopped and cancelled(request):
                    stopped.add(row)
            if len(stopped) == len(requests):
                pipe._interrupt = True  # nobody wants this batch any more
            if on_step is not None:
                on_step(step + 1, first.num_inference_steps)
            return {}

        self.blocks.reset()
        with torch.inference_mode():
            latents = self.pipe(
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, height=first.height,
                width=first.width, num_frames=first.num_frames, num_inference_steps=first.num_inference_steps,
                guidance_scale=first.guidance_scale, generator=generators, output_type="latent",
                callback_on_step_end=between_steps).frames
            denoised = time.perf_counter()
            keep = [row for row in range(len(requests)) if row not in stopped and not cancelled(requests[row])]
            frames = self._decode(latents[keep]) if keep else None
        decoded = time.perf_counter()
        calls, computed = self.blocks.reset()
        per_step = 2 if guided else 1
        steps_run = calls // per_step
        skipped = (calls - computed) // per_step
        text_encode_s, denoise_s, decode_s = encoded - started, denoised - encoded, decoded - denoised
        share = (decoded - started) / len(requests)
        out = []
        for row, request in enumerate(requests):
            if row in keep:
                out.append(Rendered(request, frames=frames[keep.index(row)], gpu_seconds=share, steps_run=steps_run,
                                    steps_skipped_by_cache=skipped, text_encode_s=text_encode_s,
                                    denoise_s=denoise_s, decode_s=decode_s / len(keep)))
            else:
                out.append(Rendered(request, gpu_seconds=share, steps_run=steps_run, steps_skipped_by_cache=skipped))
        return out

    def _embeddings(self, requests: list[GenerationRequest], guided: bool):
        """Prompt embeddings per row, from the LRU where possible; misses are encoded in one call."""
        keys = [(str(self.model), r.prompt, r.negative_prompt if guided else None) for r in requests]
        found = {key: self.prompts.get(key) for key in dict.fromkeys(keys)}
        missing = [key for key, value in found.items() if value is None]
        if missing:
            # Positive and negative prompts in one text-encoder call, with no autograd graph: an
            # embedding cached with its graph kept the encoder's activations alive (GiBs per prompt
            # at UMT5-XXL size).
            texts = [key[1] for key in missing] + ([key[2] or "" for key in missing] if guided else [])
            with torch.inference_mode():
                encoded, _ = self.pipe.encode_prompt(texts, do_classifier_free_guidance=False,
                                                     max_sequence_length=self.spec.max_sequence_length,
                                                     device=torch.device(self.options.device))
            count = len(missing)
            for index, key in enumerate(missing):
                pair = (_trimmed(encoded[index]), _trimmed(encoded[count + index]) if guided else None)
                found[key] = pair
                self.prompts.put(key, pair)
        length = self.spec.max_sequence_length
        prompt_embeds = torch.stack([_padded(found[key][0], length) for key in keys])
        negative_embeds = torch.stack([_padded(found[key][1], length) for key in keys]) if guided else None
        return prompt_embeds, negative_embeds

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 RGB frames (batch, frames, height, width, 3), as WanPipeline decodes them."""
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        # One video at a time: a batch's decode peaks at the whole batch's activations, and an
        # out-of-memory there would throw away the denoising already done.
        clips = []
        for row in latents / inverse_std + mean:
            video = vae.decode(row.unsqueeze(0), return_dict=False)[0]
            frames = self.pipe.video_processor.postprocess_video(video, output_type="pt").float()  # (1, F, C, H, W)
            # To uint8 where the frames are: a quarter of the bytes cross to the host (a GPU's copy is the cost).
            pixels = (frames.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2)
            clips.append(pixels.cpu().numpy())
        return np.concatenate(clips)
