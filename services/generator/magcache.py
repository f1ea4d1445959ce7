"""MagCache calibration: how much the transformer's residual (last block's output minus first
block's input) grows or shrinks from one denoising step to the next, for one trained model.

MagCache skips a step when the product of these ratios since the last computed step stays
close to 1, reusing that step's residual. The ratios depend on the weights and the scheduler,
so its authors record them per model over a handful of prompts; this does the same with the
formula diffusers' calibration mode uses (mean over tokens of |r_t| / |r_t-1|), averaged over
prompts and over the conditional and unconditional passes, and ships them next to the weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

RATIOS_FILE = "magcache.json"


def calibrate(pipe, prompts: Sequence[str], *, steps: int, guidance_scale: float, height: int, width: int,
              num_frames: int, max_sequence_length: int, seed: int = 0) -> list[float]:
    """The mean step-to-step magnitude ratio of the residual, one per step (the first is 1.0)."""
    pipe.set_progress_bar_config(disable=True)
    blocks = pipe.transformer.blocks
    passes = 2 if guidance_scale > 1.0 else 1
    entry: list[torch.Tensor] = []
    residuals: list[torch.Tensor] = []  # in call order: step-major, then cond/uncond

    def on_first(_module, args, kwargs):
        entry.append((kwargs.get("hidden_states", args[0] if args else None)).detach().float())

    def on_last(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        residuals.append(hidden.detach().float() - entry.pop())

    handles = [blocks[0].register_forward_pre_hook(on_first, with_kwargs=True),
               blocks[-1].register_forward_hook(on_last)]
    sums = [0.0] * steps
    try:
        for index, prompt in enumerate(prompts):
            residuals.clear()
            with torch.inference_mode():
                pipe(prompt, height=height, width=width, num_frames=num_frames, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed + index),
                     output_type="latent", max_sequence_length=max_sequence_length)
            if len(residuals) != steps * passes:
                raise RuntimeError(f"expected {steps * passes} transformer calls, saw {len(residuals)}")
            for lane in range(passes):
                trace = residuals[lane::passes]
                for step in range(1, steps):
                    ratio = trace[step].norm(dim=-1) / (trace[step - 1].norm(dim=-1) + 1e-8)
                    sums[step] += float(ratio.mean()) / (passes * len(prompts))
    finally:
        for handle in handles:
            handle.remove()
    return [1.0] + [round(value, 5) for value in sums[1:]]


def save_ratios(directory: Path, ratios: Sequence[float], *, steps: int, prompts: int) -> Path:
    path = directory / RATIOS_FILE
    path.write_text(json.dumps({"num_inference_steps": steps, "prompts": prompts, "mag_ratios": list(ratios)},
                               indent=1) + "\n")
    return path


def load_ratios(directory: Path | None) -> tuple[float, ...] | None:
    """The ratios shipped in a checkpoint directory, or None when it has none."""
    path = directory / RATIOS_FILE if directory is not None else None
    if path is None or not path.is_file():
        return None
    return tuple(float(value) for value in json.loads(path.read_text())["mag_ratios"])
