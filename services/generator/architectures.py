"""The real Wan models' published architectures, as configs in the repository.

What ``WanTransformer3DModel`` is built with for each release (the Wan team's configs:
dim, FFN width, heads, layers; patch 1x2x2; a UMT5-XXL text encoder of width 4096), and what
its VAE compresses by. A test builds each transformer on the meta device (no memory, no
weights) and holds its parameter count to the published size, so a checkpoint that loads
into these shapes is the model its name says.
"""

from __future__ import annotations

from dataclasses import dataclass

from framebus.schemas.state import ModelName


@dataclass(frozen=True)
class WanArchitecture:
    dim: int
    ffn_dim: int
    heads: int
    layers: int
    latent_channels: int  # the VAE's z_dim: the transformer's in and out channels
    vae_stride: tuple[int, int, int]  # time, height, width compression of the VAE
    published_params: float  # the size in the release's name
    flow_shift: float
    text_dim: int = 4096  # UMT5-XXL
    patch: tuple[int, int, int] = (1, 2, 2)

    @property
    def size_multiple(self) -> int:
        """What width and height must be multiples of: the VAE's stride times the patch."""
        return self.vae_stride[1] * self.patch[1]

    def transformer_config(self) -> dict:
        return {"patch_size": self.patch, "num_attention_heads": self.heads, "attention_head_dim": self.dim // self.heads,
                "in_channels": self.latent_channels, "out_channels": self.latent_channels, "text_dim": self.text_dim,
                "freq_dim": 256, "ffn_dim": self.ffn_dim, "num_layers": self.layers, "cross_attn_norm": True,
                "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}


ARCHITECTURES: dict[ModelName, WanArchitecture] = {
    ModelName.WAN21_T2V_1_3B: WanArchitecture(dim=1536, ffn_dim=8960, heads=12, layers=30, latent_channels=16,
                                              vae_stride=(4, 8, 8), published_params=1.3e9, flow_shift=3.0),
    ModelName.WAN21_T2V_14B: WanArchitecture(dim=5120, ffn_dim=13824, heads=40, layers=40, latent_channels=16,
                                             vae_stride=(4, 8, 8), published_params=14e9, flow_shift=5.0),
    # Wan 2.2's own VAE: 16x in space, 48 latent channels.
    ModelName.WAN22_TI2V_5B: WanArchitecture(dim=3072, ffn_dim=14336, heads=24, layers=30, latent_channels=48,
                                             vae_stride=(4, 16, 16), published_params=5e9, flow_shift=5.0),
}


def transformer_on_meta(architecture: WanArchitecture):
    """The transformer with every tensor on the meta device: its shapes, no memory."""
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**architecture.transformer_config())


def random_pipeline(architecture: WanArchitecture, *, dtype=None, seed: int = 0):
    """A WanPipeline with the real transformer and VAE shapes and seeded random weights: what the
    engine runs at full size without a checkpoint (tests, the GPU check). The text encoder keeps
    the real width (4096) with one layer: UMT5-XXL's 4.7 B parameters would only cost time."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    if architecture.latent_channels != 16:
        raise ValueError("random_pipeline builds Wan 2.1's VAE (16 latent channels); Wan 2.2's needs its own")
    tokenizer = ByT5Tokenizer()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=architecture.text_dim, d_kv=64, d_ff=1024, num_layers=1, num_heads=8,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0, tie_word_embeddings=False)).eval()
        transformer = WanTransformer3DModel(**architecture.transformer_config()).eval()
        vae = AutoencoderKLWan().eval()  # diffusers' defaults are Wan 2.1's VAE
    finally:
        torch.random.set_rng_state(state)
    if dtype is not None:
        transformer.to(dtype)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=architecture.flow_shift)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
