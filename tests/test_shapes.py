"""The procedural shapes data: deterministic, truthful captions, disjoint splits."""

from __future__ import annotations

import re

import pytest
import torch

from datamodules.shapes import (
    COLOR_NAMES,
    COLORS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    ShapesDataModule,
    ShapesDataset,
)


def test_same_seed_and_index_give_the_same_sample():
    a, b = ShapesDataset(split="train", length=10, seed=3), ShapesDataset(split="train", length=10, seed=3)
    for i in range(10):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["attributes"], y["attributes"])
    assert ShapesDataset(split="train", length=10, seed=4)[0]["caption"] != a[0]["caption"] or \
        not torch.equal(ShapesDataset(split="train", length=10, seed=4)[0]["image"], a[0]["image"])


def test_captions_name_every_attribute_of_every_object():
    ds = ShapesDataset(split="train", length=300)
    for i in range(300):
        scene, caption = ds.sample(i)
        assert 1 <= len(scene.objects) <= 2
        for obj in scene.objects:
            assert obj.color in caption
            assert any(w in caption for w in SHAPE_WORDS[obj.shape])
            assert any(re.search(rf"\b{w}\b", caption) for w in SIZE_WORDS[obj.size])
            assert any(p in caption for p in POSITION_PHRASES[obj.position])
        cells = [o.position for o in scene.objects]
        assert len(set(cells)) == len(cells)


def test_vocabulary_is_rich_enough():
    assert len(SHAPES) >= 5 and len(COLOR_NAMES) >= 6 and len(SIZES) == 2 and len(POSITIONS) == 9


@pytest.mark.parametrize("size", [32, 64, 128])
def test_images_have_the_size_and_the_colour_of_the_caption(size):
    ds = ShapesDataset(split="val", length=50, image_size=size, min_objects=1, max_objects=1)
    for i in range(50):
        item = ds[i]
        assert item["image"].shape == (3, size, size)
        assert item["image"].min() >= -1 and item["image"].max() <= 1
        shape, color, _, position = item["attributes"][0].tolist()
        pixels = ((item["image"] + 1) * 127.5).permute(1, 2, 0).reshape(-1, 3)
        lit = pixels[pixels.sum(1) > 0.9 * pixels.sum(1).max()]  # interior, not anti-aliased edges
        target = torch.tensor(COLORS[COLOR_NAMES[color]], dtype=torch.float)
        nearest = torch.stack([((lit - torch.tensor(c, dtype=torch.float)) ** 2).sum(1) for c in COLORS.values()]).argmin(0)
        assert (nearest == color).float().mean() > 0.9, (COLOR_NAMES[color], target)
        # the object's mass lies in its grid cell
        mask = (((item["image"] + 1) * 127.5).sum(0) > 60).float()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        row, col = int(ys.float().mean() * 3 // size), int(xs.float().mean() * 3 // size)
        assert POSITIONS[row * 3 + col] == POSITIONS[position]


def test_splits_are_disjoint():
    def images(split):
        ds = ShapesDataset(split=split, length=200)
        return {ds[i]["image"].numpy().tobytes() for i in range(200)}
    train, val, test = images("train"), images("val"), images("test")
    assert not (train & val) and not (train & test) and not (val & test)


def test_datamodule_batches_and_bad_size():
    dm = ShapesDataModule(image_size=32, batch_size=8, num_workers=0, train_size=16, val_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and len(batch["caption"]) == 8
    assert batch["attributes"].shape == (8, 2, 4)
    with pytest.raises(ValueError, match="data.image_size=48"):
        ShapesDataModule(image_size=48)


def test_rendering_is_fast_enough_for_loader_workers():
    import time
    ds = ShapesDataset(split="train", length=256, image_size=64)
    start = time.perf_counter()
    for i in range(256):
        ds[i]
    assert time.perf_counter() - start < 10  # generous; typically ~0.3 s
