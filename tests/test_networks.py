"""Fusions, backbones and losses on their own."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lightning_modules.components.discriminators import Discriminator
from lightning_modules.components.ema import ema_update, make_ema
from lightning_modules.components.fusion import AffineFusion, ConcatFusion, CrossAttentionFusion
from lightning_modules.components.generators import Generator
from lightning_modules.components.text_encoders import TextFeatures
from lightning_modules.losses import discriminator_loss, matching_aware_gradient_penalty

FUSIONS = {
    "concat": partial(ConcatFusion, cond_dim=16),
    "affine": partial(AffineFusion, cond_dim=16, hidden=16),
    "cross_attention": partial(CrossAttentionFusion, cond_dim=16, hidden=16, attention_resolutions=[8, 16],
                               heads=2, dim_head=8),
}


def _text(batch=3, length=5, dim=12, seed=0) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, 3:] = False
    return TextFeatures(torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g))


def _generator(fusion: str, size: int = 32) -> Generator:
    torch.manual_seed(0)
    return Generator(image_size=size, z_dim=8, text_dim=12, token_dim=12, fusion=FUSIONS[fusion], base_channels=4)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("size", [16, 32, 64])
def test_generator_makes_images_of_the_asked_size(fusion, size):
    g = _generator(fusion, size).eval()
    images = g(torch.randn(3, 8), _text())
    assert images.shape == (3, 3, size, size) and torch.isfinite(images).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_text_changes_the_image(fusion):
    g = _generator(fusion).eval()
    with torch.no_grad():
        # perturb the generator so that zero-initialised layers carry signal
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
        z = torch.randn(3, 8)
        assert not torch.allclose(g(z, _text(seed=0)), g(z, _text(seed=1)))


def test_cross_attention_ignores_padding_tokens():
    g = _generator("cross_attention").eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
        text = _text()
        altered = TextFeatures(text.tokens.clone(), text.mask, text.pooled)
        altered.tokens[:, 3:] += 100.0  # only padded positions change
        z = torch.randn(3, 8)
        assert torch.allclose(g(z, text), g(z, altered), atol=1e-6)
        altered.tokens[:, 1] += torch.randn_like(altered.tokens[:, 1])  # a real token changes
        assert not torch.allclose(g(z, text), g(z, altered), atol=1e-6)


@pytest.mark.parametrize("autocast", [False, True])
def test_masked_attention_equals_scaled_dot_product_attention(autocast):
    from lightning_modules.components.fusion import masked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 8, generator=g) for n in (16, 5, 5))
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]]).view(2, 1, 1, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = masked_attention(q, k, v, mask).float()
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).float()
    assert torch.allclose(got, want, atol=3e-2 if autocast else 1e-5)


def test_cross_attention_layers_sit_at_the_named_resolutions():
    g = _generator("cross_attention", 64)
    with_attention = [i for i, b in enumerate(g.blocks) if b.attention is not None]
    assert with_attention == [0, 1]  # blocks 0 and 1 output 8x8 and 16x16


def test_discriminator_is_text_aware():
    torch.manual_seed(0)
    d = Discriminator(image_size=32, text_dim=12, base_channels=4, cond_dim=8)
    images, text = torch.randn(3, 3, 32, 32), _text()
    features = d.features(images).map
    assert d.head(features, text.pooled).shape == (3,)
    assert not torch.allclose(d.head(features, text.pooled), d.head(features, text.pooled.roll(1, 0)))


def test_hinge_loss_and_matching_aware_penalty():
    real, fake, mis = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([0.0, -3.0])
    terms = discriminator_loss("hinge", real, fake, mis)
    assert terms["real"] == pytest.approx(0.25) and terms["fake"] == pytest.approx(0.5)
    assert terms["mismatch"] == pytest.approx(0.5) and terms["total"] == pytest.approx(0.75)
    images = torch.randn(4, 3, 8, 8, requires_grad=True)
    sentence = torch.randn(4, 5, requires_grad=True)
    logits = 3 * images.flatten(1).sum(1) + 4 * sentence.sum(1)  # gradient norm is known
    expected = 2.0 * ((9 * 192 + 16 * 5) ** 0.5) ** 6
    assert matching_aware_gradient_penalty(logits, images, sentence, weight=2.0, power=6.0).item() == \
        pytest.approx(expected, rel=1e-5)


def test_ema_moves_towards_the_model_and_never_trains():
    g = _generator("affine")
    ema = make_ema(g)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    before = next(ema.parameters()).clone()
    ema_update(ema, g, beta=0.9)
    after, target = next(ema.parameters()), next(g.parameters())
    assert torch.allclose(after, before + 0.1 * (target - before), atol=1e-6)
