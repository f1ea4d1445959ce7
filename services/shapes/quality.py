"""The quality gate: render held-out prompts with any pipeline or engine configuration and
report prompt adherence (every detected attribute matches) and PSNR against a reference
rendering of the same prompts and seeds (the plain fp32 pipeline's).

The held-out prompts come from a seed the training never draws from, in random phrasings;
each case renders with its own seed, so two configurations see identical inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from framebus.services.shapes import dataset
from framebus.services.shapes.detect import detect, psnr

HELD_OUT_SEED = 777_000_777  # never a training seed: training draws from its own seed and seed + 1
ATTRIBUTES = ("colour", "shape", "direction", "background")


@dataclass(frozen=True)
class Case:
    prompt: str
    seed: int
    expected: dataset.Attributes


def held_out_cases(count: int, *, seed: int = HELD_OUT_SEED) -> list[Case]:
    """``count`` prompts over every attribute combination in turn, each phrased at random."""
    combos = dataset.all_attributes()
    order = np.random.default_rng(seed).permutation(len(combos))
    cases = []
    for index in range(count):
        expected = combos[int(order[index % len(combos)])]
        rng = np.random.default_rng([seed, index])
        cases.append(Case(dataset.phrase(expected, rng), seed=index, expected=expected))
    return cases


# What renders a list of cases: uint8 clips (frames, height, width, 3) in the same order.
Render = Callable[[Sequence[Case]], list[np.ndarray]]


@dataclass
class QualityReport:
    cases: int
    adherent: int
    per_attribute: dict[str, float]
    psnr_db: list[float] = field(default_factory=list)  # per case, against the reference; empty without one
    failures: list[dict] = field(default_factory=list)

    @property
    def adherence(self) -> float:
        return self.adherent / self.cases if self.cases else 0.0

    @property
    def mean_psnr_db(self) -> float | None:
        """The PSNR of the mean squared error over all cases (identical clips count as 99 dB)."""
        if not self.psnr_db:
            return None
        errors = [255.0 ** 2 / 10 ** (min(value, 99.0) / 10) for value in self.psnr_db]
        return 10 * math.log10(255.0 ** 2 / (sum(errors) / len(errors)))

    def summary(self) -> dict:
        return {"cases": self.cases, "adherence": round(self.adherence, 4),
                "per_attribute": {k: round(v, 4) for k, v in self.per_attribute.items()},
                "psnr_db": None if self.mean_psnr_db is None else round(self.mean_psnr_db, 2),
                "min_psnr_db": round(min(self.psnr_db), 2) if self.psnr_db else None}


def judge(cases: Sequence[Case], clips: Sequence[np.ndarray],
          reference: Sequence[np.ndarray] | None = None) -> QualityReport:
    if len(clips) != len(cases) or (reference is not None and len(reference) != len(cases)):
        raise ValueError(f"got {len(clips)} clips and {len(reference or [])} references for {len(cases)} cases")
    correct = dict.fromkeys(ATTRIBUTES, 0)
    adherent, failures = 0, []
    for case, clip in zip(cases, clips, strict=True):
        found = detect(clip)
        matches = found.matches(case.expected)
        for name, ok in matches.items():
            correct[name] += ok
        if all(matches.values()):
            adherent += 1
        else:
            failures.append({"prompt": case.prompt, "seed": case.seed,
                             "wrong": {name: getattr(found, name) for name, ok in matches.items() if not ok}})
    scores = [min(psnr(clip, ref), 99.0) for clip, ref in zip(clips, reference, strict=True)] if reference is not None else []
    return QualityReport(cases=len(cases), adherent=adherent,
                         per_attribute={name: count / len(cases) for name, count in correct.items()},
                         psnr_db=scores, failures=failures)


def pipeline_render(pipe, *, steps: int, guidance_scale: float = 5.0, batch: int = 8,
                    frames: int = dataset.FRAMES, size: int = dataset.SIZE) -> Render:
    """Render cases with a diffusers WanPipeline as it stands (plain diffusers, no framebus engine)."""
    import torch

    def render(cases: Sequence[Case]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(cases), batch):
            chunk = cases[start:start + batch]
            generators = [torch.Generator().manual_seed(case.seed) for case in chunk]
            with torch.inference_mode():
                video = pipe([case.prompt for case in chunk], height=size, width=size, num_frames=frames,
                             num_inference_steps=steps, guidance_scale=guidance_scale, generator=generators,
                             output_type="np", max_sequence_length=pipe.tokenizer.model_max_length).frames
            out.extend((np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        return out

    return render


def engine_render(engine, *, steps: int, guidance_scale: float = 5.0, batch: int = 8,
                  frames: int = dataset.FRAMES, size: int = dataset.SIZE,
                  tally: list | None = None) -> Render:
    """Render cases with framebus's DiffusionEngine, as the worker would (same seeds as above).
    ``tally`` collects each batch's (steps run, steps the cache skipped)."""
    from framebus.schemas.events import GenerationRequest

    def render(cases: Sequence[Case]) -> list[np.ndarray]:
        requests = [GenerationRequest(request_id=f"gate-{index}", tenant_id="quality-gate", prompt=case.prompt,
                                      model=engine.model, width=size, height=size, num_frames=frames,
                                      num_inference_steps=steps, guidance_scale=guidance_scale, seed=case.seed)
                    for index, case in enumerate(cases)]
        out = []
        for start in range(0, len(requests), batch):
            rendered = engine.render(requests[start:start + batch], lambda _: False)
            if tally is not None:
                tally.append((rendered[0].steps_run, rendered[0].steps_skipped_by_cache))
            out.extend(item.frames for item in rendered)
        return out

    return render
