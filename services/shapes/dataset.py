"""The wan-shapes data set: clips of one coloured shape moving on a plain background, with a
prompt that names shape, colour, direction and background in one of several phrasings.

Pure numpy and deterministic from a seed: the same ``(seed, index)`` gives the same clip and
prompt on every machine, so training, the held-out evaluation and the tests share one source.
Shapes are drawn at 4x resolution and averaged down, so edges are anti-aliased as in real video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Attribute -> RGB. Colours are far apart in RGB so a blurred clip still names its colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (245, 215, 30),
    "purple": (150, 50, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")

# Several phrasings per attribute: the text encoder must learn that they mean the same.
COLOUR_WORDS = {
    "red": ("red", "scarlet", "crimson"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid"),
}
MOTION_WORDS = {
    "left": ("moving left", "sliding to the left", "drifting leftward", "going left"),
    "right": ("moving right", "sliding to the right", "drifting rightward", "going right"),
    "up": ("moving up", "rising", "floating upward", "going up"),
    "down": ("moving down", "falling", "sinking downward", "going down"),
}
BACKGROUND_WORDS = {
    "white": ("on a white background", "against a white backdrop", "over white"),
    "black": ("on a black background", "against a black backdrop", "over black"),
    "gray": ("on a gray background", "against a grey backdrop", "over gray"),
}
TEMPLATES = (
    "a {colour} {shape} {motion} {background}",
    "{background_lead}, a {colour} {shape} is {motion}",
    "one {colour} {shape} {motion} {background}",
)
_LEADS = {"white": "on white", "black": "on black", "gray": "on gray"}

FRAMES = 17
SIZE = 64
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Attributes:
    colour: str
    shape: str
    direction: str
    background: str

    def __post_init__(self) -> None:
        for name, value, allowed in (("colour", self.colour, COLOURS), ("shape", self.shape, SHAPES),
                                     ("direction", self.direction, DIRECTIONS),
                                     ("background", self.background, BACKGROUNDS)):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {sorted(allowed)} but is {value!r}")

    def prompt(self) -> str:
        """The plain phrasing: what the README and the demo ask for."""
        return f"a {self.colour} {self.shape} moving {self.direction} on a {self.background} background"


@dataclass(frozen=True)
class Clip:
    """One sample: what it shows, a prompt saying so, and the frames (frames, height, width, 3) uint8."""

    attributes: Attributes
    prompt: str
    frames: np.ndarray


def all_attributes() -> list[Attributes]:
    return [Attributes(c, s, d, b) for c in COLOURS for s in SHAPES for d in DIRECTIONS for b in BACKGROUNDS]


def phrase(attributes: Attributes, rng: np.random.Generator) -> str:
    """A random phrasing of the attributes: template and synonym for each word drawn from ``rng``."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    return pick(TEMPLATES).format(colour=pick(COLOUR_WORDS[attributes.colour]),
                                  shape=pick(SHAPE_WORDS[attributes.shape]),
                                  motion=pick(MOTION_WORDS[attributes.direction]),
                                  background=pick(BACKGROUND_WORDS[attributes.background]),
                                  background_lead=_LEADS[attributes.background])


def parse(prompt: str) -> Attributes | None:
    """The attributes a prompt names, in any of the data set's phrasings; None unless it names
    exactly one of each (shape colours and background colours never overlap, so word order is free)."""
    text = " " + " ".join(prompt.lower().replace(",", " ").replace("grey", "gray").split()) + " "
    found = []
    for table in (COLOUR_WORDS, SHAPE_WORDS, MOTION_WORDS, {name: (name,) for name in BACKGROUNDS}):
        named = [key for key, phrases in table.items() if any(f" {phrase} " in text for phrase in phrases)]
        if len(named) != 1:
            return None
        found.append(named[0])
    return Attributes(*found)


def vocabulary() -> list[str]:
    """Every word any phrasing uses, sorted: the tokenizer's vocabulary."""
    words = set()
    for table in (COLOUR_WORDS, SHAPE_WORDS, MOTION_WORDS, BACKGROUND_WORDS, _LEADS):
        for options in table.values():
            for option in (options if isinstance(options, tuple) else (options,)):
                words.update(option.replace(",", " ").split())
    for template in TEMPLATES:
        words.update(w for w in template.replace(",", " ").split() if not w.startswith("{"))
    words.update(COLOURS)
    words.update((",", "."))  # the tokenizer splits punctuation off as words of its own
    return sorted(words)


def _coverage(shape: str, cx: np.ndarray, cy: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Coverage in [0, 1] of the shape centred at (cx[i], cy[i]) in frame i, anti-aliased by supersampling."""
    fine = size * _SUPERSAMPLE
    axis = ((np.arange(fine) + 0.5) / _SUPERSAMPLE).astype(np.float32)
    x = axis[None, None, :] - cx[:, None, None]
    y = axis[None, :, None] - cy[:, None, None]
    if shape == "circle":
        inside = x ** 2 + y ** 2 <= radius ** 2
    elif shape == "square":
        half = radius * 0.886  # the same area as the circle of this radius
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    else:  # an upright isosceles triangle whose bounding box is centred on the centre
        half = radius * 1.25
        depth = (y + half) / (2 * half)  # 0 at the apex, 1 at the base
        inside = (depth >= 0) & (depth <= 1) & (np.abs(x) <= depth * half)
    frames = len(cx)
    return inside.reshape(frames, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4), dtype=np.float32)


def render(attributes: Attributes, rng: np.random.Generator, *, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """The clip (frames, size, size, 3) uint8: the shape crosses the middle of the frame in the
    named direction, its size, speed and path jittered a little by ``rng``.

    Paths are centred rather than anywhere in the frame: the prompt then says almost everything
    about the clip, which is what a model trained for under an hour on two cores can learn
    (with paths anywhere, 5,000 steps gave incoherent motion)."""
    radius = float(rng.uniform(0.15, 0.17) * size)
    travel = float(rng.uniform(0.36, 0.42) * size)
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[attributes.direction]
    jitter_x, jitter_y = (float(rng.uniform(-0.06, 0.06) * size) for _ in range(2))
    x0 = size / 2 + jitter_x - dx * travel / 2
    y0 = size / 2 + jitter_y - dy * travel / 2
    progress = np.linspace(0.0, 1.0, frames, dtype=np.float32) * travel
    coverage = _coverage(attributes.shape, x0 + dx * progress, y0 + dy * progress, radius, size)
    colour = np.array(COLOURS[attributes.colour], dtype=np.float32)
    background = np.array(BACKGROUNDS[attributes.background], dtype=np.float32)
    pixels = background + coverage[..., None] * (colour - background)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def sample(seed: int, index: int, *, frames: int = FRAMES, size: int = SIZE) -> Clip:
    """Sample ``index`` of the data set drawn from ``seed``: attributes, phrasing and clip."""
    rng = np.random.default_rng([seed, index])
    combos = all_attributes()
    attributes = combos[int(rng.integers(len(combos)))]
    return Clip(attributes, phrase(attributes, rng), render(attributes, rng, frames=frames, size=size))
