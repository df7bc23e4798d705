"""Wrong config values stop before training, naming the key and what is allowed."""

from __future__ import annotations

import pytest
from conftest import compose_train, run_script

from lightning_modules.config_checks import ConfigError, validate


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.image_size=48", "data.image_size=48: the generator starts at 4x4 and doubles per block; allowed: [16, 32"),
        ("encoder.pooling=max", "encoder.pooling='max': allowed: ['mean', 'cls', 'last', 'pooler']"),
        ("model.optimizer_g.lr=-0.001", "model.optimizer_g.lr=-0.001: must be > 0"),
        ("model.loss=wasserstein", "model.loss='wasserstein': allowed: ['hinge', 'nonsaturating', 'relativistic']"),
        ("model.ema_beta=1.5", "model.ema_beta=1.5: must be >= 0 and <= 1"),
        ("data.batch_size=1", "data.batch_size=1: must be >= 2"),
        ("fusion.attention_resolutions=[8,64]", "fusion.attention_resolutions=[8, 64]: each must be a generator"),
        ("encoder.mode=partial", "encoder.mode='partial': allowed: ['frozen', 'finetune_last_n', 'lora']"),
    ],
)
def test_bad_values_are_named(tmp_path, override, expected):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert expected in str(err.value)


def test_several_problems_are_reported_together(tmp_path):
    cfg = compose_train(tmp_path, ["data.image_size=48", "model.optimizer_d.lr=0"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "data.image_size=48" in str(err.value) and "model.optimizer_d.lr=0" in str(err.value)


def test_default_config_is_valid(tmp_path):
    validate(compose_train(tmp_path))


def test_cli_stops_before_training_with_the_message(tmp_path):
    result = run_script("train.py", "data.image_size=48", "encoder=tiny", f"hydra.run.dir={tmp_path}/run",
                        cwd=tmp_path)
    assert result.returncode == 2
    assert "data.image_size=48" in result.stderr and "allowed" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
