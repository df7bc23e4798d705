"""Training end to end through the real config: the smoke matrix (every model, fusion, experiment and
debug preset), CLI, sweeps, DDP, resume."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import MODELS, compose_train, presets, run_script
from lightning_modules.training import run_training

# The smoke matrix: one run of one batch per row. Every model preset, every fusion and every
# experiment / debug preset is in at least one row (not their cross product: tests/test_networks.py
# builds every fusion at every size, and test_model_preset_picks_its_fusion reads each model's own).
SMOKE = [  # (model, fusion, preset)
    ("gan_ga", "cross_attention", "experiment=shapes_64"),
    ("gan_ga", "cross_attention", "experiment=shapes_pairs"),
    ("dfgan", "affine", "experiment=emoji64"),
    ("dcgan", "concat", "experiment=emoji64_gpu"),
    ("vaegan", "concat", "debug=default"),
    ("gan_ga", "affine", "debug=fdr"),
]


def test_the_smoke_matrix_holds_every_model_fusion_and_preset():
    assert {model for model, _, _ in SMOKE} == set(MODELS)
    assert {fusion for _, fusion, _ in SMOKE} == set(presets("fusion"))
    assert {preset for _, _, preset in SMOKE} == ({f"experiment={p}" for p in presets("experiment")}
                                                 | {f"debug={p}" for p in presets("debug")})


@pytest.mark.integration
@pytest.mark.parametrize("model, fusion, preset", SMOKE, ids=["-".join(row) for row in SMOKE])
def test_smoke_matrix_trains_one_batch_and_writes_the_run(tmp_path, model, fusion, preset):
    """Composed, instantiated and one batch trained on the CPU in float32, whatever the preset's
    trainer; then the run's files: last.ckpt of that batch and model, the metrics CSV's columns,
    the sample grid (debug=fdr, Lightning's fast_dev_run, logs nothing)."""
    data = []
    if preset.startswith("experiment=emoji64"):  # a small set in emoji64's format stands in for the real one
        from test_real_splits import _meta

        _meta(tmp_path / "emoji64", {"train": 8, "test": 2})
        data = ["data=folder", f"data.root={tmp_path / 'emoji64'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    fdr = preset == "debug=fdr"
    one_batch = [] if fdr else ["trainer.max_steps=2", "trainer.val_check_interval=1", "trainer.log_every_n_steps=1"]
    run = tmp_path / "run"
    cfg = compose_train(run, [*data, preset, f"model={model}", f"fusion={fusion}", *one_batch,
                              "trainer.accelerator=cpu", "trainer.precision=32-true", "data.batch_size=4",
                              "data.num_workers=0"])
    assert cfg.fusion._target_.split(".")[-1].lower().startswith(fusion.replace("_", ""))
    metrics = run_training(cfg)
    assert metrics["train/batches"] == 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    if fdr:  # Lightning's fast_dev_run: its loggers are replaced, nothing is logged
        assert not (run / "csv").exists()
        return
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 2 and ckpt["gan_ga"]["batches_seen"] == 1
    config = ckpt["gan_ga"]["config"]
    assert config["model"]["_target_"] == cfg.model._target_ and config["fusion"]["_target_"] == cfg.fusion._target_
    header, *rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    columns = {"train/d_loss", "train/g_loss", "train/lr_g", "val/match_margin"}
    if model == "vaegan":
        columns |= {"train/vae_kl", "train/vae_loss"}
    assert columns <= set(header.split(",")), columns - set(header.split(","))
    assert rows
    grids = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert grids == ["batch_0000001.png", "latest.png"]
    grid = Image.open(run / "samples" / "latest.png")
    assert grid.height >= cfg.data.image_size and grid.width >= cfg.model.samples_per_prompt * cfg.data.image_size


def test_model_preset_picks_its_fusion(tmp_path):
    expected = {"gan_ga": "CrossAttentionFusion", "dfgan": "AffineFusion", "dcgan": "ConcatFusion",
                "vaegan": "CrossAttentionFusion"}
    assert set(expected) == set(MODELS)  # a new preset names its fusion here
    for model, fusion_class in expected.items():
        cfg = compose_train(tmp_path, [f"model={model}"])
        assert cfg.fusion._target_.endswith(fusion_class), model


def test_dfgan_preset_is_dfgan_as_published(tmp_path):
    """Tao et al. 2022 / tobran/DF-GAN: MA-GP (2, 6) every D step, hinge, no projection term, residual
    gain 0, tanh, Adam (0, 0.9) G 1e-4 / D 4e-4, no EMA, no DiffAugment, the neighbour's caption."""
    m = compose_train(tmp_path, ["model=dfgan", "data=folder", "data.root=unused"]).model
    assert (m.loss, m.gp_weight, m.gp_power, m.gp_every, m.ema_beta, m.mismatch) == ("hinge", 2.0, 6.0, 1, 0.0, "roll")
    assert list(m.augment.policy) == [] and m.generator.output_activation == "tanh"
    assert m.discriminator.residual_gain == 0.0 and m.discriminator.projection is False
    assert not m.discriminator.word_matching and m.contrastive_weight == 0.0 and not m.data_negatives
    assert (m.optimizer_g.lr, m.optimizer_d.lr, list(m.optimizer_g.betas)) == (1e-4, 4e-4, [0.0, 0.9])


@pytest.mark.integration
def test_multirun_sweep_runs_every_job(tmp_path):
    """train.py -m, each job in this process one after the other; D's margin is the swept value (a
    sweep of the training metrics: test_scale_out.py's Optuna test; a single run of train.py:
    test_captions.py's test_train_py_fast_dev_run_reads_a_folder_and_logs_what_it_skipped)."""
    result = run_script("train.py", "-m", "fusion=concat,affine", "encoder=tiny", "trainer.fast_dev_run=true",
                        "callbacks.sample_metrics=null", "optimized_metric=val/match_margin",
                        "data.num_workers=0", "callbacks.progress_bar=null", f"hydra.sweep.dir={tmp_path}/sweep",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, fusion in ((0, "concat"), (1, "affine")):
        job_dir = tmp_path / "sweep" / str(job)
        assert f"fusion={fusion}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        assert "`Trainer.fit` stopped" in (job_dir / "train.log").read_text()


@pytest.mark.integration
def test_ddp_two_cpu_ranks_end_identical(tmp_path, oracle_cache):
    run_dir = tmp_path / "ddp"
    result = run_script("train.py", "encoder=tiny", "trainer.accelerator=cpu", "trainer.devices=2",
                        f"paths.cache_dir={oracle_cache}", "callbacks.sample_metrics.num_samples=8",
                        "callbacks.sample_metrics.every_n_validations=2",  # training goes on after the first
                        "trainer.max_steps=12", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
                        "data.batch_size=4", "data.num_workers=0", "model.generator.base_channels=8",
                        "model.discriminator.base_channels=8", "callbacks.progress_bar=null",
                        f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "ddp_consistency.json").read_text())
    assert report["world_size"] == 2 and report["batches"] == 6 and report["consistent"]
    for digests in report["digests"].values():
        assert len(digests) == 2 and digests[0] == digests[1]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())  # metrics ran on both ranks
    assert best["metric"] == "metrics/caption_accuracy" and (run_dir / "checkpoints" / "best.ckpt").is_file()


def _adam_steps(ckpt: dict) -> list[int]:
    return [int(next(iter(opt["state"].values()))["step"]) for opt in ckpt["optimizer_states"]]


@pytest.mark.integration
def test_resume_continues_steps_and_optimizer_state(tmp_path):
    first = compose_train(tmp_path / "a", ["trainer.max_steps=6", "trainer.val_check_interval=100",
                                           "callbacks.model_checkpoint.every_n_batches=2"])
    run_training(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["gan_ga"]["batches_seen"] == 3
    assert _adam_steps(ckpt) == [3, 3 + 1]  # G; D's main steps + the lazy MA-GP step of batch 0
    assert (tmp_path / "a" / "checkpoints" / "epoch000-step0000004.ckpt").is_file()  # a periodic save came first

    resumed = compose_train(tmp_path / "b", ["trainer.max_steps=10", "trainer.val_check_interval=100",
                                             f"ckpt_path={last}"])
    run_training(resumed)
    after = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 10 and after["gan_ga"]["batches_seen"] == 5
    assert _adam_steps(after) == [5, 5 + 2]  # Adam moments continued, not restarted (MA-GP at batches 0, 4)
    assert after["state_dict"]["batches_seen"] == 5
    key = "generator.seed.weight"
    assert not torch.equal(ckpt["state_dict"][key], after["state_dict"][key])


@pytest.mark.integration
def test_training_writes_checkpoints_samples_and_metrics(trained_run):
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    grids = sorted((trained_run / "samples").glob("batch_*.png"))
    assert [g.name for g in grids] == ["batch_0000002.png", "batch_0000004.png"]
    header, *rows = (trained_run / "csv" / "metrics.csv").read_text().splitlines()
    for column in ("train/d_loss", "train/g_loss", "train/d_gp", "train/d_margin", "train/d_grad_norm",
                   "train/g_grad_norm", "train/lr_g", "perf/images_per_sec", "val/match_margin"):
        assert column in header.split(","), column
    assert rows
