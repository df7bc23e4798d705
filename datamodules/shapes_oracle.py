"""The shapes oracle: a small CNN that reads a 32x32 shapes image back into its objects.

For each of the 3x3 grid cells it predicts whether an object is there and, if so, its shape,
colour and size; position is the cell. Trained once on fresh renders (1-2 objects, seeds no data
split uses) and cached under ``cache_dir/shapes_oracle/<renderer digest>.safetensors``: the digest
covers the renderer's source and constants, so changing how shapes are drawn retrains the oracle.

:func:`read_scenes` gives the per-cell reading and :meth:`ShapesOracle.features` a 256-d feature
per image; ``lightning_modules/metrics/caption_accuracy.py`` turns them into caption accuracy and
the oracle's Frechet distance.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datamodules import shapes
from lightning_modules.files import atomic_write

CELLS = len(shapes.POSITIONS)
HEADS = {"present": 2, "shape": len(shapes.SHAPES), "color": len(shapes.COLOR_NAMES), "size": len(shapes.SIZES)}
INPUT_SIZE = 32
ORACLE_SPLIT = 97  # render seeds of no data split
VERSION = 1


def renderer_digest() -> str:
    """Changes whenever the renderer, its constants or this oracle's architecture change."""
    parts = [inspect.getsource(f) for f in (shapes.make_scene, shapes._polygon, shapes.render)]
    parts += [repr(x) for x in (shapes.SHAPES, shapes.COLORS, shapes.SIZE_RADIUS, shapes.POSITIONS,
                                shapes.SUPERSAMPLE, VERSION)]
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
        self.head = nn.Linear(256, CELLS * sum(HEADS.values()))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != INPUT_SIZE:
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return self.body(images.clamp(-1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(images)).view(images.shape[0], CELLS, -1)
        return dict(zip(HEADS, logits.split(list(HEADS.values()), dim=-1)))


def cell_targets(scenes: Sequence[shapes.Scene]) -> dict[str, torch.Tensor]:
    """Per-cell labels: present 0/1; shape/colour/size index, -1 (ignored) where no object is."""
    out = {k: torch.full((len(scenes), CELLS), -1, dtype=torch.long) for k in HEADS}
    out["present"].zero_()
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            shape, color, size, cell = obj.as_indices()
            out["present"][i, cell] = 1
            out["shape"][i, cell], out["color"][i, cell], out["size"][i, cell] = shape, color, size
    return out


def render_batch(seed: int, start: int, n: int, split: int = ORACLE_SPLIT) -> tuple[torch.Tensor, list[shapes.Scene]]:
    scenes, images = [], []
    for i in range(start, start + n):
        scene = shapes.make_scene(np.random.default_rng([seed, split, i]), 1, 2)
        scenes.append(scene)
        images.append(np.asarray(shapes.render(scene, INPUT_SIZE)))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, scenes


def _loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(F.cross_entropy(logits[k].flatten(0, 1), targets[k].flatten(), ignore_index=-1) for k in HEADS)


def train_oracle(*, images: int = 16000, epochs: int = 3, batch_size: int = 128, seed: int = 0,
                 log=print) -> ShapesOracle:
    """Train on fresh renders (1-2 objects, renderer jitter included); about 40 s on a 2-core CPU."""
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
            loss = _loss(model(pixels[idx]), {k: v[idx] for k, v in targets.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"shapes oracle: epoch {epoch + 1}/{epochs} loss {loss.item():.4f}")
    return model.eval().requires_grad_(False)


def load_or_train(cache_dir: Path | str, log=print, **train_kwargs) -> ShapesOracle:
    """The cached oracle for the current renderer, trained (and cached atomically) when absent."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / "shapes_oracle" / f"{renderer_digest()}.safetensors"
    if path.is_file():
        try:
            model = ShapesOracle()
            model.load_state_dict(load_file(path))
            return model.eval().requires_grad_(False)
        except Exception as err:  # noqa: BLE001 - a damaged cache file: train again
            log(f"shapes oracle: {path} unreadable ({err}); retraining")
    log(f"shapes oracle: training for this renderer -> {path}")
    model = train_oracle(log=log, **train_kwargs)
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"renderer": renderer_digest(), "train": json.dumps(train_kwargs)})
    return model


@torch.no_grad()
def read_scenes(oracle: ShapesOracle, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Predicted per-cell labels (present, shape, colour, size: long [N, 9]) and ``confidence``, the
    probability that an object is in the cell (float [N, 9])."""
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in (*HEADS, "confidence")}
    for start in range(0, images.shape[0], batch_size):
        out = oracle(images[start : start + batch_size].float())
        for k in HEADS:
            preds[k].append(out[k].argmax(-1).cpu())
        preds["confidence"].append(out["present"].softmax(-1)[..., 1].float().cpu())
    return {k: torch.cat(v) for k, v in preds.items()}
