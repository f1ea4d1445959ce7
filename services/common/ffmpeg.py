"""Finding ffmpeg and ffprobe, with a clear error when they are missing."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from framebus.services.common.errors import ConfigurationError

INSTALL_HINT = "install it with `apt-get install ffmpeg` (Debian/Ubuntu) and make sure it is on PATH"


@dataclass(frozen=True)
class FfmpegTools:
    ffmpeg: str
    ffprobe: str
    version: str  # first line of `ffmpeg -version`


def require_ffmpeg() -> FfmpegTools:
    """Return the ffmpeg and ffprobe paths, or raise ConfigurationError saying how to install them."""
    found = {name: shutil.which(name) for name in ("ffmpeg", "ffprobe")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ConfigurationError(f"{' and '.join(missing)} not found on PATH; {INSTALL_HINT}")
    done = subprocess.run([found["ffmpeg"], "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ConfigurationError(f"`ffmpeg -version` failed with code {done.returncode}; {INSTALL_HINT}")
    return FfmpegTools(found["ffmpeg"], found["ffprobe"], done.stdout.splitlines()[0] if done.stdout else "ffmpeg")
