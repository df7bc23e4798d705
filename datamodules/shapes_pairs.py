"""Two objects and how they relate: "a red circle to the left of a blue star".

The shapes data (``datamodules/shapes.py``) with exactly two objects per image and a caption that
names one **relation** between them instead of absolute cells. ``objects[0]`` is the subject,
``objects[1]`` the reference: the caption says "subject <relation> reference".

* relations (:data:`RELATIONS`): left of, right of, above, below. A relation holds when the two
  cells differ in the relation's axis in its direction (the subject's column left of the
  reference's column for "left of"), so the centres are at least a third of the side minus the
  jitter apart in that axis; the absolute cells are otherwise free (uniform over the cell pairs
  where the relation holds), so the noise has real positions to choose;
* the descriptions: shape, colour and size as in the one-object data, each left open with
  ``open_probability`` (never all three), and always telling the two objects apart (each
  description names an attribute in which its object differs from the other one), so a caption
  fits its image in one way only;
* held out of training (:data:`HELD_OUT_FACTS`): six (shape, relation, shape) facts, e.g. a circle
  left of a square. No training image shows one (in either phrasing: "a square to the right of a
  circle" is the same fact), and no training caption or negative names one; the subset
  ``unseen_composition`` of val and test shows one and names both shapes and the relation;
* unseen phrasings: :data:`UNSEEN_PAIR_TEMPLATES`, :data:`UNSEEN_RELATION_PHRASES` and the unseen
  words of the one-object data, in val and test only;
* negatives (:func:`pair_negative`), each false of the image: **binding** (an attribute both
  descriptions name swapped between them: "a blue circle to the left of a red star") or
  **relation** (the relation flipped, or the two noun phrases swapped).

:class:`PairsShapesDataModule` is the shapes data module with these datasets
(``conf/experiment/shapes_pairs.yaml`` sets ``data._target_`` to it); the pairs metrics
(``lightning_modules/metrics/pairs.py``) score generated images with :func:`judge`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from datamodules import shapes
from datamodules.shapes import COLOR_NAMES, SHAPES, SIZES, Scene, ShapeObject
from gan_ga_utils.checks import Problems, check

RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# the axis a relation reads (0: column, 1: row) and the sign of subject minus reference in it
AXIS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
DESCRIBED = ("shape", "color", "size")  # what a description may name (no cell: the relation places the objects)

RELATION_PHRASES = {"left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
                    "above": ("above", "over"), "below": ("below", "under")}
UNSEEN_RELATION_PHRASES = {"left of": ("on the left side of",), "right of": ("on the right side of",),
                           "above": ("higher up than",), "below": ("lower down than",)}
# {a}: the subject's noun phrase, {rel}: the relation, {b}: the reference's noun phrase
PAIR_TEMPLATES = ("{a} {rel} {b}", "there is {a} {rel} {b}", "an image of {a} {rel} {b}")
UNSEEN_PAIR_TEMPLATES = ("you can see {a} {rel} {b}", "a picture showing {a} {rel} {b}")
DEFINITE_PROBABILITY = 0.3  # the reference reads "the ..." instead of "a ..." this often

# (shape, relation, shape) facts no training image shows: each shape once in each axis
HELD_OUT_FACTS = (("circle", "left of", "square"), ("triangle", "left of", "star"), ("hexagon", "left of", "diamond"),
                  ("square", "above", "triangle"), ("diamond", "above", "circle"), ("star", "above", "hexagon"))


@dataclass(frozen=True)
class RelationScene(Scene):
    """A two-object :class:`~datamodules.shapes.Scene` whose caption says ``objects[0] <relation> objects[1]``."""

    relation: str = "left of"


def holds(relation: str, subject_cell: int, reference_cell: int) -> bool:
    """Whether ``relation`` holds between two cells (indices into ``shapes.POSITIONS``)."""
    axis, sign = AXIS[relation]
    a, b = divmod(subject_cell, 3)[::-1], divmod(reference_cell, 3)[::-1]  # (column, row)
    return (a[axis] - b[axis]) * sign > 0


def facts(objects: Sequence[ShapeObject]) -> set[tuple[str, str, str]]:
    """Every (shape, left of | above, shape) fact an image of these objects shows (right of and below
    read as their converse)."""
    out = set()
    for x, y in itertools.permutations(objects, 2):
        for relation in ("left of", "above"):
            if holds(relation, shapes.POSITIONS.index(x.position), shapes.POSITIONS.index(y.position)):
                out.add((x.shape, relation, y.shape))
    return out


def canonical(subject: str, relation: str, reference: str) -> tuple[str, str, str]:
    """The fact a (shape, relation, shape) statement makes, in the left of / above form."""
    return (subject, relation, reference) if relation in ("left of", "above") else (reference, OPPOSITE[relation],
                                                                                    subject)


def named_fact(scene: RelationScene) -> tuple[str, str, str] | None:
    """The fact the caption states when it names both shapes, else None."""
    if all("shape" in scene.names(k) for k in range(2)):
        return canonical(scene.objects[0].shape, scene.relation, scene.objects[1].shape)
    return None


def shows_held_out(objects: Sequence[ShapeObject]) -> bool:
    return bool(facts(objects) & set(HELD_OUT_FACTS))


def _cells(rng: np.random.Generator, relation: str) -> tuple[str, str]:
    pairs = [(a, b) for a in range(9) for b in range(9) if a != b and holds(relation, a, b)]
    a, b = pairs[int(rng.integers(len(pairs)))]
    return shapes.POSITIONS[a], shapes.POSITIONS[b]


def make_pair_scene(rng: np.random.Generator, compositions: str = "training") -> RelationScene:
    """Two objects with a relation between them. ``compositions``: ``training`` (no held-out fact
    shown), ``held_out`` (the caption's relation is a held-out fact, either way round) or ``any``."""
    while True:
        if compositions == "held_out":
            x, relation, y = HELD_OUT_FACTS[int(rng.integers(len(HELD_OUT_FACTS)))]
            if rng.random() < 0.5:
                x, relation, y = y, OPPOSITE[relation], x
            kinds = (x, y)
        else:
            relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
            kinds = tuple(SHAPES[int(rng.integers(len(SHAPES)))] for _ in range(2))
        cells = _cells(rng, relation)
        objects = tuple(ShapeObject(kind, COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
                                    SIZES[int(rng.integers(len(SIZES)))], cell) for kind, cell in zip(kinds, cells))
        if compositions == "training" and shows_held_out(objects):
            continue
        return RelationScene(objects, tuple(shapes.draw_pose(rng, o.size) for o in objects), relation=relation)


def fits(obj: ShapeObject, names: frozenset, other: ShapeObject) -> bool:
    """Whether a description of ``obj`` naming ``names`` is also true of ``other``."""
    return all(getattr(obj, a) == getattr(other, a) for a in DESCRIBED if a in names)


def choose_pair_names(rng: np.random.Generator, scene: RelationScene, open_probability: float) -> RelationScene | None:
    """What each description names (each of :data:`DESCRIBED` open with ``open_probability``, never
    all; both shapes named in ``unseen_composition``); None when the descriptions do not tell the
    objects apart (the caller draws again)."""
    named = []
    for _ in scene.objects:
        draws = rng.random(len(DESCRIBED))
        names = {a for a, u in zip(DESCRIBED, draws) if u >= open_probability}
        if scene.subset == "unseen_composition":
            names.add("shape")
        named.append(frozenset(names or {DESCRIBED[int(draws.argmax())]}))
    a, b = scene.objects
    if fits(a, named[0], b) or fits(b, named[1], a):
        return None
    return replace(scene, named=tuple(named))


def sample_pair(rng: np.random.Generator, subset: str, open_probability: float) -> tuple[RelationScene, str]:
    """One sample: the scene (with what its caption names) and the caption."""
    while True:
        scene = make_pair_scene(rng, "held_out" if subset == "unseen_composition" else "training")
        scene = choose_pair_names(rng, replace(scene, subset=subset), open_probability)
        if scene is not None:
            return scene, pair_caption(scene, rng)


def pair_caption(scene: RelationScene, rng: np.random.Generator) -> str:
    unseen = scene.subset == "unseen_phrasing"
    template = shapes._choice(rng, UNSEEN_PAIR_TEMPLATES if unseen else PAIR_TEMPLATES)
    a = shapes.noun_phrase(scene.objects[0], scene.names(0), rng, unseen)
    b = shapes.noun_phrase(scene.objects[1], scene.names(1), rng, unseen)
    if rng.random() < DEFINITE_PROBABILITY:
        b = "the " + b.split(" ", 1)[1]
    rel = shapes._word(RELATION_PHRASES, UNSEEN_RELATION_PHRASES, scene.relation, rng, unseen)
    return template.format(a=a, rel=rel, b=b)


NEGATIVE_KINDS = ("binding", "flip", "swap")


def negative_of(scene: RelationScene, kind: str, attribute: str | None = None) -> RelationScene:
    """The scene a negative caption describes: ``binding`` (``attribute`` swapped between the two
    descriptions), ``flip`` (the opposite relation) or ``swap`` (the noun phrases exchanged)."""
    a, b = scene.objects
    if kind == "binding":
        return replace(scene, objects=(replace(a, **{attribute: getattr(b, attribute)}),
                                       replace(b, **{attribute: getattr(a, attribute)})))
    if kind == "flip":
        return replace(scene, relation=OPPOSITE[scene.relation])
    if kind == "swap":
        return replace(scene, objects=(b, a), poses=scene.poses[::-1], named=scene.named[::-1])
    raise ValueError(f"unknown negative kind {kind!r}")


def pair_negative(scene: RelationScene, rng: np.random.Generator, training_only: bool = True) -> RelationScene:
    """A caption's scene false of the image: a binding negative (half the time, where the two
    descriptions name an attribute with different values) or a relation negative (flip or swap);
    ``training_only``: never one that names a held-out fact (when each of those does, e.g. for "a
    triangle to the right of a star", one named attribute of one object is changed instead)."""
    a, b = scene.objects
    swappable = [x for x in DESCRIBED if x in scene.names(0) and x in scene.names(1) and getattr(a, x) != getattr(b, x)]
    binding = [("binding", swappable[int(i)]) for i in rng.permutation(len(swappable))]
    relation = [(("flip", "swap")[int(i)], None) for i in rng.permutation(2)]
    order = binding + relation if binding and rng.random() < 0.5 else relation + binding
    for kind, attribute in order:
        negative = negative_of(scene, kind, attribute)
        if not training_only or named_fact(negative) not in HELD_OUT_FACTS:
            return negative
    for k in (int(i) for i in rng.permutation(2)):  # every one names a held-out fact: one named attribute changed
        for attribute in (DESCRIBED[int(i)] for i in rng.permutation(len(DESCRIBED))):
            if attribute not in scene.names(k):
                continue
            values = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZES}[attribute]
            for value in (values[int(i)] for i in rng.permutation(len(values))):
                objects = list(scene.objects)
                objects[k] = replace(objects[k], **{attribute: value})
                negative = replace(scene, objects=tuple(objects))
                if value != getattr(scene.objects[k], attribute) and named_fact(negative) not in HELD_OUT_FACTS:
                    return negative
    raise ValueError(f"no negative of {scene} names only training facts")


def reading(scene: Scene) -> list[tuple[int, int, int, int]]:
    """The exact reading of a scene's image: (shape, colour, size, cell) per object."""
    return [tuple(o.as_indices()) for o in scene.objects]


def judge(said: RelationScene, found: Sequence[Sequence[int]]) -> dict[str, bool]:
    """Whether the objects ``found`` in an image ((shape, colour, size, cell) indices each) show the
    caption of ``said``:

    * ``count``: exactly two objects;
    * ``binding``: each description on a different found object that carries every attribute it names;
    * ``relation``: the relation holds between the two found objects the descriptions are paired
      with (the pairing that fits most named attributes, then one where the relation holds);
    * ``scene``: all three.
    """
    wanted = [(said.objects[k].as_indices()[:3], [DESCRIBED.index(a) for a in DESCRIBED if a in said.names(k)])
              for k in range(2)]

    def fit(k: int, f: Sequence[int]) -> int:
        truth, named = wanted[k]
        return sum(int(f[j] == truth[j]) for j in named)

    best = None  # (named attributes right, relation holds, both fully right)
    for p, q in itertools.permutations(range(len(found)), 2):
        right = fit(0, found[p]) + fit(1, found[q])
        full = right == len(wanted[0][1]) + len(wanted[1][1])
        key = (right, holds(said.relation, int(found[p][3]), int(found[q][3])), full)
        best = key if best is None or key > best else best
    count = len(found) == 2
    binding = best is not None and best[2]
    relation = best is not None and best[1]
    return {"count": count, "binding": binding, "relation": relation, "scene": count and binding and relation}


def true_of(said: RelationScene, shown: Scene) -> bool:
    """Whether the caption of ``said`` is true of the image of ``shown`` (exact reading)."""
    return judge(said, reading(shown))["scene"]


NO_RELATION = -1  # ``relation`` of a one-object training sample (``single_fraction``)


class PairsDataset(shapes.ShapesDataset):
    """:class:`~datamodules.shapes.ShapesDataset` of relation scenes: the same keys, plus
    ``relation`` (index into :data:`RELATIONS`) and, with ``negatives``, ``negative_relation``.
    ``attributes[k]`` holds each object's cell, which the caption never names (``named[k]`` is
    False there).

    ``single_fraction``: in the train split only, this share of the samples (chosen per index) is a
    one-object scene of the one-object data instead, captioned as there ("a small red circle on
    the left"), with its one-object negative and ``relation`` :data:`NO_RELATION`: what each word
    draws, learned where one object leaves no doubt which object a word is about. Val and test
    stay relation scenes, so every pairs metric reads relation scenes only."""

    def __init__(self, *, single_fraction: float = 0.0, **kwargs):
        kwargs.setdefault("min_objects", 2)
        kwargs.setdefault("max_objects", 2)
        super().__init__(**kwargs)
        self.single_fraction = float(single_fraction) if self.split == "train" else 0.0

    def single(self, index: int) -> bool:
        """Whether training sample ``index`` is a one-object scene (its own random stream)."""
        return self.single_fraction > 0 and bool(
            np.random.default_rng([self.seed, shapes.SPLITS[self.split], index, 3]).random() < self.single_fraction)

    def sample(self, index: int) -> tuple[Scene, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, shapes.SPLITS[self.split], index])
        if self.single(index):  # as the one-object data's training split (its negatives need that)
            scene = shapes.make_scene(rng, 1, 1, "training")
            scene = shapes.choose_named(rng, replace(scene, subset="seen"), self.open_probability)
            return scene, shapes.caption(scene, rng)
        return sample_pair(rng, self.subset_of(index), self.open_probability)

    def __getitem__(self, index: int) -> dict:
        if self.single(index):
            item = super().__getitem__(index)  # the one-object item: image, caption, its counterfactual
            item["relation"] = torch.tensor(NO_RELATION)
            if self.negatives:
                item["negative_relation"] = torch.tensor(NO_RELATION)
            return item
        scene, text = self.sample(index)
        pixels = torch.from_numpy(np.array(shapes.render(scene, self.image_size))).permute(2, 0, 1)
        item = {"image": pixels.float() / 127.5 - 1.0, "caption": text, "attributes": self.attributes(scene),
                "named": self.named(scene), "relation": torch.tensor(RELATIONS.index(scene.relation))}
        if self.negatives:
            rng = np.random.default_rng([self.seed, shapes.SPLITS[self.split], index, 1])
            negative = pair_negative(scene, rng)
            item.update(negative_caption=pair_caption(negative, rng), negative_attributes=self.attributes(negative),
                        negative_relation=torch.tensor(RELATIONS.index(negative.relation)))
        return item


class PairsShapesDataModule(shapes.ShapesDataModule):
    """The shapes data module with two objects and a relation caption per image (two objects always:
    ``min_objects`` and ``max_objects`` must be 2). ``negative_weights`` is not read (see :func:`pair_negative`)."""

    dataset_class = PairsDataset

    def __init__(self, *, min_objects: int = 2, max_objects: int = 2, single_fraction: float = 0.0, **kwargs):
        check(type(self), {"single_fraction": single_fraction}, "data")  # the rest: ShapesDataModule's check
        super().__init__(min_objects=min_objects, max_objects=max_objects, **kwargs)
        self.datasets["train"].single_fraction = float(single_fraction)

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        problems = super().config_problems(values, key)
        lo, hi = values.get("min_objects", 2), values.get("max_objects", 2)
        if (lo, hi) != (2, 2):
            problems.append(f"{key}.min_objects={lo!r}, {key}.max_objects={hi!r}: relation scenes have two objects; "
                            "set both to 2")
        p = Problems(values, key)
        p.number("single_fraction", 0, 1, high_open=True)  # the share of one-object training samples
        return problems + p
