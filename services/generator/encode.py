"""ffmpeg encoding: frames (uint8 RGB) piped raw to ffmpeg, an MP4 out, a JPEG poster, an ffprobe check.

The encoder is chosen once at start (``choose_encoder``): ``h264_nvenc`` when ffmpeg
lists it *and* a one-frame trial encode succeeds (ffmpeg builds list it on machines
with no NVIDIA GPU), otherwise ``libx264``. Every output is probed before it is
reported: a video with the wrong codec, frame count, rate or duration is an
``EncodeError``, never a completed request.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import ffmpeg
import numpy as np
from PIL import Image

from framebus.services.generator.errors import EncodeError

NVENC, X264 = "h264_nvenc", "libx264"
VIDEO_CODEC = "h264"  # what both encoders produce (ffprobe's codec_name)
EncoderPreference = Literal["auto", "h264_nvenc", "libx264"]
TRIAL_TIMEOUT_S = 30


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = X264
    x264_preset: str = "veryfast"  # ultrafast .. veryslow
    x264_crf: int = 23
    nvenc_preset: str = "p4"  # p1 (fastest) .. p7 (best)
    nvenc_cq: int = 23

    def output_args(self) -> dict:
        if self.codec == NVENC:
            # Constant quality needs the bitrate cap off (-b:v 0): with NVENC's default target bitrate
            # set, `cq` only applies below it and quality drops on busy clips.
            return {"vcodec": NVENC, "preset": self.nvenc_preset, "rc": "vbr", "cq": self.nvenc_cq, "b:v": "0"}
        return {"vcodec": X264, "preset": self.x264_preset, "crf": self.x264_crf}


@dataclass(frozen=True)
class EncodedVideo:
    """An MP4 and its poster in the spool directory, until they are uploaded."""

    path: Path
    poster_path: Path
    codec: str
    width: int
    height: int
    num_frames: int
    fps: int
    encode_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.poster_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class EncoderChoice:
    codec: str
    reason: str


def listed_encoders(ffmpeg_bin: str = "ffmpeg") -> set[str]:
    done = subprocess.run([ffmpeg_bin, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    names = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] == "V":
            names.add(parts[1])
    return names


# ffmpeg's closing lines when an encoder fails; the cause (no device, driver too old, a missing
# library) is an earlier line.
_GENERIC_FAILURES = ("Conversion failed", "Error while opening encoder", "Error initializing output stream",
                     "Could not open encoder before EOF", "Nothing was written", "Error sending frames",
                     "Task finished with error", "Terminating thread with return code")


def trial_encode(codec: str, ffmpeg_bin: str = "ffmpeg") -> str | None:
    """Encode one black 256x256 frame with ``codec`` and the options real encodes use; None on
    success, else ffmpeg's own reason (its specific lines, not the generic last one)."""
    options = [arg for key, value in EncodeConfig(codec=codec).output_args().items() if key != "vcodec"
               for arg in (f"-{key}", str(value))]
    args = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=black:s=256x256:d=0.04",
            "-frames:v", "1", "-c:v", codec, *options, "-f", "null", "-"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"trial encode timed out after {TRIAL_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    return ffmpeg_reason(done.stderr) or f"exit code {done.returncode}"


def ffmpeg_reason(stderr: str) -> str:
    """The lines of ffmpeg's error output that say why (at most two), else its last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    specific = [line for line in lines if not any(generic in line for generic in _GENERIC_FAILURES)]
    return "; ".join(specific[:2]) if specific else (lines[-1] if lines else "")


def choose_encoder(preference: EncoderPreference = "auto", ffmpeg_bin: str = "ffmpeg") -> EncoderChoice:
    """Pick the H.264 encoder this machine can really run. A forced encoder that fails is an error."""
    listed = listed_encoders(ffmpeg_bin)
    candidates = [NVENC, X264] if preference == "auto" else [preference]
    reasons = []
    for codec in candidates:
        if codec not in listed:
            reasons.append(f"{codec} is not in this ffmpeg build")
            continue
        failure = trial_encode(codec, ffmpeg_bin)
        if failure is None:
            why = "; ".join(reasons + [f"{codec} passed a one-frame trial encode"])
            return EncoderChoice(codec, why)
        reasons.append(f"{codec} failed a one-frame trial encode ({failure})")
    raise EncodeError(f"no usable H.264 encoder: {'; '.join(reasons)}; install an ffmpeg built with libx264 "
                      "(Debian/Ubuntu: `apt-get install ffmpeg`)")


def encode_video(frames: np.ndarray, fps: int, out: Path, config: EncodeConfig = EncodeConfig(),
                 *, ffmpeg_bin: str = "ffmpeg", ffprobe_bin: str = "ffprobe") -> EncodedVideo:
    """Encode ``frames`` (frames, height, width, 3) uint8 RGB to ``out`` (.mp4, yuv420p, +faststart),
    write ``out`` with a .jpg suffix as the poster, and verify the file with ffprobe."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise EncodeError(f"`frames` must be uint8 (frames, height, width, 3) but is {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
         .output(str(out), pix_fmt="yuv420p", movflags="+faststart", r=fps, **config.output_args())
         .overwrite_output()
         .run(cmd=ffmpeg_bin, input=np.ascontiguousarray(frames).tobytes(), capture_stdout=True,
              capture_stderr=True))
    except ffmpeg.Error as exc:
        out.unlink(missing_ok=True)
        lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise EncodeError(f"ffmpeg ({config.codec}) failed: {lines[-1] if lines else 'no output'}") from exc
    poster_path = out.with_suffix(".jpg")
    Image.fromarray(frames[0]).save(poster_path, format="JPEG", quality=85)
    # The output names the codec (what a player needs), not the encoder that made it.
    video = EncodedVideo(out, poster_path, VIDEO_CODEC, width, height, count, fps,
                         encode_s=time.perf_counter() - started)
    try:
        verify(video, ffprobe_bin=ffprobe_bin)
    except EncodeError:
        video.remove()
        raise
    return video


@dataclass(frozen=True)
class Probe:
    codec: str
    width: int
    height: int
    num_frames: int
    fps: Fraction
    duration_s: float


def probe(path: Path, ffprobe_bin: str = "ffprobe") -> Probe:
    args = [ffprobe_bin, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
            "stream=codec_name,width,height,nb_read_packets,r_frame_rate:format=duration", "-of", "json", str(path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise EncodeError(f"ffprobe cannot read {path.name}: {done.stderr.strip() or done.returncode}")
    data = json.loads(done.stdout)
    if not data.get("streams"):
        raise EncodeError(f"ffprobe finds no video stream in {path.name}")
    stream = data["streams"][0]
    return Probe(codec=stream["codec_name"], width=int(stream["width"]), height=int(stream["height"]),
                 num_frames=int(stream["nb_read_packets"]), fps=Fraction(stream["r_frame_rate"]),
                 duration_s=float(data.get("format", {}).get("duration", 0.0)))


def verify(video: EncodedVideo, ffprobe_bin: str = "ffprobe") -> Probe:
    """Check codec, size, frame count, rate and duration; raise EncodeError naming every mismatch."""
    found = probe(video.path, ffprobe_bin)
    problems = []
    if found.codec != VIDEO_CODEC:
        problems.append(f"codec {found.codec} (expected {VIDEO_CODEC})")
    if (found.width, found.height) != (video.width, video.height):
        problems.append(f"size {found.width}x{found.height} (expected {video.width}x{video.height})")
    if found.num_frames != video.num_frames:
        problems.append(f"{found.num_frames} frames (expected {video.num_frames})")
    if found.fps != video.fps:
        problems.append(f"{float(found.fps):g} fps (expected {video.fps})")
    # The container rounds the duration to its timebase: allow half a frame.
    if abs(found.duration_s - video.duration_s) > 0.5 / video.fps:
        problems.append(f"duration {found.duration_s:.3f} s (expected {video.duration_s:.3f} s)")
    if problems:
        raise EncodeError(f"{video.path.name} failed its ffprobe check: {', '.join(problems)}")
    return found



def decode_video(path: Path, *, ffmpeg_bin: str = "ffmpeg", ffprobe_bin: str = "ffprobe") -> np.ndarray:
    """Every frame of a video as uint8 RGB (frames, height, width, 3): what a viewer sees after
    the encoder's yuv420p round trip (the quality gate reads delivered videos this way)."""
    found = probe(path, ffprobe_bin)
    try:
        raw, _ = (ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24")
                  .run(cmd=ffmpeg_bin, capture_stdout=True, capture_stderr=True))
    except ffmpeg.Error as exc:
        lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise EncodeError(f"ffmpeg cannot decode {path.name}: {lines[-1] if lines else 'no output'}") from exc
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, found.height, found.width, 3)
