"""How fast a D-style conv tower learns the shape of a shapes object, by where it pools (JSON).

A fresh tower of D's down blocks (``discriminators.down_tower``) ending at each of ``--resolutions`` (4: D's
last map, 8: one block earlier, 16: two), pooled over space by mean or max, then a linear layer, is trained *supervised*
on the shape label of single-object training renders (Adam, D's betas, batch 32) and scored on 256
val renders after every 50 steps (all six shapes, and the circles and hexagons alone: how often they
are right, and how often one is read as the other). It tells which of D's maps can carry shape to a text-conditional
head within a short run: shape is one small object's outline, which a mean over mostly empty
cells dilutes and a max keeps.

Usage: ``python benchmarks/tower_shape_probe.py [--steps 300] [--resolutions 4 8 16] [--pools mean max] [--out FILE]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py


def curve(resolution: int, pool: str, channels: int, steps: int, lr: float) -> list[dict]:
    from datamodules.shapes import SHAPES, ShapesDataset
    from lightning_modules.components.discriminators import down_tower

    torch.manual_seed(0)
    from_rgb, blocks, width = down_tower(image_size=32, base_channels=channels, max_multiplier=32 // resolution,
                                         resolution=resolution)
    tower = nn.Sequential(from_rgb, blocks)  # D's down blocks, ending at ``resolution``
    head = nn.Linear(width(resolution), len(SHAPES))
    optimizer = torch.optim.Adam([*tower.parameters(), *head.parameters()], lr=lr, betas=(0.0, 0.9))
    train = ShapesDataset(split="train", length=steps * 32, max_objects=1)
    val = ShapesDataset(split="val", length=256, max_objects=1)

    def batch(data, start, n):
        items = [data[i] for i in range(start, start + n)]
        return torch.stack([it["image"] for it in items]), torch.stack([it["attributes"][0, 0] for it in items])

    def logits(x):
        h = F.leaky_relu(tower(x), 0.2)
        return head(h.amax((2, 3)) if pool == "max" else h.mean((2, 3)))

    val_x, val_y = batch(val, 0, 256)
    circle, hexagon = SHAPES.index("circle"), SHAPES.index("hexagon")
    round_ = (val_y == circle) | (val_y == hexagon)  # the pair G and D confuse (benchmarks/d_reads_shapes.py)
    points, start = [], time.perf_counter()
    for step in range(steps + 1):
        if step % 50 == 0:
            with torch.no_grad():
                predicted = logits(val_x).argmax(1)
            right = predicted == val_y
            accuracy = float(right.float().mean())
            swapped = (predicted == circle + hexagon - val_y) & round_  # a circle read as hexagon, or back
            points.append({"step": step, "images": step * 32, "shape_accuracy": round(accuracy, 4),
                           "circle_hexagon_accuracy": round(float(right[round_].float().mean()), 4),
                           "circle_hexagon_swapped": round(float(swapped.sum() / round_.sum()), 4),
                           "seconds": round(time.perf_counter() - start, 1)})
            print(f"resolution {resolution} {pool:4s} step {step:4d} shape accuracy {accuracy:.3f} "
                  f"circle/hexagon {points[-1]['circle_hexagon_accuracy']:.3f}", flush=True)
        if step == steps:
            break
        x, y = batch(train, step * 32, 32)
        loss = F.cross_entropy(logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--channels", type=int, default=16, help="tower width at 32x32 (D's default base width)")
    parser.add_argument("--lr", type=float, default=8e-4, help="D's learning rate in model=gan_ga")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[4, 8], choices=[4, 8, 16])
    parser.add_argument("--pools", nargs="+", default=["mean", "max"], choices=["mean", "max"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = {f"{res}x{res}_{pool}": curve(res, pool, args.channels, args.steps, args.lr)
            for res in args.resolutions for pool in args.pools}
    report = {"benchmark": "tower_shape_probe", "chance": 1 / 6, "channels": args.channels, "lr": args.lr,
              "what": "val shape accuracy of a supervised linear head on a fresh D-style tower, by map and pooling",
              "machine": report_json.machine(), "runs": runs}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
