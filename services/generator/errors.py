"""The generator's errors, in one module that imports no ffmpeg, S3 or Kafka code, so the
pure decision modules can name what their collaborators raise.

Every error here is a ``FramebusError``; upload errors are also ``StorageError``s, as the
services' other object-store errors are.
"""

from __future__ import annotations

from framebus.services.common.errors import FramebusError, StorageError


class GeneratorError(FramebusError):
    """Root of the errors the generator raises on purpose."""


class EngineOutOfMemory(GeneratorError):
    """Raised by an engine when a batch does not fit; the worker splits the batch and retries."""


class RenderInterrupted(GeneratorError):
    """Raised between denoising steps when the worker is stopping: its requests are handed back."""


class EncodeError(GeneratorError):
    """ffmpeg refused the frames, or the file it wrote failed verification; the message says which."""


class UploadFailed(StorageError, GeneratorError):
    """The upload kept failing until its deadline, or cannot succeed at all."""


class StorageMisconfigured(StorageError, GeneratorError):
    """Retrying cannot help (e.g. a tenant's credentials are missing on this worker)."""
