"""The model registry: what each model name means, and how its pipeline is built or loaded.

``wan-shapes`` is a small Wan pipeline trained in this repository (``framebus model train``) on
clips of coloured shapes; its weights ship in ``models/wan-shapes`` and load like any real
checkpoint. It draws what its prompts say, so it is the demo's model and the quality gate's.
``wan-tiny`` is the Wan architecture (diffusers' WanPipeline with WanTransformer3DModel,
AutoencoderKLWan, a UMT5 text encoder) at toy size, built from config with seeded random
weights and a ByT5 tokenizer that needs no files: tests, CI and the demo run with no
model hub. The real Wan checkpoints load from ``{models_dir}/{name}`` in diffusers'
layout with ``local_files_only=True``; so does wan-tiny when a directory for it exists
(``save_tiny`` writes one, and a test loads it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from framebus.schemas.state import ModelName
from framebus.services.common.errors import ConfigurationError


@dataclass(frozen=True)
class TinyWanConfig:
    """Toy sizes, chosen so the transformer (not the VAE) dominates a generation as it does at
    full size: about 15 M transformer parameters (inner dim 512, 4 blocks), a VAE of base width 4."""

    heads: int = 8
    head_dim: int = 64
    layers: int = 4
    ffn_mult: int = 4
    text_dim: int = 64
    text_layers: int = 2
    vae_base_dim: int = 4
    seed: int = 20261122


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    checkpoint: str | None  # sub-directory of models_dir; None: built from config (wan-tiny only)
    cache_threshold: float  # First Block Cache threshold that suits this model
    flow_shift: float = 3.0  # 3.0 for 480p Wan 2.1, 5.0 for 720p
    max_sequence_length: int = 512
    tiny: TinyWanConfig | None = None
    mag_ratios: tuple[float, ...] | None = None  # MagCache calibration; none for random weights
    bundled: Path | None = None  # a checkpoint shipped with framebus, used when models_dir has none

    @property
    def built_from_config(self) -> bool:
        return self.tiny is not None


# The repository's own checkpoints (a source checkout or an image that copies models/).
BUNDLED_MODELS = Path(__file__).resolve().parents[2] / "models"

REGISTRY: dict[ModelName, ModelSpec] = {
    ModelName.WAN_SHAPES: ModelSpec(ModelName.WAN_SHAPES, "wan-shapes", cache_threshold=0.1, max_sequence_length=16,
                                    bundled=BUNDLED_MODELS / "wan-shapes"),
    ModelName.WAN_TINY: ModelSpec(ModelName.WAN_TINY, "wan-tiny", cache_threshold=0.1, max_sequence_length=64,
                                  tiny=TinyWanConfig()),
    ModelName.WAN21_T2V_1_3B: ModelSpec(ModelName.WAN21_T2V_1_3B, "wan2.1-t2v-1.3b", cache_threshold=0.05),
    ModelName.WAN21_T2V_14B: ModelSpec(ModelName.WAN21_T2V_14B, "wan2.1-t2v-14b", cache_threshold=0.05,
                                       flow_shift=5.0),  # its default is 720p
    ModelName.WAN22_TI2V_5B: ModelSpec(ModelName.WAN22_TI2V_5B, "wan2.2-ti2v-5b", cache_threshold=0.05,
                                       flow_shift=5.0),
}


def build_tiny_pipeline(config: TinyWanConfig = TinyWanConfig(), *, flow_shift: float = 3.0):
    """A WanPipeline from config with seeded random weights, in fp32 on the CPU."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    tokenizer = ByT5Tokenizer()  # bytes as tokens: no vocabulary files to download
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.seed)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=config.text_dim, d_kv=config.text_dim // 2, d_ff=config.text_dim * 2,
            num_layers=config.text_layers, num_heads=2, relative_attention_num_buckets=32,
            relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)).eval()
        inner = config.heads * config.head_dim
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=config.heads, attention_head_dim=config.head_dim,
            in_channels=16, out_channels=16, text_dim=config.text_dim, freq_dim=256, ffn_dim=config.ffn_mult * inner,
            num_layers=config.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            rope_max_seq_len=1024).eval()
        vae = AutoencoderKLWan(base_dim=config.vae_base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                               attn_scales=[], temperal_downsample=[False, True, True]).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    # Wan 2.1's own scheduler: UniPC with flow prediction and a shifted sigma schedule.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)


def save_tiny(directory: Path, config: TinyWanConfig = TinyWanConfig()) -> Path:
    """Write wan-tiny in diffusers' layout, as a real checkpoint directory would be."""
    build_tiny_pipeline(config).save_pretrained(directory)
    return directory


def checkpoint_dir(spec: ModelSpec, models_dir: Path | None) -> Path | None:
    """The directory the spec's weights load from: ``models_dir/checkpoint`` first, then the bundled
    one; None when neither holds a diffusers checkpoint."""
    candidates = [models_dir / spec.checkpoint] if models_dir is not None and spec.checkpoint else []
    candidates += [spec.bundled] if spec.bundled is not None else []
    return next((path for path in candidates if (path / "model_index.json").is_file()), None)


def load_pipeline(spec: ModelSpec, models_dir: Path | None, *, dtype: torch.dtype = torch.float32):
    """The spec's pipeline: from ``models_dir/checkpoint`` when that exists, else from config (wan-tiny).

    Loading from a directory passes ``torch_dtype`` to diffusers, which keeps the modules a
    model lists in ``_keep_in_fp32_modules`` in fp32.
    """
    directory = checkpoint_dir(spec, models_dir)
    if directory is not None:
        from diffusers import WanPipeline

        pipeline = WanPipeline.from_pretrained(directory, local_files_only=True, torch_dtype=dtype)
        if getattr(pipeline.scheduler.config, "flow_shift", spec.flow_shift) != spec.flow_shift:
            # A checkpoint's scheduler config may carry another shift (the Diffusers repos ship one
            # config for all sizes): the registry's, chosen for the model's resolution, decides.
            pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config,
                                                                      flow_shift=spec.flow_shift)
        return pipeline
    if spec.built_from_config:
        return build_tiny_pipeline(spec.tiny, flow_shift=spec.flow_shift)
    if spec.bundled is not None:
        raise ConfigurationError(f"model {spec.name} ships with framebus at {spec.bundled}, which this installation "
                                 f"lacks; copy models/{spec.checkpoint} from the repository into FRAMEBUS_MODELS_DIR "
                                 f"or train it with `framebus model train --output DIR`")
    where = f"{models_dir / spec.checkpoint}" if models_dir is not None else "FRAMEBUS_MODELS_DIR (unset)"
    raise ConfigurationError(f"model {spec.name} needs a checkpoint in diffusers' layout at {where}; download it on "
                             f"a machine with access (e.g. `huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers "
                             f"--local-dir {spec.checkpoint}`) and copy it there")
