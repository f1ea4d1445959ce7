"""The wan-shapes pipeline: diffusers' WanPipeline at a size this CPU trains in under an hour.

Every component is the one the Wan pipeline expects, only smaller: a WanTransformer3DModel, an
AutoencoderKLWan (3 levels: 4x down in space and time, 8 latent channels, its per-channel
latent statistics measured on the data set), a UMT5 encoder, and a word-level tokenizer over
the data set's vocabulary (a ``PreTrainedTokenizerFast`` saved as ``tokenizer.json``; words it
has not seen map to ``<unk>``). Saved with ``save_pretrained`` it is an ordinary diffusers
checkpoint directory, loaded like any real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framebus.services.shapes import dataset

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class ShapesModelConfig:
    heads: int = 4
    head_dim: int = 64
    layers: int = 4
    ffn_mult: int = 4
    # 16x16 latents become 4x4 tokens a frame. (1,2,2) learns shapes faster per step (bench/shapes_patch.py)
    # but costs ~1 s a step at batch 16 on 2 cores: 4,500 steps do not fit the hour (issue #17's notes).
    patch: tuple[int, int, int] = (1, 4, 4)
    text_dim: int = 128
    text_layers: int = 2
    max_sequence_length: int = 16  # words; the longest phrasing has 12 and an end token
    vae_base_dim: int = 16
    z_dim: int = 8
    flow_shift: float = 3.0


def build_tokenizer(max_length: int):
    """A word-level tokenizer: lower-cased, split on whitespace and punctuation, ``</s>`` appended."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in dataset.vocabulary():
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=max_length)


def build_untrained(config: ShapesModelConfig = ShapesModelConfig(), *, seed: int = 0):
    """A WanPipeline of the wan-shapes sizes with freshly initialised weights, seeded."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer(config.max_sequence_length)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=config.text_dim, d_kv=config.text_dim // 2, d_ff=config.text_dim * 2,
            num_layers=config.text_layers, num_heads=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=32, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False))
        inner = config.heads * config.head_dim
        transformer = WanTransformer3DModel(
            patch_size=config.patch, num_attention_heads=config.heads, attention_head_dim=config.head_dim,
            in_channels=config.z_dim, out_channels=config.z_dim, text_dim=config.text_dim, freq_dim=256,
            ffn_dim=config.ffn_mult * inner, num_layers=config.layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=256)
        vae = AutoencoderKLWan(base_dim=config.vae_base_dim, z_dim=config.z_dim, dim_mult=[1, 2, 4], num_res_blocks=1,
                               attn_scales=[], temperal_downsample=[True, True], latents_mean=[0.0] * config.z_dim,
                               latents_std=[1.0] * config.z_dim, scale_factor_spatial=4, scale_factor_temporal=4)
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=config.flow_shift)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
