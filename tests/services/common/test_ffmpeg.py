"""ffmpeg is checked at start, with a clear error naming the install command."""

from __future__ import annotations

import pytest

from framebus.services.common.errors import ConfigurationError
from framebus.services.common.ffmpeg import require_ffmpeg


def test_ffmpeg_and_ffprobe_are_found() -> None:
    tools = require_ffmpeg()
    assert tools.ffmpeg.endswith("ffmpeg") and tools.ffprobe.endswith("ffprobe")
    assert tools.version.startswith("ffmpeg version")


def test_missing_ffmpeg_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"ffmpeg and ffprobe not found.*apt-get install ffmpeg"):
        require_ffmpeg()
