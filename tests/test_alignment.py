"""What makes images follow the words: the word-reading discriminator, the contrastive terms, the
choice of mismatched captions, text at the generator's seed and attention at 4x4."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lightning_modules.components.discriminators import Discriminator, attended_cosine
from lightning_modules.components.fusion import CrossAttentionFusion
from lightning_modules.components.generators import Generator
from lightning_modules.components.negatives import caption_matches, mismatch_indices
from lightning_modules.components.text_encoders import TextFeatures
from lightning_modules.losses import contrastive_loss


def _text(batch=4, length=6, dim=12, seed=0) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, 4:] = False
    return TextFeatures(torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g))


def _discriminator() -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(image_size=32, text_dim=12, token_dim=12, base_channels=4, word_matching=True, match_dim=16)


def test_word_matcher_reads_each_word_and_ignores_padding():
    d = _discriminator().eval()
    images, text = torch.randn(4, 3, 32, 32), _text()
    logits, _, sim = d.judge(d.features(images), text.pooled, text.tokens, text.mask)
    assert sim.shape == (4, 4) and (sim.abs() <= 1 + 1e-5).all()
    # changing one real word changes the scores; changing a padding token does not
    word, pad = text.tokens.clone(), text.tokens.clone()
    word[:, 1] += 3.0 * torch.randn(12)
    pad[:, 5] += 3.0 * torch.randn(12)
    with torch.no_grad():
        assert not torch.allclose(d.judge(d.features(images), text.pooled, word, text.mask)[0], logits)
        torch.testing.assert_close(d.judge(d.features(images), text.pooled, pad, text.mask)[0], logits)
    # the logit of pair (i, i) includes the matcher's diagonal; the mismatched logit its (i, m[i]) entry
    m = torch.tensor([1, 2, 3, 0])
    real, wrong, sim2 = d.judge(d.features(images), text.pooled, text.tokens, text.mask, m)
    feats = d.features(images)
    torch.testing.assert_close(real - d.head(feats.map, text.pooled), d.match_gain * sim2.diagonal())
    torch.testing.assert_close(wrong - d.head(feats.map, text.pooled[m]), d.match_gain * sim2[torch.arange(4), m])


def _attended_cosine_explicit(regions, words, inverse_temperature):
    attn = (torch.einsum("jrd,ild->jilr", regions, words) * inverse_temperature).softmax(-1)
    context = torch.einsum("jilr,jrd->jild", attn, regions)
    return torch.nn.functional.cosine_similarity(context, words.unsqueeze(0), dim=-1)


def test_attended_cosine_equals_the_explicit_context_with_its_gradients():
    """The matcher scores words without building the attended context: same values, same first and
    second derivatives (the MA-GP differentiates D's logit, the matcher included, twice)."""
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(3, 16, 8, generator=g, dtype=torch.float64, requires_grad=True)
    words = torch.randn(5, 6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    words.data[1, 2] = 0.0  # a zero word (an all-zero token projection): 0, not NaN
    fast, slow = attended_cosine(regions, words, 0.7), _attended_cosine_explicit(regions, words, 0.7)
    assert fast.shape == (3, 5, 6)
    torch.testing.assert_close(fast, slow)
    probe = torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    grads_fast = torch.autograd.grad((fast * probe).sum(), regions, create_graph=True)[0]
    grads_slow = torch.autograd.grad((slow * probe).sum(), regions, create_graph=True)[0]
    torch.testing.assert_close(grads_fast, grads_slow)
    torch.testing.assert_close(torch.autograd.grad(grads_fast.square().sum(), words)[0],
                               torch.autograd.grad(grads_slow.square().sum(), words)[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attended_cosine(regions.float(), words.float(), 0.7)
    assert low.dtype == torch.float32  # as F.cosine_similarity under autocast
    torch.testing.assert_close(low.float(), slow.float(), atol=0.03, rtol=0)


def test_matcher_knows_where_a_region_is():
    """Region vectors carry a position: the same feature at two places reads differently."""
    d = _discriminator()
    f = torch.zeros(1, d.matcher.region_proj.in_channels, 4, 4)
    a, b = f.clone(), f.clone()
    a[..., 0, 0], b[..., 3, 3] = 1.0, 1.0
    text = _text(batch=1)
    sim_a = d.matcher.similarity(d.matcher.regions(a), d.matcher.words(text.tokens, text.mask))
    sim_b = d.matcher.similarity(d.matcher.regions(b), d.matcher.words(text.tokens, text.mask))
    assert not torch.allclose(sim_a, sim_b)


def _same(groups: list[int], extra: int = 0) -> torch.Tensor:
    """The matches matrix of captions grouped by scene: caption t is true of image i iff same group."""
    g = torch.tensor(groups)
    return g[: len(groups) - extra, None] == g[None, :]


def test_contrastive_loss_leaves_out_equivalent_captions():
    sim = torch.tensor([[0.9, 0.9, -0.5], [0.9, 0.9, -0.5], [-0.5, -0.5, 0.9]])
    distinct = contrastive_loss(sim, _same([0, 1, 2]), temperature=0.1)
    grouped = contrastive_loss(sim, _same([0, 0, 1]), temperature=0.1)
    assert grouped < 0.01 < distinct  # images 0 and 1 show the same scene: not negatives of each other
    # and it pulls the right way: raising a matching pair's similarity lowers the loss
    better = sim.clone()
    better[2, 2] = 1.0
    assert contrastive_loss(better, _same([0, 1, 2]), 0.1) < distinct


def test_matches_follow_scenes_not_wording():
    attributes = torch.tensor([[[0, 1, 0, 4]], [[0, 1, 0, 4]], [[2, 1, 0, 4]]])
    matches = caption_matches({"attributes": attributes, "caption": ["a red circle", "a red disc", "a red square"]}, 3)
    expected = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    assert torch.equal(matches.of_images, expected) and torch.equal(matches.of_captions, expected)
    text = caption_matches({"caption": ["A red  circle", "a red circle", "a red square"]}, 3).of_images
    assert text[0, 1] and text[1, 0] and not text[0, 2] and not text[2, 1]


def test_a_caption_that_leaves_an_attribute_open_is_true_of_every_value():
    """"a red shape in the center" (shape open) is true of a red circle and of a red square in the
    center, but "a red circle in the center" is not true of the red square: matches are asymmetric."""
    attributes = torch.tensor([[[0, 0, 1, 4]], [[1, 0, 1, 4]], [[1, 0, 1, 4]]])
    named = torch.tensor([[[True] * 4], [[True] * 4], [[False, True, False, True]]])
    negative = torch.tensor([[[0, 2, 1, 4]], [[1, 0, 1, 5]], [[1, 3, 1, 4]]])
    batch = {"attributes": attributes, "named": named, "negative_attributes": negative}
    both = caption_matches(batch, 3, negatives=True)
    matches = both.of_images
    assert matches.shape == (3, 6)
    assert matches[0, 2] and matches[1, 2] and not matches[2, 0] and matches[2, 1]
    assert not matches[:, 3:].diagonal().any()  # a sample's negative is never true of it
    assert not matches[0, 3]  # colour 2 named: not true of image 0 (colour 0)
    assert mismatch_indices("hard", matches[:, :3], torch.randn(3, 8))[0] != 2  # never the open caption
    # an image made for the open caption 2 may be a circle: caption 0 is no negative of it (it is one of
    # the real image 2, a square), and neither is sample 0's negative, which names a colour 2 doesn't have
    captions = both.of_captions
    assert captions[2, 0] and not matches[2, 0]
    assert captions[2, 1] and not captions[2, 3] and not captions[:, 3:].diagonal().any()


def test_mismatched_captions_are_really_mismatched():
    groups = [0, 0, 1, 2, 2, 3]
    matches = _same(groups)
    pooled = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    pooled[3] = pooled[0] + 0.01  # sample 3 is (almost) sample 0's caption, but another scene
    assert torch.equal(mismatch_indices("roll", matches, pooled), torch.tensor([5, 0, 1, 2, 3, 4]))  # DF-GAN's
    for mode in ("random", "hard"):
        m = mismatch_indices(mode, matches, pooled, torch.Generator().manual_seed(1))
        assert (torch.tensor(groups)[m] != torch.tensor(groups)).all(), mode
    assert mismatch_indices("hard", matches, pooled)[0] == 3  # the most similar caption of another scene
    one_scene = mismatch_indices("hard", torch.ones(3, 3, dtype=torch.bool), pooled[:3])
    assert torch.equal(one_scene, torch.tensor([2, 0, 1]))  # nothing else to pick: the neighbour


def test_text_at_the_seed_and_attention_at_4x4():
    fusion = partial(CrossAttentionFusion, cond_dim=16, hidden=16, text_at_input=True, attention_resolutions=[4, 8],
                     heads=2, dim_head=8)
    torch.manual_seed(0)
    g = Generator(image_size=32, z_dim=8, text_dim=12, token_dim=12, fusion=fusion, base_channels=4).eval()
    assert g.seed.in_features == 8 + 16 and g.seed_attention is not None
    with torch.no_grad():
        z = torch.randn(4, 8)
        seed_a = g.seed(g.fusion.input(z, g.fusion.condition(z, _text(seed=0))))
        seed_b = g.seed(g.fusion.input(z, g.fusion.condition(z, _text(seed=1))))
    assert not torch.allclose(seed_a, seed_b)  # the 4x4 layout depends on the words
    assert g(z, _text()).shape == (4, 3, 32, 32)


def test_counterfactual_captions_are_wrong_in_exactly_one_attribute():
    import numpy as np

    from datamodules.shapes import ShapesDataset

    for objects in (1, 2):
        data = ShapesDataset(split="train", length=200, min_objects=objects, max_objects=objects, negatives=True,
                             open_probability=0.0)
        changed = set()
        for i in range(200):
            item = data[i]
            diff = item["attributes"] != item["negative_attributes"]
            assert int(diff.sum()) == 1, (item["caption"], item["negative_caption"])
            changed.add(int(diff.nonzero()[0, 1]))
            cells = item["negative_attributes"][:, 3]
            assert len(set(cells.tolist())) == objects  # a moved object never lands on another
        assert changed == {0, 1, 2, 3}  # shape, colour, size and position all get changed
    # the sample itself is the same with or without its negative
    plain, with_negative = (ShapesDataset(split="train", length=5, max_objects=2, negatives=n)[3] for n in (False, True))
    assert "negative_caption" not in plain and plain["caption"] == with_negative["caption"]
    assert np.array_equal(plain["image"], with_negative["image"])


def test_extra_negatives_join_the_contrastive_terms():
    sim = torch.tensor([[0.9, -0.5, 0.8], [-0.5, 0.9, -0.5]])  # image 0 nearly matches the extra caption 2
    with_negative = contrastive_loss(sim, _same([0, 1, 2], extra=1), 0.1)
    without = contrastive_loss(sim[:, :2], _same([0, 1]), 0.1)
    assert with_negative > without + 0.05
    # an extra caption equivalent to image 0's own is not a negative of it
    assert torch.isclose(contrastive_loss(sim, _same([0, 1, 0], extra=1), 0.1), without, atol=1e-5)
    cat = TextFeatures.cat([_text(batch=2, length=3), _text(batch=2, length=6)])
    assert cat.tokens.shape == (4, 6, 12) and not cat.mask[:2, 3:].any()


def test_negative_weights_choose_which_attribute_changes():
    import numpy as np

    from datamodules.shapes import ATTRIBUTES, ShapesDataset, counterfactual

    data = ShapesDataset(split="train", length=400, max_objects=1, open_probability=0.0)
    counts = dict.fromkeys(ATTRIBUTES, 0)
    for i in range(400):
        scene = data.sample(i)[0]
        other = counterfactual(scene, np.random.default_rng(i), weights=[1, 0, 0, 1])
        (changed,) = [a for a in ATTRIBUTES if getattr(other.objects[0], a) != getattr(scene.objects[0], a)]
        counts[changed] += 1
    assert counts["color"] == counts["size"] == 0 and 150 < counts["shape"] < 250


@pytest.mark.parametrize("weights, ok", [("[0.55,0.15,0.15,0.15]", True), ("[1,0,0]", False), ("[0,0,0,0]", False),
                                         ("2", False)])
def test_negative_weights_from_the_command_line(tmp_path, weights, ok):
    from conftest import compose_train
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.loading import build

    cfg = compose_train(tmp_path, [f"data.negative_weights={weights}"])
    if ok:
        data = build(cfg.data)
        assert data.datasets["train"].negative_weights == (0.55, 0.15, 0.15, 0.15)
    else:
        with pytest.raises((ConfigError, ValueError), match="data.negative_weights"):
            build(cfg.data)
