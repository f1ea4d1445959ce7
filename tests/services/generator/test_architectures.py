"""The real Wan sizes (services/generator/architectures.py): each transformer, built on the meta
device, has the published number of parameters; each model's request sizes follow its VAE."""

from __future__ import annotations

import pytest

from framebus.schemas.models import MODEL_DEFAULTS
from framebus.schemas.state import ModelName
from framebus.services.generator.architectures import ARCHITECTURES, transformer_on_meta
from framebus.services.generator.models import REGISTRY


@pytest.mark.parametrize("model", list(ARCHITECTURES), ids=str)
def test_each_transformer_has_its_published_size(model: ModelName) -> None:
    architecture = ARCHITECTURES[model]
    transformer = transformer_on_meta(architecture)
    count = sum(parameter.numel() for parameter in transformer.parameters())
    assert all(parameter.is_meta for parameter in transformer.parameters()), "no memory was used"
    # Release names round: 1.3B is 1.42 billion parameters, 14B 14.3, 5B 5.0.
    assert abs(count / architecture.published_params - 1) < 0.1, f"{model}: {count / 1e9:.2f}B parameters"


@pytest.mark.parametrize("model", list(ARCHITECTURES), ids=str)
def test_request_sizes_and_flow_shift_follow_each_models_architecture(model: ModelName) -> None:
    architecture = ARCHITECTURES[model]
    assert MODEL_DEFAULTS[model].size_multiple == architecture.size_multiple
    defaults = MODEL_DEFAULTS[model]
    assert defaults.width % architecture.size_multiple == 0 and defaults.height % architecture.size_multiple == 0
    assert REGISTRY[model].flow_shift == architecture.flow_shift


def test_a_checkpoints_scheduler_takes_the_registrys_flow_shift(tmp_path) -> None:
    from dataclasses import replace

    from framebus.services.generator.models import load_pipeline, save_tiny

    save_tiny(tmp_path / "wan-tiny")
    spec = replace(REGISTRY[ModelName.WAN_TINY], flow_shift=5.0)
    assert load_pipeline(spec, tmp_path).scheduler.config.flow_shift == 5.0
