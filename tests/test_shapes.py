"""The procedural shapes data: deterministic, truthful captions, disjoint splits."""

from __future__ import annotations

import re

import pytest
import torch

from datamodules.shapes import (
    CELL_JITTER,
    COLOR_NAMES,
    COLORS,
    HELD_OUT_CELLS,
    HELD_OUT_COLORS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_RADIUS,
    SIZE_WORDS,
    SIZES,
    TEMPLATES,
    UNSEEN_POSITION_PHRASES,
    UNSEEN_SHAPE_WORDS,
    UNSEEN_SIZE_WORDS,
    UNSEEN_TEMPLATES,
    Scene,
    ShapeObject,
    ShapesDataModule,
    ShapesDataset,
    allowed,
    held_out_pairs,
    noun_phrase,
    open_distribution,
    redraw,
)


def test_same_seed_and_index_give_the_same_sample():
    a, b = ShapesDataset(split="train", length=10, seed=3), ShapesDataset(split="train", length=10, seed=3)
    for i in range(10):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["attributes"], y["attributes"])
    assert ShapesDataset(split="train", length=10, seed=4)[0]["caption"] != a[0]["caption"] or \
        not torch.equal(ShapesDataset(split="train", length=10, seed=4)[0]["image"], a[0]["image"])


def _words_of(obj, unseen: bool) -> dict[str, tuple[str, ...]]:
    pick = lambda table, extra, key: table[key] + (extra.get(key, ()) if unseen else ())  # noqa: E731
    return {"shape": pick(SHAPE_WORDS, UNSEEN_SHAPE_WORDS, obj.shape), "color": (obj.color,),
            "size": pick(SIZE_WORDS, UNSEEN_SIZE_WORDS, obj.size),
            "position": pick(POSITION_PHRASES, UNSEEN_POSITION_PHRASES, obj.position)}


@pytest.mark.parametrize("split", ["train", "test"])
def test_captions_name_exactly_the_named_attributes(split):
    """Every named attribute is in the caption in one of its words; an open one is not (no other
    shape, colour, size or place word appears either), and some captions leave something open."""
    ds = ShapesDataset(split=split, length=600, max_objects=1)
    every_word = {a: {w for obj in (ShapeObject(s, c, z, p) for s in SHAPES for c in COLOR_NAMES for z in SIZES
                                    for p in POSITIONS) for w in _words_of(obj, True)[a]}
                  for a in ("shape", "color", "size", "position")}
    opened = set()
    for i in range(600):
        scene, caption = ds.sample(i)
        obj, names = scene.objects[0], scene.names(0)
        assert names, caption
        for attribute, words in _words_of(obj, scene.subset == "unseen_phrasing").items():
            said = [w for w in every_word[attribute] if re.search(rf"\b{w}\b", caption)]
            if attribute in names:
                assert any(w in said for w in words), (caption, attribute)
            else:
                opened.add(attribute)
                assert not said, (caption, attribute, said)
    assert opened == {"shape", "color", "size", "position"}


def test_two_objects_never_share_a_cell():
    ds = ShapesDataset(split="train", length=300, min_objects=2)
    for i in range(300):
        cells = [o.position for o in ds.sample(i)[0].objects]
        assert len(set(cells)) == len(cells)


def test_no_held_out_composition_in_training():
    """Over 30,000 training indices (one and two objects), no image shows and no caption or negative
    names a held-out shape-colour or shape-cell pair; the test split has them in its
    unseen_composition subset, named."""
    for objects in (1, 2):
        ds = ShapesDataset(split="train", length=15000, min_objects=objects, max_objects=objects, negatives=True)
        for i in range(15000):
            scene, _ = ds.sample(i)
            assert all(allowed(o) for o in scene.objects), scene
        for i in range(0, 15000, 5):  # the negatives, which cost a render each
            item = ds[i]
            for row in item["negative_attributes"][:objects]:
                shape, color, _, cell = row.tolist()
                assert allowed(ShapeObject(SHAPES[shape], COLOR_NAMES[color], "small", POSITIONS[cell])), item
    test = ShapesDataset(split="test", length=600, max_objects=1)
    for i in range(600):
        scene, caption = test.sample(i)
        obj = scene.objects[0]
        assert (scene.subset == "unseen_composition") == (not allowed(obj)), (scene.subset, obj)
        if scene.subset == "unseen_composition":
            assert {"shape", *held_out_pairs(obj)} <= scene.names(0), caption
    assert sum(len(v) for v in HELD_OUT_COLORS.values()) == 12 and len(HELD_OUT_CELLS) == len(SHAPES)


def test_every_template_is_grammatical():
    """The full list of captions each template gives, with and without a place, for one object."""
    import numpy as np

    obj = ShapeObject("star", "orange", "large", "top left")
    phrases = {}
    for unseen, templates in ((False, TEMPLATES), (True, UNSEEN_TEMPLATES)):
        for with_place, without_place in templates:
            phrases[with_place.format(np="an orange star", where="in the top left corner")] = unseen
            phrases[without_place.format(np="an orange star")] = unseen
    assert sorted(phrases) == sorted([
        "an orange star in the top left corner", "an orange star",
        "in the top left corner, there is an orange star", "there is an orange star",
        "an image of an orange star in the top left corner", "an image of an orange star",
        "an orange star is in the top left corner", "an orange star on a black background",
        "in the top left corner you can see an orange star", "you can see an orange star",
        "a picture showing an orange star in the top left corner", "a picture showing an orange star",
        "an orange star placed in the top left corner", "an orange star placed somewhere",
    ])
    rng = np.random.default_rng(0)
    named = frozenset({"color", "shape"})
    assert noun_phrase(obj, named, rng) == "an orange star"
    assert noun_phrase(obj, frozenset({"size", "shape"}), rng) in ("a large star", "a big star")
    assert noun_phrase(ShapeObject("hexagon", "red", "small", "top"), frozenset({"color"}), rng) in (
        "a red shape", "a red object")
    assert noun_phrase(obj, frozenset({"position"}), rng) in ("a shape", "an object")
    # every caption of the data: no "a" before a vowel, no "an" before a consonant, no doubled words
    for split in ("train", "test"):
        ds = ShapesDataset(split=split, length=3000, max_objects=2)
        for i in range(3000):
            caption = ds.sample(i)[1]
            assert not re.search(r"\ba [aeiou]|\ban [^aeiou ]|\b(\w+) \1\b|^there is (on|in|at|near)\b", caption), caption


def test_the_nuisance_varies_what_no_word_fixes():
    """Two renders of one fully named caption differ (rotation, radius, place in the cell); the
    radius stays in its size word's range and the centre in its cell."""
    import numpy as np

    ds = ShapesDataset(split="train", length=400, max_objects=1, open_probability=0.0)
    scene = ds.sample(0)[0]
    a, b = (redraw(scene, np.random.default_rng(s)) for s in (1, 2))
    assert a.objects == b.objects == scene.objects and a.poses != b.poses
    for i in range(400):
        scene = ds.sample(i)[0]
        obj, pose = scene.objects[0], scene.pose(0)
        lo, hi = SIZE_RADIUS[obj.size]
        assert lo <= pose.radius <= hi and abs(pose.dx) <= CELL_JITTER and abs(pose.dy) <= CELL_JITTER


def test_open_attributes_are_drawn_as_the_data_draws_them():
    """redraw() of a caption that leaves the colour open draws it as open_distribution says."""
    import numpy as np

    scene = Scene((ShapeObject("star", "red", "large", "left"),), named=(frozenset({"shape", "size", "position"}),))
    p = open_distribution(scene, "color")
    assert p[COLOR_NAMES.index("blue")] == p[COLOR_NAMES.index("cyan")] == 0  # held out for stars
    assert abs(p.sum() - 1) < 1e-9 and np.allclose(p[p > 0], 1 / 6)
    rng = np.random.default_rng(0)
    counts = np.bincount([COLOR_NAMES.index(redraw(scene, rng).objects[0].color) for _ in range(3000)], minlength=8)
    assert np.abs(counts / 3000 - p).max() < 0.03


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
    assert batch["attributes"].shape == (8, 2, 4) and batch["named"].shape == (8, 2, 4)
    with pytest.raises(ValueError, match="data.image_size=48"):
        ShapesDataModule(image_size=48)


def test_rendering_is_fast_enough_for_loader_workers():
    import time
    ds = ShapesDataset(split="train", length=256, image_size=64)
    start = time.perf_counter()
    for i in range(256):
        ds[i]
    assert time.perf_counter() - start < 10  # generous; typically ~0.3 s
