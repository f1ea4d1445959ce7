"""``framebus model train`` end to end at a few steps: a diffusers checkpoint directory that loads
like any real one, the training record and loss plot beside it, MagCache ratios for it."""

from __future__ import annotations

import json

import torch

from framebus.services.generator.magcache import load_ratios
from framebus.services.shapes.train import TrainConfig, lr_at, shifted, train


def test_quick_training_writes_a_checkpoint_diffusers_loads_offline(tmp_path):
    from diffusers import WanPipeline

    output = tmp_path / "wan-shapes"
    record = train(TrainConfig.quick(), output, quiet=True)
    pipe = WanPipeline.from_pretrained(output, local_files_only=True)
    assert pipe.vae.config.scale_factor_spatial == 4 and len(pipe.vae.config.latents_std) == pipe.vae.config.z_dim
    assert any(value != 1.0 for value in pipe.vae.config.latents_std)  # measured on the data, not the default
    written = json.loads((output / "training" / "record.json").read_text())
    assert written["config"]["seed"] == TrainConfig().seed and written["machine"]["cpu"]
    assert {"render_s", "vae_s", "encode_s", "dit_s", "magcache_s", "total_s"} <= set(written["stages"])
    assert written["stages"]["dit_precision"]["chosen"] in {"fp32", "bf16"}
    assert len(record.dit_loss) == TrainConfig.quick().dit_steps
    assert (output / "training" / "losses.png").read_bytes()[:4] == b"\x89PNG"
    ratios = load_ratios(output)
    assert ratios is not None and len(ratios) == TrainConfig.quick().sample_steps and ratios[0] == 1.0
    # Unknown words are not an error: they read as <unk>.
    ids = pipe.tokenizer("a red fox running through snow")["input_ids"]
    assert pipe.tokenizer.unk_token_id in ids and ids[-1] == pipe.tokenizer.eos_token_id


def test_the_learning_rate_warms_up_then_decays_to_a_tenth():
    rates = [lr_at(step, 100, 1.0, 10) for step in range(100)]
    assert rates[0] == 0.1 and rates[9] == 1.0 and abs(rates[-1] - 0.1) < 0.01
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_the_sigma_shift_moves_training_towards_high_noise_and_keeps_the_ends():
    u = torch.tensor([0.0, 0.5, 1.0])
    assert shifted(u, 3.0).tolist() == [0.0, 0.75, 1.0]
