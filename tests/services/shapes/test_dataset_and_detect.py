"""The wan-shapes data set and the quality gate's detector: deterministic clips that say what
their prompts say, and a detector that reads them back (also through blur and noise)."""

from __future__ import annotations

import numpy as np
import pytest

from framebus.services.shapes import dataset
from framebus.services.shapes.detect import detect, psnr
from framebus.services.shapes.quality import held_out_cases, judge


def test_a_sample_is_the_same_from_the_same_seed_and_index():
    first, again, other = dataset.sample(5, 3), dataset.sample(5, 3), dataset.sample(5, 4)
    assert first.prompt == again.prompt and np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)
    assert first.frames.shape == (dataset.FRAMES, dataset.SIZE, dataset.SIZE, 3) and first.frames.dtype == np.uint8


def test_every_phrasing_names_its_attributes_in_words_the_tokenizer_knows():
    vocabulary = set(dataset.vocabulary())
    rng = np.random.default_rng(0)
    for attributes in dataset.all_attributes():
        for _ in range(5):
            words = dataset.phrase(attributes, rng).replace(",", " , ").split()
            assert set(words) <= vocabulary
            assert any(word in dataset.COLOUR_WORDS[attributes.colour] for word in words)


def test_unknown_attributes_are_refused_with_the_parameter_named():
    with pytest.raises(ValueError, match="`colour` must be one of"):
        dataset.Attributes("teal", "circle", "left", "white")


def test_the_detector_reads_every_rendered_clip_correctly():
    wrong = []
    for index in range(240):
        clip = dataset.sample(11, index)
        found = detect(clip.frames)
        if not all(found.matches(clip.attributes).values()):
            wrong.append((clip.attributes, found))
    assert wrong == []


def _blur(frames: np.ndarray, passes: int) -> np.ndarray:
    out = frames.astype(np.float32)
    for _ in range(passes):  # a 3x3 box blur per pass
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        out = sum(padded[:, dy:dy + out.shape[1], dx:dx + out.shape[2]] for dy in range(3) for dx in range(3)) / 9
    return np.clip(out, 0, 255).astype(np.uint8)


def test_the_detector_still_reads_blurred_noisy_clips_as_a_model_draws_them():
    rng = np.random.default_rng(1)
    hits = 0
    for index in range(120):
        clip = dataset.sample(12, index)
        noisy = _blur(clip.frames, 2).astype(np.float32) + rng.normal(0, 8, clip.frames.shape)
        hits += all(detect(np.clip(noisy, 0, 255).astype(np.uint8)).matches(clip.attributes).values())
    assert hits >= 114  # 95%


def test_a_clip_of_noise_or_a_still_shape_does_not_pass_as_a_prompt():
    clip = dataset.sample(13, 0)
    still = np.repeat(clip.frames[:1], dataset.FRAMES, axis=0)
    assert detect(still).direction is None
    noise = np.random.default_rng(2).integers(0, 256, clip.frames.shape, dtype=np.uint8)
    assert not all(detect(noise).matches(clip.attributes).values())
    assert detect(np.full_like(clip.frames, 128)).colour is None


def test_judge_counts_adherence_and_psnr_against_the_reference():
    cases = held_out_cases(12)
    truth = [dataset.render(case.expected, np.random.default_rng(case.seed)) for case in cases]
    report = judge(cases, truth, reference=truth)
    assert report.adherence == 1.0 and report.summary()["psnr_db"] == 99.0
    flipped = [clip[::-1] for clip in truth]  # played backwards: every direction is wrong
    report = judge(cases, flipped, reference=truth)
    assert report.adherence == 0.0 and report.per_attribute["direction"] == 0.0
    assert report.per_attribute["colour"] == 1.0 and report.mean_psnr_db < 30
    assert {failure["prompt"] for failure in report.failures} == {case.prompt for case in cases}


def test_held_out_cases_cover_every_combination_before_repeating_one():
    cases = held_out_cases(len(dataset.all_attributes()))
    assert len({case.expected for case in cases}) == len(dataset.all_attributes())


def test_psnr_is_infinite_for_equal_clips_and_refuses_different_shapes():
    clip = dataset.sample(14, 0).frames
    assert psnr(clip, clip.copy()) == float("inf")
    with pytest.raises(ValueError, match="clips differ in shape"):
        psnr(clip, clip[:5])


def test_parse_reads_every_phrasing_back_and_refuses_what_is_not_a_shapes_prompt():
    rng = np.random.default_rng(3)
    for attributes in dataset.all_attributes():
        assert dataset.parse(dataset.phrase(attributes, rng)) == attributes
        assert dataset.parse(attributes.prompt()) == attributes
    assert dataset.parse("a red fox running through snow") is None
    assert dataset.parse("a red and blue circle moving left on a white background") is None
