"""framebus: the importable producer SDK. See ``framebus.client``."""

from framebus.client import FramebusClient, Receipt, SubmitError
from framebus.schemas.events import GenerationRequest

__all__ = ["FramebusClient", "GenerationRequest", "Receipt", "SubmitError"]
