"""The shapes oracle: a small CNN that reads a 32x32 shapes image back into its objects.

For each of the 3x3 grid cells it predicts whether an object is there and, if so, its shape,
colour and size (position is the cell), and regresses its pose: the centre's offset in the cell,
the radius and the rotation (as ``cos k*angle, sin k*angle``, ``k`` the shape's rotational
symmetry), which the diversity metrics read. Trained once on fresh renders of every composition
(1-2 objects, seeds no data split uses, held-out compositions included: it is a measuring
instrument, not the GAN's data), with pixel noise and brightness augmentation so that it reads
imperfect generated images. The oracle of the default recipe ships with gan-ga
(``shapes_oracle.safetensors`` beside this file, its renderer digest in its metadata), so every
machine measures with the same weights and no run spends the ~100 s of training it; another recipe,
or a renderer the shipped file was not trained for, is trained once and cached under
``cache_dir/shapes_oracle/<renderer digest>.safetensors``. The digest covers the renderer's source and
constants, so changing how shapes are drawn retrains it (and fails the test of the shipped file until
``python -m lightning_modules.metrics.shapes_oracle`` writes it again).

:func:`read_scenes` gives the per-cell reading and :meth:`ShapesOracle.features` a 256-d feature
per image; ``lightning_modules/metrics/caption_accuracy.py`` turns them into caption accuracy and
the oracle's Frechet distance.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datamodules import shapes
from gan_ga_utils.files import atomic_write

CELLS = len(shapes.POSITIONS)
HEADS = {"present": 2, "shape": len(shapes.SHAPES), "color": len(shapes.COLOR_NAMES), "size": len(shapes.SIZES)}
POSE = ("dx", "dy", "radius", "cos", "sin")  # per cell, normalised: see pose_targets / decode_pose
INPUT_SIZE = 32
ORACLE_SPLIT = 97  # render seeds of no data split
VERSION = 2
_RADIUS_MID, _RADIUS_SCALE = 0.115, 0.03
SHIPPED = Path(__file__).with_name("shapes_oracle.safetensors")  # the default recipe's oracle (package data)


def renderer_digest() -> str:
    """Changes whenever the renderer, its constants or this oracle's architecture or training change."""
    parts = [inspect.getsource(f) for f in (shapes.make_scene, shapes.draw_pose, shapes._polygon, shapes.render,
                                            shapes.object_centre, train_oracle, _augment)]
    parts += [repr(x) for x in (shapes.SHAPES, shapes.COLORS, shapes.SIZE_RADIUS, shapes.CELL_JITTER, shapes.MAX_ROTATION, shapes.SYMMETRY,
                                shapes.POSITIONS, shapes.SUPERSAMPLE, VERSION)]
    parts.append(inspect.getsource(ShapesOracle))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


class ShapesOracle(nn.Module):
    """[B,3,H,W] in [-1,1] (any H=W; resized to 32) -> per-cell logits and a 256-d feature."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * width * 64, 256), nn.ReLU(),
        )
        self.head = nn.Linear(256, CELLS * (sum(HEADS.values()) + len(POSE)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != INPUT_SIZE:
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return self.body(images.clamp(-1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(images)).view(images.shape[0], CELLS, -1)
        return dict(zip((*HEADS, "pose"), logits.split([*HEADS.values(), len(POSE)], dim=-1)))


def pose_targets(obj: shapes.ShapeObject, pose: shapes.Pose) -> list[float]:
    """An object's pose as the oracle regresses it (about unit scale)."""
    k = shapes.SYMMETRY[obj.shape]
    return [pose.dx / shapes.CELL_JITTER, pose.dy / shapes.CELL_JITTER,
            (shapes.object_radius(obj, pose) - _RADIUS_MID) / _RADIUS_SCALE, math.cos(k * pose.angle),
            math.sin(k * pose.angle)]


def decode_pose(pose: torch.Tensor) -> dict[str, torch.Tensor]:
    """Regressed ``[..., 5]`` -> ``dx``, ``dy``, ``radius`` (fractions of the side) and ``phase``
    (``k * angle`` in radians, ``k`` the shape's symmetry order)."""
    return {"dx": pose[..., 0] * shapes.CELL_JITTER, "dy": pose[..., 1] * shapes.CELL_JITTER,
            "radius": pose[..., 2] * _RADIUS_SCALE + _RADIUS_MID, "phase": torch.atan2(pose[..., 4], pose[..., 3])}


def cell_targets(scenes: Sequence[shapes.Scene]) -> dict[str, torch.Tensor]:
    """Per-cell labels: present 0/1; shape/colour/size index, -1 (ignored) where no object is;
    ``pose`` [N, 9, 5] and ``pose_mask`` (object present; rotation only for shapes that have one)."""
    out = {k: torch.full((len(scenes), CELLS), -1, dtype=torch.long) for k in HEADS}
    out["present"].zero_()
    out["pose"] = torch.zeros(len(scenes), CELLS, len(POSE))
    out["pose_mask"] = torch.zeros(len(scenes), CELLS, len(POSE), dtype=torch.bool)
    for i, scene in enumerate(scenes):
        for k, obj in enumerate(scene.objects):
            shape, color, size, cell = obj.as_indices()
            out["present"][i, cell] = 1
            out["shape"][i, cell], out["color"][i, cell], out["size"][i, cell] = shape, color, size
            out["pose"][i, cell] = torch.tensor(pose_targets(obj, scene.pose(k)))
            out["pose_mask"][i, cell] = torch.tensor([True, True, True] + [shapes.SYMMETRY[obj.shape] > 0] * 2)
    return out


def render_batch(seed: int, start: int, n: int, split: int = ORACLE_SPLIT) -> tuple[torch.Tensor, list[shapes.Scene]]:
    """``n`` renders of any composition (1-2 objects, poses at random) and their scenes."""
    scenes, images = [], []
    for i in range(start, start + n):
        scene = shapes.make_scene(np.random.default_rng([seed, split, i]), 1, 2, compositions="any")
        scenes.append(scene)
        images.append(np.asarray(shapes.render(scene, INPUT_SIZE)))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, scenes


def _loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = sum(F.cross_entropy(out[k].flatten(0, 1), targets[k].flatten(), ignore_index=-1) for k in HEADS)
    mask = targets["pose_mask"]
    return loss + F.smooth_l1_loss(out["pose"][mask], targets["pose"][mask])


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What generated images get wrong that the renderer never does: brightness off by a few percent
    and pixel noise. Colours keep their hue, so no label changes."""
    n = images.shape[0]
    scale = 1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    noise = torch.randn(images.shape, generator=gen) * 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    return ((images + 1) * scale - 1 + noise).clamp(-1, 1)


def train_oracle(*, images: int = 24000, epochs: int = 5, batch_size: int = 128, seed: int = 0,
                 log=print) -> ShapesOracle:
    """Train on fresh renders (1-2 objects, every composition, poses at random) with augmentation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesOracle()
    pixels, scenes = render_batch(seed, 0, images)
    targets = cell_targets(scenes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (images // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(images, generator=gen)
        for b in range(images // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = _loss(model(_augment(pixels[idx], gen)), {k: v[idx] for k, v in targets.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"shapes oracle: epoch {epoch + 1}/{epochs} loss {loss.item():.4f}")
    return model.eval().requires_grad_(False)


def _read(path: Path) -> ShapesOracle:
    from safetensors.torch import load_file

    model = ShapesOracle()
    model.load_state_dict(load_file(path))  # strict: every tensor of this architecture, nothing else
    return model.eval().requires_grad_(False)


def shipped_digest(path: Path = SHIPPED) -> str | None:
    """The renderer digest the shipped oracle was trained for (None: no shipped file, or one not of
    the default recipe)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return meta.get("renderer") if meta.get("train") == json.dumps({}) else None  # as write() records it


def load_or_train(cache_dir: Path | str, log=print, **train_kwargs) -> ShapesOracle:
    """The default recipe's oracle as shipped when it was trained for the current renderer; else the
    cached oracle for this renderer and recipe, trained (and cached atomically) when absent."""
    digest = renderer_digest()
    if not train_kwargs and shipped_digest() == digest:
        return _read(SHIPPED)
    if not train_kwargs and SHIPPED.is_file():
        log(f"shapes oracle: {SHIPPED.name} was trained for another renderer; using a locally trained one "
            "(python -m lightning_modules.metrics.shapes_oracle writes the shipped file again)")
    name = digest
    if train_kwargs:  # another recipe: its own file
        name += "-" + hashlib.sha256(json.dumps(train_kwargs, sort_keys=True).encode()).hexdigest()[:8]
    path = Path(cache_dir) / "shapes_oracle" / f"{name}.safetensors"
    if path.is_file():
        try:
            return _read(path)
        except Exception as err:  # noqa: BLE001 - a damaged cache file: train again
            log(f"shapes oracle: {path} unreadable ({err}); retraining")
    log(f"shapes oracle: training for this renderer -> {path}")
    model = train_oracle(log=log, **train_kwargs)
    write(model, path, train_kwargs)
    return model


def write(model: ShapesOracle, path: Path, train_kwargs: dict) -> None:
    """Saves the oracle atomically with its renderer digest and recipe in the metadata."""
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"renderer": renderer_digest(), "train": json.dumps(train_kwargs)})


@torch.no_grad()
def read_scenes(oracle: ShapesOracle, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Predicted per-cell labels (present, shape, colour, size: long [N, 9]), ``confidence``, the
    probability that an object is in the cell (float [N, 9]) and ``pose`` (float [N, 9, 5], see
    :func:`decode_pose`)."""
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in (*HEADS, "confidence", "pose")}
    for start in range(0, images.shape[0], batch_size):
        out = oracle(images[start : start + batch_size].float())
        for k in HEADS:
            preds[k].append(out[k].argmax(-1).cpu())
        preds["confidence"].append(out["present"].softmax(-1)[..., 1].float().cpu())
        preds["pose"].append(out["pose"].float().cpu())
    return {k: torch.cat(v) for k, v in preds.items()}


if __name__ == "__main__":  # python -m lightning_modules.metrics.shapes_oracle: (re)write the shipped oracle
    torch.set_num_threads(2)  # the thread count the shipped file was trained with
    write(train_oracle(), SHIPPED, {})
    print(f"wrote {SHIPPED} for renderer {renderer_digest()}")
