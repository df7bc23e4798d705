"""DiffAugment: each policy does what it says, is reproducible, and lets gradients through."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components.augment import POLICIES, DiffAugment, diff_augment


def _images(batch=4, size=16, seed=0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["", "none", " ", []])
def test_empty_policy_returns_input_itself(policy):
    x = _images()
    assert diff_augment(x, policy) is x
    assert DiffAugment(policy=policy if isinstance(policy, str) else "")(x) is x


@pytest.mark.parametrize("policy", [*POLICIES, "color,translation,cutout"])
def test_policy_changes_images_keeps_shape_and_dtype(policy):
    x = _images()
    y = diff_augment(x, policy, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("policy", [*POLICIES, "color,translation,cutout"])
def test_same_seed_same_output_different_seed_different(policy):
    x = _images(batch=8)
    a = diff_augment(x, policy, generator=_gen(3))
    b = diff_augment(x, policy, generator=_gen(3))
    c = diff_augment(x, policy, generator=_gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_used_without_generator():
    x = _images()
    torch.manual_seed(7)
    a = diff_augment(x, "color,translation,cutout")
    torch.manual_seed(7)
    b = diff_augment(x, "color,translation,cutout")
    assert torch.equal(a, b)


def test_translation_moves_a_pixel_within_range_and_zero_pads():
    size, batch = 16, 64
    max_shift = int(size * 0.125 + 0.5)
    x = torch.zeros(batch, 3, size, size)
    x[:, :, 8, 8] = 1.0
    y = diff_augment(x, "translation", generator=_gen(0))
    shifts = set()
    for img in y:
        nz = img[0].nonzero()
        assert len(nz) == 1, "the bright pixel stays inside for shifts <= 2 and is not duplicated"
        (i, j) = nz[0].tolist()
        assert abs(i - 8) <= max_shift and abs(j - 8) <= max_shift
        assert torch.equal(img[:, i, j], torch.ones(3))
        shifts.add((i - 8, j - 8))
    assert len(shifts) > 5  # per-sample shifts, not one shift for the batch

    # The uncovered border is zero padding: a constant image gets zeros only along a shifted edge.
    ones = diff_augment(torch.ones(batch, 3, size, size), "translation", generator=_gen(1))
    for img in ones:
        zero_rows = (img[0] == 0).all(dim=1).sum().item()
        zero_cols = (img[0] == 0).all(dim=0).sum().item()
        assert zero_rows <= max_shift and zero_cols <= max_shift
        assert (img[0] == 0).sum().item() == size * size - (size - zero_rows) * (size - zero_cols)
    assert any((img == 0).any() for img in ones)


def test_cutout_zeroes_a_square_of_the_expected_area():
    size, batch = 16, 32
    side = int(size * 0.5 + 0.5)
    y = diff_augment(torch.ones(batch, 3, size, size), "cutout", generator=_gen(0))
    starts = set()
    for img in y:
        zeros = (img == 0).nonzero()
        assert (img == 0).sum().item() == 3 * side * side
        rows, cols = zeros[:, 1], zeros[:, 2]
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
        assert set(img.unique().tolist()) == {0.0, 1.0}
        starts.add((rows.min().item(), cols.min().item()))
    assert len(starts) > 5


def test_color_is_per_sample_and_uses_mean_statistics():
    x = torch.zeros(16, 3, 8, 8)  # a flat image only sees the brightness offset in [-0.5, 0.5)
    y = diff_augment(x, "color", generator=_gen(0))
    offsets = y.flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
    assert offsets.min() >= -0.5 and offsets.max() < 0.5
    assert offsets[:, 0].unique().numel() == 16


def test_gradients_flow_through_all_policies():
    x = _images().requires_grad_()
    diff_augment(x, "color,translation,cutout", generator=_gen(0)).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_probability_zero_is_identity_and_half_gates_per_sample():
    x = _images(batch=32)
    off = DiffAugment(policy="color,translation,cutout", probability=0.0)
    assert not off.enabled
    assert torch.equal(off(x, generator=_gen(0)), x)

    half = DiffAugment(policy="color", probability=0.5)
    assert half.enabled
    y = half(x, generator=_gen(0))
    unchanged = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert 0 < unchanged.sum() < len(x)
    assert torch.equal(half(x, generator=_gen(0)), y)

    full = DiffAugment(policy="color", probability=1.0)
    assert torch.equal(full(x, generator=_gen(5)), diff_augment(x, "color", generator=_gen(5)))


def test_bad_policy_and_probability_raise():
    with pytest.raises(ValueError, match=r"model\.augment\.policy") as err:
        DiffAugment(policy="color,flip")
    assert "flip" in str(err.value)
    assert all(name in str(err.value) for name in POLICIES)
    with pytest.raises(ValueError, match=r"model\.augment\.policy"):
        diff_augment(_images(), "colour")
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"model\.augment\.probability"):
            DiffAugment(policy="color", probability=p)
