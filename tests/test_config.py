"""Wrong config values stop before training, naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

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
        ("model.ema_beta=1.5", "model.ema_beta=1.5: must be >= 0 and < 1"),
        ("data.batch_size=1", "data.batch_size=1: must be >= 2"),
        ("fusion.attention_resolutions=[8,64]", "fusion.attention_resolutions=[8, 64]: each must be a generator"),
        ("encoder.mode=partial", "encoder.mode='partial': allowed: ['frozen', 'finetune_last_n', 'lora']"),
        ("model.optimizer_g.lr=nan", "model.optimizer_g.lr=nan: must be a finite number"),
        ("model.optimizer_d.lr=inf", "model.optimizer_d.lr=inf: must be a finite number"),
        ("model.gp_weight=nan", "model.gp_weight=nan: must be a finite number"),
        ("model.gp_weight=inf", "model.gp_weight=inf: must be a finite number"),
        ("model.ema_beta=nan", "model.ema_beta=nan: must be a finite number"),
        ("model.ema_beta=1.0", "model.ema_beta=1.0: must be >= 0 and < 1"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: must be >= 1"),
        ("seed=-1", "seed=-1: must be >= 0 and <= 4294967295"),
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


@pytest.mark.integration
def test_cli_stops_before_training_with_the_message(tmp_path):
    result = run_script("train.py", "data.image_size=48", "encoder=tiny", f"hydra.run.dir={tmp_path}/run",
                        cwd=tmp_path)
    assert result.returncode == 2
    assert "data.image_size=48" in result.stderr and "allowed" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.integration
@pytest.mark.parametrize("script", ["train.py", "generate.py"])
def test_a_config_choice_that_does_not_exist_is_one_line_with_exit_2(tmp_path, script):
    result = run_script(script, "encoder=nonexistent", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gan-ga: encoder=nonexistent: there is no conf/encoder/nonexistent.yaml; available: "
        "base, bert_base, clip_text, gpt2, minilm, t5_base, tiny"]


def test_check_choices_reads_sweeps_and_leaves_keys_to_hydra(tmp_path):
    from gan_ga_utils.cli import check_choices

    conf = Path(__file__).resolve().parents[1] / "conf"
    check_choices(conf, ["fusion=concat,affine", "+experiment=shapes_64", "data.root=/x", "seed=3",
                         "experiment=null", "hparams_search=choice(a,b)", "-m"])
    with pytest.raises(SystemExit) as stop:
        check_choices(conf, ["-m", "fusion=concat,afine"])
    assert stop.value.code == 2


@pytest.mark.integration
def test_an_error_raised_in_a_data_loader_worker_is_reported_without_the_workers_traceback(capsys):
    from torch._utils import ExceptionWrapper

    from gan_ga_utils.cli import run_or_exit
    from gan_ga_utils.errors import DataError

    def task(cfg):
        try:
            raise DataError("train/cat.jpg: not an image\n  (re-encode it)")
        except DataError:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()

    with pytest.raises(SystemExit) as stop:
        run_or_exit(task, None)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "gan-ga: train/cat.jpg: not an image\n  (re-encode it)\n"
