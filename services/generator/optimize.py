"""The engine's speed switches, each one applied to a pipeline on its own: precision, quantization
and the transformer cache. ``EngineOptions.resolve`` turns ``auto`` into what the hardware can do.

- precision: bf16 where the hardware multiplies bf16 fast (CPUs with AVX512-BF16 or AMX,
  CUDA GPUs that report bf16 support), keeping the modules diffusers lists in
  ``_keep_in_fp32_modules`` (Wan's time embedder, norms, scale-shift tables) in fp32.
- quantization: torchao on the transformer blocks' linear layers only (the patch and
  condition embedders stay float): int8 dynamic activations with int8 weights on CPUs
  without fast bf16, float8 on GPUs with compute capability 8.9 or newer.
- cache: diffusers' hooks on the transformer (First Block Cache, TaylorSeer, MagCache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from framebus.services.common.errors import ConfigurationError

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
Quantize = Literal["auto", "none", "int8", "float8"]
CacheKind = Literal["none", "first-block", "taylorseer", "magcache"]


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    precision: Precision = "fp32"
    quantize: Quantize = "none"
    cache: CacheKind = "none"
    cache_threshold: float | None = None  # None: the model's own
    prompt_cache: int = 0  # entries; 0 = off
    batching: bool = True  # one pipeline call per batch; off = one call per request
    fast_vae_norm: bool = True  # the VAE's RMS norms without F.normalize (same function, CPU kernel 3x faster)
    compile: bool = False  # torch.compile the transformer's repeated blocks (slower warm-up, faster steps)

    def resolve(self) -> EngineOptions:
        """Replace ``auto`` with the choice for this machine."""
        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        precision = self.precision if self.precision != "auto" else ("bf16" if fast_bf16(device) else "fp32")
        quantize = self.quantize
        if quantize == "auto":
            # Measured (bench/engine.py): on a CPU with fast bf16, eager int8 runs slower than bf16
            # alone (its activation quantization costs more than the int8 product saves), so
            # int8 is only the pick on CPUs without fast bf16, where it at least quarters weight memory.
            if float8_capable(device):
                quantize = "float8"
            elif device == "cpu" and precision == "fp32":
                quantize = "int8"
            else:
                quantize = "none"
        return replace(self, device=device, precision=precision, quantize=quantize)

    def describe(self) -> str:
        return (f"{self.device}, {self.precision}, quantize={self.quantize}, cache={self.cache}"
                f"{'' if self.cache_threshold is None else f'@{self.cache_threshold:g}'}, "
                f"prompt-cache={self.prompt_cache}, batching={'on' if self.batching else 'off'}, "
                f"fast-vae-norm={'on' if self.fast_vae_norm else 'off'}, compile={'on' if self.compile else 'off'}")

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fast_bf16(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def float8_capable(device: str) -> bool:
    return device == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


# --- precision ---------------------------------------------------------------------------------
def cast_keeping_fp32_modules(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters and buffers to ``dtype`` except those under a module named in
    ``_keep_in_fp32_modules`` (the rule diffusers applies when loading with ``torch_dtype``)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return model


# --- VAE ---------------------------------------------------------------------------------------
def _rms_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """WanRMS_norm without F.normalize: on CPUs its channel-dim vector norm is a strided
    reduction that took 75% of the VAE decode (measured with torch.profiler); a sum of
    squares and rsqrt is the same function (max error ~1e-7) at a third of the time."""
    values = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    dim = 1 if self.channel_first else -1
    normalized = values * torch.rsqrt((values * values).sum(dim=dim, keepdim=True).clamp_min(1e-24))
    return normalized.to(x.dtype) * self.scale * self.gamma + self.bias


def speed_up_vae_norms(vae: torch.nn.Module) -> int:
    """Give every WanRMS_norm of ``vae`` the faster forward; returns how many."""
    import types

    count = 0
    for module in vae.modules():
        if type(module).__name__ == "WanRMS_norm":
            module.forward = types.MethodType(_rms_norm_forward, module)
            count += 1
    return count


# --- quantization ------------------------------------------------------------------------------
def _block_linear(module: torch.nn.Module, fqn: str) -> bool:
    return isinstance(module, torch.nn.Linear) and fqn.startswith("blocks.")


def quantize_transformer(transformer: torch.nn.Module, kind: Quantize) -> int:
    """Quantize the transformer blocks' linear layers in place; returns how many were quantized."""
    if kind == "none":
        return 0
    from torchao.quantization import quantize_

    if kind == "int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        config = Int8DynamicActivationInt8WeightConfig()
    elif kind == "float8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

        config = Float8DynamicActivationFloat8WeightConfig()
    else:
        raise ValueError(f"`quantize` must be none, int8 or float8 but is {kind!r}")
    before = {name for name, module in transformer.named_modules() if _block_linear(module, name)}
    quantize_(transformer, config, filter_fn=_block_linear)
    return len(before)


# --- cache -------------------------------------------------------------------------------------
# Above this, TaylorSeer runs in its lite mode (the model's output extrapolated, not every block's parts).
TAYLORSEER_FULL_MAX_PARAMS = 500_000_000


def apply_cache(transformer: torch.nn.Module, kind: CacheKind, threshold: float,
                mag_ratios: tuple[float, ...] | None = None, num_inference_steps: int = 50) -> None:
    """Attach a diffusers cache hook to the transformer.

    - first-block: skip the blocks after the first when the first block's residual changed
      less than ``threshold`` (relative) since the last full step. Decided per batch.
    - taylorseer: after two full steps, every 2nd step is extrapolated (Taylor) from the last ones.
    - magcache: needs the model's calibrated magnitude ratios (``ModelSpec.mag_ratios``) and a
      fixed step count; random-weight models have none, so it is refused for them.
    """
    if kind == "none":
        return
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if kind == "first-block":
        config = FirstBlockCacheConfig(threshold=threshold)
    elif kind == "taylorseer":
        if sum(p.numel() for p in transformer.parameters()) > TAYLORSEER_FULL_MAX_PARAMS:
            # Full TaylorSeer keeps fp32 factors of attn1, attn2 and ffn of every block, per CFG pass:
            # tens of GB per batch row for the 1.3B model at 832x480x81. Lite keeps the output only.
            config = TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2,
                                           taylor_factors_dtype=torch.bfloat16, use_lite_mode=True)
        else:
            # Wan's attention modules are attn1/attn2: the default patterns would hook nothing.
            config = TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2,
                                           taylor_factors_dtype=torch.float32,
                                           cache_identifiers=[r"blocks\.\d+\.(attn1|attn2|ffn)"])
    elif kind == "magcache":
        if not mag_ratios:
            raise ConfigurationError("the magcache switch needs calibrated magnitude ratios for this model "
                                     "(ModelSpec.mag_ratios); use first-block or taylorseer instead")
        config = MagCacheConfig(threshold=threshold, num_inference_steps=num_inference_steps,
                                mag_ratios=list(mag_ratios))
    else:
        raise ValueError(f"`cache` must be none, first-block, taylorseer or magcache but is {kind!r}")
    transformer.enable_cache(config)
    forget_child_registries(transformer)


def forget_child_registries(transformer: torch.nn.Module) -> None:
    """diffusers' hook registry lists its children's registries once, at the first call under a cache
    context, and never again: hooks added to blocks after the transformer has run (a cache enabled
    or re-armed later) would never get a context ("No context is set"). Make it list them afresh."""
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if getattr(registry, "_child_registries_cache", None) is not None:
        registry._child_registries_cache = None


class BlockCounter:
    """Counts transformer calls and the calls in which the last block really ran.

    A cache hook answers skipped calls without running the blocks after the first, so
    ``calls - computed`` is the number of transformer calls the cache saved.
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.calls = 0
        self.computed = 0
        last_block = transformer.blocks[-1]
        # The first leaf inside the last block's FFN: it runs only when the FFN really computes. A
        # cache hook replaces the forward of the module it wraps (the block, or with TaylorSeer the
        # FFN itself), but hooks on that module still fire when it is called, skipped or not.
        ffn = getattr(last_block, "ffn", last_block)
        probe = next(module for module in ffn.modules() if not list(module.children()))
        transformer.register_forward_pre_hook(self._call)
        probe.register_forward_pre_hook(self._computed)

    def _call(self, *_):
        self.calls += 1

    def _computed(self, *_):
        self.computed += 1

    def reset(self) -> tuple[int, int]:
        counts = (self.calls, self.computed)
        self.calls = self.computed = 0
        return counts
