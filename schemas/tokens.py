"""The token quote: what a request costs, computed from the request alone (DESIGN.md).

    tokens = 100 x (width x height / 1024^2) x (num_frames / 81) x (steps / 50)
                 x sqrt(max(len(prompt), 1) / 100)

One standard unit (1024x1024, 81 frames, 50 steps, a 100-character prompt) is 100
tokens. Quotes are rounded *up* to 0.001 token, so a client's quote and the bill agree
to the last digit and no request is ever free.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal

TOKEN_QUANTUM = Decimal("0.001")


def quote_tokens(*, width: int, height: int, num_frames: int, num_inference_steps: int, prompt: str) -> float:
    raw = (100.0 * (width * height / 1024**2) * (num_frames / 81) * (num_inference_steps / 50)
           * math.sqrt(max(len(prompt), 1) / 100))
    # repr() first: Decimal(float) would carry binary noise into the ceiling.
    quantized = Decimal(repr(raw)).quantize(TOKEN_QUANTUM, rounding=ROUND_CEILING)
    return float(max(quantized, TOKEN_QUANTUM))
