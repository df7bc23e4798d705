"""Procedural *shapes*: 1-2 coloured shapes on black, with template captions whose every word is true.

Each sample is a pure function of ``(seed, split, index)``: no download, no files, identical on
every machine and in every worker. Captions name every attribute (shape, colour, size, position)
in one of several templates and paraphrases, and the attribute record comes with the image, so
text alignment can be measured exactly.

Positions are the cells of a 3x3 grid; two objects never share a cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from datamodules.resumable import ResumableSampler, batches_trained
from lightning_modules.checks import Problems, check

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "hexagon": ("hexagon",),
}
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 220),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
    "cyan": (40, 220, 230),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SIZE_RADIUS = {"small": 0.09, "large": 0.15}  # fraction of the image side
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left"),
    "top": ("at the top", "near the top"),
    "top right": ("in the top right corner", "at the top right"),
    "left": ("on the left", "at the left side"),
    "center": ("in the center", "in the middle"),
    "right": ("on the right", "at the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}
SPLITS = {"train": 0, "val": 1, "test": 2}
ALLOWED_IMAGE_SIZES = (32, 64, 128)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str
    position: str

    def as_indices(self) -> list[int]:
        return [SHAPES.index(self.shape), COLOR_NAMES.index(self.color), SIZES.index(self.size),
                POSITIONS.index(self.position)]


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    offsets: tuple[tuple[float, float], ...]  # jitter of each object's centre, fraction of the side


def make_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = 2) -> Scene:
    n = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    objects = tuple(
        ShapeObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            color=COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
            size=SIZES[rng.integers(len(SIZES))],
            position=POSITIONS[cell],
        )
        for cell in cells
    )
    offsets = tuple((float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))) for _ in objects)
    return Scene(objects, offsets)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n), cy + radius * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return ring(3, r * 1.1, -math.pi / 2)
    if shape == "diamond":
        return [(cx, cy - r * 1.1), (cx + r * 0.75, cy), (cx, cy + r * 1.1), (cx - r * 0.75, cy)]
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r * 1.15, -math.pi / 2), ring(5, r * 0.5, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int) -> Image.Image:
    """Draw at ``SUPERSAMPLE`` times the size, then box-filter down (anti-aliased edges)."""
    side = image_size * SUPERSAMPLE
    image = Image.new("RGB", (side, side), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for obj, (dx, dy) in zip(scene.objects, scene.offsets):
        cell = POSITIONS.index(obj.position)
        cx, cy = ((cell % 3) + 0.5) / 3 + dx, ((cell // 3) + 0.5) / 3 + dy
        cx, cy, r = cx * side, cy * side, SIZE_RADIUS[obj.size] * side
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLORS[obj.color])
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=COLORS[obj.color])
    return image.resize((image_size, image_size), Image.Resampling.BOX)


ATTRIBUTES = ("shape", "color", "size", "position")


def counterfactual(scene: Scene, rng: np.random.Generator, weights: Sequence[float] | None = None) -> Scene:
    """The scene with exactly one attribute of one object changed: its caption is wrong in one word
    (or phrase), the hardest mismatched caption for a discriminator that must read every word.
    ``weights`` (one per :data:`ATTRIBUTES`, default equal) set how often each attribute is the one
    changed."""
    k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    if weights is None:
        attribute = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
    else:
        p = np.asarray(weights, dtype=float)
        attribute = ATTRIBUTES[int(rng.choice(len(ATTRIBUTES), p=p / p.sum()))]
    if attribute == "position":
        options = [p for p in POSITIONS if p not in {o.position for o in scene.objects}]
    else:
        options = [v for v in {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZES}[attribute] if v != getattr(obj, attribute)]
    objects = list(scene.objects)
    objects[k] = replace(obj, **{attribute: options[int(rng.integers(len(options)))]})
    return Scene(tuple(objects), scene.offsets)


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def describe(obj: ShapeObject, rng: np.random.Generator) -> str:
    size, shape = _choice(rng, SIZE_WORDS[obj.size]), _choice(rng, SHAPE_WORDS[obj.shape])
    where = _choice(rng, POSITION_PHRASES[obj.position])
    template = _choice(rng, ("a {size} {color} {shape} {where}", "{where}, a {size} {color} {shape}",
                             "a {color} {shape}, {size}, {where}"))
    return template.format(size=size, color=obj.color, shape=shape, where=where)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    parts = [describe(obj, rng) for obj in scene.objects]
    if len(parts) == 1:
        return _choice(rng, ("{0}", "there is {0}", "an image of {0}")).format(parts[0])
    joiner = _choice(rng, (" and ", "; ", ", and "))
    return joiner.join(parts)


class ShapesDataset(Dataset):
    """``dataset[i]`` -> ``{"image": [3,S,S] in [-1,1], "caption": str, "attributes": [max_objects,4] long}``.

    ``attributes[k] = (shape, colour, size, position)`` indices into the module's tuples; rows of
    absent objects are -1. With ``negatives`` the sample also has ``negative_caption`` and
    ``negative_attributes``: a caption of the :func:`counterfactual` scene (one attribute of one
    object changed), which the GAN shows D as the mismatched caption of the image.
    """

    def __init__(self, *, split: str, length: int, image_size: int = 32, seed: int = 0,
                 min_objects: int = 1, max_objects: int = 2, negatives: bool = False,
                 negative_weights: Sequence[float] | None = None):
        if split not in SPLITS:
            raise ValueError(f"shapes split {split!r} is not one of {tuple(SPLITS)}")
        self.split, self.length, self.image_size, self.seed = split, length, image_size, seed
        self.min_objects, self.max_objects = min_objects, max_objects
        self.negatives = negatives
        self.negative_weights = None if negative_weights is None else tuple(float(w) for w in negative_weights)

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[Scene, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        scene = make_scene(rng, self.min_objects, self.max_objects)
        return scene, caption(scene, rng)

    def attributes(self, scene: Scene) -> torch.Tensor:
        out = torch.full((self.max_objects, 4), -1, dtype=torch.long)
        for k, obj in enumerate(scene.objects):
            out[k] = torch.tensor(obj.as_indices())
        return out

    def __getitem__(self, index: int) -> dict:
        scene, text = self.sample(index)
        pixels = torch.from_numpy(np.array(render(scene, self.image_size))).permute(2, 0, 1)
        item = {"image": pixels.float() / 127.5 - 1.0, "caption": text, "attributes": self.attributes(scene)}
        if self.negatives:  # its own random stream: the sample itself is the same with or without
            rng = np.random.default_rng([self.seed, SPLITS[self.split], index, 1])
            negative = counterfactual(scene, rng, self.negative_weights)
            item.update(negative_caption=caption(negative, rng), negative_attributes=self.attributes(negative))
        return item


class ShapesDataModule(L.LightningDataModule):
    """The default data: rendered on the fly in the loader workers. Under DDP Lightning's
    DistributedSampler gives each rank different indices."""

    def __init__(
        self,
        *,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 2,
        train_size: int = 100_000,
        val_size: int = 256,
        test_size: int = 2048,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 2,
        pin_memory: bool = False,
        negatives: bool = False,
        negative_weights: Sequence[float] | None = None,
        augment_policy: Sequence[str] = (),
        sample_prompts: Sequence[str] = (),
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "data")
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory, self.seed = pin_memory, seed
        self.sample_prompts = list(sample_prompts)
        self.augment_policy = list(augment_policy)  # read by model.augment: off, colour words must stay true
        kw = dict(image_size=image_size, seed=seed, min_objects=min_objects, max_objects=max_objects)
        self.datasets = {
            "train": ShapesDataset(split="train", length=train_size, negatives=negatives,
                                   negative_weights=negative_weights, **kw),
            "val": ShapesDataset(split="val", length=val_size, **kw),
            "test": ShapesDataset(split="test", length=test_size, **kw),
        }

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        """What is wrong with these constructor values (see ``lightning_modules/checks.py``)."""
        p = Problems(values, key)
        p.choice("image_size", ALLOWED_IMAGE_SIZES)
        p.number("batch_size", 2, integer=True)  # mismatched pairs need a second caption
        p.number("num_workers", 0, integer=True)
        for name in ("train_size", "val_size", "test_size"):
            p.number(name, 1, integer=True)
        weights = values.get("negative_weights")
        numbers = not isinstance(weights, (str, int, float)) and hasattr(weights, "__len__")
        p.need(weights is None or (numbers and len(weights) == len(ATTRIBUTES) and sum(weights) > 0
                                   and all(isinstance(w, (int, float)) and w >= 0 for w in weights)),
               "negative_weights", f"null, or {len(ATTRIBUTES)} non-negative numbers, not all 0: how often each of "
               f"{list(ATTRIBUTES)} is the attribute a negative caption changes")
        lo, hi = values.get("min_objects", 1), values.get("max_objects", 2)
        p.need(isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 2, "min_objects",
               f"with {key}.max_objects={hi!r}: need 1 <= min_objects <= max_objects <= 2")
        return p

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # training order from (seed, batches trained): a resumed run continues exactly (datamodules/resumable.py)
        sampler = ResumableSampler(self.datasets[split], shuffle=shuffle, seed=self.seed, drop_last=shuffle,
                                   position=batches_trained(self) if shuffle else None, batch_size=self.batch_size)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=4 if self.num_workers > 0 else None,  # batches queued per worker ahead of the step
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
