"""Bounds of the contract, in one place: what a valid request may ask for.

Documented in the README; the JSON Schema files carry them too.
"""

from __future__ import annotations

# Identifiers.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # 1-128 chars, client-chosen idempotency key
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"  # 2-63 chars: safe in S3 keys and topic names
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
CUSTOM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"

# Text.
PROMPT_MAX_BYTES = 4096  # UTF-8 bytes; the text encoder truncates far below this anyway
NEGATIVE_PROMPT_MAX_BYTES = 4096

# Video shape.
DIMENSION_MULTIPLE = 16  # the VAE downsamples 8x and the transformer patches 2x
MIN_DIMENSION, MAX_DIMENSION = 16, 1920
MAX_NUM_FRAMES = 257  # frames must be 4k+1: the VAE compresses time 4x plus the first frame
MIN_FPS, MAX_FPS = 1, 60
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
MAX_SEED = 2**63 - 1

# Free-form metadata travels with every event of the request, so it stays small.
METADATA_MAX_KEYS = 16
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
METADATA_VALUE_MAX_CHARS = 512
METADATA_MAX_BYTES = 4096  # of the JSON-encoded map

WEBHOOK_URL_MAX_CHARS = 2048
