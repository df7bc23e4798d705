"""Is the shape of an object still in D's features? A linear probe per feature map (JSON output).

For each resolution of a trained discriminator (and, as a reference, of a randomly initialised one
of the same size), a multinomial logistic regression is trained on the feature maps of real shapes
images (one object each) to predict the object's shape, and scored on held-out images:

    python benchmarks/d_shape_probe.py RUN/checkpoints/last.ckpt --out probe.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py


def feature_maps(discriminator, images: torch.Tensor) -> list[torch.Tensor]:
    h = discriminator.from_rgb(images)
    maps = []
    for block in discriminator.blocks:
        h = block(h)
        maps.append(h)
    return maps


def probe(features: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, train: int, steps: int = 300) -> dict:
    x = features.flatten(1)
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-5)
    weight = torch.zeros(x.shape[1], int(labels.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(x[:train] @ weight + bias, labels[:train]) + 1e-3 * weight.square().sum()
            loss.backward()
            optimizer.step()
    right = ((x[train:] @ weight + bias).argmax(1) == labels[train:]).float()
    held_sizes = sizes[train:]
    return {"accuracy": float(right.mean()),
            "accuracy_small": float(right[held_sizes == 0].mean()), "accuracy_large": float(right[held_sizes == 1].mean())}


@torch.no_grad()
def main() -> None:
    from datamodules.shapes import ShapesDataset
    from lightning_modules.loading import load_module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    module = load_module(args.checkpoint).eval()
    trained = module.discriminator
    size = int(module.run_config["data"]["image_size"])
    data = ShapesDataset(split="train", length=args.images, image_size=size, seed=0, min_objects=1, max_objects=1)
    items = [data[i] for i in range(args.images)]
    images = torch.stack([item["image"] for item in items])
    labels = torch.tensor([int(item["attributes"][0, 0]) for item in items])
    sizes = torch.tensor([int(item["attributes"][0, 2]) for item in items])
    random = type(trained)(image_size=size, text_dim=module.encoder.out_dim,
                           base_channels=int(module.run_config["model"]["discriminator"]["base_channels"]))
    train = args.images - args.held_out
    result = {"benchmark": "d_shape_probe", "checkpoint": str(args.checkpoint), "images": args.images,
              "held_out": args.held_out, "chance": 1 / 6, "trained": {}, "random_init": {}}
    for name, net in (("trained", trained), ("random_init", random)):
        for features in feature_maps(net, images):
            key = f"{features.shape[-1]}x{features.shape[-1]}"
            result[name][key] = probe(features, labels, sizes, train)
            print(f"{name:12s} {key:6s} shape probe accuracy {result[name][key]['accuracy']:.3f}", flush=True)
    result["machine"] = report_json.machine()
    report_json.write(result, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
