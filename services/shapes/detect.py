"""Read a clip the way a viewer would: which colour and shape dominate, which way the shape
moves, and the background colour. Pure numpy; the quality gate's eyes.

The background is the median of the frame borders. The shape is every pixel at least half
as far from the background as the shape's own colour (so a blurred edge counts as it looks),
and that colour is taken from the pixels furthest from the background. A square fills its
bounding box, a circle about pi/4 of it; an upright triangle keeps three quarters of its area
in the lower half of its box. The direction is how the shape's centre moves from the first
quarter of the clip to the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framebus.services.shapes.dataset import BACKGROUNDS, COLOURS, Attributes

MIN_TRAVEL_PX = 2.0  # less movement than this over the clip reads as standing still
_MIN_CONTRAST = 40.0  # RGB distance below which a pixel is background


@dataclass(frozen=True)
class Detected:
    colour: str | None
    shape: str | None
    direction: str | None
    background: str

    def describe(self) -> str:
        """What the clip shows, in the data set's plain phrasing (``?`` for what cannot be read)."""
        motion = f"moving {self.direction}" if self.direction else "standing still"
        return f"a {self.colour or '?'} {self.shape or '?'} {motion} on a {self.background} background"

    def matches(self, expected: Attributes) -> dict[str, bool]:
        return {"colour": self.colour == expected.colour, "shape": self.shape == expected.shape,
                "direction": self.direction == expected.direction, "background": self.background == expected.background}


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.array([palette[name] for name in names], dtype=np.float32) - colour, axis=1)
    return names[int(np.argmin(distances))]


def detect(frames: np.ndarray) -> Detected:
    """Attributes of a clip of uint8 RGB frames (frames, height, width, 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` must be (frames, height, width, 3) but has shape {frames.shape}")
    pixels = frames.astype(np.float32)
    border = np.concatenate([pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3),
                             pixels[:, :, :2].reshape(-1, 3), pixels[:, :, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    background_name = _nearest(background, BACKGROUNDS)
    distance = np.linalg.norm(pixels - background, axis=-1)  # (frames, h, w)
    candidates = distance > _MIN_CONTRAST
    if candidates.sum() < 4 * len(frames):
        return Detected(None, None, None, background_name)
    # The shape's colour: the pixels furthest from the background (its solid interior).
    strong = distance >= np.quantile(distance[candidates], 0.6)
    colour = np.median(pixels[strong & candidates], axis=0)
    colour_name = _nearest(colour, COLOURS)
    mask = distance >= 0.5 * float(np.linalg.norm(colour - background))
    return Detected(colour_name, _shape(mask), _direction(mask), background_name)


def _shape(mask: np.ndarray) -> str | None:
    fills, lower_shares = [], []
    for frame in mask:
        ys, xs = np.nonzero(frame)
        if len(ys) < 9:
            continue
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        box = (bottom - top + 1) * (right - left + 1)
        fills.append(len(ys) / box)
        middle = (top + bottom) / 2
        lower_shares.append(float(np.mean(ys > middle)))
    if not fills:
        return None
    fill, lower = float(np.median(fills)), float(np.median(lower_shares))
    if lower > 0.62 or fill < 0.62:
        return "triangle"
    return "square" if fill > 0.88 else "circle"


def _direction(mask: np.ndarray) -> str | None:
    centres = []
    for frame in mask:
        ys, xs = np.nonzero(frame)
        centres.append((xs.mean(), ys.mean()) if len(ys) else (np.nan, np.nan))
    centres = np.array(centres)
    quarter = max(1, len(centres) // 4)
    start, end = np.nanmean(centres[:quarter], axis=0), np.nanmean(centres[-quarter:], axis=0)
    dx, dy = end - start
    if not np.isfinite([dx, dy]).all() or max(abs(dx), abs(dy)) < MIN_TRAVEL_PX:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def psnr(clip: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of a uint8 clip against a reference of the same shape
    (infinite when they are equal)."""
    if clip.shape != reference.shape:
        raise ValueError(f"clips differ in shape: {clip.shape} against {reference.shape}")
    mse = float(np.mean((clip.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
