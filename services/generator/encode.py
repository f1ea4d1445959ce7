"""ffmpeg encoding: frames (uint8 RGB) piped raw to ffmpeg, MP4 out, plus a JPEG poster.

The encoder choice (h264_nvenc when present, presets, ffprobe checks) grows with the
generator issue; this is the libx264 path every machine has.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image

from services.common.errors import FramebusError


class EncodeError(FramebusError):
    pass


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = 23


@dataclass(frozen=True)
class EncodedVideo:
    mp4: bytes
    poster_jpeg: bytes
    codec: str
    width: int
    height: int
    num_frames: int
    fps: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def encode_video(frames: np.ndarray, fps: int, config: EncodeConfig = EncodeConfig()) -> EncodedVideo:
    """Encode ``frames`` shaped (frames, height, width, 3), uint8 RGB, to an MP4 with +faststart."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise EncodeError(f"`frames` must be uint8 (frames, height, width, 3) but is {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "video.mp4"
        try:
            (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
             .output(str(out), vcodec=config.codec, pix_fmt="yuv420p", preset=config.preset, crf=config.crf,
                     movflags="+faststart", r=fps)
             .overwrite_output()
             .run(input=np.ascontiguousarray(frames).tobytes(), capture_stdout=True, capture_stderr=True))
        except ffmpeg.Error as exc:
            tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise EncodeError(f"ffmpeg ({config.codec}) failed: {tail[0]}") from exc
        mp4 = out.read_bytes()
    poster = io.BytesIO()
    Image.fromarray(frames[0]).save(poster, format="JPEG", quality=85)
    return EncodedVideo(mp4, poster.getvalue(), config.codec, width, height, count, fps)
