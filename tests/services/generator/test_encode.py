"""Encoding: the encoder a machine can really run, piped raw frames, and the ffprobe gate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from framebus.services.generator.encode import (
    NVENC,
    X264,
    EncodeConfig,
    EncodeError,
    choose_encoder,
    encode_video,
    listed_encoders,
    probe,
    trial_encode,
    verify,
)


def gradient(frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    video = np.broadcast_to(ramp[None, None, :, None], (frames, height, width, 3)).copy()
    video[:, :, :, 1] = np.arange(frames, dtype=np.uint8)[:, None, None] * 20  # frames differ
    return video


def test_auto_picks_nvenc_only_when_a_trial_encode_succeeds():
    choice = choose_encoder("auto")
    nvenc_works = NVENC in listed_encoders() and trial_encode(NVENC) is None
    assert choice.codec == (NVENC if nvenc_works else X264)
    if NVENC in listed_encoders() and not nvenc_works:  # listed by this ffmpeg build, but no GPU behind it
        assert "h264_nvenc failed a one-frame trial encode" in choice.reason


def test_forcing_an_encoder_that_cannot_run_is_an_error_naming_it():
    if trial_encode(NVENC) is None:
        assert choose_encoder("h264_nvenc").codec == NVENC
    else:
        with pytest.raises(EncodeError, match="no usable H.264 encoder: h264_nvenc"):
            choose_encoder("h264_nvenc")


def test_encoded_video_passes_ffprobe_with_the_requested_shape(tmp_path):
    video = encode_video(gradient(), 16, tmp_path / "v.mp4", EncodeConfig(x264_preset="ultrafast"))
    found = probe(video.path)
    assert (found.codec, found.width, found.height, found.num_frames, found.fps) == ("h264", 64, 48, 9, 16)
    assert found.duration_s == pytest.approx(9 / 16, abs=1 / 32)
    assert video.path.read_bytes()[4:8] == b"ftyp"
    assert b"moov" in video.path.read_bytes()[:4096], "+faststart puts the index before the media"
    assert video.poster_path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert video.encode_s > 0


def test_a_video_that_does_not_match_its_request_is_refused(tmp_path):
    video = encode_video(gradient(), 16, tmp_path / "v.mp4")
    with pytest.raises(EncodeError, match=r"12 frames|expected 12"):
        verify(replace(video, num_frames=12))
    with pytest.raises(EncodeError, match="fps"):
        verify(replace(video, fps=24))


def test_ffmpeg_failure_carries_ffmpeg_message_and_leaves_no_file(tmp_path):
    odd = gradient(width=63)  # yuv420p needs even sizes
    with pytest.raises(EncodeError, match=r"ffmpeg \(libx264\) failed: .+"):
        encode_video(odd, 16, tmp_path / "odd.mp4")
    assert not (tmp_path / "odd.mp4").exists()


def test_frames_must_be_uint8_rgb(tmp_path):
    with pytest.raises(EncodeError, match="uint8"):
        encode_video(gradient().astype(np.float32), 16, tmp_path / "f.mp4")


def test_a_failed_trial_names_ffmpegs_reason_not_its_closing_line():
    from framebus.services.generator.encode import ffmpeg_reason

    stderr = ("[h264_nvenc @ 0x55eeb51d6480] Cannot load libcuda.so.1\n"
              "Error initializing output stream 0:0 -- Error while opening encoder for output stream #0:0 - "
              "maybe incorrect parameters such as bit_rate, rate, width or height\n")
    assert ffmpeg_reason(stderr) == "[h264_nvenc @ 0x55eeb51d6480] Cannot load libcuda.so.1"
    assert ffmpeg_reason("Conversion failed!\n") == "Conversion failed!"
    if NVENC in listed_encoders() and trial_encode(NVENC) is not None:  # this ffmpeg has NVENC, no GPU behind it
        reason = trial_encode(NVENC)
        assert "Error while opening encoder" not in reason and ("Cannot load" in reason or "nvenc" in reason.lower())


def test_nvenc_encodes_at_constant_quality_with_the_bitrate_cap_off():
    args = EncodeConfig(codec=NVENC).output_args()
    assert (args["rc"], args["cq"], args["b:v"]) == ("vbr", 23, "0")
