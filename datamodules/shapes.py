"""Procedural *shapes*: coloured shapes on black with template captions, built to measure whether a
model follows *language* or only replays the scenes it was trained on.

Each sample is a pure function of ``(seed, split, index)``: no download, no files, identical on
every machine and in every worker; its scene comes with it, so text alignment can be measured exactly.

What the words fix and what they leave open:

* an object has four attributes: shape, colour, size (a word: small | large) and position (a cell
  of a 3x3 grid); two objects never share a cell;
* a caption leaves each attribute open with probability ``open_probability`` (never all four):
  "a red shape on the left", "a star", "a small blue object". The renderer draws an open attribute
  at random, and no negative caption changes it;
* what no word fixes (the nuisance): rotation (uniform within +-30 degrees, so that no square turns
  into a diamond), the radius within its size word's range, and the centre within its cell.

Held out of training (``docs/shapes.md`` lists them):

* compositions: :data:`HELD_OUT_COLORS` (two colours of each shape) and :data:`HELD_OUT_CELLS`
  (one cell of each shape): no training image shows them and no training caption or negative names them;
* phrasings: :data:`UNSEEN_TEMPLATES` and the words of the ``UNSEEN_*`` tables appear only in val and test.

Val and test samples cycle over three subsets by index (``index % 3``, :data:`SUBSETS`): ``seen``
(a training composition in training words), ``unseen_composition`` (the object shows a held-out
shape-colour or shape-cell pair and the caption names both) and ``unseen_phrasing`` (a training
composition in an unseen template, with unseen words where the vocabulary has them).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from datamodules.resumable import ResumableDataModule, ResumableSampler
from gan_ga_utils.checks import Problems, check

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
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
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
ATTRIBUTES = ("shape", "color", "size", "position")
SUBSETS = ("seen", "unseen_composition", "unseen_phrasing")

# ---- the renderer's nuisance: what no word fixes
SIZE_RADIUS = {"small": (0.085, 0.105), "large": (0.135, 0.165)}  # radius range of each size word, fraction of the side
CELL_JITTER = 0.05  # the centre moves up to this far (fraction of the side) from its cell's centre, on each axis
MAX_ROTATION = math.pi / 6  # rotation is uniform in +-30 degrees: more would turn a square into a diamond
SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "diamond": 2, "star": 5, "hexagon": 6}  # rotations that look alike

# ---- compositions no training sample shows or names
HELD_OUT_COLORS = {"circle": ("red", "cyan"), "square": ("green", "purple"), "triangle": ("blue", "white"),
                   "diamond": ("yellow", "orange"), "star": ("cyan", "blue"), "hexagon": ("green", "yellow")}
HELD_OUT_CELLS = {"circle": "bottom right", "square": "top left", "triangle": "right", "diamond": "top",
                  "star": "bottom left", "hexagon": "center"}

# ---- words: training vocabulary, and the words only val and test use (unseen phrasing)
SHAPE_WORDS = {s: (s,) for s in SHAPES}
UNSEEN_SHAPE_WORDS = {"circle": ("disc",), "square": ("box",), "diamond": ("rhombus",)}
OPEN_SHAPE_WORDS = ("shape", "object")  # the noun of a caption that leaves the shape open
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
UNSEEN_SIZE_WORDS = {"small": ("tiny",), "large": ("huge",)}
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
UNSEEN_POSITION_PHRASES = {
    "top left": ("in the upper left",), "top": ("along the top edge",), "top right": ("in the upper right",),
    "left": ("toward the left",), "center": ("in the centre",), "right": ("toward the right",),
    "bottom left": ("in the lower left",), "bottom": ("along the bottom edge",), "bottom right": ("in the lower right",),
}
# (with a place, without one): {np} is the noun phrase ("a small red circle"), {where} the place
TEMPLATES = (
    ("{np} {where}", "{np}"),
    ("{where}, there is {np}", "there is {np}"),
    ("an image of {np} {where}", "an image of {np}"),
    ("{np} is {where}", "{np} on a black background"),
)
UNSEEN_TEMPLATES = (
    ("{where} you can see {np}", "you can see {np}"),
    ("a picture showing {np} {where}", "a picture showing {np}"),
    ("{np} placed {where}", "{np} placed somewhere"),
)
JOINERS, UNSEEN_JOINERS = (" and ", ", and "), (" as well as ",)  # two objects

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
class Pose:
    """The nuisance of one object: centre offset from its cell's centre and radius (fractions of the
    side), rotation (radians)."""

    dx: float = 0.0
    dy: float = 0.0
    radius: float | None = None  # None: the middle of its size word's range
    angle: float = 0.0


ALL_NAMED = frozenset(ATTRIBUTES)


@dataclass(frozen=True)
class Scene:
    """What is drawn (``objects`` with their ``poses``), which attributes of each object its caption
    names (``named``; empty: all of them) and the evaluation subset the caption belongs to."""

    objects: tuple[ShapeObject, ...]
    poses: tuple[Pose, ...] = ()
    named: tuple[frozenset, ...] = ()
    subset: str = "seen"

    def pose(self, k: int) -> Pose:
        return self.poses[k] if self.poses else Pose()

    def names(self, k: int) -> frozenset:
        return self.named[k] if self.named else ALL_NAMED

    @property
    def open(self) -> bool:
        return any(self.names(k) != ALL_NAMED for k in range(len(self.objects)))


def held_out_pairs(obj: ShapeObject) -> list[str]:
    """The attributes whose pairing with ``obj.shape`` is held out of training: ``color`` and/or ``position``."""
    out = []
    if obj.color in HELD_OUT_COLORS[obj.shape]:
        out.append("color")
    if obj.position == HELD_OUT_CELLS[obj.shape]:
        out.append("position")
    return out


def allowed(obj: ShapeObject) -> bool:
    """Whether training data may show (or name) this object: no held-out composition."""
    return not held_out_pairs(obj)


def draw_pose(rng: np.random.Generator, size: str) -> Pose:
    lo, hi = SIZE_RADIUS[size]
    dx, dy = rng.uniform(-CELL_JITTER, CELL_JITTER, size=2)
    return Pose(float(dx), float(dy), float(rng.uniform(lo, hi)), float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)))


def _draw_object(rng: np.random.Generator, cells: Sequence[int], training_only: bool) -> ShapeObject:
    """Uniform over (shape, colour, size, free cell), or over the allowed ones (by rejection)."""
    while True:
        obj = ShapeObject(SHAPES[rng.integers(len(SHAPES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
                          SIZES[rng.integers(len(SIZES))], POSITIONS[cells[rng.integers(len(cells))]])
        if not training_only or allowed(obj):
            return obj


def _held_out_object(rng: np.random.Generator) -> ShapeObject:
    """An object showing one held-out pair (shape-colour or shape-cell), its other attributes at random."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    if rng.random() < 0.5:
        color = HELD_OUT_COLORS[shape][rng.integers(2)]
        position = POSITIONS[rng.integers(len(POSITIONS))]
    else:
        color, position = COLOR_NAMES[rng.integers(len(COLOR_NAMES))], HELD_OUT_CELLS[shape]
    return ShapeObject(shape, color, SIZES[rng.integers(len(SIZES))], position)


def make_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = 2,
               compositions: str = "training") -> Scene:
    """Objects and poses. ``compositions``: ``training`` (allowed ones only), ``held_out`` (the first
    object shows a held-out pair, the others are allowed) or ``any`` (the oracle's training renders)."""
    n = int(rng.integers(min_objects, max_objects + 1))
    objects: list[ShapeObject] = []
    if compositions == "held_out":
        objects.append(_held_out_object(rng))
    while len(objects) < n:
        free = [c for c in range(len(POSITIONS)) if POSITIONS[c] not in {o.position for o in objects}]
        objects.append(_draw_object(rng, free, training_only=compositions != "any"))
    return Scene(tuple(objects), tuple(draw_pose(rng, o.size) for o in objects))


def choose_named(rng: np.random.Generator, scene: Scene, open_probability: float) -> Scene:
    """The scene with the attributes its caption names: each open with ``open_probability``, never
    all four; an unseen composition's held-out pair is always named."""
    named = []
    for k, obj in enumerate(scene.objects):
        draws = rng.random(len(ATTRIBUTES))
        names = {a for a, u in zip(ATTRIBUTES, draws) if u >= open_probability}
        if scene.subset == "unseen_composition" and k == 0:
            names |= {"shape", *held_out_pairs(obj)}
        if not names:
            names = {ATTRIBUTES[int(draws.argmax())]}
        named.append(frozenset(names))
    return replace(scene, named=tuple(named))


def redraw(scene: Scene, rng: np.random.Generator) -> Scene:
    """Another scene its caption describes as well: the open attributes drawn again as the data draws
    them (uniform over the allowed completions of an allowed object, free cells) and fresh poses."""
    while True:
        objects = []
        for k, obj in enumerate(scene.objects):
            fresh = _draw_object(rng, range(len(POSITIONS)), training_only=False)
            objects.append(ShapeObject(**{a: getattr(obj if a in scene.names(k) else fresh, a) for a in ATTRIBUTES}))
        cells = [o.position for o in objects]
        if len(set(cells)) == len(cells) and all(allowed(o) or not allowed(old) for o, old in zip(objects, scene.objects)):
            return replace(scene, objects=tuple(objects), poses=tuple(draw_pose(rng, o.size) for o in objects))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float = 0.0) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "square":
        s = r * 0.85
        points = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        points = ring(3, r * 1.1, -math.pi / 2)
    elif shape == "diamond":
        points = [(0.0, -r * 1.1), (r * 0.75, 0.0), (0.0, r * 1.1), (-r * 0.75, 0.0)]
    elif shape == "hexagon":
        points = ring(6, r, 0.0)
    elif shape == "star":
        outer, inner = ring(5, r * 1.15, -math.pi / 2), ring(5, r * 0.5, -math.pi / 2 + math.pi / 5)
        points = [p for pair in zip(outer, inner) for p in pair]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in points]


def object_centre(obj: ShapeObject, pose: Pose) -> tuple[float, float]:
    """Centre of an object, fractions of the side (x right, y down)."""
    cell = POSITIONS.index(obj.position)
    return ((cell % 3) + 0.5) / 3 + pose.dx, ((cell // 3) + 0.5) / 3 + pose.dy


def object_radius(obj: ShapeObject, pose: Pose) -> float:
    return pose.radius if pose.radius is not None else sum(SIZE_RADIUS[obj.size]) / 2


def render(scene: Scene, image_size: int) -> Image.Image:
    """Draw at ``SUPERSAMPLE`` times the size, then box-filter down (anti-aliased edges)."""
    side = image_size * SUPERSAMPLE
    image = Image.new("RGB", (side, side), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for k, obj in enumerate(scene.objects):
        pose = scene.pose(k)
        (cx, cy), r = object_centre(obj, pose), object_radius(obj, pose) * side
        cx, cy = cx * side, cy * side
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLORS[obj.color])
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r, pose.angle), fill=COLORS[obj.color])
    return image.resize((image_size, image_size), Image.Resampling.BOX)


def render_tensor(scene: Scene, image_size: int) -> torch.Tensor:
    """:func:`render` as a [3, S, S] float tensor in [-1, 1], as the data set yields images."""
    return torch.from_numpy(np.array(render(scene, image_size))).permute(2, 0, 1).float() / 127.5 - 1.0


def counterfactual(scene: Scene, rng: np.random.Generator, weights: Sequence[float] | None = None,
                   training_only: bool = True) -> Scene:
    """The scene with exactly one *named* attribute of one object changed: its caption is wrong in one
    word (or phrase), the hardest mismatched caption for a discriminator that must read every word.
    An open attribute is never changed (its caption would still be true). ``weights`` (one per
    :data:`ATTRIBUTES`, default equal) set how often each attribute is the one changed, among the
    named ones; ``training_only``: the changed object stays an allowed composition (training
    negatives never name a held-out one)."""
    objects = list(scene.objects)
    base = np.ones(len(ATTRIBUTES)) if weights is None else np.asarray(weights, dtype=float)
    for k in (int(i) for i in rng.permutation(len(objects))):
        obj, names = objects[k], scene.names(k)
        p = np.array([w if a in names else 0.0 for a, w in zip(ATTRIBUTES, base)])
        if p.sum() <= 0:  # the weights rule out every named attribute: any named one
            p = np.array([1.0 if a in names else 0.0 for a in ATTRIBUTES])
        while p.sum() > 0:
            i = int(rng.choice(len(ATTRIBUTES), p=p / p.sum()))
            attribute = ATTRIBUTES[i]
            if attribute == "position":
                values = [c for c in POSITIONS if c not in {o.position for o in objects}]
            else:
                values = [v for v in {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZES}[attribute]
                          if v != getattr(obj, attribute)]
            options = [replace(obj, **{attribute: v}) for v in values]
            options = [o for o in options if allowed(o)] if training_only else options
            if options:
                objects[k] = options[int(rng.integers(len(options)))]
                return replace(scene, objects=tuple(objects))
            p[i] = 0.0
    raise ValueError(f"no one-attribute change of {scene} keeps it an allowed composition")


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _word(table: dict, unseen_table: dict, key: str, rng: np.random.Generator, unseen: bool) -> str:
    """A word for ``key``: from the training table, or (``unseen``, half the time where there is one)
    from the unseen one."""
    if unseen and key in unseen_table and rng.random() < 0.5:
        return _choice(rng, unseen_table[key])
    return _choice(rng, table[key])


def with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def noun_phrase(obj: ShapeObject, names: frozenset, rng: np.random.Generator, unseen: bool = False) -> str:
    """``a [size] [colour] shape-word``, each part only when named; an open shape is "shape" or "object"."""
    words = [_word(SIZE_WORDS, UNSEEN_SIZE_WORDS, obj.size, rng, unseen)] if "size" in names else []
    words += [obj.color] if "color" in names else []
    words.append(_word(SHAPE_WORDS, UNSEEN_SHAPE_WORDS, obj.shape, rng, unseen) if "shape" in names
                 else _choice(rng, OPEN_SHAPE_WORDS))
    return with_article(" ".join(words))


def place(obj: ShapeObject, names: frozenset, rng: np.random.Generator, unseen: bool = False) -> str | None:
    return _word(POSITION_PHRASES, UNSEEN_POSITION_PHRASES, obj.position, rng, unseen) if "position" in names else None


def describe(obj: ShapeObject, names: frozenset, rng: np.random.Generator, unseen: bool = False) -> str:
    """One object's caption in a template of the training set (or, ``unseen``, of val/test only)."""
    with_place, without_place = _choice(rng, UNSEEN_TEMPLATES if unseen else TEMPLATES)
    phrase, where = noun_phrase(obj, names, rng, unseen), place(obj, names, rng, unseen)
    return with_place.format(np=phrase, where=where) if where else without_place.format(np=phrase)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    unseen = scene.subset == "unseen_phrasing"
    if len(scene.objects) == 1:
        return describe(scene.objects[0], scene.names(0), rng, unseen)
    parts = [" ".join(p for p in (noun_phrase(o, scene.names(k), rng, unseen), place(o, scene.names(k), rng, unseen))
                      if p) for k, o in enumerate(scene.objects)]
    return _choice(rng, UNSEEN_JOINERS if unseen else JOINERS).join(parts)


def open_distribution(scene: Scene, attribute: str, k: int = 0) -> np.ndarray:
    """How the data draws an open ``attribute`` of object ``k`` given what its caption names: uniform
    over the allowed completions (exact, by enumeration), as probabilities over that attribute's values.
    Cells taken by the scene's other objects are excluded."""
    values = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZES, "position": POSITIONS}
    obj, names = scene.objects[k], scene.names(k)
    taken = {o.position for j, o in enumerate(scene.objects) if j != k}
    counts = np.zeros(len(values[attribute]))
    choices = [values[a] if a not in names else (getattr(obj, a),) for a in ATTRIBUTES]
    for combo in np.array(np.meshgrid(*[range(len(c)) for c in choices], indexing="ij")).reshape(4, -1).T:
        candidate = ShapeObject(*(c[int(i)] for c, i in zip(choices, combo)))
        if candidate.position in taken or (allowed(obj) and not allowed(candidate)):
            continue
        counts[values[attribute].index(getattr(candidate, attribute))] += 1
    return counts / counts.sum()


class ShapesDataset(Dataset):
    """``dataset[i]`` -> ``{"image": [3,S,S] in [-1,1], "caption": str, "attributes": [max_objects,4]
    long, "named": [max_objects,4] bool}``.

    ``attributes[k] = (shape, colour, size, position)`` indices into the module's tuples (what is
    drawn); rows of absent objects are -1. ``named[k]``: which of them the caption names (an open
    attribute is drawn at random). With ``negatives`` the sample also has ``negative_caption`` and
    ``negative_attributes``: a caption of the :func:`counterfactual` scene (one named attribute of
    one object changed), which the GAN shows D as the mismatched caption of the image.
    """

    def __init__(self, *, split: str, length: int, image_size: int = 32, seed: int = 0,
                 min_objects: int = 1, max_objects: int = 2, negatives: bool = False,
                 negative_weights: Sequence[float] | None = None, open_probability: float = 0.2,
                 redraws: int = 0):
        if split not in SPLITS:
            raise ValueError(f"shapes split {split!r} is not one of {tuple(SPLITS)}")
        self.split, self.length, self.image_size, self.seed = split, length, image_size, seed
        self.min_objects, self.max_objects = min_objects, max_objects
        self.negatives = negatives
        self.negative_weights = None if negative_weights is None else tuple(float(w) for w in negative_weights)
        self.open_probability = float(open_probability)
        self.redraws = int(redraws)

    def with_length(self, length: int) -> ShapesDataset:
        """The same data set (same class and settings) with ``length`` samples: evaluation's longer split."""
        other = copy.copy(self)
        other.length = length
        return other

    def subset_of(self, index: int) -> str:
        return "seen" if self.split == "train" else SUBSETS[index % len(SUBSETS)]

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[Scene, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        subset = self.subset_of(index)
        scene = make_scene(rng, self.min_objects, self.max_objects,
                           "held_out" if subset == "unseen_composition" else "training")
        scene = choose_named(rng, replace(scene, subset=subset), self.open_probability)
        return scene, caption(scene, rng)

    def attributes(self, scene: Scene) -> torch.Tensor:
        out = torch.full((self.max_objects, 4), -1, dtype=torch.long)
        for k, obj in enumerate(scene.objects):
            out[k] = torch.tensor(obj.as_indices())
        return out

    def named(self, scene: Scene) -> torch.Tensor:
        out = torch.ones((self.max_objects, 4), dtype=torch.bool)  # absent objects: "named absent"
        for k in range(len(scene.objects)):
            out[k] = torch.tensor([a in scene.names(k) for a in ATTRIBUTES])
        return out

    def __getitem__(self, index: int) -> dict:
        scene, text = self.sample(index)
        item = {"image": render_tensor(scene, self.image_size), "caption": text, "attributes": self.attributes(scene),
                "named": self.named(scene)}
        if self.negatives:  # its own random stream: the sample itself is the same with or without
            rng = np.random.default_rng([self.seed, SPLITS[self.split], index, 1])
            negative = counterfactual(scene, rng, self.negative_weights)
            item.update(negative_caption=caption(negative, rng), negative_attributes=self.attributes(negative))
        if self.redraws:  # other scenes the caption describes as well: its own stream too
            rng = np.random.default_rng([self.seed, SPLITS[self.split], index, 2])
            item["redraws"] = torch.stack([render_tensor(redraw(scene, rng), self.image_size) for _ in range(self.redraws)])
        return item


class ShapesDataModule(ResumableDataModule):
    """The default data: rendered on the fly in the loader workers. Under DDP Lightning's
    DistributedSampler gives each rank different indices."""

    dataset_class = ShapesDataset  # datamodules/shapes_pairs.py: the relation scenes' subclass

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
        open_probability: float = 0.2,
        redraws: int = 0,
        augment_policy: Sequence[str] = (),
        degrade_policy: str | None = "round",
        sample_prompts: Sequence[str] = (),
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "data")
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory, self.seed = pin_memory, seed
        self.sample_prompts = list(sample_prompts)
        # augment_policy and degrade_policy are the data set's choices that the model reads from the config
        # (model.augment.policy, model.degraded_policy: ${oc.select:data...}); checked here, kept there
        kw = dict(image_size=image_size, seed=seed, min_objects=min_objects, max_objects=max_objects,
                  open_probability=open_probability)
        self.datasets = {
            "train": self.dataset_class(split="train", length=train_size, negatives=negatives,
                                        negative_weights=negative_weights, redraws=redraws, **kw),
            "val": self.dataset_class(split="val", length=val_size, **kw),
            "test": self.dataset_class(split="test", length=test_size, **kw),
        }

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
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
        p.number("open_probability", 0, 1, high_open=True)
        p.number("redraws", 0, integer=True)
        lo, hi = values.get("min_objects", 1), values.get("max_objects", 2)
        p.need(isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 2, "min_objects",
               f"with {key}.max_objects={hi!r}: need 1 <= min_objects <= max_objects <= 2")
        return p

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # training order from (seed, batches trained): a resumed run continues exactly (datamodules/resumable.py)
        sampler = ResumableSampler(self.datasets[split], shuffle=shuffle, seed=self.seed, drop_last=shuffle,
                                   position=self.training_position if shuffle else None, batch_size=self.batch_size)
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
