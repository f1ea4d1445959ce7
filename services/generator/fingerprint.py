"""What makes two requests the same video: the result cache's key."""

from __future__ import annotations

import hashlib
import json

from framebus.schemas.events import GenerationRequest


def result_fingerprint(request: GenerationRequest, engine_id: str) -> str:
    """Everything that decides the pixels and the file: same fingerprint, same video.

    ``engine_id`` names what decides the pixels besides the request (weights, switches);
    tenant, ids and webhook do not count, so two tenants' identical requests share a
    fingerprint (the cache index is kept per tenant, see ``storage``)."""
    identity = {"engine": engine_id, "model": str(request.model), "prompt": request.prompt,
                "negative_prompt": request.negative_prompt, "width": request.width, "height": request.height,
                "num_frames": request.num_frames, "fps": request.fps, "steps": request.num_inference_steps,
                "guidance": request.guidance_scale, "seed": request.effective_seed()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
