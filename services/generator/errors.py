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


class EngineBroken(GeneratorError):
    """The device is unusable (a CUDA context after an illegal access or a device-side assert: every
    later call fails too). The worker hands its work back and exits for its supervisor to restart it."""


# What a device says when an allocation fails: torch raises OutOfMemoryError, but cuBLAS and cuDNN
# report theirs as plain RuntimeErrors (and a split batch may well fit).
ALLOCATION_FAILURES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                       "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
BROKEN_CONTEXT = ("illegal memory access", "device-side assert", "unspecified launch failure", "misaligned address",
                  "uncorrectable ECC error", "CUDA error: an illegal instruction")


def classify_device_error(exc: BaseException) -> GeneratorError | None:
    """The generator error a device failure means (out of memory, or a broken device), or None."""
    message = str(exc)
    if isinstance(exc, MemoryError) and not message:
        return EngineOutOfMemory("host memory exhausted")
    if any(marker in message for marker in BROKEN_CONTEXT):
        return EngineBroken(message.splitlines()[0] if message else type(exc).__name__)
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError) or any(
            marker in message for marker in ALLOCATION_FAILURES):
        return EngineOutOfMemory(message.splitlines()[0] if message else type(exc).__name__)
    return None


class RenderInterrupted(GeneratorError):
    """Raised between denoising steps when the worker is stopping: its requests are handed back."""


class EncodeError(GeneratorError):
    """ffmpeg refused the frames, or the file it wrote failed verification; the message says which."""


class UploadFailed(StorageError, GeneratorError):
    """The upload kept failing until its deadline, or cannot succeed at all."""


class StorageMisconfigured(StorageError, GeneratorError):
    """Retrying cannot help (e.g. a tenant's credentials are missing on this worker)."""
