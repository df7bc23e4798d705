"""Shapes caption accuracy: does a generated image show what its caption says?

The shapes oracle (``datamodules/shapes_oracle.py``) reads an image back into per-cell objects
(present, shape, colour, size on the 3x3 grid); the scores compare that reading with the scene the
caption describes. The oracle's 256-d features also give a Frechet distance between real and
generated images (``oracle_fd``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from datamodules.shapes import Scene
from datamodules.shapes_oracle import HEADS, ShapesOracle, cell_targets, read_scenes
from lightning_modules.metrics.frechet import frechet_distance

PROTOCOL = {
    "reader": "shapes oracle (datamodules/shapes_oracle.py): 3x3 cells, 32x32 input (area resize)",
    "caption": "fraction of images with every attribute of every described object right at its cell and no "
               "object where none is described",
    "shape/color/size": "fraction of described objects whose attribute is right on the generated object paired "
                        "with them (the one at their cell, else the most confident unpaired detected object; none "
                        "left: wrong)",
    "position": "fraction of described objects detected at their cell",
    "real_reference": "caption accuracy of the real renders of the same captions (the ceiling)",
    "oracle_fd": "Frechet distance (float64) between the oracle's 256-d features of real and generated images",
}


@torch.no_grad()
def oracle_readout(oracle: ShapesOracle, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-sample tensors (they can be gathered across processes): ``oracle_pred`` long [N, 9, 4]
    (present, shape, colour, size per cell), ``oracle_conf`` [N, 9], ``oracle_feat`` float64 [N, 256]."""
    device = next(oracle.parameters()).device
    preds = read_scenes(oracle, images.to(device), batch_size)
    feats = [oracle.features(images[s : s + batch_size].to(device).float()).double().cpu()
             for s in range(0, images.shape[0], batch_size)]
    return {"oracle_pred": torch.stack([preds[k] for k in HEADS], dim=-1), "oracle_conf": preds["confidence"],
            "oracle_feat": torch.cat(feats)}


def predictions(readout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`oracle_readout`'s tensors -> the per-head dict :func:`scores_from_predictions` reads."""
    labels = readout["oracle_pred"]
    return {**{k: labels[..., i] for i, k in enumerate(HEADS)}, "confidence": readout["oracle_conf"]}


def caption_accuracy(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor],
                     scenes: Sequence[Scene]) -> dict[str, float]:
    """``caption_accuracy/{shape,color,size,position,caption}`` of the generated images,
    ``caption_accuracy/real_reference`` and ``oracle_fd``, from both sets' :func:`oracle_readout`."""
    out = {f"caption_accuracy/{k}": v for k, v in scores_from_predictions(predictions(fake), scenes).items()}
    out["caption_accuracy/real_reference"] = scores_from_predictions(predictions(real), scenes)["caption"]
    out["oracle_fd"] = frechet_distance(real["oracle_feat"], fake["oracle_feat"])
    return out


def caption_scores(oracle: ShapesOracle, images: torch.Tensor, scenes: Sequence[Scene]) -> dict[str, float]:
    """How often the images show what their scenes' captions say.

    ``position``: fraction of described objects read at their cell. ``shape``/``color``/``size``:
    fraction of described objects whose attribute is right on the generated object paired with
    them: the one at their cell when there is one, else the most confident remaining *detected*
    object (so a red circle drawn in the wrong place still counts as red). A described object with
    no generated object left to pair with is wrong on every attribute: a blank image scores 0.
    ``caption``: fraction of images with every attribute of every object right at its cell and no
    object where none is described.
    """
    return scores_from_predictions(read_scenes(oracle, images), scenes)


def _pairs(confidence: torch.Tensor, detected: torch.Tensor, cells: list[int]) -> list[int | None]:
    """For one image: the generated-object cell paired with each described cell, None when no
    detected object is left for it."""
    ranked = [int(c) for c in confidence.argsort(descending=True) if detected[c]]
    paired = {c: c for c in cells if detected[c]}
    free = [c for c in ranked if c not in paired.values()]
    return [paired[c] if c in paired else (free.pop(0) if free else None) for c in cells]


def scores_from_predictions(pred: dict[str, torch.Tensor], scenes: Sequence[Scene]) -> dict[str, float]:
    """:func:`caption_scores` from per-cell predictions (e.g. gathered from several processes)."""
    truth = cell_targets(scenes)
    present = truth["present"].bool()
    detected = pred["present"].bool()
    position = detected & present
    counts = {k: 0 for k in ("shape", "color", "size")}
    for i in range(present.shape[0]):
        cells = [int(c) for c in present[i].nonzero().flatten()]
        for cell, source in zip(cells, _pairs(pred["confidence"][i], detected[i], cells)):
            for k in counts if source is not None else ():
                counts[k] += int(pred[k][i, source] == truth[k][i, cell])
    n = max(int(present.sum()), 1)
    scores = {k: v / n for k, v in counts.items()}
    scores["position"] = float(position.sum()) / n
    at_cell = {k: (pred[k] == truth[k]) & position for k in counts}
    whole = position & at_cell["shape"] & at_cell["color"] & at_cell["size"]
    scores["caption"] = float(((whole == present).all(1) & (detected == present).all(1)).float().mean())
    return scores
