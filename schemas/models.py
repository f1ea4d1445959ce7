"""What a request asks for when it does not say: the stack's model, and each model's own clip.

A request that names no model gets the stack's default (``FRAMEBUS_DEFAULT_MODEL``, which the
workers serve by default too, so a fresh stack agrees with itself); one that leaves out its
size, frames or steps gets its model's defaults, so a tiny CPU model defaults to a tiny clip
and a 14B model to its native 720p. Producers fill these in before sending (the SDK, the CLI,
the gateway); the scheduler fills them the same way for a record from another client that
left them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from framebus.schemas.state import ModelName


@dataclass(frozen=True)
class ModelDefaults:
    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    fps: int = 16
    # What width and height must be multiples of: the VAE's spatial factor times the transformer's
    # patch. Wan 2.2 TI2V-5B compresses 16x and patches 2x: 32 (its pipeline would silently floor 720 to 704).
    size_multiple: int = 16

    def fields(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height, "num_frames": self.num_frames,
                "num_inference_steps": self.num_inference_steps, "fps": self.fps}


DEFAULT_MODEL = ModelName.WAN_SHAPES  # what a stack serves unless FRAMEBUS_DEFAULT_MODEL says otherwise

MODEL_DEFAULTS: dict[ModelName, ModelDefaults] = {
    # Trained at 64x64 and 17 frames (services/shapes); 20 steps is where its quality gate is measured.
    ModelName.WAN_SHAPES: ModelDefaults(64, 64, 17, 20),
    # Random weights, for the plumbing: as small as the pipeline allows.
    ModelName.WAN_TINY: ModelDefaults(64, 64, 5, 4),
    # The Wan releases' own sizes: 480p for 1.3B, 720p for 14B, 704p at 24 fps for 2.2 TI2V-5B.
    ModelName.WAN21_T2V_1_3B: ModelDefaults(832, 480, 81, 50),
    ModelName.WAN21_T2V_14B: ModelDefaults(1280, 720, 81, 50),
    ModelName.WAN22_TI2V_5B: ModelDefaults(1280, 704, 121, 50, fps=24, size_multiple=32),
}


def render_markdown() -> str:
    """The README's table of models and what a request for each defaults to."""
    lines = ["| model | width x height | frames | fps | steps |", "|---|---|---|---|---|"]
    for model, d in MODEL_DEFAULTS.items():
        mark = " (the default model)" if model is DEFAULT_MODEL else ""
        lines.append(f"| `{model}`{mark} | {d.width} x {d.height} | {d.num_frames} | {d.fps} | {d.num_inference_steps} |")
    return "\n".join(lines)
