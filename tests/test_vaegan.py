"""model=vaegan: the preset, the entry points read its checkpoints, and the VAE terms (KL warm-up,
reconstruction) do what they say. It trains in the smoke matrix (tests/test_train.py: SMOKE, every
model preset) and resumes exactly (tests/test_reliability.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import assert_same_ema_generator, compose_train, export_and_generate_alike, run_script
from lightning_modules.config_checks import ConfigError, validate
from lightning_modules.loading import build, build_module, load_exported, load_module
from lightning_modules.training import run_training
from lightning_modules.vae_gan import VAEGAN, kl_warmup


# -- training through the real config ------------------------------------------------------------
@pytest.mark.integration
def test_a_trainable_text_encoder_trains_beside_the_vae_phase(tmp_path):
    """Bug found while writing it: the VAE phase back-propagated through the captions' encoder graph,
    which the G phase then back-propagated again (an autograd error with LoRA / last-N encoders)."""
    cfg = compose_train(tmp_path, ["model=vaegan", "encoder.mode=finetune_last_n", "encoder.finetune_last_n=1",
                                   "trainer.max_steps=4", "trainer.val_check_interval=100"])
    encoder = build_module(cfg).encoder
    before = {k: p.detach().clone() for k, p in encoder.named_parameters()}
    trained = {k for k, p in encoder.named_parameters() if p.requires_grad}
    run_training(cfg)
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    changed = {k for k, v in before.items() if not torch.equal(v, after[f"encoder.{k}"])}
    assert changed and changed <= trained  # the same start (random weights are seeded); the top layer trained


def test_preset_picks_the_subclass(tmp_path):
    cfg = compose_train(tmp_path, ["model=vaegan"])
    assert cfg.model._target_ == "lightning_modules.vae_gan.VAEGAN"
    assert cfg.model.image_encoder.base_channels == cfg.model.discriminator.base_channels == 8  # FAST's width
    validate(cfg)


# -- the entry points on a vaegan checkpoint -----------------------------------------------------
WARMUP = 4


@pytest.fixture(scope="module")
def vaegan_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vaegan")
    cfg = compose_train(out, ["model=vaegan", f"model.kl_warmup_batches={WARMUP}", "trainer.max_steps=16",
                              "trainer.val_check_interval=4", "trainer.log_every_n_steps=1"])
    run_training(cfg)
    return out


@pytest.mark.integration
def test_the_vae_terms_are_logged_beside_d_and_g(vaegan_run):
    with open(vaegan_run / "csv" / "metrics.csv") as f:
        columns = set(csv.DictReader(f).fieldnames)
    for name in ("train/vae_kl", "train/vae_l1", "train/vae_feature_match", "train/vae_adversarial",
                 "train/vae_loss", "train/d_loss", "train/g_loss"):
        assert name in columns, name


@pytest.mark.integration
def test_the_kl_weight_warms_up_linearly_over_the_batches(vaegan_run):
    with open(vaegan_run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/vae_kl_weight")]
    weights = [float(r["train/vae_kl_weight"]) for r in sorted(rows, key=lambda r: float(r["train/batches"]))]
    full = load_module(vaegan_run / "checkpoints" / "last.ckpt").kl_weight
    assert weights == pytest.approx([full * b / WARMUP for b in range(WARMUP)] + [full] * (8 - WARMUP))


@pytest.mark.integration
def test_checkpoint_rebuilds_the_vaegan_with_its_image_encoder(vaegan_run):
    ckpt = torch.load(vaegan_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = load_module(vaegan_run / "checkpoints" / "last.ckpt")
    assert isinstance(module, VAEGAN) and int(module.batches_seen) == 8
    for key, value in module.image_encoder.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][f"image_encoder.{key}"]), key
    assert torch.count_nonzero(module.image_encoder.head[-1].weight) > 0  # E trained (it starts at zero)


@pytest.mark.integration
def test_export_saves_only_the_ema_generator_and_generate_reads_checkpoint_and_export_alike(vaegan_run, tmp_path):
    from safetensors.torch import load_file

    ckpt = vaegan_run / "checkpoints" / "last.ckpt"
    out, grid = export_and_generate_alike(ckpt, tmp_path)
    assert grid.shape == (32, 2 * 32, 3)
    from_ckpt = load_module(ckpt)
    assert set(load_file(str(out / "generator_ema.safetensors"))) == set(from_ckpt.generator_ema.state_dict())
    exported = load_exported(out)
    assert isinstance(exported, VAEGAN)
    assert_same_ema_generator(from_ckpt, exported)


@pytest.mark.integration
def test_evaluate_py_scores_caption_accuracy_of_a_vaegan(vaegan_run, oracle_cache, tmp_path):
    """evaluate.py's plumbing on a vaegan checkpoint, read by the shipped oracle."""
    out = tmp_path / "eval"
    result = run_script("evaluate.py", f"ckpt_path={vaegan_run / 'checkpoints' / 'last.ckpt'}",
                        "metrics=[caption_accuracy]", "num_samples=12", "batch_size=32", "device=cpu",
                        f"cache_dir={oracle_cache}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert {"caption_accuracy/caption", "caption_accuracy/shape", "oracle_fd"} <= set(report["metrics"])
    assert report["protocol"]["samples"] == 12 and report["protocol"]["generator"] == "EMA"


# -- the VAE terms -------------------------------------------------------------------------------
def test_kl_warmup_is_linear_then_flat():
    assert [kl_warmup(b, 0.5, 10) for b in (0, 5, 10, 11, 1000)] == [0.0, 0.25, 0.5, 0.5, 0.5]
    assert kl_warmup(0, 0.5, 0) == 0.5


def _module_and_batch(tmp_path, *overrides: str):
    cfg = compose_train(tmp_path, ["model=vaegan", "data.batch_size=8", *overrides])
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    return build_module(cfg).train(), batch


def _fit(module: VAEGAN, batch: dict, steps: int) -> list[dict[str, float]]:
    """``steps`` Adam steps of E and G on the VAE phase's loss for one fixed batch."""
    params = [*module.generator.parameters(), *module.image_encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.9))
    text = module.text_of(batch)
    history = []
    for _ in range(steps):
        terms, _ = module.vae_losses(batch["image"], text.detach())
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


def test_reconstruction_loss_falls_on_a_fixed_batch(tmp_path):
    module, batch = _module_and_batch(tmp_path, "model.kl_weight=0", "model.kl_warmup_batches=0")
    history = _fit(module, batch, 25)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # E starts as the prior
    assert history[-1]["l1"] < 0.6 * history[0]["l1"]
    assert history[-1]["feature_match"] < 0.5 * history[0]["feature_match"]
    assert torch.count_nonzero(module.image_encoder.head[-1].weight) > 0  # the reconstruction trained E


def test_the_kl_term_pulls_the_posterior_to_the_prior(tmp_path):
    ends = {}
    for weight in (0.0, 1.0):
        module, batch = _module_and_batch(tmp_path, f"model.kl_weight={weight}", "model.kl_warmup_batches=0")
        module.image_encoder.head[-1].bias.data[: module.z_dim] = 1.0  # mu = 1: KL = 100 / 2
        history = _fit(module, batch, 15)
        assert history[0]["kl"] == pytest.approx(50.0, rel=1e-4)
        ends[weight] = history[-1]["kl"]
    assert ends[1.0] < 0.1 * 50.0 and ends[1.0] < 0.1 * ends[0.0]


def test_the_kl_term_enters_the_loss_with_its_warmed_up_weight(tmp_path):
    module, batch = _module_and_batch(tmp_path, "model.kl_weight=2.0", "model.kl_warmup_batches=10")
    module.image_encoder.head[-1].bias.data[: module.z_dim] = 1.0  # a posterior away from the prior: KL > 0
    text = module.text_of(batch)
    for batches, weight in ((0, 0.0), (5, 1.0), (10, 2.0), (50, 2.0)):
        module._batches = batches
        with torch.no_grad():
            terms, _ = module.vae_losses(batch["image"], text)
        others = (module.recon_weight * terms["l1"] + module.feature_match_weight * terms["feature_match"]
                  + module.recon_adversarial_weight * terms["adversarial"])
        assert terms["kl"] > 1.0
        assert float(terms["loss"] - others) == pytest.approx(weight * float(terms["kl"]), rel=1e-4, abs=1e-5)


def test_d_sees_reconstructions_in_place_of_a_share_of_its_prior_samples(tmp_path):
    module, _ = _module_and_batch(tmp_path)
    prior, recon = torch.zeros(4, 3, 32, 32), torch.ones(4, 3, 32, 32)
    assert module.d_fakes(prior, recon)[:, 0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # recon_fake_fraction 0.5
    module.recon_fake_fraction = 0.0
    assert module.d_fakes(prior, recon) is prior


@pytest.mark.parametrize("override, expected", [
    ("model.kl_weight=-1", "model.kl_weight=-1: must be >= 0"),
    ("model.kl_warmup_batches=0.5", "model.kl_warmup_batches=0.5: must be an integer"),
    ("model.recon_fake_fraction=1.5", "model.recon_fake_fraction=1.5: must be >= 0 and <= 1"),
    ("model.image_encoder.base_channels=0", "model.image_encoder.base_channels=0: must be >= 1"),
])
def test_bad_vae_values_are_named_before_any_work_and_by_the_constructor(tmp_path, override, expected):
    cfg = compose_train(tmp_path, ["model=vaegan", override])
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        validate(cfg)
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        build_module(cfg)
