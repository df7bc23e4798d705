"""The pairs metrics: does a generated image show two objects, each as described, in the relation
the caption says ("a red circle to the left of a blue star")?

The shapes oracle (``shapes_oracle.py``) reads each image back into objects on the 3x3 grid (shape,
colour, size, cell); :func:`datamodules.shapes_pairs.judge` compares that reading with the
caption's scene. Val and test captions come in three subsets (seen, unseen_composition: a
held-out (shape, relation, shape) fact, unseen_phrasing), scored apart.
"""

from __future__ import annotations

from typing import Sequence

import torch

from datamodules.shapes import SUBSETS
from datamodules.shapes_pairs import RelationScene, judge
from gan_ga_utils.errors import MetricsError

VALUES = ("scene", "binding", "relation", "count")
PROTOCOL = {
    "reader": "shapes oracle (lightning_modules/metrics/shapes_oracle.py): 3x3 cells, 32x32 input (area resize); "
              "an object per cell read as present, with its shape, colour and size",
    "count": "fraction of images with exactly two objects read",
    "binding": "fraction of images where each described object is paired with a different read object that carries "
               "every attribute (shape, colour, size) its description names",
    "relation": "fraction of images where the relation holds between the two read objects the descriptions are "
                "paired with (the pairing with most named attributes right, then one where the relation holds): "
                "the subject's cell in a column left of (right of) or a row above (below) the reference's",
    "scene": "fraction of images with count, binding and relation all right",
    "subsets": "pairs/<subset>/...: seen (training facts and words), unseen_composition (a (shape, relation, shape) "
               "fact no training image shows, both shapes and the relation named), unseen_phrasing (training facts "
               "in templates and words of val and test only); pairs/<value> without a subset: all captions",
    "real_reference": "pairs/scene of the real renders of the same captions (the ceiling)",
}


def found(readout: torch.Tensor) -> list[list[tuple[int, int, int, int]]]:
    """``oracle_pred`` [N, 9, 4] (present, shape, colour, size per cell) -> per image the objects read,
    as (shape, colour, size, cell)."""
    out = []
    for row in readout.tolist():
        out.append([(shape, color, size, cell) for cell, (present, shape, color, size) in enumerate(row) if present])
    return out


def scores(readout: torch.Tensor, scenes: Sequence[RelationScene]) -> dict[str, float]:
    """The four values (see :data:`PROTOCOL`) over images read as ``readout`` showing ``scenes``."""
    totals = dict.fromkeys(VALUES, 0)
    for objects, scene in zip(found(readout), scenes):
        for key, ok in judge(scene, objects).items():
            totals[key] += int(ok)
    return {k: totals[k] / max(len(scenes), 1) for k in VALUES}


def pairs(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], scenes: Sequence | None) -> dict[str, float]:
    """``pairs/...`` overall and per subset, with the real renders' ``real_reference``; ``scenes``: the
    captions' scenes (None on data without scenes)."""
    if scenes is None or any(not isinstance(s, RelationScene) for s in scenes):
        raise MetricsError("metrics=[pairs] needs relation scenes: a run on datamodules.shapes_pairs."
                           "PairsShapesDataModule (python train.py experiment=shapes_pairs)")
    out = {f"pairs/{k}": v for k, v in scores(fake["oracle_pred"], scenes).items()}
    out["pairs/real_reference"] = scores(real["oracle_pred"], scenes)["scene"]
    for name in SUBSETS:
        picked = [i for i, s in enumerate(scenes) if s.subset == name]
        if not picked:
            continue
        part = [scenes[i] for i in picked]
        out.update({f"pairs/{name}/{k}": v for k, v in scores(fake["oracle_pred"][picked], part).items()})
        out[f"pairs/{name}/real_reference"] = scores(real["oracle_pred"][picked], part)["scene"]
    return out
