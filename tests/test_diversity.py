"""What makes images of one caption vary: the mode-seeking term and the relativistic loss with its
zero-centred R1 + R2 penalties."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_train
from lightning_modules.losses import discriminator_loss, generator_loss, zero_centered_penalty


def test_relativistic_loss_compares_each_real_pair_with_its_own_fake():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([-2.0, 0.0])
    mismatched = torch.tensor([-3.0, -4.0])
    terms = discriminator_loss("relativistic", real, fake, mismatched)
    # pairs by index: sample 1's fake (0.0) is above its real (-1.0), so its term dominates
    expected = torch.nn.functional.softplus(fake - real).mean()
    torch.testing.assert_close(terms["fake"], expected)
    assert terms["fake"] > torch.nn.functional.softplus(torch.tensor(-4.0))
    # a constant shift of every logit changes nothing: only differences count
    shifted = discriminator_loss("relativistic", real + 5, fake + 5, mismatched + 5)
    torch.testing.assert_close(shifted["total"], terms["total"])
    torch.testing.assert_close(generator_loss("relativistic", fake, real),
                               torch.nn.functional.softplus(real - fake).mean())
    with pytest.raises(ValueError, match="real pairs"):
        generator_loss("relativistic", fake)


def test_zero_centered_penalty_is_half_gamma_times_the_squared_gradient_norm():
    x = torch.randn(4, 3, requires_grad=True)
    s = torch.randn(4, 2, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)  # D's weights: the gradient of D is w
    logits = (x * w).sum(1) + (s * 2).sum(1)
    penalty = zero_centered_penalty(logits, (x, s), weight=0.5)
    torch.testing.assert_close(penalty, torch.tensor(0.25 * (1 + 4 + 9 + 4 + 4)))
    penalty.backward()  # it trains D: d penalty / d w = 0.5 * w
    torch.testing.assert_close(w.grad, 0.5 * w.detach())


def test_relativistic_needs_a_lazy_penalty(tmp_path):
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.loading import build_module

    cfg = compose_train(tmp_path, ["model.loss=relativistic", "model.gp_every=1"])
    with pytest.raises(ConfigError, match="model.gp_every"):
        build_module(cfg)


def test_mode_seeking_term_is_low_when_two_noises_give_different_images(tmp_path):
    """The term is minus the chord between D's unit-length features of two images of one caption: 0
    for a generator that ignores its noise, lower for one that does not (even at initialisation,
    barely); it reaches G's weights."""
    from lightning_modules.loading import build_module
    from lightning_modules.sampling import Noise

    cfg = compose_train(tmp_path, ["model.diversity_weight=1.0"])
    module = build_module(cfg)
    text = module.encode(["a red circle", "a blue star", "a small shape", "a square on the left"] * 2)
    fake = module.generator(module.noise(len(text), Noise.G), text)
    term = module.mode_seeking(text, module.discriminator.features(fake))
    original = module.generator.forward  # a generator that ignores its noise: the same image for every z
    module.generator.forward = lambda z, t: original(torch.zeros_like(z), t)
    try:
        same = module.mode_seeking(text, module.discriminator.features(module.generator(torch.zeros(8, module.z_dim),
                                                                                         text)))
    finally:
        module.generator.forward = original
    assert float(same) == pytest.approx(0.0, abs=1e-5) and -2.0 <= float(term) < float(same) - 1e-6
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())


@pytest.mark.integration
def test_mode_seeking_term_starts_at_its_batch(tmp_path):
    """``model.diversity_start``: G's loss has no mode-seeking term before that batch (none is
    logged), and has it from that batch on."""
    import csv

    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path, ["logger=csv", "model.diversity_weight=1.0", "model.diversity_start=2",
                                   "trainer.max_steps=8", "trainer.val_check_interval=100", "trainer.log_every_n_steps=1",
                                   "callbacks.model_checkpoint=null"])
    run_training(cfg)
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("train/batches")]
    seeking = {int(float(r["train/batches"])): bool(r.get("train/g_mode_seeking")) for r in rows}
    assert seeking == {1: False, 2: False, 3: True, 4: True}, seeking  # logged after the batch: batch 2 is the third


def test_caption_mmd_is_higher_for_fakes_that_ignore_their_noise(tmp_path):
    """The per-caption MMD between K fakes and K other renders of the caption: lower when the fakes
    vary as the renders do (fakes that are other renders of the caption) than when they are one image
    repeated (a generator that ignores its noise); it reaches G's weights; without the data's
    redraws it names the setting to change."""
    from dataclasses import replace

    from datamodules.shapes import ShapesDataset
    from lightning_modules.loading import build_module
    from lightning_modules.text_to_image_gan import BatchInputs, most_open_rows

    cfg = compose_train(tmp_path, ["model.mmd_weight=1.0", "model.mmd_rows=2"])
    module = build_module(cfg)
    data = ShapesDataset(split="train", length=64, seed=3, min_objects=1, max_objects=1, open_probability=0.5,
                         redraws=4)
    items = [data[i] for i in range(6)]
    text = module.encode([it["caption"] for it in items])
    stack = lambda key: torch.stack([it[key] for it in items])  # noqa: E731
    inputs = replace(BatchInputs.plain(stack("image"), text), redraws=stack("redraws"), named=stack("named"))
    assert inputs.redraws.shape == (6, 4, 3, 32, 32)
    rows = most_open_rows(inputs.named, 6, torch.device("cpu"))[:2]  # the captions the term reads
    assert all(int(inputs.named[r].sum()) <= int(inputs.named[o].sum()) for r in rows for o in range(6) if o not in rows)
    twins = [ShapesDataset(split="train", length=64, seed=3, min_objects=1, max_objects=1, open_probability=0.5,
                           redraws=8)[i]["redraws"][4:] for i in range(6)]  # four more renders of each caption
    original = module.generator.forward
    try:
        module.generator.forward = lambda z, t: torch.cat([twins[int(r)] for r in rows])
        varied = float(module.caption_mmd(inputs))
        module.generator.forward = lambda z, t: torch.cat([twins[int(r)][:1].expand(4, -1, -1, -1) for r in rows])
        collapsed = float(module.caption_mmd(inputs))
    finally:
        module.generator.forward = original
    assert collapsed > varied + 0.05, (collapsed, varied)
    term = module.caption_mmd(inputs)
    term.backward()
    assert torch.isfinite(term) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in module.generator.parameters())
    with pytest.raises(ValueError, match="data.redraws"):
        module.caption_mmd(BatchInputs.plain(stack("image"), text))


def test_caption_mmd_without_redraws_is_refused_before_training(tmp_path):
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.config_checks import validate

    validate(compose_train(tmp_path, ["model.mmd_weight=0.5", "data.redraws=4"]))
    with pytest.raises(ConfigError, match="data.redraws"):
        validate(compose_train(tmp_path, ["model.mmd_weight=0.5"]))


def test_redraws_leave_the_sample_as_it_was():
    """``data.redraws`` adds other renders of each caption from a stream of their own: the image,
    the caption and its negative are those of the data set without them."""
    from datamodules.shapes import ShapesDataset

    kw = dict(split="train", length=16, seed=5, min_objects=1, max_objects=1, negatives=True, open_probability=0.5)
    plain, more = ShapesDataset(**kw), ShapesDataset(**kw, redraws=3)
    for i in range(8):
        a, b = plain[i], more[i]
        assert a["caption"] == b["caption"] and a["negative_caption"] == b["negative_caption"]
        torch.testing.assert_close(a["image"], b["image"])
        assert "redraws" not in a and b["redraws"].shape == (3, *a["image"].shape)
        assert not torch.equal(b["redraws"][0], b["redraws"][1])
