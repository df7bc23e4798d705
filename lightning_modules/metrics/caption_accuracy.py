"""Shapes caption accuracy and diversity: does a generated image show what its caption says, and
do the images of one caption vary what the caption leaves open?

The shapes oracle (``lightning_modules/metrics/shapes_oracle.py``) reads an image back into per-cell objects
(present, shape, colour, size on the 3x3 grid, and the pose: offset in the cell, radius, rotation);
the scores compare that reading with the scene the caption describes. Only what a caption names is
scored: an open attribute is free. Val and test captions come in three subsets (seen,
unseen_composition, unseen_phrasing: ``datamodules/shapes.py``), scored apart.

Diversity is measured on two blocks of prompts appended to the evaluation set
(:func:`diversity_prompts`), each prompt generated :data:`PER_PROMPT` times with different noise:
``open`` prompts (seen, one object, at least one attribute open) and ``spread`` prompts (seen, one
object, every attribute named). The oracle's 256-d features also give a Frechet distance between
real and generated images (``oracle_fd``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from datamodules import shapes
from datamodules.shapes import ATTRIBUTES, SUBSETS, Scene
from lightning_modules.metrics.frechet import frechet_distance
from lightning_modules.metrics.shapes_oracle import HEADS, ShapesOracle, decode_pose, read_scenes

PROMPTS = 8  # prompts per diversity block
PER_PROMPT = 64  # samples of each prompt
MIN_RIGHT = 8  # a spread prompt counts when at least this many of its samples show the caption
PROTOCOL = {
    "reader": "shapes oracle (lightning_modules/metrics/shapes_oracle.py): 3x3 cells, 32x32 input (area resize)",
    "caption": "fraction of images with every named attribute of every described object right (a named position: "
               "the object at its cell) and as many detected objects as described objects",
    "shape/color/size": "fraction of named attributes right on the generated object paired with their object (the "
                        "one at its cell, else the most confident unpaired detected object; none left: wrong)",
    "position": "fraction of named positions at which an object is detected",
    "subsets": "caption_accuracy/<subset>/...: the same on the split's captions of that subset only: seen (training "
               "compositions and words), unseen_composition (a held-out shape-colour or shape-cell pair, named), "
               "unseen_phrasing (training compositions in templates and words used only in val and test); "
               "caption_accuracy/<value> without a subset: all captions",
    "real_reference": "caption accuracy of the real renders of the same captions (the ceiling)",
    "oracle_fd": "Frechet distance (float64) between the oracle's 256-d features of real and generated images",
    "diversity/open_tv": f"{PROMPTS} seen one-object prompts that leave attributes open, {PER_PROMPT} samples each: "
                         "for every open attribute, the total-variation distance between the oracle-read distribution "
                         "of its values over the samples (no object read: a value outside the support) and the data's "
                         "exact distribution given the named attributes (uniform over the allowed completions), minus "
                         f"the expected distance of {PER_PROMPT} exact draws from the data's distribution (the "
                         "finite-sample floor, in diversity/open_tv_floor), clipped at 0; averaged over prompts and "
                         "attributes. 0: as varied as the data. diversity/open_tv_raw: before the floor is removed",
    "diversity/spread_ratio": f"{PROMPTS} seen one-object prompts naming every attribute, {PER_PROMPT} samples each, "
                              "samples whose oracle reading shows the caption only (so that noise never counts as "
                              "diversity; a prompt with fewer than "
                              f"{MIN_RIGHT} counts 0): per prompt the std of the object's x and y offset in its cell and "
                              "of its radius, and the circular variance of its rotation phase (not for circles), each "
                              "over the same quantity of real renders of the caption; averaged over quantities, then "
                              "prompts. 1: as varied as the data",
    "diversity/open_caption, diversity/spread_caption": "caption accuracy of the samples of each block",
}


@torch.no_grad()
def oracle_readout(oracle: ShapesOracle, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-sample tensors (they can be gathered across processes): ``oracle_pred`` long [N, 9, 4]
    (present, shape, colour, size per cell), ``oracle_conf`` [N, 9], ``oracle_pose`` [N, 9, 5],
    ``oracle_feat`` float64 [N, 256]."""
    device = next(oracle.parameters()).device
    preds = read_scenes(oracle, images.to(device), batch_size)
    feats = [oracle.features(images[s : s + batch_size].to(device).float()).double().cpu()
             for s in range(0, images.shape[0], batch_size)]
    return {"oracle_pred": torch.stack([preds[k] for k in HEADS], dim=-1), "oracle_conf": preds["confidence"],
            "oracle_pose": preds["pose"], "oracle_feat": torch.cat(feats)}


def predictions(readout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`oracle_readout`'s tensors -> the per-head dict :func:`scores_from_predictions` reads."""
    labels = readout["oracle_pred"]
    out = {**{k: labels[..., i] for i, k in enumerate(HEADS)}, "confidence": readout["oracle_conf"]}
    if "oracle_pose" in readout:
        out["pose"] = readout["oracle_pose"]
    return out


def _rows(pred: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in pred.items()}


def caption_accuracy(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], scenes: Sequence[Scene],
                     blocks: dict[str, tuple[int, int]] | None = None) -> dict[str, float]:
    """``caption_accuracy/...`` overall and per subset, ``caption_accuracy/real_reference``,
    ``oracle_fd`` and (when the evaluation set has its ``blocks``) ``diversity/...``, from both
    sets' :func:`oracle_readout`."""
    start, stop = (blocks or {}).get("main", (0, len(scenes)))
    main = slice(start, stop)
    f_pred, r_pred = predictions(fake), predictions(real)
    out = {f"caption_accuracy/{k}": v for k, v in scores_from_predictions(_rows(f_pred, main), scenes[main]).items()}
    out["caption_accuracy/real_reference"] = scores_from_predictions(_rows(r_pred, main), scenes[main])["caption"]
    for name in SUBSETS:
        picked = [i for i in range(start, stop) if scenes[i].subset == name]
        if not picked:
            continue
        part = [scenes[i] for i in picked]
        scores = scores_from_predictions(_rows(f_pred, picked), part)
        out.update({f"caption_accuracy/{name}/{k}": v for k, v in scores.items()})
        out[f"caption_accuracy/{name}/real_reference"] = scores_from_predictions(_rows(r_pred, picked), part)["caption"]
    out["oracle_fd"] = frechet_distance(real["oracle_feat"][main], fake["oracle_feat"][main])
    if blocks and "open" in blocks and "spread" in blocks:
        out.update(diversity(f_pred, r_pred, scenes, blocks))
    return out


def caption_scores(oracle: ShapesOracle, images: torch.Tensor, scenes: Sequence[Scene]) -> dict[str, float]:
    """How often the images show what their scenes' captions say (see :data:`PROTOCOL`): a red
    circle drawn in the wrong place still counts as red; a described object with no generated object
    left to pair with is wrong on every attribute, so a blank image scores 0."""
    return scores_from_predictions(read_scenes(oracle, images), scenes)


def _pairs(confidence: torch.Tensor, detected: torch.Tensor, scene: Scene) -> list[int | None]:
    """For one image: the generated-object cell paired with each described object: its own cell when
    its position is named and an object is detected there, else the most confident detected cell
    left; None when none is left."""
    cells = [o.as_indices()[3] for o in scene.objects]
    ranked = [int(c) for c in confidence.argsort(descending=True) if detected[c]]
    paired = {k: c for k, c in enumerate(cells) if "position" in scene.names(k) and detected[c]}
    free = [c for c in ranked if c not in paired.values()]
    return [paired[k] if k in paired else (free.pop(0) if free else None) for k in range(len(cells))]


def _judge(pred: dict[str, torch.Tensor], i: int, scene: Scene) -> tuple[dict[str, list[int]], bool, list]:
    """One image: per attribute, [right, named] counts; whether the whole caption is shown; the pairing."""
    detected = pred["present"][i].bool()
    pairs = _pairs(pred["confidence"][i], detected, scene)
    counts = {a: [0, 0] for a in ATTRIBUTES}
    whole = int(detected.sum()) == len(scene.objects)
    for k, (obj, source) in enumerate(zip(scene.objects, pairs)):
        truth = obj.as_indices()
        for j, attribute in enumerate(ATTRIBUTES):
            if attribute not in scene.names(k):
                continue
            if attribute == "position":
                right = source is not None and source == truth[3]
            else:
                right = source is not None and int(pred[attribute][i, source]) == truth[j]
            counts[attribute][0] += int(right)
            counts[attribute][1] += 1
            whole = whole and right
        whole = whole and source is not None
    return counts, whole, pairs


def scores_from_predictions(pred: dict[str, torch.Tensor], scenes: Sequence[Scene]) -> dict[str, float]:
    """:func:`caption_scores` from per-cell predictions (e.g. gathered from several processes)."""
    right = {a: 0 for a in ATTRIBUTES}
    named = {a: 0 for a in ATTRIBUTES}
    whole = 0
    for i, scene in enumerate(scenes):
        counts, ok, _ = _judge(pred, i, scene)
        whole += int(ok)
        for a, (r, n) in counts.items():
            right[a] += r
            named[a] += n
    scores = {a: right[a] / max(named[a], 1) for a in ATTRIBUTES}
    scores["caption"] = whole / max(len(scenes), 1)
    return scores


# ---------------------------------------------------------------------------- diversity
def diversity_prompts(dataset, prompts: int = PROMPTS, scan: int = 20000) -> dict[str, list[tuple[Scene, str]]]:
    """The two blocks' prompts from a val/test :class:`~datamodules.shapes.ShapesDataset`: the first
    ``prompts`` seen one-object captions (in index order) that leave something open, and the first
    that name every attribute."""
    found: dict[str, list[tuple[Scene, str]]] = {"open": [], "spread": []}
    probe = shapes.ShapesDataset(split=dataset.split, length=scan, seed=dataset.seed, min_objects=1, max_objects=1,
                                 open_probability=dataset.open_probability)
    for i in range(scan):
        if min(len(v) for v in found.values()) >= prompts:
            break
        if probe.subset_of(i) != "seen":
            continue
        scene, text = probe.sample(i)
        block = found["open" if scene.open else "spread"]
        if len(block) < prompts:
            block.append((scene, text))
    return found


@functools.lru_cache(maxsize=4096)
def _tv_floor(reference: tuple[float, ...], n: int, draws: int = 4000) -> float:
    """Expected total variation between ``n`` exact draws from ``reference`` and ``reference``."""
    p = np.asarray(reference)
    counts = np.random.default_rng(0).multinomial(n, p, size=draws) / n
    return float(0.5 * np.abs(counts - p).sum(1).mean())


def _read_value(pred: dict[str, torch.Tensor], i: int, attribute: str) -> int | None:
    """The value of ``attribute`` the oracle reads on image ``i``'s most confident object (None: no object)."""
    detected = pred["present"][i].bool()
    if not detected.any():
        return None
    cell = int(torch.where(detected, pred["confidence"][i], torch.full_like(pred["confidence"][i], -1)).argmax())
    return cell if attribute == "position" else int(pred[attribute][i, cell])


ATTRIBUTE_VALUES = {"shape": shapes.SHAPES, "color": shapes.COLOR_NAMES, "size": shapes.SIZES,
                    "position": shapes.POSITIONS}


def open_histogram(pred: dict[str, torch.Tensor], rows: Sequence[int], attribute: str) -> np.ndarray:
    """The oracle-read distribution of ``attribute`` over images ``rows``: one share per value of
    :data:`ATTRIBUTE_VALUES`, and a last one for the images where no object is read."""
    hist = np.zeros(len(ATTRIBUTE_VALUES[attribute]) + 1)
    for i in rows:
        value = _read_value(pred, i, attribute)
        hist[-1 if value is None else value] += 1
    return hist / len(rows)


def _spread(pred: dict[str, torch.Tensor], rows: list[int], scene: Scene) -> np.ndarray | None:
    """[dx std, dy std, radius std, rotation circular variance or nan] of the rows that show the caption."""
    picked = [i for i in rows if _judge(pred, i, scene)[1]]
    if len(picked) < MIN_RIGHT:
        return None
    cell = scene.objects[0].as_indices()[3]
    pose = decode_pose(pred["pose"][picked, cell])
    rotation = float("nan")
    if shapes.SYMMETRY[scene.objects[0].shape]:
        rotation = 1.0 - float(torch.exp(1j * pose["phase"].double()).mean().abs())
    return np.array([float(pose["dx"].std()), float(pose["dy"].std()), float(pose["radius"].std()), rotation])


def diversity(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], scenes: Sequence[Scene],
              blocks: dict[str, tuple[int, int]], per_prompt: int = PER_PROMPT) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pred in (("", fake), ("real_", real)):
        tvs, raws, floors = [], [], []
        start, stop = blocks["open"]
        for first in range(start, stop, per_prompt):
            rows, scene = range(first, min(first + per_prompt, stop)), scenes[first]
            for attribute in (a for a in ATTRIBUTES if a not in scene.names(0)):
                reference = shapes.open_distribution(scene, attribute)
                hist = open_histogram(pred, rows, attribute)
                raw = 0.5 * float(np.abs(hist - np.append(reference, 0.0)).sum())
                floor = _tv_floor(tuple(float(x) for x in reference), len(rows))
                tvs.append(max(0.0, raw - floor))
                raws.append(raw)
                floors.append(floor)
        out[f"diversity/{name}open_tv"] = float(np.mean(tvs)) if tvs else float("nan")
        if not name:
            out["diversity/open_tv_raw"] = float(np.mean(raws)) if raws else float("nan")
            out["diversity/open_tv_floor"] = float(np.mean(floors)) if floors else float("nan")
    ratios, used = [], 0
    start, stop = blocks["spread"]
    for first in range(start, stop, per_prompt):
        rows, scene = list(range(first, min(first + per_prompt, stop))), scenes[first]
        gen, ref = _spread(fake, rows, scene), _spread(real, rows, scene)
        if ref is None:
            continue
        if gen is None:
            ratios.append(0.0)
            continue
        used += 1
        keep = ~np.isnan(ref) & (ref > 0)
        ratios.append(float(np.mean(gen[keep] / ref[keep])))
    out["diversity/spread_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
    out["diversity/spread_prompts"] = float(used)
    for block in ("open", "spread"):
        start, stop = blocks[block]
        out[f"diversity/{block}_caption"] = scores_from_predictions(_rows(fake, slice(start, stop)),
                                                                    scenes[start:stop])["caption"]
    return out
